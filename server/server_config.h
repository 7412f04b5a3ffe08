// ServerConfig: every setting of mod-server, read from one YAML file and
// then overridden by command-line flags (--max-queue for key max_queue).
// Unknown keys, wrong types and out-of-range values are errors that name the
// key and the file (or the flag).
//
// Thread-safety: a plain value; load once at start-up.
#pragma once

#include <cstdint>
#include <string>

#include "engine/status.h"

namespace modserve {

// Limits on what one request may ask for (also reported by GetModelInfo).
struct RequestLimits {
  int64_t max_prompt_bytes = 8192;
  int64_t max_tokens = 1024;
  int64_t default_max_tokens = 64;
  int64_t max_stop = 8;
  int64_t max_stop_bytes = 64;
  int64_t max_n = 8;  // largest GenerateRequest.n (completions per request)
};

struct ServerConfig {
  std::string model = "models/mod-small";      // checkpoint directory
  std::string listen = "127.0.0.1:50051";       // gRPC address
  std::string metrics_listen = "127.0.0.1:9464";  // Prometheus /metrics address
  std::string device = "cpu";                   // cpu | cuda
  std::string dtype = "float32";                // float32 | bfloat16
  std::string kv_dtype = "auto";                // auto (= dtype) | float32 | bfloat16
  int64_t threads = 0;                          // engine decode-kernel threads (0: one per hardware thread)
  int64_t torch_threads = 0;                    // LibTorch intra-op threads (0: hardware threads - 1, at least 1)
  int64_t kv_blocks = 4096;                     // KV pool size in blocks (all layers)
  int64_t block_size = 16;                      // tokens per KV block
  int64_t max_queue = 256;                      // waiting requests before RESOURCE_EXHAUSTED
  int64_t max_running = 64;                     // requests in the engine at once
  int64_t max_batch_tokens = 256;               // tokens per engine step
  int64_t max_prefill_tokens = 32;              // prompt tokens per step while any request decodes (0: no cap)
  bool prefix_caching = true;                   // reuse the K/V of prompt prefixes earlier requests ran
  int64_t guide_cache_mb = 64;                  // compiled guides kept across requests, MiB (0: none kept)
  std::string scheduling_policy = "fcfs";       // fcfs (request priority must be 0) | priority
  double drain_grace_seconds = 30;              // SIGTERM: time in-flight requests get to finish
  // Request log: one JSON line per ended Generate call (request_log.h) to
  // "stderr", "stdout" or a file path (appended); "" (default): none.
  std::string request_log;
  std::string io_priority = "auto";             // idle: all threads but the step thread under SCHED_IDLE | normal | auto (IdleIoPriority)
  RequestLimits limits;

  // Transport limits (gRPC): a request message larger than this is refused
  // with RESOURCE_EXHAUSTED before it is parsed; HTTP/2 streams a single
  // client connection may have open at once (more wait in the client).
  int64_t max_message_bytes = 65536;
  int64_t max_concurrent_streams = 128;

  // Security (README "Security"). Paths only: the files' contents (keys, the
  // token) are secrets and never appear in logs or error messages.
  std::string tls_cert_file;       // server certificate chain (PEM); with tls_key_file: TLS
  std::string tls_key_file;        // the certificate's private key (PEM)
  std::string tls_client_ca_file;  // CA bundle (PEM): mutual TLS, clients must present a certificate it signed
  std::string auth_token_file;     // bearer token: Generate and GetModelInfo need "authorization: Bearer <token>"

  bool tls() const { return !tls_cert_file.empty(); }

  // LibTorch intra-op threads the engine gets: torch_threads, or for 0 the
  // hardware threads - 1 (at least 1).
  int EngineTorchThreads() const;
  // Whether io_priority resolves to idle on a machine where the process may
  // run on `cpus` CPUs: idle, or auto for a CPU engine whose LibTorch ops run
  // on one thread (its kernels then run on the pool, whose workers are
  // lowered too) on 2+ CPUs. With more LibTorch threads the engine runs on
  // OpenMP, whose workers the step thread starts later at normal priority and
  // whose spinning would shut idle threads out.
  bool IdleIoPriority(int cpus) const;

  Status Validate() const;
};

// Reads argv: --config FILE (optional), then flags for individual keys.
// Returns the config, or an error naming the key/flag/file. Sets *help when
// --help was given (the usage is printed and the caller should exit 0).
StatusOr<ServerConfig> LoadServerConfig(int argc, char** argv, bool* help);

// Parses YAML text (for tests and the loader); `source` names it in errors.
StatusOr<ServerConfig> ParseServerConfigYaml(const std::string& text, const std::string& source);

}  // namespace modserve
