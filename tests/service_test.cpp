// Tests of the service's torch-free parts: the YAML config and its flag
// overrides, request validation (every bad field named, logprobs' too), and the /metrics
// HTTP endpoint (the request log's are in request_log_test.cpp).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <fcntl.h>
#include <functional>
#include <sys/stat.h>
#include <unistd.h>
#include <nlohmann/json.hpp>
#include <limits>
#include <thread>

#include "engine/tokenizer.h"
#include "metrics_scrape.h"
#include "server/metrics.h"
#include "server/metrics_http_server.h"
#include "modserve/v1/request_wire.pb.h"
#include "server/guide_cache.h"
#include "server/request_decoding.h"
#include "server/tokenization.h"
#include "server/request_validation.h"
#include "server/server_config.h"

namespace modserve {
namespace {

// --- config -----------------------------------------------------------------

StatusOr<ServerConfig> LoadArgs(std::vector<std::string> args) {
  args.insert(args.begin(), "mod-server");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  bool help = false;
  return LoadServerConfig(static_cast<int>(argv.size()), argv.data(), &help);
}

std::string WriteTemp(const std::string& name, const std::string& text) {
  const std::string path = ::testing::TempDir() + "/" + name;
  std::ofstream(path) << text;
  return path;
}

TEST(ServerConfig, DefaultsServeTheShippedModelOnLoopback) {
  auto c = LoadArgs({});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->model, "models/mod-small");
  EXPECT_EQ(c->listen, "127.0.0.1:50051");
  EXPECT_EQ(c->metrics_listen, "127.0.0.1:9464");
}

TEST(ServerConfig, YamlThenFlagsOverride) {
  const std::string path =
      WriteTemp("good.yaml", "max_queue: 7\nlisten: 127.0.0.1:6000\nmax_tokens: 99\ndrain_grace_seconds: 2.5\nprefix_caching: false\n");
  auto c = LoadArgs({"--config", path, "--max-queue", "9"});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_FALSE(c->prefix_caching);
  EXPECT_TRUE(ServerConfig().prefix_caching) << "on by default";
  EXPECT_EQ(c->max_queue, 9);
  EXPECT_EQ(c->listen, "127.0.0.1:6000");
  EXPECT_EQ(c->limits.max_tokens, 99);
  EXPECT_DOUBLE_EQ(c->drain_grace_seconds, 2.5);
  // A boolean key's flag may be bare, or take true/false after it.
  auto bare = LoadArgs({"--config", path, "--prefix-caching"});
  ASSERT_TRUE(bare.ok()) << bare.status().ToString();
  EXPECT_TRUE(bare->prefix_caching);
  auto spaced = LoadArgs({"--prefix-caching", "false", "--max-queue", "3"});
  ASSERT_TRUE(spaced.ok()) << spaced.status().ToString();
  EXPECT_FALSE(spaced->prefix_caching);
  EXPECT_EQ(spaced->max_queue, 3);
}

TEST(ServerConfig, IoPriorityAutoIsIdleOnlyForACpuEngineOnOneTorchThreadAndTwoCpus) {
  ServerConfig c;
  c.torch_threads = 1;
  EXPECT_TRUE(c.IdleIoPriority(2));
  EXPECT_TRUE(c.IdleIoPriority(16));
  EXPECT_FALSE(c.IdleIoPriority(1));  // the step thread would starve the rest
  c.torch_threads = 2;                // OpenMP's workers, started at normal priority, would spin them out
  EXPECT_FALSE(c.IdleIoPriority(2));
  c.torch_threads = 1;
  c.device = "cuda";
  EXPECT_FALSE(c.IdleIoPriority(2));
  c.io_priority = "idle";
  EXPECT_TRUE(c.IdleIoPriority(1));
  c.io_priority = "normal";
  c.device = "cpu";
  EXPECT_FALSE(c.IdleIoPriority(2));
  ServerConfig d;  // torch_threads 0: hardware threads - 1
  EXPECT_EQ(d.EngineTorchThreads(), std::max(1, static_cast<int>(std::thread::hardware_concurrency()) - 1));
}

TEST(ServerConfig, ErrorsNameTheKeyFlagOrFile) {
  struct Case {
    std::string yaml;
    std::vector<std::string> flags;
    std::string expect;
  } cases[] = {
      {"max_queeu: 3\n", {}, "unknown key \"max_queeu\""},
      {"max_queue: lots\n", {}, "key \"max_queue\""},
      {"max_queue: [1, 2]\n", {}, "key \"max_queue\" must be a single value"},
      {"max_queue: 0\n", {}, "max_queue must be in [1"},
      {"max_n: 0\n", {}, "max_n must be in [1, 128]"},
      {"listen: nowhere\n", {}, "listen must be host:port"},
      {"dtype: float8\n", {}, "dtype must be float32 or bfloat16"},
      {"kv_dtype: int8\n", {}, "kv_dtype must be auto, float32 or bfloat16, got \"int8\""},
      {"io_priority: low\n", {}, "io_priority must be auto, idle or normal, got \"low\""},
      {"scheduling_policy: lifo\n", {}, "scheduling_policy must be fcfs or priority, got \"lifo\""},
      {"", {"--scheduling-policy", "Priority"}, "scheduling_policy must be fcfs or priority, got \"Priority\""},
      {"prefix_caching: maybe\n", {}, "key \"prefix_caching\": expected true or false, got \"maybe\""},
      {"", {"--prefix-caching=1"}, "--prefix-caching takes true or false, not \"1\""},
      {"", {"--prefix-caching", "1"}, "--prefix-caching takes true or false (or nothing, for true), not \"1\""},
      {"", {"--max-queue", "3", "extra"}, "unexpected argument \"extra\""},
      // A message naming two keys is blamed on the one a flag set.
      {"", {"--tls-key-file", "/etc/hostname"}, "--tls-key-file: tls_cert_file and tls_key_file must be set together"},
      // A flag's bad value is the flag's, though a file was given too.
      {"max_queue: 8\n", {"--max-queue", "0"}, "--max-queue: max_queue must be in [1"},
      {"max_queue: 8\nmax_running: 4\nmax_queue: 9\n", {}, "duplicate key \"max_queue\""},
      // A default made invalid by another key is the config's as a whole.
      {"max_stop: 2\n", {"--max-tokens", "10"}, "config: default_max_tokens must be in [1, 10]"},
      {"default_max_tokens: 5000\n", {}, "default_max_tokens must be in [1, 1024]"},
      {"", {"--guide-cache-mb", "-1"}, "guide_cache_mb must be in [0, 1048576], got -1"},
      {"{{{\n", {}, "not valid YAML"},
      {"- a\n- b\n", {}, "expected a mapping"},
      {"", {"--max-running", "x"}, "--max-running: expected an integer"},
      {"", {"--no-such-flag", "1"}, "--no-such-flag"},
      {"", {"--metrics-listen", "127.0.0.1:99999"}, "metrics_listen has a bad port"},
  };
  for (const auto& c : cases) {
    std::vector<std::string> args = c.flags;
    std::string path;
    if (!c.yaml.empty()) {
      path = WriteTemp("bad.yaml", c.yaml);
      args.insert(args.begin(), {"--config", path});
    }
    auto r = LoadArgs(args);
    ASSERT_FALSE(r.ok()) << c.yaml;
    EXPECT_NE(r.status().message().find(c.expect), std::string::npos) << r.status().message();
    const bool files_fault = c.expect.rfind("--", 0) != 0 && c.expect.rfind("config:", 0) != 0 && c.expect.rfind("unexpected", 0) != 0;
    if (!c.yaml.empty()) {
      EXPECT_EQ(r.status().message().find(path) != std::string::npos, files_fault)
          << (files_fault ? "names the file: " : "blames the file for a flag's value: ") << r.status().message();
    }
  }
  auto missing = LoadArgs({"--config", "/nonexistent/modserve.yaml"});
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("/nonexistent/modserve.yaml"), std::string::npos);
}

// --- request validation -------------------------------------------------------

ValidationContext Ctx() {
  ValidationContext c;
  c.max_context = 256;
  c.vocab_size = 258;
  return c;
}

TEST(RequestValidation, AcceptsAGoodRequestAndFillsDefaults) {
  v1::GenerateRequest r;
  r.set_prompt("Hello, w\xC3\xB6rld");
  r.add_stop("\n");
  r.set_return_logprobs(true);
  r.set_top_logprobs(20);  // the largest allowed
  r.set_presence_penalty(-2);
  r.set_frequency_penalty(2);
  auto g = ValidateGenerateRequest(r, Ctx(), 42, "req-1");
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  EXPECT_TRUE(g->return_logprobs);
  EXPECT_EQ(g->top_logprobs, 20);
  EXPECT_DOUBLE_EQ(g->sampling.repetition_penalty, 1.0) << "0 (unset) means no penalty";
  EXPECT_DOUBLE_EQ(g->sampling.presence_penalty, -2.0);
  EXPECT_DOUBLE_EQ(g->sampling.frequency_penalty, 2.0);
  EXPECT_EQ(g->prompt.size(), 1u + r.prompt().size());
  EXPECT_EQ(g->prompt[0], 256);
  EXPECT_EQ(g->stop.max_tokens, 64);
  EXPECT_EQ(g->sampling.seed, 42u);
  EXPECT_DOUBLE_EQ(g->sampling.top_p, 1.0);
  EXPECT_EQ(g->request_id, "req-1");
  EXPECT_EQ(g->sampling.min_tokens, 0);
  EXPECT_EQ(g->sampling.eos_id, 257) << "min_tokens holds back EOS";
  EXPECT_EQ(g->stop.eos_id, 257);
  EXPECT_TRUE(g->sampling.logit_bias.empty());
  EXPECT_EQ(g->priority, 0);
}

TEST(RequestValidation, PriorityIsTakenUnderThePriorityPolicy) {
  v1::GenerateRequest r;
  r.set_prompt("hi");
  ValidationContext ctx = Ctx();
  ctx.priority_scheduling = true;
  for (int32_t p : {std::numeric_limits<int32_t>::min(), -1, 0, 7, std::numeric_limits<int32_t>::max()}) {
    r.set_priority(p);
    auto g = ValidateGenerateRequest(r, ctx, 0, "x");
    ASSERT_TRUE(g.ok()) << g.status().ToString();
    EXPECT_EQ(g->priority, p);
  }
  EXPECT_EQ(ServerConfig().scheduling_policy, "fcfs") << "the default, as vLLM's";
  auto c = LoadArgs({"--scheduling-policy", "priority"});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->scheduling_policy, "priority");
}

TEST(RequestValidation, MinTokensIgnoreEosAndLogitBiasReachTheSamplerAndTheStop) {
  v1::GenerateRequest r;
  r.set_prompt("hi");
  r.set_min_tokens(64);  // = the default max_tokens
  r.set_ignore_eos(true);
  (*r.mutable_logit_bias())[257] = -100;
  (*r.mutable_logit_bias())[0] = 100;
  (*r.mutable_logit_bias())[65] = 2.5f;
  auto g = ValidateGenerateRequest(r, Ctx(), 0, "x");
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  EXPECT_EQ(g->sampling.min_tokens, 64);
  EXPECT_EQ(g->stop.min_tokens, 64);
  EXPECT_EQ(g->stop.eos_id, -1) << "EOS does not end the request";
  EXPECT_EQ(g->sampling.eos_id, -1) << "nothing to hold back";
  const std::vector<std::pair<int64_t, float>> sorted = {{0, 100.f}, {65, 2.5f}, {257, -100.f}};
  EXPECT_EQ(g->sampling.logit_bias, sorted);
}

TEST(RequestValidation, PromptTokenIdsMinPAndStopTokenIdsReachTheRequest) {
  v1::GenerateRequest text;
  text.set_prompt("h\xC3\xA9");
  v1::GenerateRequest ids;
  for (int id : {int{'h'}, 0xC3, 0xA9}) ids.add_prompt_token_ids(id);
  auto a = ValidateGenerateRequest(text, Ctx(), 0, "x");
  auto b = ValidateGenerateRequest(ids, Ctx(), 0, "x");
  ASSERT_TRUE(a.ok() && b.ok()) << b.status().ToString();
  EXPECT_EQ(a->prompt, b->prompt) << "a text prompt's bytes as ids give the same tokens, BOS first";
  EXPECT_EQ(b->prompt, (std::vector<int64_t>{256, 'h', 0xC3, 0xA9}));
  ids.clear_prompt_token_ids();
  for (int id : {0xFF, 257, 0}) ids.add_prompt_token_ids(id);  // not UTF-8, an EOS mid-prompt: fine as ids
  ids.set_min_p(0.25f);
  ids.add_stop_token_ids(10);
  ids.add_stop_token_ids(257);
  ids.set_max_tokens(253);  // 4 prompt tokens + 253 would not fit in 256
  EXPECT_NE(ValidateGenerateRequest(ids, Ctx(), 0, "x").status().message().find(
                "plus the prompt's 4 tokens exceeds the context length"),
            std::string::npos);
  ids.set_max_tokens(252);
  auto c = ValidateGenerateRequest(ids, Ctx(), 0, "x");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->prompt, (std::vector<int64_t>{256, 0xFF, 257, 0}));
  EXPECT_DOUBLE_EQ(c->sampling.min_p, 0.25);
  EXPECT_EQ(c->stop.stop_token_ids, (std::vector<int64_t>{10, 257}));
  EXPECT_EQ(c->sampling.stop_token_ids, (std::vector<int64_t>{10, 257})) << "min_tokens holds them back";
  EXPECT_DOUBLE_EQ(a->sampling.min_p, 0.0) << "unset: no cut";
  EXPECT_TRUE(a->stop.stop_token_ids.empty());
}

// The largest request validation accepts fits in the bound max_message_bytes is checked against.
TEST(RequestValidation, TheLargestValidRequestFitsItsBound) {
  for (int64_t vocab : {int64_t{258}, int64_t{50257}}) {
    SCOPED_TRACE(vocab);
    ValidationContext ctx = Ctx();
    ctx.vocab_size = vocab;
    ctx.max_context = 1 << 20;  // so that a prompt of max_prompt_bytes ids is valid
    ctx.priority_scheduling = true;
    const RequestLimits& lim = ctx.limits;
    v1::GenerateRequest r;
    for (int64_t i = 0; i < lim.max_prompt_bytes; ++i) r.add_prompt_token_ids(static_cast<int32_t>(vocab - 1));
    for (int64_t i = 0; i < lim.max_stop; ++i) r.add_stop(std::string(static_cast<size_t>(lim.max_stop_bytes), 's'));
    for (int64_t id = 0; id < vocab; ++id) {
      r.add_stop_token_ids(static_cast<int32_t>(id));
      (*r.mutable_logit_bias())[static_cast<int32_t>(id)] = -100.0f;
    }
    r.set_request_id(std::string(128, 'r'));
    r.set_cache_salt(std::string(kMaxCacheSaltBytes, 'c'));
    r.set_max_tokens(static_cast<int32_t>(lim.max_tokens));
    r.set_min_tokens(static_cast<int32_t>(lim.max_tokens));
    r.set_temperature(2);
    r.set_top_p(0.5f);
    r.set_top_k(static_cast<int32_t>(vocab));
    r.set_min_p(0.5f);
    r.set_seed(~uint64_t{0});
    r.set_return_routes(true);
    r.set_return_logprobs(true);
    r.set_return_prompt_logprobs(true);
    r.set_top_logprobs(static_cast<int32_t>(MaxTopLogprobs(vocab)));
    r.set_repetition_penalty(2);
    r.set_presence_penalty(-2);
    r.set_frequency_penalty(-2);
    r.set_ignore_eos(true);
    r.set_priority(INT32_MIN);
    r.set_n(static_cast<int32_t>(lim.max_n));
    r.set_ignore_eos(false);  // a guide excludes it
    const std::string schema_start = R"({"type": "string", "description": ")", schema_end = "\"}";  // the largest guide
    r.set_guided_json(schema_start +
                      std::string(static_cast<size_t>(kMaxGuideJsonBytes) - schema_start.size() - schema_end.size(), 'd') +
                      schema_end);
    auto g = ValidateGenerateRequest(r, ctx, 0, "x");
    ASSERT_TRUE(g.ok()) << g.status().ToString();
    const int64_t bound = LargestValidRequestBytes(lim, vocab);
    EXPECT_LE(static_cast<int64_t>(r.ByteSizeLong()), bound);
    EXPECT_GE(static_cast<int64_t>(r.ByteSizeLong()), bound * 9 / 10) << "a bound this loose would refuse servers for nothing";
  }
  // The shipped model's vocabulary under the default limits fits the default max_message_bytes.
  EXPECT_LE(LargestValidRequestBytes(RequestLimits{}, 258), ServerConfig{}.max_message_bytes);
}

TEST(RequestValidation, AGuideIsCompiledIntoTheSamplingParams) {
  v1::GenerateRequest r;
  r.set_prompt("hello");
  auto plain = ValidateGenerateRequest(r, Ctx(), 0, "x");
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(plain->sampling.guide, nullptr);
  r.set_guided_regex("[0-9]{3}");
  auto g = ValidateGenerateRequest(r, Ctx(), 0, "x");
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  ASSERT_NE(g->sampling.guide, nullptr);
  EXPECT_EQ(g->sampling.guide_eos_id, Ctx().eos_id);
  const TokenGuide& guide = *g->sampling.guide;
  EXPECT_TRUE(guide.Accepting(guide.Walk("123")));
  EXPECT_LT(guide.Walk("12a"), 0);
  r.clear_guided_regex();
  r.set_guided_json(R"({"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]})");
  g = ValidateGenerateRequest(r, Ctx(), 0, "x");
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  EXPECT_TRUE(g->sampling.guide->Accepting(g->sampling.guide->Walk(R"({"ok": true})")));
  r.clear_guided_json();
  r.add_guided_choice("positive");
  r.add_guided_choice("negative");
  g = ValidateGenerateRequest(r, Ctx(), 0, "x");
  ASSERT_TRUE(g.ok());
  EXPECT_TRUE(g->sampling.guide->Accepting(g->sampling.guide->Walk("negative")));
  EXPECT_FALSE(g->sampling.guide->Accepting(g->sampling.guide->Walk("neg")));
}

TEST(RequestValidation, RequestsWithTheSameGuideShareItThroughTheCache) {
  ValidationContext ctx = Ctx();
  ctx.guide_cache = std::make_shared<GuideCache>(1 << 20);
  v1::GenerateRequest r;
  r.set_prompt("hello");
  r.set_guided_regex("[0-9]{3}");
  auto a = ValidateGenerateRequest(r, ctx, 0, "x");
  auto b = ValidateGenerateRequest(r, ctx, 1, "y");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->sampling.guide.get(), b->sampling.guide.get());
  // Same text, different kinds: not the same entry (each names its own field).
  r.clear_guided_regex();
  r.add_guided_choice("[0-9]{3}");
  auto c = ValidateGenerateRequest(r, ctx, 0, "x");
  ASSERT_TRUE(c.ok());
  EXPECT_NE(c->sampling.guide.get(), a->sampling.guide.get());
  EXPECT_TRUE(c->sampling.guide->Accepting(c->sampling.guide->Walk("[0-9]{3}")));
  // Choices are keyed with their boundaries: {"ab", "c"} is not {"a", "bc"}.
  r.clear_guided_choice();
  for (const char* x : {"ab", "c"}) r.add_guided_choice(x);
  auto d = ValidateGenerateRequest(r, ctx, 0, "x");
  r.clear_guided_choice();
  for (const char* x : {"a", "bc"}) r.add_guided_choice(x);
  auto e = ValidateGenerateRequest(r, ctx, 0, "x");
  ASSERT_TRUE(d.ok() && e.ok());
  EXPECT_TRUE(e->sampling.guide->Accepting(e->sampling.guide->Walk("bc")));
  EXPECT_LT(e->sampling.guide->Walk("ab"), 0) << "\"ab\" does not even begin a choice of {\"a\", \"bc\"}";
  // A refused schema is refused again from the cache, with the same message.
  r.clear_guided_choice();
  r.set_guided_json(R"({"type": "string", "pattern": "a+"})");
  auto f = ValidateGenerateRequest(r, ctx, 0, "x");
  auto f2 = ValidateGenerateRequest(r, ctx, 0, "x");
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f2.status().message(), f.status().message());
  EXPECT_NE(f.status().message().find("guided_json"), std::string::npos) << f.status().message();
  EXPECT_EQ(ctx.guide_cache->stats().hits, 2);
  EXPECT_EQ(ctx.guide_cache->stats().misses, 5);
}

TEST(RequestValidation, TruncatePromptTokensKeepsTheLastOnesAfterBos) {
  v1::GenerateRequest r;
  r.set_prompt(std::string(300, 'a') + "The end");  // longer than the context: refused untruncated
  EXPECT_FALSE(ValidateGenerateRequest(r, Ctx(), 0, "x").ok());
  r.set_truncate_prompt_tokens(7);
  auto g = ValidateGenerateRequest(r, Ctx(), 0, "x");
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  const std::vector<int64_t> want = ByteTokenizer(256, 257).Encode("The end", /*add_bos=*/true);
  EXPECT_EQ(g->prompt, want);
  EXPECT_EQ(g->stop.max_tokens, 64) << "the default, with room left by the kept tokens";
  r.set_truncate_prompt_tokens(200);  // shorter than the limit: the whole prompt
  r.set_prompt("short");
  g = ValidateGenerateRequest(r, Ctx(), 0, "x");
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(g->prompt, ByteTokenizer(256, 257).Encode("short", true));
  r.clear_prompt();  // ids are truncated alike
  for (int id : {1, 2, 3, 4, 5}) r.add_prompt_token_ids(id);
  r.set_truncate_prompt_tokens(2);
  g = ValidateGenerateRequest(r, Ctx(), 0, "x");
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(g->prompt, (std::vector<int64_t>{256, 4, 5}));
}

TEST(RequestValidation, IncludeStopStrInOutputReachesTheStopCriteria) {
  v1::GenerateRequest r;
  r.set_prompt("hello");
  r.add_stop("\n");
  auto g = ValidateGenerateRequest(r, Ctx(), 0, "x");
  ASSERT_TRUE(g.ok());
  EXPECT_FALSE(g->stop.include_stop);
  r.set_include_stop_str_in_output(true);
  g = ValidateGenerateRequest(r, Ctx(), 0, "x");
  ASSERT_TRUE(g.ok());
  EXPECT_TRUE(g->stop.include_stop);
}

TEST(RequestValidation, DefaultMaxTokensShrinksToTheRoomLeft) {
  v1::GenerateRequest r;
  r.set_prompt(std::string(250, 'a'));  // 251 tokens of 256
  auto g = ValidateGenerateRequest(r, Ctx(), 0, "x");
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  EXPECT_EQ(g->stop.max_tokens, 5);
}

TEST(RequestValidation, EveryBadFieldIsNamed) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  struct Case {
    std::function<void(v1::GenerateRequest*)> edit;
    std::string expect;
  } cases[] = {
      {[](auto* r) { r->set_prompt(""); }, "prompt must not be empty (or send prompt_token_ids)"},
      {[](auto* r) { r->add_prompt_token_ids(65); }, "prompt and prompt_token_ids are both set"},
      {[](auto* r) { r->clear_prompt(); r->add_prompt_token_ids(65); r->add_prompt_token_ids(258); },
       "prompt_token_ids[1] is 258; ids must be in [0, 257]"},
      {[](auto* r) { r->clear_prompt(); r->add_prompt_token_ids(-1); }, "prompt_token_ids[0] is -1; ids must be in [0, 257]"},
      {[](auto* r) { r->clear_prompt(); for (int i = 0; i < 8193; ++i) r->add_prompt_token_ids(65); },
       "prompt_token_ids is 8193 ids; the limit is max_prompt_bytes = 8192"},
      {[](auto* r) { r->clear_prompt(); for (int i = 0; i < 255; ++i) r->add_prompt_token_ids(65); },
       "prompt_token_ids is 256 tokens (255 ids + BOS) but the model's context length is 256 tokens; a prompt may have at most 254 ids"},
      {[](auto* r) { r->set_temperature(1); r->set_min_p(1.5f); }, "min_p must be in [0, 1] (0: no cut), got 1.5"},
      {[](auto* r) { r->set_min_p(-0.25f); }, "min_p must be in [0, 1] (0: no cut), got -0.25"},
      {[nan](auto* r) { r->set_min_p(nan); }, "min_p must be in [0, 1] (0: no cut), got nan"},
      {[](auto* r) { r->add_stop_token_ids(10); r->add_stop_token_ids(300); }, "stop_token_ids[1] is 300; ids must be in [0, 257]"},
      {[](auto* r) { r->add_stop_token_ids(-5); }, "stop_token_ids[0] is -5"},
      {[](auto* r) { for (int i = 0; i < 259; ++i) r->add_stop_token_ids(i % 258); },
       "stop_token_ids has 259 entries; at most the vocabulary size 258 are allowed"},
      {[](auto* r) { r->set_prompt(std::string(9000, 'a')); }, "max_prompt_bytes"},
      {[](auto* r) { r->set_prompt(std::string(255, 'a')); }, "context length is 256"},
      {[](auto* r) { r->set_prompt(std::string(255, 'a')); }, "(or set truncate_prompt_tokens to keep its last ones)"},
      {[](auto* r) { r->set_truncate_prompt_tokens(0); },
       "truncate_prompt_tokens must be in [1, 254] (the context length 256 less BOS and one generated token), got 0"},
      {[](auto* r) { r->set_truncate_prompt_tokens(255); }, "truncate_prompt_tokens must be in [1, 254]"},
      {[](auto* r) { r->set_prompt(std::string(300, 'a')); r->set_truncate_prompt_tokens(200); r->set_max_tokens(100); },
       "max_tokens 100 plus the prompt's 201 tokens exceeds the context length 256"},
      {[](auto* r) { r->set_prompt("ab\xC3"); }, "prompt is not valid UTF-8"},
      {[](auto* r) { r->set_prompt("ab\xFF"); }, "prompt is not valid UTF-8"},
      {[](auto* r) { r->set_max_tokens(-1); }, "max_tokens must be in [0, 1024]"},
      {[](auto* r) { r->set_max_tokens(5000); }, "max_tokens must be in [0, 1024]"},
      {[](auto* r) { r->set_max_tokens(300); }, "exceeds the context length 256"},
      {[](auto* r) { r->set_temperature(-0.5f); }, "temperature must be in [0, 2]"},
      {[](auto* r) { r->set_temperature(2.5f); }, "temperature must be in [0, 2]"},
      {[nan](auto* r) { r->set_temperature(nan); }, "temperature must be in [0, 2]"},
      {[](auto* r) { r->set_top_p(1.5f); }, "top_p must be in (0, 1]"},
      {[](auto* r) { r->set_top_p(-0.1f); }, "top_p must be in (0, 1]"},
      {[](auto* r) { r->set_top_k(-1); }, "top_k must be in [0, 258]"},
      {[](auto* r) { r->set_top_k(1000); }, "top_k must be in [0, 258]"},
      {[](auto* r) { for (int i = 0; i < 9; ++i) r->add_stop("s"); }, "at most max_stop = 8"},
      {[](auto* r) { r->add_stop(""); }, "stop[0] must not be empty"},
      {[](auto* r) { r->add_stop("ok"); r->add_stop(std::string(65, 's')); }, "stop[1] is 65 bytes"},
      {[](auto* r) { r->add_stop("\xC3"); }, "stop[0] is not valid UTF-8"},
      {[](auto* r) { r->set_request_id(std::string(129, 'r')); }, "request_id must be 1 to 128"},
      {[](auto* r) { r->set_request_id("has space"); }, "request_id must be printable ASCII"},
      {[](auto* r) { r->set_return_logprobs(true); r->set_top_logprobs(21); }, "top_logprobs must be in [0, 20], got 21"},
      {[](auto* r) { r->set_return_logprobs(true); r->set_top_logprobs(-1); }, "top_logprobs must be in [0, 20], got -1"},
      {[](auto* r) { r->set_top_logprobs(3); }, "top_logprobs is 3 but return_logprobs and return_prompt_logprobs are false"},
      {[](auto* r) { r->set_repetition_penalty(-1); }, "repetition_penalty must be in [0.01, 10], or 0"},
      {[](auto* r) { r->set_repetition_penalty(11); }, "repetition_penalty must be in [0.01, 10], or 0"},
      {[](auto* r) { r->set_repetition_penalty(1e-30f); }, "repetition_penalty must be in [0.01, 10], or 0"},
      {[nan](auto* r) { r->set_presence_penalty(nan); }, "presence_penalty must be in [-2, 2], got nan"},
      {[](auto* r) { r->set_presence_penalty(-2.5f); }, "presence_penalty must be in [-2, 2], got -2.5"},
      {[](auto* r) { r->set_frequency_penalty(3); }, "frequency_penalty must be in [-2, 2], got 3"},
      {[](auto* r) { r->set_repetition_penalty(1e-10f); }, "got 1e-10"},  // not rounded to 0
      {[](auto* r) { r->set_temperature(2.0000002f); }, "got 2.0000002"},  // not rounded to 2
      {[](auto* r) { r->set_min_tokens(-1); }, "min_tokens must be in [0, max_tokens = 64 (the default for this prompt)], got -1"},
      {[](auto* r) { r->set_max_tokens(10); r->set_min_tokens(11); }, "min_tokens must be in [0, max_tokens = 10], got 11"},
      {[](auto* r) { (*r->mutable_logit_bias())[258] = 1; }, "logit_bias has token id 258; ids must be in [0, 257]"},
      {[](auto* r) { (*r->mutable_logit_bias())[5] = 1; (*r->mutable_logit_bias())[-3] = 1; }, "logit_bias has token id -3"},
      {[](auto* r) { (*r->mutable_logit_bias())[65] = 100.5f; }, "logit_bias[65] must be in [-100, 100], got 100.5"},
      {[nan](auto* r) { (*r->mutable_logit_bias())[9] = 0; (*r->mutable_logit_bias())[7] = nan; }, "logit_bias[7] must be in [-100, 100], got nan"},
      {[](auto* r) { r->set_cache_salt(std::string(257, 's')); }, "cache_salt is 257 bytes; the limit is 256"},
      {[](auto* r) { r->set_priority(-3); }, "priority is -3 but the server runs scheduling_policy: fcfs, where it must be 0"},
      {[](auto* r) { r->set_n(-1); }, "n must be in [0, 8] (0: one completion), got -1"},
      {[](auto* r) { r->set_n(9); }, "n must be in [0, 8] (0: one completion), got 9"},
      {[](auto* r) { r->set_guided_regex("a("); }, "guided_regex: unclosed ( at offset 1"},
      {[](auto* r) { r->set_guided_regex("a"); r->add_guided_choice("b"); }, "guided_regex and guided_choice are set; a request may have one guide"},
      {[](auto* r) { r->set_guided_regex("a"); r->set_ignore_eos(true); }, "guided_regex can not be combined with ignore_eos"},
      {[](auto* r) { r->set_guided_regex(std::string(4097, 'a')); }, "guided_regex is 4097 bytes; the limit is 4096"},
      {[](auto* r) { r->set_guided_regex("(a|b)*a(a|b){14}"); }, "guided_regex is too complex"},
      {[](auto* r) { r->add_guided_choice("yes"); r->add_guided_choice(""); }, "guided_choice[1] must not be empty"},
      {[](auto* r) { for (int i = 0; i < 65; ++i) r->add_guided_choice("c"); }, "guided_choice has 65 entries; at most 64"},
      {[](auto* r) { for (int i = 0; i < 5; ++i) r->add_guided_choice(std::string(1000, 'c')); }, "guided_choice has 5000 bytes in all; the limit is 4096"},
      {[](auto* r) { r->set_guided_json(R"({"type": "string", "pattern": "a+"})"); }, "guided_json: the keyword \"pattern\" is not supported (at the root)"},
      {[](auto* r) { r->set_guided_json("{"); }, "guided_json is not valid JSON"},
      {[](auto* r) { r->set_guided_json(R"({"type": "null"})"); r->add_guided_choice("b"); }, "guided_choice and guided_json are set"},
      {[](auto* r) { r->set_guided_json(std::string(16385, ' ')); }, "guided_json is 16385 bytes; the limit is 16384"},
  };
  for (const auto& c : cases) {
    v1::GenerateRequest r;
    r.set_prompt("hello");
    c.edit(&r);
    auto g = ValidateGenerateRequest(r, Ctx(), 0, "x");
    ASSERT_FALSE(g.ok()) << c.expect;
    EXPECT_EQ(g.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(g.status().message().find(c.expect), std::string::npos) << g.status().message();
  }
}

// --- request decoding ---------------------------------------------------------

// Same field numbers, names, cardinality, presence and wire types (string and
// bytes share one), so every `api` message parses as its wire twin.
void ExpectWireTwin(const google::protobuf::Descriptor* api, const google::protobuf::Descriptor* twin) {
  SCOPED_TRACE(api->full_name());
  ASSERT_EQ(api->field_count(), twin->field_count());
  for (int i = 0; i < api->field_count(); ++i) {
    const auto* a = api->field(i);
    const auto* t = twin->FindFieldByNumber(a->number());
    ASSERT_NE(t, nullptr) << a->name();
    EXPECT_EQ(a->name(), t->name());
    EXPECT_EQ(a->is_repeated(), t->is_repeated()) << a->name();
    EXPECT_EQ(a->has_presence(), t->has_presence()) << a->name();
    if (a->type() == google::protobuf::FieldDescriptor::TYPE_STRING) {
      EXPECT_EQ(t->type(), google::protobuf::FieldDescriptor::TYPE_BYTES) << a->name();
    } else {
      EXPECT_EQ(a->type(), t->type()) << a->name();
    }
  }
}

TEST(RequestDecoding, TheWireTwinsMirrorTheirRequests) {
  ExpectWireTwin(v1::GenerateRequest::descriptor(), wire::GenerateRequestWire::descriptor());
  ExpectWireTwin(v1::TokenizeRequest::descriptor(), wire::TokenizeRequestWire::descriptor());
}

TEST(RequestDecoding, GoodBytesGiveTheRequestBadOnesNameTheProblem) {
  v1::GenerateRequest r;
  r.set_prompt("Hello, w\xC3\xB6rld");
  r.set_max_tokens(7);
  r.add_stop("\n");
  r.set_seed(5);
  r.set_request_id("abc");
  auto d = DecodeGenerateRequest(r.SerializeAsString());
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->SerializeAsString(), r.SerializeAsString());

  struct Case {
    std::function<void(wire::GenerateRequestWire*)> edit;
    std::string expect;
  } cases[] = {
      {[](auto* w) { w->set_prompt("ab\xE2\x82"); }, "prompt is not valid UTF-8 (first bad byte at offset 2)"},
      {[](auto* w) { w->set_prompt("\xF5"); }, "prompt is not valid UTF-8 (first bad byte at offset 0)"},
      {[](auto* w) { w->add_stop("x"); w->add_stop("y\xBF"); }, "stop[1] is not valid UTF-8 (first bad byte at offset 1)"},
      {[](auto* w) { w->set_request_id("\x80"); }, "request_id is not valid UTF-8"},
      {[](auto* w) { w->set_guided_regex("[\xC3]"); }, "guided_regex is not valid UTF-8 (first bad byte at offset 1)"},
      {[](auto* w) { w->add_guided_choice("ok"); w->add_guided_choice("\xFF"); }, "guided_choice[1] is not valid UTF-8"},
  };
  for (const auto& c : cases) {
    wire::GenerateRequestWire w;
    w.set_prompt("ok");
    c.edit(&w);
    auto bad = DecodeGenerateRequest(w.SerializeAsString());
    ASSERT_FALSE(bad.ok()) << c.expect;
    EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(bad.status().message().find(c.expect), std::string::npos) << bad.status().message();
  }
  for (const std::string& garbage : {std::string("\xFF\xFF"), std::string("\x0A\x05" "ab", 4), std::string("\x08", 1)}) {
    auto bad = DecodeGenerateRequest(garbage);
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.status().message().find("not a valid modserve.v1.GenerateRequest"), std::string::npos);
  }
  EXPECT_TRUE(DecodeGenerateRequest("").ok());  // the empty message is a (default) request; validation refuses it
}

TEST(RequestDecoding, ATokenizeRequestsTextMustBeUtf8) {
  v1::TokenizeRequest r;
  r.set_text("w\xC3\xB6rld");
  r.set_add_bos(true);
  auto d = DecodeTokenizeRequest(r.SerializeAsString());
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->SerializeAsString(), r.SerializeAsString());
  wire::TokenizeRequestWire w;
  w.set_text("abc\xE2\x82");
  auto bad = DecodeTokenizeRequest(w.SerializeAsString());
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("text is not valid UTF-8 (first bad byte at offset 3)"), std::string::npos)
      << bad.status().message();
  auto garbage = DecodeTokenizeRequest("\xFF\xFF");
  ASSERT_FALSE(garbage.ok());
  EXPECT_NE(garbage.status().message().find("not a valid modserve.v1.TokenizeRequest"), std::string::npos)
      << garbage.status().message();
}

// --- tokenization ----------------------------------------------------------------

TEST(Tokenization, TokenizeGivesThePromptIdsGenerateReads) {
  v1::TokenizeRequest r;
  r.set_text("h\xC3\xA9!");  // "hé!"
  auto t = Tokenize(r, Ctx());
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(std::vector<int32_t>(t->token_ids().begin(), t->token_ids().end()), (std::vector<int32_t>{104, 195, 169, 33}));
  EXPECT_EQ(t->prompt_tokens(), 5);  // + BOS
  // The same ids as the prompt a GenerateRequest with this text is given.
  v1::GenerateRequest g;
  g.set_prompt(r.text());
  auto validated = ValidateGenerateRequest(g, Ctx(), 0, "x");
  ASSERT_TRUE(validated.ok());
  EXPECT_EQ(static_cast<int64_t>(validated->prompt.size()), t->prompt_tokens());
  EXPECT_EQ(std::vector<int64_t>(validated->prompt.begin() + 1, validated->prompt.end()),
            std::vector<int64_t>(t->token_ids().begin(), t->token_ids().end()));
  r.set_add_bos(true);
  t = Tokenize(r, Ctx());
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(std::vector<int64_t>(t->token_ids().begin(), t->token_ids().end()), validated->prompt);
  EXPECT_EQ(t->prompt_tokens(), 5);
  r.set_text("");
  t = Tokenize(r, Ctx());
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->token_ids_size(), 1);  // BOS alone
  EXPECT_EQ(t->prompt_tokens(), 1);

  v1::TokenizeRequest too_long;
  too_long.set_text(std::string(static_cast<size_t>(Ctx().limits.max_prompt_bytes) + 1, 'a'));
  auto bad = Tokenize(too_long, Ctx());
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("text is 8193 bytes; the limit is max_prompt_bytes = 8192"), std::string::npos)
      << bad.status().message();
}

TEST(Tokenization, DetokenizeWritesTheTextGenerateWould) {
  auto text_of = [](std::vector<int32_t> ids) {
    v1::DetokenizeRequest r;
    r.mutable_token_ids()->Add(ids.begin(), ids.end());
    auto t = Detokenize(r, Ctx());
    EXPECT_TRUE(t.ok()) << t.status().ToString();
    return t.ok() ? t->text() : std::string("<error>");
  };
  EXPECT_EQ(text_of({256, 104, 195, 169, 257}), "h\xC3\xA9");        // BOS and EOS add no text
  EXPECT_EQ(text_of({104, 195}), "h\xEF\xBF\xBD");                  // a character cut off at the end
  EXPECT_EQ(text_of({169, 104}), "\xEF\xBF\xBDh");                  // ... and at the start
  EXPECT_EQ(text_of({0xF0, 0x9F, 0x98, 0x80}), "\xF0\x9F\x98\x80");  // a whole 4-byte character
  EXPECT_EQ(text_of({}), "");
  v1::DetokenizeRequest r;
  r.add_token_ids(65);
  r.add_token_ids(258);
  auto bad = Detokenize(r, Ctx());
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("token_ids[1] is 258; ids must be in [0, 257]"), std::string::npos)
      << bad.status().message();
  r.set_token_ids(1, -1);
  EXPECT_FALSE(Detokenize(r, Ctx()).ok());
}

// --- metrics endpoint ---------------------------------------------------------

using testing::HttpGet;

TEST(MetricsHttpServer, ServesMetricsAndRefusesOtherPaths) {
  auto m = ServerMetrics::Start("127.0.0.1:0");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  (*m)->SetRoutedLayers({1, 3}, 0.125);
  StepStats stats;
  stats.layers = {{0, false, 4, 0}, {1, true, 1, 3}, {3, true, 2, 2}};
  StepReport rep;
  rep.stats = &stats;
  rep.batch_tokens = 4;
  (*m)->OnStep(rep);
  (*m)->OnRequestDone(FinishReason::kEos, StatusCode::kOk, 0.5, 3, 4);
  const int port = (*m)->port();
  ASSERT_GT(port, 0);
  const std::string page = HttpGet(port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  // No agreement measured yet: no ratio (a 0 would read as total disagreement).
  EXPECT_EQ(page.find("modserve_predictor_agreement_ratio{"), std::string::npos) << page;
  EXPECT_NE(page.find("modserve_predictor_agreement_tokens_total{layer=\"3\"} 0"), std::string::npos) << page;
  stats.layers[2].agreement_tokens = 8;
  stats.layers[2].agreement_matches = 6;
  (*m)->OnStep(rep);
  stats.layers[2].agreement_matches = 8;
  (*m)->OnStep(rep);
  const std::string measured = HttpGet(port, "GET /metrics HTTP/1.1\r\n\r\n");
  EXPECT_NE(measured.find("modserve_predictor_agreement_ratio{layer=\"3\"} 0.875"), std::string::npos) << measured;
  EXPECT_EQ(measured.find("modserve_predictor_agreement_ratio{layer=\"1\"}"), std::string::npos) << measured;
  EXPECT_NE(measured.find("modserve_predictor_agreement_tokens_total{layer=\"3\"} 16"), std::string::npos) << measured;
  EXPECT_NE(measured.find("modserve_predictor_agreement_matches_total{layer=\"3\"} 14"), std::string::npos) << measured;
  EXPECT_NE(page.find("200 OK"), std::string::npos);
  EXPECT_NE(page.find("modserve_layer_tokens_total{decision=\"skipped\",layer=\"1\"} 3"), std::string::npos) << page;
  EXPECT_NE(page.find("modserve_layer_tokens_total{decision=\"computed\",layer=\"3\"} 2"), std::string::npos);
  EXPECT_NE(page.find("modserve_requests_total{code=\"OK\",finish_reason=\"eos\"} 1"), std::string::npos);
  EXPECT_NE(page.find("modserve_batch_tokens_count 1"), std::string::npos);  // the page from before the agreement steps
  // A first token after 45 s queued lands in a bucket, not only in +Inf.
  (*m)->OnFirstToken(45);
  const std::string later = HttpGet(port, "GET /metrics HTTP/1.1\r\n\r\n");
  EXPECT_NE(later.find("modserve_time_to_first_token_seconds_bucket{le=\"30\"} 0"), std::string::npos) << later;
  EXPECT_NE(later.find("modserve_time_to_first_token_seconds_bucket{le=\"60\"} 1"), std::string::npos) << later;
  EXPECT_NE(page.find("modserve_layer_capacity{layer=\"3\"} 0.125"), std::string::npos);
  EXPECT_NE(HttpGet(port, "GET / HTTP/1.1\r\n\r\n").find("404"), std::string::npos);
  const std::string post = HttpGet(port, "POST /metrics HTTP/1.1\r\n\r\n");
  EXPECT_NE(post.find("405"), std::string::npos);
  EXPECT_NE(post.find("Allow: GET, HEAD\r\n"), std::string::npos) << post;
  EXPECT_NE(HttpGet(port, "garbage").find("400"), std::string::npos);
}

// A client that opens a connection and trickles (or sends nothing) holds up
// no scrape, and is dropped when its exchange time is up.
TEST(MetricsHttpServer, ASlowClientNeitherBlocksScrapesNorStaysForever) {
  auto server = MetricsHttpServer::Start("127.0.0.1:0", [] { return std::string("up 1\n"); }, std::chrono::milliseconds(1500));
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  const int port = (*server)->port();
  std::vector<int> slow;
  for (int i = 0; i < 3; ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    if (i > 0) {
      ASSERT_EQ(::send(fd, "GET /met", 8, 0), 8);  // a head that never ends
    }
    slow.push_back(fd);
  }
  // Served while all three are open and unanswered (the old one-at-a-time
  // server answered it only after each had timed out).
  EXPECT_NE(HttpGet(port, "GET /metrics HTTP/1.1\r\n\r\n").find("up 1"), std::string::npos);
  for (int fd : slow) {
    char byte;
    EXPECT_EQ(::recv(fd, &byte, 1, MSG_DONTWAIT), -1) << "a slow client was answered or dropped too soon";
  }
  for (int fd : slow) {
    timeval tv{10, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    char byte;
    EXPECT_EQ(::recv(fd, &byte, 1, 0), 0) << "a slow client was not dropped at its deadline";  // closed, not timed out
    ::close(fd);
  }
  EXPECT_NE(HttpGet(port, "GET /metrics HTTP/1.1\r\n\r\n").find("up 1"), std::string::npos);
}

TEST(MetricsHttpServer, BusyPortIsAClearError) {
  auto first = MetricsHttpServer::Start("127.0.0.1:0", [] { return std::string(); });
  ASSERT_TRUE(first.ok());
  auto second = MetricsHttpServer::Start("127.0.0.1:" + std::to_string((*first)->port()), [] { return std::string(); });
  ASSERT_FALSE(second.ok());
  EXPECT_NE(second.status().message().find("cannot listen"), std::string::npos);
}

}  // namespace
}  // namespace modserve
