// Tests for the trainer and evaluator: seeded determinism, bit-exact resume,
// learning on a small text, and evaluator outputs.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "engine/checkpoint.h"
#include "engine/evaluator.h"
#include "engine/trainer.h"
#include "test_models.h"

namespace modserve {
namespace {

using modserve::testing::TempDir;
using modserve::testing::TinyConfig;

std::string WriteText(const std::string& dir) {
  std::string text;
  for (int i = 0; i < 200; ++i) text += "the quick brown fox jumps over the lazy dog " + std::to_string(i % 7) + ". ";
  const std::string path = dir + "/text.txt";
  std::ofstream(path) << text;
  return path;
}

TrainOptions TinyRun(const std::string& dir, int64_t steps) {
  TrainOptions o;
  o.train_text = WriteText(dir);
  o.val_text = o.train_text;
  o.out_dir = dir + "/model";
  o.model = TinyConfig();
  o.steps = steps;
  o.batch = 4;
  o.seq_len = 32;
  o.warmup = 2;
  o.eval_every = 0;
  o.eval_max_bytes = 2048;
  o.lr = 3e-3;
  return o;
}

std::map<std::string, torch::Tensor> Weights(const std::string& dir) {
  auto m = LoadCheckpoint(dir);
  EXPECT_TRUE(m.ok()) << m.status().ToString();
  std::map<std::string, torch::Tensor> out;
  for (auto& p : (*m)->named_parameters()) out[p.key()] = p.value().clone();
  return out;
}

bool SameWeights(const std::map<std::string, torch::Tensor>& a, const std::map<std::string, torch::Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (auto& [k, v] : a)
    if (!b.count(k) || !torch::equal(v, b.at(k))) return false;
  return true;
}

TEST(Trainer, SameSeedSameWeightsDifferentSeedDifferentWeights) {
  const std::string d1 = TempDir("train_seed1"), d2 = TempDir("train_seed2"), d3 = TempDir("train_seed3");
  ASSERT_TRUE(Train(TinyRun(d1, 4)).ok());
  ASSERT_TRUE(Train(TinyRun(d2, 4)).ok());
  TrainOptions other = TinyRun(d3, 4);
  other.seed = 99;
  ASSERT_TRUE(Train(other).ok());
  EXPECT_TRUE(SameWeights(Weights(d1 + "/model"), Weights(d2 + "/model")));
  EXPECT_FALSE(SameWeights(Weights(d1 + "/model"), Weights(d3 + "/model")));
}

TEST(Trainer, ResumedRunEqualsUninterruptedRun) {
  const std::string straight = TempDir("train_straight"), split = TempDir("train_split");
  ASSERT_TRUE(Train(TinyRun(straight, 6)).ok());
  TrainOptions first = TinyRun(split, 6);
  first.stop_at = 3;
  auto s1 = Train(first);
  ASSERT_TRUE(s1.ok()) << s1.status().ToString();
  EXPECT_EQ(s1->steps, 3);
  TrainOptions second = TinyRun(split, 6);
  second.resume = true;
  auto s2 = Train(second);
  ASSERT_TRUE(s2.ok()) << s2.status().ToString();
  EXPECT_EQ(s2->steps, 3);
  EXPECT_TRUE(SameWeights(Weights(straight + "/model"), Weights(split + "/model")));
  auto cfg = LoadModelConfig(split + "/model");
  ASSERT_TRUE(cfg.ok());
  EXPECT_EQ(cfg->training["tokens"].get<int64_t>(), 6 * 4 * 32);
}

TEST(Trainer, ResumeWithoutStateFailsClearly) {
  const std::string dir = TempDir("train_nostate");
  TrainOptions o = TinyRun(dir, 2);
  o.resume = true;
  auto r = Train(o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("config.json"), std::string::npos) << r.status().message();
}

TEST(Trainer, LearnsARepetitiveText) {
  const std::string dir = TempDir("train_learn");
  TrainOptions o = TinyRun(dir, 60);
  o.lr = 1e-2;
  auto text = TokenCorpus::FromFile(o.train_text, 256);
  ASSERT_TRUE(text.ok());
  torch::manual_seed(o.seed);
  MoDTransformer fresh(o.model);
  EvalOptions eo;
  eo.seq_len = 32;
  const double before = Evaluate(fresh, *text, eo).bits_per_byte_topk;
  auto summary = Train(o);
  ASSERT_TRUE(summary.ok()) << summary.status().ToString();
  auto trained = LoadCheckpoint(o.out_dir);
  ASSERT_TRUE(trained.ok());
  const double after = Evaluate(*trained, *text, eo).bits_per_byte_topk;
  EXPECT_GT(before, 7.0);  // ~log2(258) untrained
  EXPECT_LT(after, 3.5);
  EXPECT_GT(summary->train_flops, 0);
}

TEST(Trainer, TrainFlopsBudgetSetsTheStepCount) {
  const std::string dir = TempDir("train_flops");
  TrainOptions o = TinyRun(dir, 1000);
  o.train_flops = TrainFlopsPerToken(o.model, o.seq_len) * o.batch * o.seq_len * 3.5;
  auto s = Train(o);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->steps, 3);
}

TEST(Evaluator, ReportsPerLayerRoutingStatistics) {
  torch::manual_seed(31);
  MoDTransformer model(TinyConfig());
  std::string text(1000, 'a');
  for (size_t i = 0; i < text.size(); ++i) text[i] = static_cast<char>('a' + (i * 7) % 26);
  EvalOptions eo;
  eo.seq_len = 64;
  eo.batch = 4;
  EvalResult r = Evaluate(model, TokenCorpus::FromText(text, 256), eo);
  EXPECT_EQ(r.bytes, 1000);
  ASSERT_EQ(r.routed_layers, (std::vector<int64_t>{1, 3}));
  ASSERT_EQ(r.compute_fraction.size(), 2u);
  ASSERT_EQ(r.predictor_agreement.size(), 2u);
  for (double f : r.compute_fraction) EXPECT_TRUE(f >= 0 && f <= 1);
  for (double a : r.predictor_agreement) EXPECT_TRUE(a >= 0 && a <= 1);
  EXPECT_GT(r.bits_per_byte, 5.0);
  auto j = r.ToJson();
  for (const char* key : {"bits_per_byte", "bits_per_byte_topk", "predictor_agreement", "compute_fraction"}) EXPECT_TRUE(j.contains(key)) << key;

  MoDTransformer dense(TinyConfig(false));
  EvalResult d = Evaluate(dense, TokenCorpus::FromText(text, 256), eo);
  EXPECT_DOUBLE_EQ(d.bits_per_byte, d.bits_per_byte_topk);
  EXPECT_TRUE(d.routed_layers.empty());
}

}  // namespace
}  // namespace modserve
