// End-to-end tests of mod-server over loopback with real gRPC clients and
// the shipped model: unary and streaming give the same tokens (and logprobs,
// which equal a full forward's log-softmax), cancel
// mid-stream and deadlines free KV blocks, overload answers
// RESOURCE_EXHAUSTED at once, every kind of invalid request (bad fields,
// invalid UTF-8, oversized or unparseable messages) gets a clear error,
// Tokenize and Detokenize match what Generate reads and writes, health and
// reflection are served, and the scraped layer counters match what clients
// were told: all against one shared server (the fixture is in
// server_e2e_fixture.h; the sampling and stop controls are tested in
// server_sampling_e2e_test.cpp). Tests that need a server of their own are in
// server_own_apps_test.cpp.
#include <grpc/support/time.h>
#include <gtest/gtest.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/impl/codegen/client_unary_call.h>

#include <algorithm>
#include <future>
#include <limits>
#include <map>
#include <set>
#include <thread>

#include "grpc/health/v1/health.grpc.pb.h"
#include "grpc_test_util.h"
#include "metrics_scrape.h"
#include "modserve/v1/modserve.grpc.pb.h"
#include "modserve/v1/request_wire.pb.h"
#include "reflection_wire.pb.h"
#include "engine/checkpoint.h"
#include "engine/reference_generate.h"
#include "engine/tokenizer.h"
#include "server/engine_loader.h"
#include "server_e2e_fixture.h"
#include "server_e2e_util.h"
#include "test_models.h"
#include "server/server_app.h"
#include "server/utf8_stream.h"

namespace modserve {
namespace {

using testing::In;
using testing::kModel;
using testing::StartApp;
using testing::TestConfig;
using testing::Request;

using grpc::health::v1::HealthCheckResponse;
using testing::Scrape;
using testing::ServerE2E;
using testing::StreamResult;

TEST_F(ServerE2E, UnaryAndStreamGiveTheSameTokens) {
  // Updates that arrive while a write is in flight go out as one message, so
  // the message count depends on step time against write time; 48 tokens gave
  // exactly 10 messages once the engine got faster (CI). 160 leave room.
  constexpr int kTokens = 160;
  for (bool sampled : {false, true}) {
    v1::GenerateRequest r = Request("The jury said ", kTokens);
    r.set_return_routes(true);
    if (sampled) {
      r.set_temperature(0.8f);
      r.set_top_p(0.9f);
      r.set_seed(1234);
    }
    v1::GenerateResponse u;
    ASSERT_TRUE(Unary(r, &u).ok());
    StreamResult s = Stream(r);
    ASSERT_TRUE(s.status.ok()) << s.status.error_message();
    EXPECT_EQ(std::vector<int>(u.token_ids().begin(), u.token_ids().end()), s.ids);
    EXPECT_EQ(u.text(), s.text);
    EXPECT_EQ(u.token_ids_size(), kTokens);
    EXPECT_EQ(u.routes_size(), kTokens);
    EXPECT_EQ(u.finish_reason(), v1::FINISH_REASON_LENGTH);
    EXPECT_EQ(s.messages.back().finish_reason(), v1::FINISH_REASON_LENGTH);
    EXPECT_EQ(u.usage().prompt_tokens(), 15);
    EXPECT_EQ(u.usage().completion_tokens(), kTokens);
    EXPECT_EQ(u.usage().routed_computed() + u.usage().routed_skipped(), 3 * (15 + kTokens - 1));
    EXPECT_GT(s.messages.size(), 10u);  // streamed token by token, not at the end
    for (const auto& m : s.messages) EXPECT_TRUE(IsValidUtf8(m.text()));
  }
}

// Logprobs are the model's own: the log-softmax of a full forward over the
// prompt and the tokens before, whatever the sampling; unary and stream agree.
TEST_F(ServerE2E, LogprobsAreTheModelsOwnAndTheSameUnaryAndStreamed) {
  constexpr int kTokens = 24, kTop = 5;
  auto model = LoadCheckpoint(kModel);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  for (bool sampled : {false, true}) {
    SCOPED_TRACE(sampled ? "sampled" : "greedy");
    v1::GenerateRequest r = Request("The jury said ", kTokens);
    r.set_return_logprobs(true);
    r.set_top_logprobs(kTop);
    if (sampled) {
      r.set_temperature(1.5f);
      r.set_seed(99);
    }
    v1::GenerateResponse u;
    ASSERT_TRUE(Unary(r, &u).ok());
    StreamResult s = Stream(r);
    ASSERT_TRUE(s.status.ok()) << s.status.error_message();
    ASSERT_EQ(u.token_ids_size(), kTokens);
    ASSERT_EQ(u.logprobs_size(), kTokens);
    std::vector<v1::TokenLogprobs> streamed;
    for (const auto& m : s.messages) {
      EXPECT_EQ(m.logprobs_size(), m.token_ids_size());
      streamed.insert(streamed.end(), m.logprobs().begin(), m.logprobs().end());
    }
    ASSERT_EQ(streamed.size(), static_cast<size_t>(kTokens));

    // The reference: one forward over BOS + prompt + the generated tokens.
    std::vector<int64_t> ids = ByteTokenizer(256, 257).Encode("The jury said ", /*add_bos=*/true);
    const auto prompt_len = static_cast<int64_t>(ids.size());
    ids.insert(ids.end(), u.token_ids().begin(), u.token_ids().end());
    torch::NoGradGuard ng;
    auto logp = torch::log_softmax((*model)->Forward(torch::tensor(ids).unsqueeze(0), RouteMode::kPredictor).logits[0], -1);  // [S, V]
    for (int i = 0; i < kTokens; ++i) {
      SCOPED_TRACE(i);
      const v1::TokenLogprobs& lp = u.logprobs(i);
      EXPECT_EQ(lp.SerializeAsString(), streamed[static_cast<size_t>(i)].SerializeAsString());
      EXPECT_EQ(lp.token().token_id(), u.token_ids(i));
      auto row = logp[prompt_len - 1 + i];  // [V]: the model's distribution at token i's position
      EXPECT_NEAR(lp.token().logprob(), row[u.token_ids(i)].item<float>(), 1e-3);
      ASSERT_EQ(lp.top_size(), kTop);
      auto [best, best_ids] = row.topk(kTop + 1);  // one more, to see a near tie at the cut
      for (int k = 0; k < kTop; ++k) {
        // Ids in the reference's order, unless two are too close to order
        // across the engine's and the full forward's rounding.
        const bool close = (k > 0 && best[k - 1].item<float>() - best[k].item<float>() < 1e-3) ||
                           best[k].item<float>() - best[k + 1].item<float>() < 1e-3;
        if (!close) {
          EXPECT_EQ(lp.top(k).token_id(), best_ids[k].item<int64_t>());
        }
        EXPECT_NEAR(lp.top(k).logprob(), best[k].item<float>(), 1e-3);
        EXPECT_LE(lp.top(k).logprob(), 0.f);
        if (k > 0) {
          EXPECT_GE(lp.top(k - 1).logprob(), lp.top(k).logprob());
        }
      }
      if (!sampled) {
        EXPECT_EQ(lp.top(0).token_id(), lp.token().token_id()) << "greedy takes the most likely token";
      }
    }
  }
  v1::GenerateRequest plain = Request("The jury said ", 4);
  v1::GenerateResponse p;
  ASSERT_TRUE(Unary(plain, &p).ok());
  EXPECT_EQ(p.logprobs_size(), 0) << "none unless asked";
}

// Prompt logprobs score every prompt token after BOS as one full forward of
// the model does, top alternatives included; the same (to rounding) unary and
// streamed (on the first message only), also when the prompt is prefilled in chunks
// beside a decoding request.
TEST_F(ServerE2E, PromptLogprobsScoreThePromptLikeAFullForward) {
  constexpr int kTop = 3;
  const std::string prompt =
      "The jury further said in term-end presentments that the City Executive Committee, which had over-all charge "
      "of the election, deserves the praise.";
  auto model = LoadCheckpoint(kModel);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  const std::vector<int64_t> ids = ByteTokenizer(256, 257).Encode(prompt, /*add_bos=*/true);
  torch::NoGradGuard ng;
  auto logp = torch::log_softmax((*model)->Forward(torch::tensor(ids).unsqueeze(0), RouteMode::kPredictor).logits[0], -1);  // [S, V]

  // A long stream decoding meanwhile caps prefill at 32 tokens a step: the
  // request below goes in once that stream has sent its first token.
  std::promise<void> decoding;
  std::thread busy([this, &decoding] {
    grpc::ClientContext ctx;
    ctx.set_deadline(In(60));
    auto reader = stub_->GenerateStream(&ctx, Request("The jury said ", 200));
    v1::GenerateResponse m;
    bool first = true;
    while (reader->Read(&m)) {
      if (first) decoding.set_value();
      first = false;
    }
    if (first) decoding.set_value();
    EXPECT_TRUE(reader->Finish().ok());
  });
  decoding.get_future().wait();
  v1::GenerateRequest r = Request(prompt, 2);
  r.set_return_prompt_logprobs(true);
  r.set_top_logprobs(kTop);
  v1::GenerateResponse u;
  ASSERT_TRUE(Unary(r, &u).ok());
  StreamResult s = Stream(r);
  busy.join();
  ASSERT_TRUE(s.status.ok()) << s.status.error_message();
  EXPECT_EQ(u.logprobs_size(), 0) << "return_logprobs was not set";
  ASSERT_EQ(u.prompt_logprobs_size(), static_cast<int>(prompt.size()));
  ASSERT_FALSE(s.messages.empty());
  ASSERT_EQ(s.messages[0].prompt_logprobs_size(), static_cast<int>(prompt.size()));
  EXPECT_GT(s.messages[0].token_ids_size(), 0) << "with the first token";
  for (size_t m = 1; m < s.messages.size(); ++m) EXPECT_EQ(s.messages[m].prompt_logprobs_size(), 0);
  for (int k = 0; k < u.prompt_logprobs_size(); ++k) {
    SCOPED_TRACE(k);
    const v1::TokenLogprobs& lp = u.prompt_logprobs(k);
    // Unary and stream may chunk the prompt differently (rounding differs).
    const v1::TokenLogprobs& streamed = s.messages[0].prompt_logprobs(k);
    EXPECT_EQ(streamed.token().token_id(), lp.token().token_id());
    EXPECT_NEAR(streamed.token().logprob(), lp.token().logprob(), 1e-4);
    EXPECT_EQ(lp.token().token_id(), static_cast<unsigned char>(prompt[static_cast<size_t>(k)]));
    auto row = logp[k];  // [V]: the distribution after BOS and the first k bytes
    EXPECT_NEAR(lp.token().logprob(), row[ids[static_cast<size_t>(k) + 1]].item<float>(), 1e-3);
    ASSERT_EQ(lp.top_size(), kTop);
    auto [best, best_ids] = row.topk(kTop);
    for (int t = 0; t < kTop; ++t) EXPECT_NEAR(lp.top(t).logprob(), best[t].item<float>(), 1e-3);
  }
}

// Penalized greedy decoding gives the tokens of full recomputation with the
// same penalties, unary and streamed, and not those of plain greedy.
// Prefix caching: a prompt that begins like an earlier one starts from the
// K/V of their shared whole blocks, says so in its usage and the metrics, and
// still gives the reference tokens.
TEST_F(ServerE2E, APromptBeginningLikeAnEarlierOneReusesItsKvAndGivesTheReferenceTokens) {
  constexpr int kTokens = 24;
  const std::string shared = "Prefix test: the Fulton County Grand Jury said Friday an investigation of recent primary elections ";
  ASSERT_EQ(shared.size(), 99u);  // with BOS, 100 tokens: 6 whole blocks of 16
  auto model = LoadCheckpoint(kModel);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  const auto before = Metrics();
  struct Case {
    std::string tail;
    int cached;
  };
  int64_t hits = 0;
  for (const Case& c : {Case{"produced no evidence.", 0}, Case{"produced no evidence.", 112}, Case{"was on time.", 96}}) {
    SCOPED_TRACE(c.tail);
    v1::GenerateResponse u;
    ASSERT_TRUE(Unary(Request(shared + c.tail, kTokens), &u).ok());
    const auto want = ReferenceGenerate(*model, ByteTokenizer(256, 257).Encode(shared + c.tail, /*add_bos=*/true), kTokens, {});
    EXPECT_EQ(std::vector<int64_t>(u.token_ids().begin(), u.token_ids().end()), want.tokens);
    EXPECT_EQ(u.usage().cached_prompt_tokens(), c.cached);
    EXPECT_EQ(u.usage().routed_computed() + u.usage().routed_skipped(), 3 * (u.usage().prompt_tokens() - c.cached + kTokens - 1))
        << "usage counts the tokens the engine ran for the request";
    hits += c.cached;
  }
  const auto after = Metrics();
  EXPECT_EQ(after.at("modserve_prefix_cache_hits_total") - before.at("modserve_prefix_cache_hits_total"), static_cast<double>(hits));
  EXPECT_GE(after.at("modserve_prefix_cache_queries_total") - before.at("modserve_prefix_cache_queries_total"), 3 * 100.0);
  EXPECT_GT(after.at("modserve_prefix_cache_usage_ratio"), 0) << "the prompts' blocks stay cached after the requests end";
  EXPECT_EQ(after.at("modserve_kv_cache_usage_ratio"), 0) << "cached blocks count as free";

  // Under a cache_salt the same prompt is another tenant's: it finds nothing
  // unsalted, and what it runs is found only under its salt.
  auto cached_under = [&](const std::string& salt) {
    v1::GenerateRequest r = Request(shared + "produced no evidence.", kTokens);
    r.set_cache_salt(salt);
    v1::GenerateResponse u;
    EXPECT_TRUE(Unary(r, &u).ok());
    return u.usage().cached_prompt_tokens();
  };
  EXPECT_EQ(cached_under("tenant-a"), 0);
  EXPECT_EQ(cached_under("tenant-a"), 112);
  EXPECT_EQ(cached_under("tenant-b"), 0);
  EXPECT_EQ(cached_under(""), 112) << "the unsalted prefix is still there";
}

// n completions: completion i is what the n = 1 request with seed + i gives,
// unary (in `completions`) and streamed (messages tagged with their index,
// one last message with finish reason and usage per completion) alike; with
// prefix caching the later completions read the prompt's whole blocks from
// what the first computed. Cancelling the stream stops all of them.
TEST_F(ServerE2E, NCompletionsAreTheSingleRequestWithSeedPlusIndex) {
  constexpr int kTokens = 30, kN = 3;
  const std::string prompt = "n test: the jury commented on a number of other topics, among them the ";
  const int prompt_tokens = static_cast<int>(prompt.size()) + 1;
  const int shareable = (prompt_tokens - 1) / 16 * 16;  // whole blocks of all but the last prompt token
  ASSERT_GT(shareable, 0);
  v1::GenerateRequest r = Request(prompt, kTokens);
  r.set_temperature(0.9f);
  r.set_seed(777);
  r.set_return_routes(true);
  std::vector<std::vector<int>> single(kN);
  for (int i = 0; i < kN; ++i) {
    v1::GenerateRequest one = r;
    one.set_seed(777 + i);
    one.set_cache_salt("n-single");  // keeps these prompts out of the caches the n requests use
    v1::GenerateResponse u;
    ASSERT_TRUE(Unary(one, &u).ok());
    single[static_cast<size_t>(i)].assign(u.token_ids().begin(), u.token_ids().end());
  }
  ASSERT_NE(single[0], single[1]) << "different seeds sample differently";

  v1::GenerateRequest many = r;
  many.set_n(kN);
  many.set_cache_salt("n-unary");
  many.set_return_prompt_logprobs(true);
  v1::GenerateResponse u;
  ASSERT_TRUE(Unary(many, &u).ok());
  ASSERT_EQ(u.completions_size(), kN);
  EXPECT_TRUE(u.text().empty() && u.token_ids().empty() && !u.has_usage()) << "the completions hold the output";
  EXPECT_EQ(u.prompt_logprobs_size(), prompt_tokens - 1) << "the prompt is scored once, at the top";
  for (int i = 0; i < kN; ++i) {
    SCOPED_TRACE(i);
    const v1::GenerateResponse& c = u.completions(i);
    EXPECT_EQ(c.index(), i);
    EXPECT_EQ(std::vector<int>(c.token_ids().begin(), c.token_ids().end()), single[static_cast<size_t>(i)]);
    EXPECT_EQ(c.routes_size(), kTokens);
    EXPECT_EQ(c.prompt_logprobs_size(), 0);
    EXPECT_EQ(c.finish_reason(), v1::FINISH_REASON_LENGTH);
    EXPECT_EQ(c.usage().prompt_tokens(), prompt_tokens);
    EXPECT_EQ(c.usage().completion_tokens(), kTokens);
    EXPECT_EQ(c.usage().cached_prompt_tokens(), i == 0 ? 0 : shareable) << "the later ones reuse the first one's prompt";
    EXPECT_EQ(c.request_id(), u.request_id());
  }

  many.set_cache_salt("n-stream");
  many.set_return_prompt_logprobs(false);
  StreamResult s = Stream(many);
  ASSERT_TRUE(s.status.ok()) << s.status.error_message();
  std::vector<std::vector<int>> streamed(kN);
  std::vector<int> finals(kN, 0);
  for (const auto& m : s.messages) {
    ASSERT_GE(m.index(), 0);
    ASSERT_LT(m.index(), kN);
    const auto i = static_cast<size_t>(m.index());
    EXPECT_EQ(finals[i], 0) << "nothing of completion " << i << " after its last message";
    streamed[i].insert(streamed[i].end(), m.token_ids().begin(), m.token_ids().end());
    if (m.has_usage()) {
      ++finals[i];
      EXPECT_EQ(m.finish_reason(), v1::FINISH_REASON_LENGTH);
      EXPECT_EQ(m.usage().completion_tokens(), kTokens);
    }
  }
  EXPECT_EQ(streamed, single);
  EXPECT_EQ(finals, std::vector<int>(kN, 1));

  // Greedy: every completion is the same.
  v1::GenerateRequest greedy = Request(prompt, 8);
  greedy.set_n(2);
  v1::GenerateResponse g;
  ASSERT_TRUE(Unary(greedy, &g).ok());
  ASSERT_EQ(g.completions_size(), 2);
  EXPECT_EQ(g.completions(0).text(), g.completions(1).text());

  ASSERT_TRUE(WaitIdle());
  const double cancelled_before = Cancelled();
  v1::GenerateRequest endless = Request("Once upon a time", 200);
  endless.set_n(kN);
  EXPECT_EQ(CancelStreamAfter(endless, 3), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(WaitIdle()) << "every completion's blocks are freed";
  EXPECT_EQ(Cancelled(), cancelled_before + kN) << "each completion counts as a request";
}

// min_tokens holds EOS back, logit_bias shifts the logits, ignore_eos
// generates past EOS; each against the reference generation or plain greedy.
TEST_F(ServerE2E, CancelMidStreamFreesTheRequest) {
  ASSERT_TRUE(WaitIdle());
  const double cancelled_before = Cancelled();
  EXPECT_EQ(CancelStreamAfter(Request("Once upon a time", 200), 3), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(WaitIdle());
  EXPECT_EQ(Cancelled(), cancelled_before + 1);
}

TEST_F(ServerE2E, ExpiredDeadlineFreesTheRequest) {
  ASSERT_TRUE(WaitIdle());
  const double cancelled_before = Cancelled(), expired_before = DeadlineExceeded();
  // Nearly the whole context, under a deadline far shorter than generating it
  // takes here (~0.5 ms a token alone on the shipped model).
  StreamResult s = Stream(Request("Once upon a time", 230), /*timeout=*/0.03);
  EXPECT_EQ(s.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_LT(s.ids.size(), 230u);
  EXPECT_TRUE(WaitIdle());
  EXPECT_EQ(DeadlineExceeded(), expired_before + 1) << "counted as expired (gRPC cancels the call at its deadline too)";
  EXPECT_EQ(Cancelled(), cancelled_before);
}

// A timeout of centuries (Python's timeout=1e10, the longest grpc-timeout
// header) is as good as none: its conversion to the scheduler's clock must
// not overflow into a deadline already past.
TEST_F(ServerE2E, ADeadlineCenturiesAwayIsNoDeadline) {
  for (int64_t seconds : {int64_t{10000000000}, int64_t{3600} * 99999999}) {
    grpc::ClientContext ctx;
    ctx.set_deadline(gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_seconds(seconds, GPR_TIMESPAN)));
    v1::GenerateResponse resp;
    const grpc::Status st = stub_->Generate(&ctx, Request("Once upon a time", 4), &resp);
    EXPECT_TRUE(st.ok()) << seconds << " s: " << st.error_message();
    EXPECT_EQ(resp.token_ids_size(), 4) << seconds << " s";
  }
}

// Raw calls: the request's bytes as given (the wire twin lets a test put
// invalid UTF-8 or garbage on the wire, which the generated stubs would not).
// Calls unary method `name` of the Generator service with request bytes `wire`.
grpc::Status RawUnary(grpc::Channel* channel, const std::string& wire, const std::string& name = "Generate") {
  grpc::ClientContext ctx;
  ctx.set_deadline(In(30));
  grpc::Slice slice(wire);
  grpc::ByteBuffer req(&slice, 1), resp;
  const std::string path = "/modserve.v1.Generator/" + name;
  const grpc::internal::RpcMethod method(path.c_str(), grpc::internal::RpcMethod::NORMAL_RPC);
  return grpc::internal::BlockingUnaryCall<grpc::ByteBuffer, grpc::ByteBuffer>(channel, method, &ctx, req, &resp);
}

// Returns the stream's status and how many messages came before it.
std::pair<grpc::Status, int> RawStream(grpc::Channel* channel, const std::string& wire) {
  grpc::ClientContext ctx;
  ctx.set_deadline(In(30));
  grpc::Slice slice(wire);
  grpc::ByteBuffer req(&slice, 1), msg;
  const grpc::internal::RpcMethod method("/modserve.v1.Generator/GenerateStream", grpc::internal::RpcMethod::SERVER_STREAMING);
  std::unique_ptr<grpc::ClientReader<grpc::ByteBuffer>> reader(
      grpc::internal::ClientReaderFactory<grpc::ByteBuffer>::Create(channel, method, &ctx, req));
  int n = 0;
  while (reader->Read(&msg)) ++n;
  return {reader->Finish(), n};
}

// Every kind of bad request, each answered with the right code and a message
// that names the problem; after all of them the server serves normally.
TEST_F(ServerE2E, EveryInvalidRequestGetsAClearErrorAndTheNextRequestIsServed) {
  using Wire = wire::GenerateRequestWire;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const auto invalid = grpc::StatusCode::INVALID_ARGUMENT;
  struct Case {
    std::function<void(Wire*)> edit;
    grpc::StatusCode code;
    std::string expect;  // in the error message
  } cases[] = {
      {[](Wire* r) { r->set_prompt(""); }, invalid, "prompt must not be empty"},
      {[](Wire* r) { r->set_prompt(std::string(300, 'a')); }, invalid, "context length is 256"},
      {[](Wire* r) { r->set_prompt(std::string(9000, 'a')); }, invalid, "the limit is max_prompt_bytes = 8192"},
      {[](Wire* r) { r->set_prompt(std::string(70000, 'a')); }, grpc::StatusCode::RESOURCE_EXHAUSTED, "larger than max"},
      {[](Wire* r) { r->set_prompt("ab\xFF"); }, invalid, "prompt is not valid UTF-8 (first bad byte at offset 2)"},
      {[](Wire* r) { r->set_prompt("ab\xE2\x82"); }, invalid, "prompt is not valid UTF-8"},  // truncated
      {[](Wire* r) { r->set_prompt("\xED\xA0\x80"); }, invalid, "prompt is not valid UTF-8"},  // a surrogate
      {[](Wire* r) { r->set_prompt("\xC0\xAF"); }, invalid, "prompt is not valid UTF-8"},      // overlong
      {[](Wire* r) { r->set_max_tokens(-2); }, invalid, "max_tokens must be in [0, 1024]"},
      {[](Wire* r) { r->set_max_tokens(2000); }, invalid, "max_tokens must be in [0, 1024]"},
      {[](Wire* r) { r->set_max_tokens(251); }, invalid, "exceeds the context length"},  // 6 prompt tokens + 251 > 256
      {[](Wire* r) { r->set_truncate_prompt_tokens(-1); }, invalid, "truncate_prompt_tokens must be in [1, 254]"},
      {[](Wire* r) { r->set_temperature(9); }, invalid, "temperature must be in [0, 2]"},
      {[](Wire* r) { r->set_temperature(-1); }, invalid, "temperature must be in [0, 2]"},
      {[nan](Wire* r) { r->set_temperature(nan); }, invalid, "temperature must be in [0, 2]"},
      {[](Wire* r) { r->set_top_p(2); }, invalid, "top_p must be in (0, 1]"},
      {[](Wire* r) { r->set_top_p(-0.5f); }, invalid, "top_p must be in (0, 1]"},
      {[](Wire* r) { r->set_top_k(-3); }, invalid, "top_k must be in [0, 258]"},
      {[](Wire* r) { r->set_top_k(1000); }, invalid, "top_k must be in [0, 258]"},
      {[](Wire* r) { for (int i = 0; i < 9; ++i) r->add_stop("s"); }, invalid, "at most max_stop = 8"},
      {[](Wire* r) { r->add_stop(""); }, invalid, "stop[0] must not be empty"},
      {[](Wire* r) { r->add_stop(std::string(65, 's')); }, invalid, "stop[0] is 65 bytes"},
      {[](Wire* r) { r->add_stop("ok"); r->add_stop("\xC3"); }, invalid, "stop[1] is not valid UTF-8"},
      {[](Wire* r) { r->set_request_id(""); }, invalid, "request_id must be 1 to 128"},
      {[](Wire* r) { r->set_request_id(std::string(129, 'r')); }, invalid, "request_id must be 1 to 128"},
      {[](Wire* r) { r->set_request_id("has space"); }, invalid, "(bytes 0x21 to 0x7E); byte 3 is 0x20"},
      {[](Wire* r) { r->set_request_id("tab\t"); }, invalid, "request_id must be printable ASCII without spaces"},
      {[](Wire* r) { r->set_request_id("id\xFF"); }, invalid, "request_id is not valid UTF-8"},
      {[](Wire* r) { r->set_return_logprobs(true); r->set_top_logprobs(21); }, invalid, "top_logprobs must be in [0, 20]"},
      {[](Wire* r) { r->set_top_logprobs(2); }, invalid, "but return_logprobs and return_prompt_logprobs are false"},
      {[](Wire* r) { r->set_repetition_penalty(20); }, invalid, "repetition_penalty must be in [0.01, 10], or 0"},
      {[](Wire* r) { r->set_presence_penalty(5); }, invalid, "presence_penalty must be in [-2, 2]"},
      {[nan](Wire* r) { r->set_frequency_penalty(nan); }, invalid, "frequency_penalty must be in [-2, 2]"},
      {[](Wire* r) { r->set_min_tokens(5); }, invalid, "min_tokens must be in [0, max_tokens = 4], got 5"},
      {[](Wire* r) { (*r->mutable_logit_bias())[300] = 1; }, invalid, "logit_bias has token id 300"},
      {[](Wire* r) { (*r->mutable_logit_bias())[65] = -101; }, invalid, "logit_bias[65] must be in [-100, 100]"},
      {[](Wire* r) { r->set_cache_salt(std::string(300, 's')); }, invalid, "cache_salt is 300 bytes; the limit is 256"},
      {[](Wire* r) { r->set_n(9); }, invalid, "n must be in [0, 8] (0: one completion), got 9"},
      {[](Wire* r) { r->set_cache_salt("t\xFF"); }, invalid, "cache_salt is not valid UTF-8"},
      {[](Wire* r) { r->set_priority(1); }, invalid, "priority is 1 but the server runs scheduling_policy: fcfs"},
      {[](Wire* r) { r->set_min_p(1.5f); }, invalid, "min_p must be in [0, 1] (0: no cut), got 1.5"},
      {[](Wire* r) { r->add_stop_token_ids(300); }, invalid, "stop_token_ids[0] is 300; ids must be in [0, 257]"},
      {[](Wire* r) { r->add_prompt_token_ids(65); }, invalid, "prompt and prompt_token_ids are both set"},
      {[](Wire* r) { r->clear_prompt(); r->add_prompt_token_ids(258); }, invalid, "prompt_token_ids[0] is 258; ids must be in [0, 257]"},
      {[](Wire* r) { r->clear_prompt(); r->add_prompt_token_ids(65); r->set_max_tokens(255); }, invalid, "plus the prompt's 2 tokens exceeds the context length"},
      {[](Wire* r) { r->set_guided_regex("[0-9]{3}(a|\\bc)"); }, invalid, "guided_regex: \\b is not supported at offset 11"},
      {[](Wire* r) { r->set_guided_regex("x"); r->add_guided_choice("y"); }, invalid, "guided_regex and guided_choice are set; a request may have one guide"},
      {[](Wire* r) { r->add_guided_choice("a\xC3"); }, invalid, "guided_choice[0] is not valid UTF-8"},
      {[](Wire* r) { r->set_guided_json(R"({"type": "integer", "minimum": 0})"); }, invalid, "guided_json: the keyword \"minimum\" is not supported (at the root)"},
  };
  auto check = [&](const std::string& wire, grpc::StatusCode code, const std::string& expect) {
    SCOPED_TRACE(expect);
    grpc::Status unary = RawUnary(channel_.get(), wire);
    EXPECT_EQ(unary.error_code(), code) << unary.error_message();
    EXPECT_NE(unary.error_message().find(expect), std::string::npos) << unary.error_message();
    auto [stream, messages] = RawStream(channel_.get(), wire);
    EXPECT_EQ(stream.error_code(), code) << stream.error_message();
    EXPECT_NE(stream.error_message().find(expect), std::string::npos) << stream.error_message();
    EXPECT_EQ(messages, 0);
  };
  for (const auto& c : cases) {
    Wire r;
    r.set_prompt("hello");
    r.set_max_tokens(4);
    c.edit(&r);
    check(r.SerializeAsString(), c.code, c.expect);
  }
  // Bytes that are not a GenerateRequest at all.
  check("\xFF\xFF\xFF\xFF", invalid, "not a valid modserve.v1.GenerateRequest");
  check(std::string("\x0A\x10" "hello", 7), invalid, "not a valid modserve.v1.GenerateRequest");  // truncated field

  v1::GenerateResponse ok;
  EXPECT_TRUE(Unary(Request("hello", 4), &ok).ok());
  EXPECT_EQ(ok.token_ids_size(), 4);
}

// Tokenize's ids are what Generate reads (sent back as prompt_token_ids they
// give the same completion, and prompt_tokens is Generate's usage), and
// Detokenize of a completion's ids is its text; bad input is named.
TEST_F(ServerE2E, TokenizeGivesThePromptIdsAndDetokenizeTheTextOfACompletion) {
  const std::string prompt = "The jury said \xC3\xA9";
  v1::TokenizeRequest tr;
  tr.set_text(prompt);
  v1::TokenizeResponse tokens;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(In(10));
    ASSERT_TRUE(stub_->Tokenize(&ctx, tr, &tokens).ok());
  }
  ASSERT_EQ(tokens.token_ids_size(), static_cast<int>(prompt.size()));
  v1::GenerateResponse by_text, by_ids;
  ASSERT_TRUE(Unary(Request(prompt, 24), &by_text).ok());
  v1::GenerateRequest ids_request = Request("", 24);
  ids_request.mutable_prompt_token_ids()->CopyFrom(tokens.token_ids());
  ASSERT_TRUE(Unary(ids_request, &by_ids).ok());
  EXPECT_EQ(std::vector<int>(by_ids.token_ids().begin(), by_ids.token_ids().end()),
            std::vector<int>(by_text.token_ids().begin(), by_text.token_ids().end()));
  EXPECT_EQ(tokens.prompt_tokens(), by_text.usage().prompt_tokens());

  v1::DetokenizeRequest dr;
  dr.mutable_token_ids()->CopyFrom(by_text.token_ids());
  v1::DetokenizeResponse text;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(In(10));
    ASSERT_TRUE(stub_->Detokenize(&ctx, dr, &text).ok());
  }
  EXPECT_EQ(text.text(), by_text.text());

  dr.add_token_ids(999);
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(In(10));
    grpc::Status bad = stub_->Detokenize(&ctx, dr, &text);
    EXPECT_EQ(bad.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(bad.error_message().find("] is 999; ids must be in [0, 257]"), std::string::npos) << bad.error_message();
  }
  wire::TokenizeRequestWire bad_text;
  bad_text.set_text("ok\xFF");
  struct Case {
    std::string wire, expect;
  } cases[] = {
      {bad_text.SerializeAsString(), "text is not valid UTF-8 (first bad byte at offset 2)"},
      {[] {
         wire::TokenizeRequestWire w;
         w.set_text(std::string(9000, 'a'));
         return w.SerializeAsString();
       }(),
       "text is 9000 bytes; the limit is max_prompt_bytes = 8192"},
      {"\xFF\xFF\xFF", "not a valid modserve.v1.TokenizeRequest"},
  };
  for (const auto& c : cases) {
    grpc::Status bad = RawUnary(channel_.get(), c.wire, "Tokenize");
    EXPECT_EQ(bad.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.expect;
    EXPECT_NE(bad.error_message().find(c.expect), std::string::npos) << bad.error_message();
  }
}

TEST_F(ServerE2E, HealthModelInfoAndReflection) {
  auto health = grpc::health::v1::Health::NewStub(channel_);
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(In(10));
    HealthCheckResponse resp;
    ASSERT_TRUE(health->Check(&ctx, {}, &resp).ok());
    EXPECT_EQ(resp.status(), HealthCheckResponse::SERVING);
  }
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(In(10));
    v1::ModelInfo info;
    ASSERT_TRUE(stub_->GetModelInfo(&ctx, {}, &info).ok());
    EXPECT_EQ(info.context_length(), 256);
    EXPECT_EQ(std::vector<int>(info.routed_layers().begin(), info.routed_layers().end()), (std::vector<int>{1, 3, 5}));
    EXPECT_DOUBLE_EQ(info.capacity(), 0.125);
    EXPECT_EQ(info.limits().max_tokens(), 1024);
    EXPECT_EQ(info.limits().max_top_logprobs(), 20);
    EXPECT_TRUE(info.prefix_caching());
    EXPECT_EQ(info.kv_block_size(), 16);
    EXPECT_EQ(info.kv_blocks(), ServerConfig().kv_blocks);
    EXPECT_EQ(info.scheduling_policy(), "fcfs");
  }
  namespace refl = modserve::testing::reflection;
  const grpc::internal::RpcMethod method("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                                         grpc::internal::RpcMethod::BIDI_STREAMING, channel_);
  grpc::ClientContext ctx;
  ctx.set_deadline(In(10));
  std::unique_ptr<grpc::ClientReaderWriter<refl::ServerReflectionRequest, refl::ServerReflectionResponse>> rw(
      grpc::internal::ClientReaderWriterFactory<refl::ServerReflectionRequest, refl::ServerReflectionResponse>::Create(
          channel_.get(), method, &ctx));
  refl::ServerReflectionRequest req;
  req.set_list_services("");
  ASSERT_TRUE(rw->Write(req));
  refl::ServerReflectionResponse resp;
  ASSERT_TRUE(rw->Read(&resp));
  std::set<std::string> services;
  for (const auto& s : resp.list_services_response().service()) services.insert(s.name());
  EXPECT_TRUE(services.count("modserve.v1.Generator"));
  EXPECT_TRUE(services.count("grpc.health.v1.Health"));
  req.set_file_containing_symbol("modserve.v1.Generator");
  ASSERT_TRUE(rw->Write(req));
  ASSERT_TRUE(rw->Read(&resp));
  ASSERT_GT(resp.file_descriptor_response().file_descriptor_proto_size(), 0);
  EXPECT_NE(resp.file_descriptor_response().file_descriptor_proto(0).find("GenerateStream"), std::string::npos);
  rw->WritesDone();
  EXPECT_TRUE(rw->Finish().ok());
}

TEST_F(ServerE2E, LayerCountersMatchWhatClientsWereTold) {
  ASSERT_TRUE(WaitIdle());
  auto before = Metrics();
  // One-byte prompts: the engine processes BOS, the byte, and each generated
  // token but the last; routes cover every pass but the one over BOS.
  const std::string bytes = "TAwsh";
  std::map<int, int64_t> usage, routes;
  const int n = static_cast<int>(bytes.size());
  for (char ch : bytes) {
    v1::GenerateRequest r = Request(std::string(1, ch), 20);
    r.set_return_routes(true);
    StreamResult s = Stream(r);
    ASSERT_TRUE(s.status.ok());
    for (const auto& l : s.messages.back().usage().layers()) usage[l.layer()] += l.computed();
    for (const auto& m : s.messages) {
      for (const auto& route : m.routes()) {
        for (int l : route.computed_layers()) ++routes[l];
      }
    }
  }
  auto after = Metrics();
  for (int layer : {1, 3, 5}) {
    const std::string key = "modserve_layer_tokens_total{decision=\"computed\",layer=\"" + std::to_string(layer) + "\"}";
    const std::string skey = "modserve_layer_tokens_total{decision=\"skipped\",layer=\"" + std::to_string(layer) + "\"}";
    const double counted = after[key] - before[key];
    EXPECT_EQ(counted, static_cast<double>(usage[layer])) << "layer " << layer;
    EXPECT_EQ(counted + after[skey] - before[skey], static_cast<double>(n * (2 + 19))) << "layer " << layer;
    // The BOS pass is the same in every request: it computed the layer in all of them or in none.
    const double bos = counted - static_cast<double>(routes[layer]);
    EXPECT_TRUE(bos == 0 || bos == n) << "layer " << layer << ": counters " << counted << ", routes " << routes[layer];
  }
  EXPECT_EQ(after["modserve_generated_tokens_total"] - before["modserve_generated_tokens_total"], n * 20);
  EXPECT_GE(after["modserve_predictor_agreement_ratio{layer=\"1\"}"], 0.0);
  EXPECT_GT(after["modserve_time_to_first_token_seconds_count"], before["modserve_time_to_first_token_seconds_count"]);
}

}  // namespace
}  // namespace modserve
