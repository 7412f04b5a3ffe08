// End-to-end tests of the request's sampling and stop controls on the
// shared mod-server (shipped model, loopback): the penalties, min_tokens,
// logit_bias and ignore_eos give the reference generation's tokens; stop
// strings and stop token ids end a completion and are named; min_p and a
// prompt sent as token ids; guided decoding (a regex, a list of choices, a JSON Schema)
// shapes the completion however the model leans; unary and streamed alike.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <regex>
#include <string>
#include <vector>

#include "engine/checkpoint.h"
#include "engine/reference_generate.h"
#include "engine/tokenizer.h"
#include "server_e2e_fixture.h"

namespace modserve {
namespace {

using testing::kModel;
using testing::Request;
using testing::ServerE2E;
using testing::StreamResult;

TEST_F(ServerE2E, PenaltiesGiveTheReferenceTokens) {
  constexpr int kTokens = 48;
  auto model = LoadCheckpoint(kModel);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  const std::vector<int64_t> prompt = ByteTokenizer(256, 257).Encode("The jury said ", /*add_bos=*/true);
  SamplingParams plain;
  SamplingParams penalized;
  penalized.repetition_penalty = 1.3f;  // as the request's floats carry them
  penalized.presence_penalty = 0.4f;
  penalized.frequency_penalty = 0.3f;
  const ReferenceGeneration want = ReferenceGenerate(*model, prompt, kTokens, penalized);
  const ReferenceGeneration greedy = ReferenceGenerate(*model, prompt, kTokens, plain);
  ASSERT_EQ(want.tokens.size(), static_cast<size_t>(kTokens));
  EXPECT_NE(want.tokens, greedy.tokens) << "the penalties change the text";

  v1::GenerateRequest r = Request("The jury said ", kTokens);
  r.set_repetition_penalty(1.3f);
  r.set_presence_penalty(0.4f);
  r.set_frequency_penalty(0.3f);
  v1::GenerateResponse u;
  ASSERT_TRUE(Unary(r, &u).ok());
  const std::vector<int> want_ids(want.tokens.begin(), want.tokens.end());
  EXPECT_EQ(std::vector<int>(u.token_ids().begin(), u.token_ids().end()), want_ids);
  StreamResult s = Stream(r);
  ASSERT_TRUE(s.status.ok()) << s.status.error_message();
  EXPECT_EQ(s.ids, want_ids);
}


TEST_F(ServerE2E, MinTokensLogitBiasAndIgnoreEos) {
  v1::GenerateResponse greedy;
  ASSERT_TRUE(Unary(Request("The jury said ", 20), &greedy).ok());
  ASSERT_EQ(greedy.token_ids_size(), 20);

  // EOS pushed to the top by +100 but held back for 5 tokens: the 5 greedy
  // tokens, then EOS.
  v1::GenerateRequest r = Request("The jury said ", 20);
  r.set_min_tokens(5);
  (*r.mutable_logit_bias())[257] = 100;
  auto model = LoadCheckpoint(kModel);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  SamplingParams p;
  p.min_tokens = 5;
  p.eos_id = 257;
  p.logit_bias = {{257, 100.0f}};
  const ReferenceGeneration want =
      ReferenceGenerate(*model, ByteTokenizer(256, 257).Encode("The jury said ", /*add_bos=*/true), 20, p);
  ASSERT_TRUE(want.hit_eos);
  ASSERT_EQ(want.tokens.size(), 6u);
  std::vector<int> want_ids(greedy.token_ids().begin(), greedy.token_ids().begin() + 5);
  want_ids.push_back(257);
  EXPECT_EQ(std::vector<int>(want.tokens.begin(), want.tokens.end()), want_ids);
  v1::GenerateResponse u;
  ASSERT_TRUE(Unary(r, &u).ok());
  EXPECT_EQ(std::vector<int>(u.token_ids().begin(), u.token_ids().end()), want_ids);
  EXPECT_EQ(u.finish_reason(), v1::FINISH_REASON_EOS);
  EXPECT_EQ(u.text(), ByteTokenizer(256, 257).Decode(want.tokens));
  EXPECT_EQ(u.usage().completion_tokens(), 6);
  StreamResult s = Stream(r);
  ASSERT_TRUE(s.status.ok()) << s.status.error_message();
  EXPECT_EQ(s.ids, want_ids);

  // ignore_eos: EOS is an ordinary token, so min_tokens holds nothing back
  // (as in vLLM); forced by the bias, it fills all 20 tokens and no text.
  r.set_ignore_eos(true);
  ASSERT_TRUE(Unary(r, &u).ok());
  EXPECT_EQ(u.finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(std::vector<int>(u.token_ids().begin(), u.token_ids().end()), std::vector<int>(20, 257));
  EXPECT_EQ(u.text(), "");
  EXPECT_EQ(u.usage().completion_tokens(), 20);

  // A bias of +100 on 'A' forces it; -100 on the greedy first token bans it.
  v1::GenerateRequest a = Request("The jury said ", 8);
  (*a.mutable_logit_bias())['A'] = 100;
  ASSERT_TRUE(Unary(a, &u).ok());
  EXPECT_EQ(u.text(), "AAAAAAAA");
  v1::GenerateRequest ban = Request("The jury said ", 1);
  (*ban.mutable_logit_bias())[greedy.token_ids(0)] = -100;
  ASSERT_TRUE(Unary(ban, &u).ok());
  ASSERT_EQ(u.token_ids_size(), 1);
  EXPECT_NE(u.token_ids(0), greedy.token_ids(0));
}

TEST_F(ServerE2E, StopStringEndsTheCompletion) {
  v1::GenerateResponse u;
  ASSERT_TRUE(Unary(Request("The jury said ", 64), &u).ok());
  ASSERT_GT(u.text().size(), 6u);
  const std::string stop = u.text().substr(3, 3);  // a stop string the greedy completion contains
  v1::GenerateRequest r = Request("The jury said ", 64);
  r.add_stop(stop);
  v1::GenerateResponse s;
  ASSERT_TRUE(Unary(r, &s).ok());
  EXPECT_EQ(s.finish_reason(), v1::FINISH_REASON_STOP);
  EXPECT_EQ(s.text(), u.text().substr(0, u.text().find(stop)));
  EXPECT_EQ(s.stop_match_case(), v1::GenerateResponse::kStopString);
  EXPECT_EQ(s.stop_string(), stop) << "the stop string that matched";
  StreamResult streamed = Stream(r);
  ASSERT_TRUE(streamed.status.ok()) << streamed.status.error_message();
  ASSERT_FALSE(streamed.messages.empty());
  EXPECT_EQ(streamed.text, s.text());
  EXPECT_EQ(streamed.messages.back().stop_string(), stop);

  // include_stop_str_in_output: the same completion with the stop string kept, unary and streamed.
  r.set_include_stop_str_in_output(true);
  v1::GenerateResponse kept;
  ASSERT_TRUE(Unary(r, &kept).ok());
  EXPECT_EQ(kept.finish_reason(), v1::FINISH_REASON_STOP);
  EXPECT_EQ(kept.text(), s.text() + stop);
  EXPECT_EQ(kept.token_ids_size(), s.token_ids_size());
  StreamResult kept_streamed = Stream(r);
  ASSERT_TRUE(kept_streamed.status.ok()) << kept_streamed.status.error_message();
  EXPECT_EQ(kept_streamed.text, kept.text());
}

// truncate_prompt_tokens: a long history cut to its last tokens gives what
// those tokens alone give, and usage counts only them.
TEST_F(ServerE2E, TruncatePromptTokensServesTheLastTokensOfALongPrompt) {
  const std::string tail = "The jury said ";
  v1::GenerateResponse alone;
  ASSERT_TRUE(Unary(Request(tail, 24), &alone).ok());
  v1::GenerateRequest r = Request(std::string(400, 'x') + tail, 24);  // longer than the 256-token context
  v1::GenerateResponse refused;
  EXPECT_EQ(Unary(r, &refused).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  r.set_truncate_prompt_tokens(static_cast<int32_t>(tail.size()));
  v1::GenerateResponse cut;
  ASSERT_TRUE(Unary(r, &cut).ok());
  EXPECT_EQ(cut.text(), alone.text());
  EXPECT_EQ(cut.usage().prompt_tokens(), alone.usage().prompt_tokens());
  StreamResult streamed = Stream(r);
  ASSERT_TRUE(streamed.status.ok()) << streamed.status.error_message();
  EXPECT_EQ(streamed.text, alone.text());
}

TEST_F(ServerE2E, StopTokenIdsPromptTokenIdsAndMinPAndTheStopThatMatched) {
  const std::string prompt = "The jury said ";
  v1::GenerateResponse greedy;
  ASSERT_TRUE(Unary(Request(prompt, 24), &greedy).ok());
  const std::vector<int> greedy_ids(greedy.token_ids().begin(), greedy.token_ids().end());
  ASSERT_EQ(greedy_ids.size(), 24u);

  // The prompt's bytes as ids: the same tokens as the text, unary and streamed.
  v1::GenerateRequest ids;
  ids.set_max_tokens(24);
  for (unsigned char c : prompt) ids.add_prompt_token_ids(c);
  v1::GenerateResponse u;
  ASSERT_TRUE(Unary(ids, &u).ok());
  EXPECT_EQ(std::vector<int>(u.token_ids().begin(), u.token_ids().end()), greedy_ids);
  EXPECT_EQ(u.text(), greedy.text());
  EXPECT_EQ(u.usage().prompt_tokens(), greedy.usage().prompt_tokens());
  StreamResult s = Stream(ids);
  ASSERT_TRUE(s.status.ok()) << s.status.error_message();
  EXPECT_EQ(s.ids, greedy_ids);

  // min_p 1 keeps only the most likely token: sampling at temperature 1 gives
  // the greedy tokens whatever the seed.
  v1::GenerateRequest minp = Request(prompt, 24);
  minp.set_temperature(1);
  minp.set_min_p(1);
  minp.set_seed(5);
  ASSERT_TRUE(Unary(minp, &u).ok());
  EXPECT_EQ(std::vector<int>(u.token_ids().begin(), u.token_ids().end()), greedy_ids);

  // A stop token id: the greedy tokens up to and with its first occurrence,
  // the text before it, STOP, and the id named (unary and on the stream's last message).
  const int stop_id = greedy_ids[5];
  const size_t first = static_cast<size_t>(std::find(greedy_ids.begin(), greedy_ids.end(), stop_id) - greedy_ids.begin());
  const std::vector<int> want(greedy_ids.begin(), greedy_ids.begin() + static_cast<std::ptrdiff_t>(first) + 1);
  v1::GenerateRequest st = Request(prompt, 24);
  int decoy = 0;  // a second stop id the completion never reaches
  while (std::find(greedy_ids.begin(), greedy_ids.end(), decoy) != greedy_ids.end()) ++decoy;
  st.add_stop_token_ids(decoy);
  st.add_stop_token_ids(stop_id);
  ASSERT_TRUE(Unary(st, &u).ok());
  EXPECT_EQ(std::vector<int>(u.token_ids().begin(), u.token_ids().end()), want);
  EXPECT_EQ(u.finish_reason(), v1::FINISH_REASON_STOP);
  EXPECT_EQ(u.stop_match_case(), v1::GenerateResponse::kStopTokenId);
  EXPECT_EQ(u.stop_token_id(), stop_id);
  EXPECT_EQ(u.text(), greedy.text().substr(0, first));
  EXPECT_EQ(u.usage().completion_tokens(), static_cast<int>(want.size()));
  s = Stream(st);
  ASSERT_TRUE(s.status.ok()) << s.status.error_message();
  EXPECT_EQ(s.ids, want);
  EXPECT_EQ(s.text, u.text());
  ASSERT_FALSE(s.messages.empty());
  EXPECT_EQ(s.messages.back().stop_token_id(), stop_id);
  for (size_t i = 0; i + 1 < s.messages.size(); ++i) EXPECT_EQ(s.messages[i].stop_match_case(), v1::GenerateResponse::STOP_MATCH_NOT_SET);

  // Within min_tokens the stop id is held back: the request then runs on
  // past its first occurrence.
  st.set_min_tokens(static_cast<int>(first) + 1);
  ASSERT_TRUE(Unary(st, &u).ok());
  EXPECT_GT(u.token_ids_size(), static_cast<int>(first) + 1);
  for (int i = 0; i <= static_cast<int>(first); ++i) EXPECT_NE(u.token_ids(i), stop_id) << i;

  // Without a stop match nothing is set.
  EXPECT_EQ(greedy.stop_match_case(), v1::GenerateResponse::STOP_MATCH_NOT_SET);
}

// A guide holds the model to its pattern: greedy and sampled completions
// are whole matches ending with EOS, the same unary and streamed, where the
// unguided model writes prose.
TEST_F(ServerE2E, GuidedRegexAndChoiceShapeTheCompletion) {
  const std::string pattern = "[0-9]{3}-[0-9]{4}( ext\\. [0-9]{1,4})?";
  const std::regex whole(pattern);
  const auto metrics_before = Metrics();
  v1::GenerateRequest r = Request("Call the clerk at ", 40);
  v1::GenerateResponse unguided;
  ASSERT_TRUE(Unary(r, &unguided).ok());
  EXPECT_FALSE(std::regex_match(unguided.text(), whole)) << "the test means something only if the model alone does not match";
  r.set_guided_regex(pattern);
  v1::GenerateResponse guided;
  ASSERT_TRUE(Unary(r, &guided).ok());
  EXPECT_EQ(guided.finish_reason(), v1::FINISH_REASON_EOS) << guided.text();
  EXPECT_TRUE(std::regex_match(guided.text(), whole)) << guided.text();
  StreamResult streamed = Stream(r);
  ASSERT_TRUE(streamed.status.ok()) << streamed.status.error_message();
  EXPECT_EQ(streamed.text, guided.text());
  EXPECT_EQ(streamed.messages.back().finish_reason(), v1::FINISH_REASON_EOS);
  for (uint64_t seed = 1; seed <= 4; ++seed) {
    v1::GenerateRequest sampled = r;
    sampled.set_temperature(1.0f);
    sampled.set_seed(seed);
    v1::GenerateResponse out;
    ASSERT_TRUE(Unary(sampled, &out).ok());
    EXPECT_TRUE(std::regex_match(out.text(), whole)) << "seed " << seed << ": " << out.text();
  }

  v1::GenerateRequest choice = Request("The jury found the defendant ", 40);
  for (const char* c : {"guilty", "not guilty", "innocent \xE2\x80\x94 of everything"}) choice.add_guided_choice(c);
  v1::GenerateResponse picked;
  ASSERT_TRUE(Unary(choice, &picked).ok());
  EXPECT_EQ(picked.finish_reason(), v1::FINISH_REASON_EOS);
  EXPECT_TRUE(std::find(choice.guided_choice().begin(), choice.guided_choice().end(), picked.text()) !=
              choice.guided_choice().end())
      << picked.text();
  // A JSON Schema: the completion parses and fits it.
  v1::GenerateRequest json = Request("The clerk read the verdict: ", 150);
  json.set_guided_json(R"({"type": "object", "properties": {
      "name": {"type": "string", "maxLength": 12},
      "verdict": {"enum": ["guilty", "not guilty"]},
      "unanimous": {"type": "boolean"}}, "required": ["name", "verdict", "unanimous"]})");
  v1::GenerateResponse record;
  ASSERT_TRUE(Unary(json, &record).ok());
  EXPECT_EQ(record.finish_reason(), v1::FINISH_REASON_EOS) << record.text();
  nlohmann::json parsed;
  ASSERT_NO_THROW(parsed = nlohmann::json::parse(record.text())) << record.text();
  EXPECT_TRUE(parsed["name"].is_string()) << record.text();
  EXPECT_TRUE(parsed["verdict"] == "guilty" || parsed["verdict"] == "not guilty") << record.text();
  EXPECT_TRUE(parsed["unanimous"].is_boolean()) << record.text();

  // Cut short by max_tokens: a prefix of a match, finish LENGTH.
  choice.set_max_tokens(3);
  v1::GenerateResponse cut;
  ASSERT_TRUE(Unary(choice, &cut).ok());
  EXPECT_EQ(cut.finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(cut.text().size(), 3u);
  EXPECT_TRUE(std::any_of(choice.guided_choice().begin(), choice.guided_choice().end(),
                          [&](const std::string& c) { return c.rfind(cut.text(), 0) == 0; }))
      << cut.text();

  // Each guide compiled once: the regex's six requests, the choices' two and the schema's one.
  const auto metrics_after = Metrics();
  auto delta = [&](const std::string& series) { return metrics_after.at(series) - metrics_before.at(series); };
  EXPECT_EQ(delta("modserve_guide_cache_lookups_total{result=\"miss\"}"), 3);
  EXPECT_EQ(delta("modserve_guide_cache_lookups_total{result=\"hit\"}"), 6);
  EXPECT_EQ(delta("modserve_guide_compile_seconds_count"), 3);
  EXPECT_GT(metrics_after.at("modserve_guide_cache_bytes"), 0);
}

}  // namespace
}  // namespace modserve
