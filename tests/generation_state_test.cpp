// Tests for GenerationState: EOS, length, and stop strings across tokens.
#include <gtest/gtest.h>

#include "engine/generation_state.h"

namespace modserve {
namespace {

void AddText(GenerationState& g, const std::string& s) {
  for (unsigned char c : s) g.Add(c);
}

TEST(GenerationState, StopsAtMaxTokens) {
  GenerationState g({3, 257, {}});
  EXPECT_EQ(g.Add('a'), FinishReason::kNone);
  EXPECT_EQ(g.Add('b'), FinishReason::kNone);
  EXPECT_EQ(g.Add('c'), FinishReason::kLength);
  EXPECT_EQ(g.text(), "abc");
  EXPECT_STREQ(FinishReasonName(g.finish_reason()), "length");
}

TEST(GenerationState, StopsAtEosWithoutPuttingItInTheText) {
  GenerationState g({10, 257, {}});
  g.Add('h');
  EXPECT_EQ(g.Add(257), FinishReason::kEos);
  EXPECT_EQ(g.text(), "h");
  EXPECT_EQ(g.tokens().size(), 2u);
}

TEST(GenerationState, StopStringsSpanTokensAndAreCutFromTheText) {
  GenerationState g({100, 257, {"\n\n", "END"}});
  AddText(g, "one\ntwo E");
  EXPECT_FALSE(g.finished());
  EXPECT_EQ(g.StableLength(), 8u) << "the trailing E may start END";
  g.Add('N');
  EXPECT_EQ(g.StableLength(), 8u);
  EXPECT_EQ(g.Add('D'), FinishReason::kStop);
  EXPECT_EQ(g.text(), "one\ntwo ");
  EXPECT_EQ(g.StableLength(), g.text().size());
}

TEST(GenerationState, WithIncludeStopTheStopStringStaysAndNothingIsHeldBack) {
  StopCriteria c{100, 257, {"\n\n", "END"}};
  c.include_stop = true;
  GenerationState g(c);
  AddText(g, "one\ntwo E");
  EXPECT_EQ(g.StableLength(), 9u) << "nothing would be cut: all of it can be sent";
  g.Add('N');
  EXPECT_EQ(g.Add('D'), FinishReason::kStop);
  EXPECT_EQ(g.text(), "one\ntwo END");
  EXPECT_EQ(g.matched_stop(), 1);
}

TEST(GenerationState, BeforeMinTokensNeitherEosNorAStopStringEnds) {
  GenerationState g({10, 257, {"ab"}, 4});
  AddText(g, "ab");
  EXPECT_FALSE(g.finished()) << "a stop string completed at token 2 < 4 stays in the text";
  EXPECT_EQ(g.Add(257), FinishReason::kNone) << "EOS as token 3";
  EXPECT_EQ(g.text(), "ab");
  EXPECT_EQ(g.Add('a'), FinishReason::kNone);
  EXPECT_EQ(g.Add('b'), FinishReason::kStop) << "token 5 completes it again";
  EXPECT_EQ(g.text(), "ab");
  GenerationState e({10, 257, {}, 2});
  e.Add('x');
  EXPECT_EQ(e.Add(257), FinishReason::kNone) << "not as the 2nd token";
  EXPECT_EQ(e.Add(257), FinishReason::kEos) << "the 3rd token may be EOS";
  // min_tokens 1 keeps a first token that is itself the stop string.
  GenerationState n({10, 257, {"\n"}, 1});
  EXPECT_EQ(n.Add('\n'), FinishReason::kNone);
  EXPECT_EQ(n.Add('\n'), FinishReason::kStop);
  EXPECT_EQ(n.text(), "\n");
  // A stop string that starts within the first min_tokens and ends after.
  GenerationState x({10, 257, {"ab"}, 1});
  x.Add('a');
  EXPECT_EQ(x.Add('b'), FinishReason::kStop);
  EXPECT_EQ(x.text(), "");
}

TEST(GenerationState, AStopTokenEndsWithoutTextAndSaysWhichStopMatched) {
  StopCriteria c{10, 257, {"zz", "b"}, 0, {'x', 200}};
  GenerationState g(c);
  AddText(g, "aa");
  EXPECT_EQ(g.Add('x'), FinishReason::kStop) << "a byte id listed as a stop token";
  EXPECT_EQ(g.text(), "aa") << "the stop token adds no text";
  EXPECT_EQ(g.tokens().back(), 'x') << "but is kept among the tokens";
  EXPECT_EQ(g.matched_stop_token(), 'x');
  EXPECT_EQ(g.matched_stop(), -1);
  GenerationState s(c);
  AddText(s, "ab");
  EXPECT_EQ(s.finish_reason(), FinishReason::kStop);
  EXPECT_EQ(s.matched_stop(), 1) << "the index of \"b\" in the stop strings";
  EXPECT_EQ(s.matched_stop_token(), -1);
  EXPECT_EQ(s.text(), "a");
  // Held within min_tokens as EOS is: id 200 as the 1st and 2nd token stays.
  c.min_tokens = 2;
  GenerationState m(c);
  EXPECT_EQ(m.Add(200), FinishReason::kNone);
  EXPECT_EQ(m.Add(200), FinishReason::kNone);
  EXPECT_EQ(m.Add(200), FinishReason::kStop);
  EXPECT_EQ(m.text(), "\xC8\xC8") << "a byte id held within min_tokens is text; as the stop it adds none";
  EXPECT_EQ(m.matched_stop_token(), 200);
  // EOS listed as a stop token ends the request as STOP when EOS itself does not.
  GenerationState e({10, -1, {}, 0, {257}});
  EXPECT_EQ(e.Add(257), FinishReason::kStop);
  EXPECT_EQ(e.matched_stop_token(), 257);
  GenerationState l({2, 257, {"q"}});
  AddText(l, "ab");
  EXPECT_EQ(l.finish_reason(), FinishReason::kLength);
  EXPECT_EQ(l.matched_stop(), -1);
  EXPECT_EQ(l.matched_stop_token(), -1);
}

TEST(GenerationState, WithoutAnEosIdEosOnlyAddsATokenAndNoText) {
  GenerationState g({3, -1, {}});
  EXPECT_EQ(g.Add(257), FinishReason::kNone);
  EXPECT_EQ(g.Add('a'), FinishReason::kNone);
  EXPECT_EQ(g.Add(257), FinishReason::kLength);
  EXPECT_EQ(g.text(), "a");
  EXPECT_EQ(g.tokens(), (std::vector<int64_t>{257, 'a', 257}));
}

TEST(GenerationState, AStopStringBeatsTheLengthLimitOnTheSameToken) {
  GenerationState g({2, 257, {"ab"}});
  g.Add('a');
  EXPECT_EQ(g.Add('b'), FinishReason::kStop);
  EXPECT_EQ(g.text(), "");
}

}  // namespace
}  // namespace modserve
