// mod-client: command-line client for mod-server.
//   mod-client generate --prompt TEXT      prints the completion
//   mod-client stream --prompt TEXT        prints tokens as they arrive (--routes: per token routed layers)
//   (generate and stream --logprobs N: then each token's log-probability and N alternatives)
//   mod-client info                        prints the model description (GetModelInfo)
//   mod-client tokenize --prompt TEXT      prints the prompt's token ids ID,ID,... and its prompt_tokens
//   mod-client detokenize --token-ids IDS  prints the text of token ids
//   mod-client health                      prints the grpc.health.v1 status; exit 0 iff SERVING
//   mod-client bench --concurrency N ...   load generator (see load_generator.h)
// Every RPC carries a deadline (--timeout seconds).
#include <grpcpp/grpcpp.h>

#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <string>
#include <vector>

#include "proto/grpc_code_name.h"
#include "client/load_generator.h"
#include "engine/flags.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "modserve/v1/modserve.grpc.pb.h"

namespace modserve {
namespace {

const char* kSummary =
    "client for mod-server. Commands: generate, stream, info, tokenize, detokenize, health, bench (mod-client COMMAND "
    "[flags])";

Status RpcError(const char* what, const grpc::Status& s) {
  return Status::Error(StatusCode::kUnavailable,
                       std::string(what) + " failed: " + GrpcCodeName(s.error_code()) + ": " + s.error_message());
}

// One unary Generator call `name` over `conn`, with its metadata and a deadline
// `timeout` seconds away.
template <typename Request, typename Response>
Status CallUnary(const ClientConnection& conn, double timeout, const char* name,
                 grpc::Status (v1::Generator::Stub::*method)(grpc::ClientContext*, const Request&, Response*),
                 const Request& req, Response* resp) {
  auto stub = v1::Generator::NewStub(conn.channel());
  grpc::ClientContext ctx;
  conn.Prepare(&ctx, timeout);
  grpc::Status s = ((*stub).*method)(&ctx, req, resp);
  return s.ok() ? Status::Ok() : RpcError(name, s);
}

// Calls `each` on every item of `text` separated by `sep` (none if it is
// empty), stopping at the first error.
Status ForEachItem(const std::string& text, const std::function<Status(const std::string&)>& each, char sep = ',') {
  if (text.empty()) return Status::Ok();
  size_t start = 0;
  while (true) {
    size_t end = text.find(sep, start);
    if (end == std::string::npos) end = text.size();
    MODSERVE_RETURN_IF_ERROR(each(text.substr(start, end - start)));
    if (end == text.size()) return Status::Ok();
    start = end + 1;
  }
}

// A decimal int32 filling all of `text`.
bool ParseInt32(const std::string& text, int32_t* out) {
  char* end = nullptr;
  errno = 0;
  const long v = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || errno != 0 || *end != '\0' || v < INT32_MIN || v > INT32_MAX) return false;
  *out = static_cast<int32_t>(v);
  return true;
}

// "ID:BIAS,ID:BIAS,..." (e.g. "65:5,257:-100") into the request's logit_bias;
// the server checks the ranges.
Status ParseLogitBias(const std::string& text, google::protobuf::Map<int32_t, float>* out) {
  return ForEachItem(text, [out](const std::string& item) {
    const Status bad = InvalidArgument("--logit-bias entry \"" + item + "\" is not ID:BIAS (e.g. 65:5,257:-100)");
    const size_t colon = item.find(':');
    if (colon == std::string::npos) return bad;
    const std::string id_text = item.substr(0, colon), bias_text = item.substr(colon + 1);
    int32_t id = 0;
    char* bias_end = nullptr;
    errno = 0;
    const float bias = std::strtof(bias_text.c_str(), &bias_end);
    if (!ParseInt32(id_text, &id) || bias_text.empty() || errno != 0 || *bias_end != '\0') return bad;
    if (out->count(id) != 0) return InvalidArgument("--logit-bias names token id " + id_text + " twice");
    (*out)[id] = bias;
    return Status::Ok();
  });
}

// "ID,ID,..." (e.g. "10,257") into a repeated int32 field named by `flag`;
// the server checks the ranges.
Status ParseIdList(const std::string& flag, const std::string& text, google::protobuf::RepeatedField<int32_t>* out) {
  return ForEachItem(text, [&flag, out](const std::string& item) {
    int32_t id = 0;
    if (!ParseInt32(item, &id)) return InvalidArgument("--" + flag + " entry \"" + item + "\" is not a token id (e.g. 10,257)");
    out->Add(id);
    return Status::Ok();
  });
}

// An int32 flag (the request's fields are int32: a larger value must not
// wrap into another one, e.g. --max-tokens 4294967296 into 0, the default).
Status GetInt32(const Flags& f, const std::string& flag, int32_t* out) {
  int64_t v = 0;
  MODSERVE_RETURN_IF_ERROR(f.Get(flag, &v));
  if (v < INT32_MIN || v > INT32_MAX) {
    return InvalidArgument("--" + flag + " must be in [-2^31, 2^31 - 1] (a 32-bit request field), got " + std::to_string(v));
  }
  *out = static_cast<int32_t>(v);
  return Status::Ok();
}

// --priority, an int32.
Status GetPriority(const Flags& f, int32_t* priority) { return GetInt32(f, "priority", priority); }

// --n, completions per request: 1 .. 2^31 - 1 (the server's max_n decides the rest).
Status GetN(const Flags& f, int32_t* n) {
  int64_t v = 1;
  MODSERVE_RETURN_IF_ERROR(f.Get("n", &v));
  if (v < 1 || v > INT32_MAX) return InvalidArgument("--n must be >= 1 (completions of the prompt), got " + std::to_string(v));
  *n = static_cast<int32_t>(v);
  return Status::Ok();
}

Status BuildRequest(const Flags& f, v1::GenerateRequest* req) {
  MODSERVE_RETURN_IF_ERROR(ParseIdList("prompt-token-ids", f.Str("prompt-token-ids"), req->mutable_prompt_token_ids()));
  if (req->prompt_token_ids_size() == 0) req->set_prompt(f.Str("prompt"));
  MODSERVE_RETURN_IF_ERROR(ParseIdList("stop-token-ids", f.Str("stop-token-ids"), req->mutable_stop_token_ids()));
  int32_t max_tokens = 0, top_k = 0;
  double temperature = 0, top_p = 0, min_p = 0, repetition = 0, presence = 0, frequency = 0;
  MODSERVE_RETURN_IF_ERROR(GetInt32(f, "max-tokens", &max_tokens));
  MODSERVE_RETURN_IF_ERROR(GetInt32(f, "top-k", &top_k));
  MODSERVE_RETURN_IF_ERROR(f.Get("temperature", &temperature));
  MODSERVE_RETURN_IF_ERROR(f.Get("top-p", &top_p));
  MODSERVE_RETURN_IF_ERROR(f.Get("min-p", &min_p));
  MODSERVE_RETURN_IF_ERROR(f.Get("repetition-penalty", &repetition));
  MODSERVE_RETURN_IF_ERROR(f.Get("presence-penalty", &presence));
  MODSERVE_RETURN_IF_ERROR(f.Get("frequency-penalty", &frequency));
  req->set_max_tokens(max_tokens);
  req->set_top_k(top_k);
  req->set_temperature(static_cast<float>(temperature));
  req->set_top_p(static_cast<float>(top_p));
  req->set_min_p(static_cast<float>(min_p));
  req->set_repetition_penalty(static_cast<float>(repetition));
  req->set_presence_penalty(static_cast<float>(presence));
  req->set_frequency_penalty(static_cast<float>(frequency));
  if (f.Has("seed")) {
    int64_t seed = 0;
    MODSERVE_RETURN_IF_ERROR(f.Get("seed", &seed));
    req->set_seed(static_cast<uint64_t>(seed));
  }
  if (!f.Str("stop").empty()) req->add_stop(f.Str("stop"));
  int64_t min_tokens = 0;
  MODSERVE_RETURN_IF_ERROR(f.Get("min-tokens", &min_tokens));
  if (min_tokens < 0 || min_tokens > INT32_MAX) return InvalidArgument("--min-tokens must be in [0, 2^31 - 1]");
  req->set_min_tokens(static_cast<int32_t>(min_tokens));
  req->set_ignore_eos(f.Bool("ignore-eos"));
  req->set_include_stop_str_in_output(f.Bool("include-stop"));
  if (f.Has("truncate-prompt-tokens")) {
    int64_t keep = 0;
    MODSERVE_RETURN_IF_ERROR(f.Get("truncate-prompt-tokens", &keep));
    if (keep < INT32_MIN || keep > INT32_MAX) return InvalidArgument("--truncate-prompt-tokens is out of range");
    req->set_truncate_prompt_tokens(static_cast<int32_t>(keep));  // the server checks it against the context
  }
  MODSERVE_RETURN_IF_ERROR(ParseLogitBias(f.Str("logit-bias"), req->mutable_logit_bias()));
  req->set_cache_salt(f.Str("cache-salt"));
  req->set_guided_regex(f.Str("guided-regex"));
  req->set_guided_json(f.Str("guided-json"));
  MODSERVE_RETURN_IF_ERROR(ForEachItem(f.Str("guided-choice"), [req](const std::string& choice) {  // CHOICE|CHOICE|...
    req->add_guided_choice(choice);
    return Status::Ok();
  }, '|'));
  int32_t priority = 0;
  MODSERVE_RETURN_IF_ERROR(GetPriority(f, &priority));
  req->set_priority(priority);
  req->set_return_routes(f.Bool("routes"));
  int32_t logprobs = -1;
  MODSERVE_RETURN_IF_ERROR(GetInt32(f, "logprobs", &logprobs));
  if (logprobs < -1) return InvalidArgument("--logprobs must be >= 0 (alternatives per token), or -1 for none");
  if (logprobs >= 0) {
    req->set_return_logprobs(true);
    req->set_top_logprobs(logprobs);
  }
  req->set_return_prompt_logprobs(f.Bool("prompt-logprobs"));
  int32_t n = 1;
  MODSERVE_RETURN_IF_ERROR(GetN(f, &n));
  req->set_n(n);
  return Status::Ok();
}

// The routed layers a token computed, "1,3".
std::string RouteLayers(const v1::TokenRoute& route) {
  std::string layers;
  for (int l : route.computed_layers()) layers += (layers.empty() ? "" : ",") + std::to_string(l);
  return layers;
}

// A byte-level token as text: 'c' for printable ASCII, \xNN for other bytes,
// <id> for the special tokens.
std::string TokenText(int id) {
  char buf[16];
  if (id >= 0x20 && id < 0x7f) {
    std::snprintf(buf, sizeof buf, "'%c'", static_cast<char>(id));
  } else if (id >= 0 && id < 256) {
    std::snprintf(buf, sizeof buf, "\\x%02x", id);
  } else {
    std::snprintf(buf, sizeof buf, "<%d>", id);
  }
  return buf;
}

// One line per token: its id, text and log-probability, then the alternatives
// (`label`: "token" for generated ones, "prompt token" for the prompt's).
void PrintLogprobs(const char* label, const std::vector<v1::TokenLogprobs>& lps) {
  for (const auto& lp : lps) {
    const int id = lp.token().token_id();
    std::printf("%s %d %s logprob %.4f", label, id, TokenText(id).c_str(), lp.token().logprob());
    for (int k = 0; k < lp.top_size(); ++k) {
      std::printf("%s %s %.4f", k == 0 ? "  top:" : ",", TokenText(lp.top(k).token_id()).c_str(), lp.top(k).logprob());
    }
    std::printf("\n");
  }
  std::fflush(stdout);
}

const char* FinishName(v1::FinishReason r) {
  switch (r) {
    case v1::FINISH_REASON_LENGTH: return "length";
    case v1::FINISH_REASON_EOS: return "eos";
    case v1::FINISH_REASON_STOP: return "stop";
    default: return "unspecified";
  }
}

// What ended a completion that stopped: ' (stop string "...")' or ' (stop token N)'.
std::string StopMatch(const v1::GenerateResponse& r) {
  if (r.has_stop_token_id()) return " (stop token " + std::to_string(r.stop_token_id()) + ")";
  if (r.has_stop_string()) return " (stop string \"" + r.stop_string() + "\")";
  return "";
}

void PrintUsage(const v1::GenerateResponse& r) {
  const auto& u = r.usage();
  std::fprintf(stderr, "\n[finish: %s%s; prompt %d tokens (%d cached), completion %d tokens; routed layers computed %lld, skipped %lld]\n",
               FinishName(r.finish_reason()), StopMatch(r).c_str(), u.prompt_tokens(), u.cached_prompt_tokens(), u.completion_tokens(),
               static_cast<long long>(u.routed_computed()), static_cast<long long>(u.routed_skipped()));
}

// One completion of a request with --n > 1, whole: a header, its text, its
// logprobs and its usage (`last`: the message with its finish reason).
void PrintCompletion(int index, const std::string& text, const std::vector<v1::TokenLogprobs>& logprobs,
                     const v1::GenerateResponse& last) {
  std::cout << (index == 0 ? "" : "\n") << "--- completion " << index << " ---\n" << text << std::flush;
  if (!logprobs.empty()) std::cout << "\n";
  PrintLogprobs("token", logprobs);
  PrintUsage(last);
}

Status Run(int argc, char** argv) {
  Flags f("mod-client", kSummary);
  f.Define("server", "127.0.0.1:50051", "server address host:port");
  f.Define("timeout", "60", "deadline of each RPC, seconds");
  f.Define("tls-ca", "", "CA bundle (PEM) of the server's certificate: connect with TLS");
  f.Define("tls-cert", "", "client certificate (PEM) for mutual TLS (with --tls-key)");
  f.Define("tls-key", "", "private key (PEM) of --tls-cert");
  f.Define("tls-server-name", "", "name to check the server's certificate against (default: the host)");
  f.Define("token-file", "", "file holding the bearer token to send");
  f.Define("prompt", "The jury said ", "prompt text (generate, stream, tokenize)");
  f.Define("add-bos", "false", "tokenize: also print the BOS id the server puts before a prompt", true);
  f.Define("token-ids", "", "detokenize: token ids ID,ID,...");
  f.Define("prompt-token-ids", "", "generate, stream: the prompt as token ids ID,ID,... instead of --prompt (BOS is added)");
  f.Define("max-tokens", "0", "tokens to generate (0: server default; bench: per request, default 64)");
  f.Define("temperature", "0", "sampling temperature (0: greedy)");
  f.Define("top-p", "0", "nucleus mass (0: none)");
  f.Define("top-k", "0", "top-k cut (0: none)");
  f.Define("min-p", "0", "generate, stream: drop tokens less likely than this times the most likely (0: none)");
  f.Define("seed", "0", "sampling seed (unset: the server picks; bench: request i gets seed + i, default 1 + i)");
  f.Define("repetition-penalty", "0", "generate, stream: divides (or multiplies) the logits of tokens seen so far (0: none)");
  f.Define("presence-penalty", "0", "generate, stream: subtracted from the logits of tokens generated so far");
  f.Define("frequency-penalty", "0", "generate, stream: subtracted per time a token was generated so far");
  f.Define("stop", "", "a stop string");
  f.Define("stop-token-ids", "", "generate, stream: token ids ID,ID,... that end the completion");
  f.Define("include-stop", "false", "generate, stream: keep the stop string that ended the completion in its text", true);
  f.Define("truncate-prompt-tokens", "0", "generate, stream: keep only the prompt's last N tokens (unset: none)");
  f.Define("min-tokens", "0", "generate, stream: tokens before EOS or the stop string may end the completion");
  f.Define("ignore-eos", "false", "generate, stream, bench: generate past EOS (until max tokens or the stop string)", true);
  f.Define("logit-bias", "", "generate, stream: ID:BIAS,... added to those token ids' logits (-100 .. 100)");
  f.Define("routes", "false", "stream: show which routed layers each token computed", true);
  f.Define("cache-salt", "", "generate, stream: reuse (and leave) cached prompt prefixes only under this salt");
  f.Define("guided-regex", "", "generate, stream: the completion must be a whole match of this regular expression");
  f.Define("guided-json", "", "generate, stream: the completion must be JSON valid under this JSON Schema (its text)");
  f.Define("guided-choice", "", "generate, stream: the completion must be one of these strings, CHOICE|CHOICE|...");
  f.Define("n", "1", "generate, stream: completions of the prompt (completion i samples with seed + i), each printed whole; bench: per request");
  f.Define("priority", "0", "generate, stream, bench: scheduling priority, lower first (server scheduling_policy: priority)");
  f.Define("logprobs", "-1",
           "generate, stream: also print each token's log-probability and this many alternatives (-1: none)");
  f.Define("prompt-logprobs", "false",
           "generate, stream: also print each prompt token's log-probability (and --logprobs alternatives)", true);
  f.Define("concurrency", "8",
           "bench: requests in flight at most (with --rate, an arrival waits for a free one, and the wait counts in its latency)");
  f.Define("requests", "64", "bench: requests to send");
  f.Define("rate", "0", "bench: Poisson arrival rate, requests/s (0: closed loop)");
  f.Define("prompt-bytes", "64", "bench: prompt length in bytes");
  f.Define("shared-prefix-bytes", "0", "bench: bytes of text every prompt starts with, before its own --prompt-bytes");
  f.Define("json", "false", "bench: print the report as JSON", true);
  MODSERVE_RETURN_IF_ERROR(f.Parse(argc, argv));
  if (f.help_requested()) return Status::Ok();
  if (f.positional().size() != 1) return InvalidArgument("expected one command: generate, stream, info, tokenize, detokenize, health or bench");
  const std::string cmd = f.positional()[0];
  double timeout = 0;
  MODSERVE_RETURN_IF_ERROR(f.Get("timeout", &timeout));
  if (!(timeout > 0) || timeout > 1e9) return InvalidArgument("--timeout must be in (0, 1e9] seconds");

  ConnectionOptions co;
  co.server = f.Str("server");
  co.tls_ca_file = f.Str("tls-ca");
  co.tls_cert_file = f.Str("tls-cert");
  co.tls_key_file = f.Str("tls-key");
  co.tls_server_name = f.Str("tls-server-name");
  co.token_file = f.Str("token-file");
  auto conn = ClientConnection::Open(co);
  if (!conn.ok()) return conn.status();
  const auto& channel = conn->channel();
  if (cmd == "generate" || cmd == "stream") {
    v1::GenerateRequest req;
    MODSERVE_RETURN_IF_ERROR(BuildRequest(f, &req));
    auto stub = v1::Generator::NewStub(channel);
    grpc::ClientContext ctx;
    conn->Prepare(&ctx, timeout);
    if (cmd == "generate") {
      v1::GenerateResponse resp;
      grpc::Status s = stub->Generate(&ctx, req, &resp);
      if (!s.ok()) return RpcError("Generate", s);
      if (resp.completions_size() > 0) {  // --n > 1
        PrintLogprobs("prompt token", {resp.prompt_logprobs().begin(), resp.prompt_logprobs().end()});
        for (const auto& c : resp.completions()) {
          PrintCompletion(c.index(), c.text(), {c.logprobs().begin(), c.logprobs().end()}, c);
        }
        return Status::Ok();
      }
      std::cout << resp.text() << std::flush;
      if (req.return_logprobs() || req.return_prompt_logprobs()) std::cout << "\n";
      PrintLogprobs("prompt token", {resp.prompt_logprobs().begin(), resp.prompt_logprobs().end()});
      PrintLogprobs("token", {resp.logprobs().begin(), resp.logprobs().end()});
      PrintUsage(resp);
      return Status::Ok();
    }
    auto reader = stub->GenerateStream(&ctx, req);
    v1::GenerateResponse msg, last;
    std::vector<v1::TokenLogprobs> logprobs, prompt_logprobs;
    if (req.n() > 1) {  // completions interleave: each is printed whole once the stream ends
      std::vector<std::string> texts(static_cast<size_t>(req.n()));
      std::vector<std::vector<v1::TokenLogprobs>> lps(texts.size());
      std::vector<v1::GenerateResponse> lasts(texts.size());
      while (reader->Read(&msg)) {
        const auto i = static_cast<size_t>(msg.index());
        if (i >= texts.size()) return InvalidArgument("the server sent a message of completion " + std::to_string(i));
        texts[i] += msg.text();
        for (int t = 0; f.Bool("routes") && t < msg.token_ids_size() && t < msg.routes_size(); ++t) {  // as they come
          std::cout << "completion " << i << " token " << msg.token_ids(t) << " layers [" << RouteLayers(msg.routes(t)) << "]\n";
        }
        lps[i].insert(lps[i].end(), msg.logprobs().begin(), msg.logprobs().end());
        prompt_logprobs.insert(prompt_logprobs.end(), msg.prompt_logprobs().begin(), msg.prompt_logprobs().end());
        if (msg.has_usage()) lasts[i] = msg;
      }
      grpc::Status s = reader->Finish();
      if (!s.ok()) return RpcError("GenerateStream", s);
      PrintLogprobs("prompt token", prompt_logprobs);
      for (size_t i = 0; i < texts.size(); ++i) PrintCompletion(static_cast<int>(i), texts[i], lps[i], lasts[i]);
      return Status::Ok();
    }
    while (reader->Read(&msg)) {
      logprobs.insert(logprobs.end(), msg.logprobs().begin(), msg.logprobs().end());
      prompt_logprobs.insert(prompt_logprobs.end(), msg.prompt_logprobs().begin(), msg.prompt_logprobs().end());
      if (f.Bool("routes")) {
        for (int i = 0; i < msg.token_ids_size(); ++i) {
          std::cout << "token " << msg.token_ids(i) << " layers [" << RouteLayers(msg.routes(i)) << "]\n";
        }
        if (!msg.text().empty()) std::cout << "text \"" << msg.text() << "\"\n";
      } else {
        std::cout << msg.text() << std::flush;
      }
      last = msg;
    }
    grpc::Status s = reader->Finish();
    if (!s.ok()) return RpcError("GenerateStream", s);
    if (req.return_logprobs() || req.return_prompt_logprobs()) std::cout << "\n";
    PrintLogprobs("prompt token", prompt_logprobs);
    PrintLogprobs("token", logprobs);
    PrintUsage(last);
    return Status::Ok();
  }
  if (cmd == "info") {
    v1::ModelInfo info;
    MODSERVE_RETURN_IF_ERROR(
        CallUnary(*conn, timeout, "GetModelInfo", &v1::Generator::Stub::GetModelInfo, v1::GetModelInfoRequest(), &info));
    std::cout << info.DebugString();
    return Status::Ok();
  }
  if (cmd == "tokenize") {
    v1::TokenizeRequest req;
    req.set_text(f.Str("prompt"));
    req.set_add_bos(f.Bool("add-bos"));
    v1::TokenizeResponse resp;
    MODSERVE_RETURN_IF_ERROR(CallUnary(*conn, timeout, "Tokenize", &v1::Generator::Stub::Tokenize, req, &resp));
    std::string ids;
    for (int32_t id : resp.token_ids()) ids += (ids.empty() ? "" : ",") + std::to_string(id);
    std::cout << ids << "\nprompt_tokens " << resp.prompt_tokens() << "\n";
    return Status::Ok();
  }
  if (cmd == "detokenize") {
    v1::DetokenizeRequest req;
    MODSERVE_RETURN_IF_ERROR(ParseIdList("token-ids", f.Str("token-ids"), req.mutable_token_ids()));
    v1::DetokenizeResponse resp;
    MODSERVE_RETURN_IF_ERROR(CallUnary(*conn, timeout, "Detokenize", &v1::Generator::Stub::Detokenize, req, &resp));
    std::cout << resp.text() << std::flush;
    return Status::Ok();
  }
  if (cmd == "health") {
    auto stub = grpc::health::v1::Health::NewStub(channel);
    grpc::ClientContext ctx;
    conn->Prepare(&ctx, timeout);
    grpc::health::v1::HealthCheckResponse resp;
    grpc::Status s = stub->Check(&ctx, grpc::health::v1::HealthCheckRequest(), &resp);
    if (!s.ok()) return RpcError("Health.Check", s);
    std::cout << grpc::health::v1::HealthCheckResponse::ServingStatus_Name(resp.status()) << "\n";
    if (resp.status() != grpc::health::v1::HealthCheckResponse::SERVING) {
      return Status::Error(StatusCode::kUnavailable, "server is not serving");
    }
    return Status::Ok();
  }
  if (cmd == "bench") {
    // Flags of a single request that bench would silently not send.
    for (const char* flag : {"prompt", "prompt-token-ids", "top-p", "top-k", "min-p", "repetition-penalty", "presence-penalty",
                             "frequency-penalty", "stop", "stop-token-ids", "include-stop", "truncate-prompt-tokens",
                             "min-tokens", "logit-bias", "cache-salt", "guided-regex", "guided-json", "guided-choice",
                             "routes", "logprobs", "prompt-logprobs"}) {
      if (f.Has(flag)) {
        return InvalidArgument(std::string("--") + flag +
                               " is not used by bench (its requests: --prompt-bytes, --shared-prefix-bytes, --max-tokens, "
                               "--temperature, --seed, --ignore-eos, --priority, --n)");
      }
    }
    LoadOptions o;
    o.timeout_seconds = timeout;
    MODSERVE_RETURN_IF_ERROR(f.Get("concurrency", &o.concurrency));
    MODSERVE_RETURN_IF_ERROR(f.Get("requests", &o.requests));
    MODSERVE_RETURN_IF_ERROR(GetN(f, &o.n));
    MODSERVE_RETURN_IF_ERROR(f.Get("rate", &o.rate));
    MODSERVE_RETURN_IF_ERROR(f.Get("prompt-bytes", &o.prompt_bytes));
    MODSERVE_RETURN_IF_ERROR(f.Get("shared-prefix-bytes", &o.shared_prefix_bytes));
    MODSERVE_RETURN_IF_ERROR(f.Get("temperature", &o.temperature));
    if (f.Has("seed")) {  // request i samples with seed + i
      int64_t seed = 0;
      MODSERVE_RETURN_IF_ERROR(f.Get("seed", &seed));
      o.seed = static_cast<uint64_t>(seed);
    }
    o.ignore_eos = f.Bool("ignore-eos");
    MODSERVE_RETURN_IF_ERROR(GetPriority(f, &o.priority));
    int32_t max_tokens = 0;
    MODSERVE_RETURN_IF_ERROR(GetInt32(f, "max-tokens", &max_tokens));
    if (max_tokens < 0) return InvalidArgument("--max-tokens must be >= 0 (0: 64 per request), got " + std::to_string(max_tokens));
    if (max_tokens > 0) o.max_tokens = max_tokens;
    if (o.concurrency < 1 || o.concurrency > 4096) return InvalidArgument("--concurrency must be in [1, 4096]");
    if (o.requests < 1) return InvalidArgument("--requests must be >= 1");
    if (o.rate < 0) return InvalidArgument("--rate must be >= 0");
    if (o.prompt_bytes < 1) return InvalidArgument("--prompt-bytes must be >= 1");
    if (o.shared_prefix_bytes < 0) return InvalidArgument("--shared-prefix-bytes must be >= 0");
    LoadReport rep = RunLoad(*conn, o);
    std::cout << (f.Bool("json") ? rep.ToJson() + "\n" : rep.ToText());
    return Status::Ok();
  }
  return InvalidArgument("unknown command \"" + cmd + "\" (generate, stream, info, tokenize, detokenize, health, bench)");
}

}  // namespace
}  // namespace modserve

int main(int argc, char** argv) { return modserve::RunToolMain("mod-client", argc, argv, modserve::Run); }
