#include "server/server_config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

#include "engine/flags.h"

namespace modserve {
namespace {

// One config key: its YAML name, the flag that overrides it, and how to set it from text.
struct Key {
  std::string name, help;
  std::function<std::string(const ServerConfig&)> get;
  std::function<Status(ServerConfig*, const std::string&)> set;
  bool is_bool = false;  // its flag may be given bare (--prefix-caching)
};

Status ParseInt(const std::string& text, int64_t* out) {
  try {
    size_t used = 0;
    const long long v = std::stoll(text, &used);
    if (used != text.size()) throw std::invalid_argument(text);
    *out = v;
    return Status::Ok();
  } catch (const std::exception&) {
    return InvalidArgument("expected an integer, got \"" + text + "\"");
  }
}

Status ParseDouble(const std::string& text, double* out) {
  try {
    size_t used = 0;
    *out = std::stod(text, &used);
    if (used != text.size()) throw std::invalid_argument(text);
    return Status::Ok();
  } catch (const std::exception&) {
    return InvalidArgument("expected a number, got \"" + text + "\"");
  }
}

Key StringKey(std::string name, std::string help, std::string ServerConfig::*field) {
  return {std::move(name), std::move(help), [field](const ServerConfig& c) { return c.*field; },
          [field](ServerConfig* c, const std::string& v) {
            c->*field = v;
            return Status::Ok();
          }};
}

Key IntKey(std::string name, std::string help, std::function<int64_t*(ServerConfig*)> at) {
  return {std::move(name), std::move(help),
          [at](const ServerConfig& c) {
            ServerConfig copy = c;
            return std::to_string(*at(&copy));
          },
          [at](ServerConfig* c, const std::string& v) { return ParseInt(v, at(c)); }};
}

Key BoolKey(std::string name, std::string help, bool ServerConfig::*field) {
  return {std::move(name), std::move(help), [field](const ServerConfig& c) { return std::string(c.*field ? "true" : "false"); },
          [field](ServerConfig* c, const std::string& v) {
            if (v != "true" && v != "false") return InvalidArgument("expected true or false, got \"" + v + "\"");
            c->*field = v == "true";
            return Status::Ok();
          },
          /*is_bool=*/true};
}

const std::vector<Key>& Keys() {
  static const std::vector<Key> keys = {
      StringKey("model", "checkpoint directory to serve", &ServerConfig::model),
      StringKey("listen", "gRPC address host:port", &ServerConfig::listen),
      StringKey("metrics_listen", "Prometheus /metrics address host:port", &ServerConfig::metrics_listen),
      StringKey("device", "engine device: cpu or cuda", &ServerConfig::device),
      StringKey("dtype", "engine dtype: float32 or bfloat16", &ServerConfig::dtype),
      StringKey("kv_dtype", "KV cache dtype: auto (= dtype), float32 or bfloat16", &ServerConfig::kv_dtype),
      IntKey("threads", "threads of the engine's decode kernels (0: one per hardware thread)", [](ServerConfig* c) { return &c->threads; }),
      IntKey("torch_threads", "LibTorch intra-op threads for the rest of a step (0: hardware threads - 1, at least 1)",
             [](ServerConfig* c) { return &c->torch_threads; }),
      IntKey("kv_blocks", "KV cache pool size in blocks", [](ServerConfig* c) { return &c->kv_blocks; }),
      IntKey("block_size", "tokens per KV block", [](ServerConfig* c) { return &c->block_size; }),
      IntKey("max_queue", "waiting requests before RESOURCE_EXHAUSTED", [](ServerConfig* c) { return &c->max_queue; }),
      IntKey("max_running", "requests in the engine at once", [](ServerConfig* c) { return &c->max_running; }),
      IntKey("max_batch_tokens", "tokens per engine step (decode + prefill chunks)", [](ServerConfig* c) { return &c->max_batch_tokens; }),
      IntKey("max_prefill_tokens", "prompt tokens per engine step while any request decodes (0: no cap)",
             [](ServerConfig* c) { return &c->max_prefill_tokens; }),
      BoolKey("prefix_caching", "reuse the K/V of prompt prefixes earlier requests ran (true or false)",
              &ServerConfig::prefix_caching),
      IntKey("guide_cache_mb", "MiB of compiled guides (guided_regex, guided_choice, guided_json) kept across requests (0: none)",
             [](ServerConfig* c) { return &c->guide_cache_mb; }),
      StringKey("scheduling_policy", "fcfs (every request's priority must be 0) or priority (lower values served first)",
                &ServerConfig::scheduling_policy),
      StringKey("io_priority",
                "threads but the step thread (gRPC, metrics, kernel workers): idle (SCHED_IDLE, on the cores the step thread leaves), normal, or auto (idle for a CPU engine with one LibTorch thread on 2+ CPUs)",
                &ServerConfig::io_priority),
      {"drain_grace_seconds", "seconds in-flight requests get to finish after SIGTERM",
       [](const ServerConfig& c) {
         std::ostringstream o;
         o << c.drain_grace_seconds;
         return o.str();
       },
       [](ServerConfig* c, const std::string& v) { return ParseDouble(v, &c->drain_grace_seconds); }},
      IntKey("max_prompt_bytes", "longest prompt in bytes", [](ServerConfig* c) { return &c->limits.max_prompt_bytes; }),
      IntKey("max_tokens", "largest max_tokens a request may ask for", [](ServerConfig* c) { return &c->limits.max_tokens; }),
      IntKey("default_max_tokens", "max_tokens when a request leaves it 0", [](ServerConfig* c) { return &c->limits.default_max_tokens; }),
      IntKey("max_stop", "most stop strings per request", [](ServerConfig* c) { return &c->limits.max_stop; }),
      IntKey("max_stop_bytes", "longest stop string in bytes", [](ServerConfig* c) { return &c->limits.max_stop_bytes; }),
      IntKey("max_n", "most completions (GenerateRequest.n) per request", [](ServerConfig* c) { return &c->limits.max_n; }),
      IntKey("max_message_bytes", "largest request message in bytes (larger: RESOURCE_EXHAUSTED)",
             [](ServerConfig* c) { return &c->max_message_bytes; }),
      IntKey("max_concurrent_streams", "concurrent calls per client connection",
             [](ServerConfig* c) { return &c->max_concurrent_streams; }),
      StringKey("tls_cert_file", "server certificate chain, PEM (with tls_key_file: serve TLS)", &ServerConfig::tls_cert_file),
      StringKey("tls_key_file", "private key of tls_cert_file, PEM", &ServerConfig::tls_key_file),
      StringKey("tls_client_ca_file", "CA bundle, PEM: require client certificates it signed (mutual TLS)",
                &ServerConfig::tls_client_ca_file),
      StringKey("auth_token_file", "file holding the bearer token clients must send", &ServerConfig::auth_token_file),
      StringKey("request_log", "one JSON line per ended Generate call to stderr, stdout or a file (empty: none)",
                &ServerConfig::request_log),
  };
  return keys;
}

std::string FlagName(std::string key) {
  for (char& ch : key) {
    if (ch == '_') ch = '-';
  }
  return key;
}

Status Range(const std::string& key, int64_t v, int64_t lo, int64_t hi) {
  if (v < lo || v > hi) {
    return InvalidArgument(key + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " + std::to_string(v));
  }
  return Status::Ok();
}

Status Address(const std::string& key, const std::string& v) {
  const auto colon = v.rfind(':');
  if (v.empty() || colon == std::string::npos || colon == 0 || colon + 1 == v.size()) {
    return InvalidArgument(key + " must be host:port, got \"" + v + "\"");
  }
  int64_t port = 0;
  if (!ParseInt(v.substr(colon + 1), &port).ok() || port < 0 || port > 65535) {
    return InvalidArgument(key + " has a bad port in \"" + v + "\" (0..65535; 0 picks a free port)");
  }
  return Status::Ok();
}

}  // namespace

int ServerConfig::EngineTorchThreads() const {
  if (torch_threads > 0) return static_cast<int>(torch_threads);
  return std::max(1, static_cast<int>(std::thread::hardware_concurrency()) - 1);
}

bool ServerConfig::IdleIoPriority(int cpus) const {
  if (io_priority != "auto") return io_priority == "idle";
  return device == "cpu" && cpus >= 2 && EngineTorchThreads() == 1;
}

Status ServerConfig::Validate() const {
  if (model.empty()) return InvalidArgument("model must name a checkpoint directory");
  MODSERVE_RETURN_IF_ERROR(Address("listen", listen));
  MODSERVE_RETURN_IF_ERROR(Address("metrics_listen", metrics_listen));
  if (device != "cpu" && device != "cuda") return InvalidArgument("device must be cpu or cuda, got \"" + device + "\"");
  if (dtype != "float32" && dtype != "bfloat16") return InvalidArgument("dtype must be float32 or bfloat16, got \"" + dtype + "\"");
  if (kv_dtype != "auto" && kv_dtype != "float32" && kv_dtype != "bfloat16") {
    return InvalidArgument("kv_dtype must be auto, float32 or bfloat16, got \"" + kv_dtype + "\"");
  }
  if (scheduling_policy != "fcfs" && scheduling_policy != "priority") {
    return InvalidArgument("scheduling_policy must be fcfs or priority, got \"" + scheduling_policy + "\"");
  }
  if (io_priority != "auto" && io_priority != "idle" && io_priority != "normal") {
    return InvalidArgument("io_priority must be auto, idle or normal, got \"" + io_priority + "\"");
  }
  MODSERVE_RETURN_IF_ERROR(Range("threads", threads, 0, 1024));
  MODSERVE_RETURN_IF_ERROR(Range("torch_threads", torch_threads, 0, 1024));
  MODSERVE_RETURN_IF_ERROR(Range("kv_blocks", kv_blocks, 1, int64_t{1} << 24));
  MODSERVE_RETURN_IF_ERROR(Range("block_size", block_size, 1, 1024));
  MODSERVE_RETURN_IF_ERROR(Range("max_queue", max_queue, 1, 1000000));
  MODSERVE_RETURN_IF_ERROR(Range("max_running", max_running, 1, 4096));
  MODSERVE_RETURN_IF_ERROR(Range("max_batch_tokens", max_batch_tokens, 1, 1 << 20));
  MODSERVE_RETURN_IF_ERROR(Range("max_prefill_tokens", max_prefill_tokens, 0, 1 << 20));
  MODSERVE_RETURN_IF_ERROR(Range("guide_cache_mb", guide_cache_mb, 0, 1 << 20));
  if (!(drain_grace_seconds >= 0 && drain_grace_seconds <= 3600)) {
    return InvalidArgument("drain_grace_seconds must be in [0, 3600]");
  }
  MODSERVE_RETURN_IF_ERROR(Range("max_prompt_bytes", limits.max_prompt_bytes, 1, 1 << 24));
  MODSERVE_RETURN_IF_ERROR(Range("max_tokens", limits.max_tokens, 1, 1 << 20));
  MODSERVE_RETURN_IF_ERROR(Range("default_max_tokens", limits.default_max_tokens, 1, limits.max_tokens));
  MODSERVE_RETURN_IF_ERROR(Range("max_stop", limits.max_stop, 0, 1024));
  MODSERVE_RETURN_IF_ERROR(Range("max_stop_bytes", limits.max_stop_bytes, 1, 1 << 16));
  MODSERVE_RETURN_IF_ERROR(Range("max_n", limits.max_n, 1, 128));
  MODSERVE_RETURN_IF_ERROR(Range("max_concurrent_streams", max_concurrent_streams, 1, 1 << 20));
  MODSERVE_RETURN_IF_ERROR(Range("max_message_bytes", max_message_bytes, 1024, int64_t{1} << 30));
  if (tls_cert_file.empty() != tls_key_file.empty()) {
    return InvalidArgument("tls_cert_file and tls_key_file must be set together (TLS needs a certificate and its key)");
  }
  if (!tls_client_ca_file.empty() && !tls()) {
    return InvalidArgument("tls_client_ca_file (mutual TLS) needs TLS: set tls_cert_file and tls_key_file too");
  }
  return Status::Ok();
}

namespace {

// Sets the keys `text` holds on *c; `keys` (if set) receives their names.
Status ParseYamlInto(const std::string& text, const std::string& source, ServerConfig* out, std::set<std::string>* keys) {
  ServerConfig& c = *out;
  std::set<std::string> seen;
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    return InvalidArgument(source + ": not valid YAML: " + e.what());
  }
  if (root.IsNull()) return Status::Ok();  // an empty file: all defaults
  if (!root.IsMap()) return InvalidArgument(source + ": expected a mapping of keys to values at the top level");
  for (const auto& kv : root) {
    std::string key;
    try {
      key = kv.first.as<std::string>();
    } catch (const YAML::Exception&) {
      return InvalidArgument(source + ": a key is not a string");
    }
    const Key* found = nullptr;
    for (const auto& k : Keys()) {
      if (k.name == key) found = &k;
    }
    if (found == nullptr) return InvalidArgument(source + ": unknown key \"" + key + "\"");
    if (!seen.insert(key).second) {
      return InvalidArgument(source + ": duplicate key \"" + key + "\" (each key may appear once)");
    }
    if (!kv.second.IsScalar()) return InvalidArgument(source + ": key \"" + key + "\" must be a single value");
    Status s = found->set(&c, kv.second.Scalar());
    if (!s.ok()) return InvalidArgument(source + ": key \"" + key + "\": " + s.message());
  }
  if (keys != nullptr) *keys = std::move(seen);
  return Status::Ok();
}

// The keys a Validate() message names (as whole words), in the order it names them.
std::vector<std::string> KeysOfMessage(const std::string& message) {
  auto word_char = [](char ch) { return std::isalnum(static_cast<unsigned char>(ch)) != 0 || ch == '_'; };
  std::vector<std::pair<size_t, std::string>> found;
  for (const auto& k : Keys()) {
    for (size_t at = message.find(k.name); at != std::string::npos; at = message.find(k.name, at + 1)) {
      const size_t end = at + k.name.size();
      if ((at == 0 || !word_char(message[at - 1])) && (end == message.size() || !word_char(message[end]))) {
        found.emplace_back(at, k.name);
        break;
      }
    }
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> keys;
  for (auto& f : found) keys.push_back(std::move(f.second));
  return keys;
}

}  // namespace

StatusOr<ServerConfig> ParseServerConfigYaml(const std::string& text, const std::string& source) {
  ServerConfig c;
  MODSERVE_RETURN_IF_ERROR(ParseYamlInto(text, source, &c, nullptr));
  return c;
}

StatusOr<ServerConfig> LoadServerConfig(int argc, char** argv, bool* help) {
  Flags flags("mod-server", "serves a Mixture-of-Depths model over gRPC (see proto/modserve/v1/modserve.proto)");
  flags.Define("config", "", "YAML config file (keys as below, with underscores); flags override it");
  const ServerConfig defaults;
  for (const auto& k : Keys()) flags.Define(FlagName(k.name), k.get(defaults), k.help, k.is_bool);
  MODSERVE_RETURN_IF_ERROR(flags.Parse(argc, argv));
  *help = flags.help_requested();
  if (*help) return defaults;
  if (!flags.positional().empty()) {
    const std::string& word = flags.positional()[0];
    // "--prefix-caching maybe": a boolean flag takes true/false only, so the word was left over.
    for (int i = 2; i < argc; ++i) {
      if (word != argv[i]) continue;
      for (const auto& k : Keys()) {
        if (k.is_bool && std::string(argv[i - 1]) == "--" + FlagName(k.name)) {
          return InvalidArgument("--" + FlagName(k.name) + " takes true or false (or nothing, for true), not \"" + word + "\"");
        }
      }
    }
    return InvalidArgument("unexpected argument \"" + word + "\"");
  }

  ServerConfig c;
  std::set<std::string> from_file;  // keys the config file set
  const std::string path = flags.Str("config");
  if (!path.empty()) {
    std::ifstream in(path);
    if (!in) return NotFound("config file " + path + " cannot be read");
    std::stringstream ss;
    ss << in.rdbuf();
    MODSERVE_RETURN_IF_ERROR(ParseYamlInto(ss.str(), path, &c, &from_file));
  }
  for (const auto& k : Keys()) {
    const std::string flag = FlagName(k.name);
    if (!flags.Has(flag)) continue;
    Status s = k.set(&c, flags.Str(flag));
    if (!s.ok()) return InvalidArgument("--" + flag + ": " + s.message());
  }
  // A bad value is blamed on where it came from: the first key the message
  // names that a flag set, else one the file set; a default that another
  // key's value made invalid is the config's as a whole.
  Status v = c.Validate();
  if (!v.ok()) {
    const std::vector<std::string> keys = KeysOfMessage(v.message());
    std::string where = keys.empty() && !path.empty() ? path : "config";
    for (const std::string& key : keys) {
      if (flags.Has(FlagName(key))) {
        where = "--" + FlagName(key);
        break;
      }
      if (where == "config" && from_file.count(key) != 0) where = path;
    }
    return InvalidArgument(where + ": " + v.message());
  }
  return c;
}

}  // namespace modserve
