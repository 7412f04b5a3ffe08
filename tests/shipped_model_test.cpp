// Tests of the shipped default model (models/mod-small): it loads, is a MoD
// model, and generates; on the Brown validation split (when
// scripts/fetch-corpus.sh has fetched it) it meets the targets of the README.
#include <gtest/gtest.h>

#include <filesystem>

#include "engine/checkpoint.h"
#include "engine/evaluator.h"
#include "engine/reference_generate.h"
#include "engine/tokenizer.h"

namespace modserve {
namespace {

const std::string kModelDir = std::string(MODSERVE_SOURCE_DIR) + "/models/mod-small";
const std::string kValText = std::string(MODSERVE_SOURCE_DIR) + "/data/brown/val.txt";

TEST(ShippedModel, LoadsAndGenerates) {
  auto model = LoadCheckpoint(kModelDir);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  const ModelConfig& cfg = (*model)->config();
  EXPECT_TRUE(cfg.routing_enabled);
  EXPECT_DOUBLE_EQ(cfg.capacity, 0.125);
  EXPECT_LE(std::filesystem::file_size(kModelDir + "/model.safetensors"), 16u << 20);
  ByteTokenizer tok(cfg.bos_id, cfg.eos_id);
  auto gen = ReferenceGenerate(*model, tok.Encode("The jury said ", true), 40, SamplingParams{});
  ASSERT_EQ(gen.tokens.size(), 40u);
  const std::string text = tok.Decode(gen.tokens);
  int letters = 0;
  for (char c : text) letters += std::isalpha(static_cast<unsigned char>(c)) ? 1 : 0;
  EXPECT_GT(letters, 20) << "generated: " << text;
}

TEST(ShippedModel, MeetsTheTargetsOnTheValidationSplit) {
  if (!std::filesystem::exists(kValText)) GTEST_SKIP() << kValText << " not found: run scripts/fetch-corpus.sh";
  auto model = LoadCheckpoint(kModelDir);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  auto text = TokenCorpus::FromFile(kValText, (*model)->config().bos_id);
  ASSERT_TRUE(text.ok());
  EvalOptions eo;
  eo.seq_len = (*model)->config().max_context;
  EvalResult r = Evaluate(*model, *text, eo);
  std::printf("shipped model on %s: %s\n", kValText.c_str(), r.ToJson().dump().c_str());
  EXPECT_LE(r.bits_per_byte, 2.4);
  EXPECT_GE(r.mean_predictor_agreement, 0.95);
  EXPECT_LE(r.bits_per_byte, 1.03 * r.bits_per_byte_topk);
  for (double f : r.compute_fraction) {
    EXPECT_GE(f, 0.125 - 0.03);
    EXPECT_LE(f, 0.125 + 0.03);
  }
}

}  // namespace
}  // namespace modserve
