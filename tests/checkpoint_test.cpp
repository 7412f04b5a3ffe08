// Tests for checkpoints: bit-exact round trips and a clear error naming the
// file and tensor for every kind of bad or corrupt checkpoint.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "engine/checkpoint.h"
#include "engine/safetensors.h"
#include "test_models.h"

namespace modserve {
namespace {

using modserve::testing::TempDir;
using modserve::testing::TinyConfig;
namespace fs = std::filesystem;

MoDTransformer SavedTinyModel(const std::string& dir, ModelConfig cfg = TinyConfig()) {
  torch::manual_seed(21);
  MoDTransformer model(cfg);
  Status st = SaveCheckpoint(model, dir);
  EXPECT_TRUE(st.ok()) << st.ToString();
  return model;
}

// Rewrites dir/model.safetensors from the model's tensors after `edit` changes the list.
void RewriteTensors(MoDTransformer& model, const std::string& dir,
                    const std::function<void(std::vector<std::pair<std::string, torch::Tensor>>&)>& edit) {
  std::vector<std::pair<std::string, torch::Tensor>> named;
  for (auto& p : model->named_parameters()) named.emplace_back(p.key(), p.value().detach().clone().contiguous());
  edit(named);
  std::vector<TensorBlob> blobs;
  for (auto& [name, t] : named) {
    const bool bf16 = t.scalar_type() == torch::kBFloat16;
    blobs.push_back({name, bf16 ? DType::kBF16 : DType::kF32, t.sizes().vec(), t.data_ptr(), static_cast<size_t>(t.numel() * t.element_size())});
  }
  ASSERT_TRUE(WriteSafetensors(dir + "/model.safetensors", blobs, {}).ok());
}

void ExpectLoadError(const std::string& dir, const std::vector<std::string>& fragments) {
  auto loaded = LoadCheckpoint(dir);
  ASSERT_FALSE(loaded.ok());
  for (const auto& f : fragments) EXPECT_NE(loaded.status().message().find(f), std::string::npos) << "missing \"" << f << "\" in: " << loaded.status().message();
}

TEST(Checkpoint, RoundTripsBitExactly) {
  const std::string dir = TempDir("ckpt_roundtrip");
  MoDTransformer model = SavedTinyModel(dir);
  auto loaded = LoadCheckpoint(dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  auto a = model->named_parameters();
  auto b = (*loaded)->named_parameters();
  ASSERT_EQ(a.size(), b.size());
  for (auto& p : a) EXPECT_TRUE(torch::equal(p.value(), b[p.key()])) << p.key();
  EXPECT_EQ((*loaded)->config().routed_layers, (std::vector<int64_t>{1, 3}));
}

TEST(Checkpoint, Bfloat16RoundTripsTheBfloat16Values) {
  const std::string dir = TempDir("ckpt_bf16");
  ModelConfig cfg = TinyConfig();
  cfg.weights_dtype = "bfloat16";
  MoDTransformer model = SavedTinyModel(dir, cfg);
  auto loaded = LoadCheckpoint(dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  auto b = (*loaded)->named_parameters();
  for (auto& p : model->named_parameters()) {
    EXPECT_TRUE(torch::equal(p.value().to(torch::kBFloat16).to(torch::kFloat), b[p.key()])) << p.key();
  }
  const std::string f32_dir = TempDir("ckpt_bf16_f32");
  SavedTinyModel(f32_dir);
  EXPECT_LT(fs::file_size(dir + "/model.safetensors"), fs::file_size(f32_dir + "/model.safetensors") * 0.55);
}

TEST(Checkpoint, MissingDirectoryOrConfig) {
  ExpectLoadError("/nonexistent/model", {"/nonexistent/model/config.json"});
  const std::string dir = TempDir("ckpt_badjson");
  SavedTinyModel(dir);
  std::ofstream(dir + "/config.json") << "{ not json";
  ExpectLoadError(dir, {"config.json", "not valid JSON: parse error at line 1, column 4"});
  // A key twice, or nesting deep enough to overflow a recursive copy, is
  // refused by name; a directory where config.json should be is not "bad JSON".
  std::ofstream(dir + "/config.json", std::ios::trunc) << "{\"format_version\": 1, \"format_version\": 2}";
  ExpectLoadError(dir, {"config.json", "key \"format_version\" appears twice"});
  std::ofstream(dir + "/config.json", std::ios::trunc) << "{\"training\": " << std::string(300000, '[') << std::string(300000, ']') << "}";
  ExpectLoadError(dir, {"config.json", "nests deeper than 64 levels"});
  std::filesystem::remove(dir + "/config.json");
  std::filesystem::create_directory(dir + "/config.json");
  ExpectLoadError(dir, {"config.json", "not a regular file"});
}

TEST(Checkpoint, ConfigErrorsNameTheKey) {
  const std::string dir = TempDir("ckpt_badcfg");
  MoDTransformer model = SavedTinyModel(dir);
  nlohmann::json j = model->config().ToJson();
  j["architecture"]["n_heads"] = 5;
  std::ofstream(dir + "/config.json") << j.dump();
  ExpectLoadError(dir, {"config.json", "architecture.n_heads"});
}

TEST(Checkpoint, AConfigFarLargerThanTheFileIsRefusedBeforeTheModelIsBuilt) {
  const std::string dir = TempDir("ckpt_huge_cfg");
  MoDTransformer model = SavedTinyModel(dir);
  int64_t in_file = 0;
  for (const auto& p : model->parameters()) in_file += p.numel();
  // A typo'd width: one wqkv alone would be 3 * 65536^2 floats (48 GiB). Built
  // first, as before, it was a ResourceExhausted "does not fit in memory".
  nlohmann::json j = model->config().ToJson();
  j["architecture"]["d_model"] = 65536;
  std::ofstream(dir + "/config.json") << j.dump();
  auto loaded = LoadCheckpoint(dir);
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), StatusCode::kDataLoss) << loaded.status().ToString();
  ExpectLoadError(dir, {"model.safetensors", "config.json describes a model of", "parameters but the file holds " + std::to_string(in_file) + " "});
}

TEST(Checkpoint, MissingTensor) {
  const std::string dir = TempDir("ckpt_missing");
  MoDTransformer model = SavedTinyModel(dir);
  RewriteTensors(model, dir, [](auto& named) {
    named.erase(std::remove_if(named.begin(), named.end(), [](auto& p) { return p.first == "layers.3.router.weight"; }), named.end());
  });
  ExpectLoadError(dir, {"model.safetensors", "layers.3.router.weight", "missing"});
}

TEST(Checkpoint, WrongShape) {
  const std::string dir = TempDir("ckpt_shape");
  MoDTransformer model = SavedTinyModel(dir);
  RewriteTensors(model, dir, [](auto& named) {
    for (auto& [n, t] : named)
      if (n == "layers.0.fc1.weight") t = torch::zeros({65, 32});
  });
  ExpectLoadError(dir, {"model.safetensors", "layers.0.fc1.weight", "[65, 32]", "[64, 32]"});
}

TEST(Checkpoint, WrongDtype) {
  const std::string dir = TempDir("ckpt_dtype");
  MoDTransformer model = SavedTinyModel(dir);
  RewriteTensors(model, dir, [](auto& named) {
    for (auto& [n, t] : named)
      if (n == "lm_head.weight") t = t.to(torch::kBFloat16);
  });
  ExpectLoadError(dir, {"lm_head.weight", "BF16", "float32"});
}

TEST(Checkpoint, UnexpectedTensor) {
  const std::string dir = TempDir("ckpt_extra");
  MoDTransformer model = SavedTinyModel(dir);
  RewriteTensors(model, dir, [](auto& named) { named.emplace_back("layers.0.router.weight", torch::zeros({1, 32})); });
  ExpectLoadError(dir, {"unexpected tensor", "layers.0.router.weight"});
}

TEST(Checkpoint, NaNWeights) {
  const std::string dir = TempDir("ckpt_nan");
  MoDTransformer model = SavedTinyModel(dir);
  RewriteTensors(model, dir, [](auto& named) {
    for (auto& [n, t] : named)
      if (n == "layers.2.wo.weight") t[3][4] = std::nanf("");
  });
  ExpectLoadError(dir, {"layers.2.wo.weight", "NaN"});
}

TEST(Checkpoint, TruncatedAndCorruptFiles) {
  const std::string dir = TempDir("ckpt_trunc");
  SavedTinyModel(dir);
  const std::string path = dir + "/model.safetensors";
  const auto size = fs::file_size(path);
  fs::resize_file(path, size - 100);
  ExpectLoadError(dir, {"model.safetensors", "truncated"});
  fs::resize_file(path, 5);
  ExpectLoadError(dir, {"model.safetensors", "too short"});
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary | std::ios::trunc);
    const char lying[8] = {char(0xff), char(0xff), 0, 0, 0, 0, 0, 0};  // header "length" 65535
    f.write(lying, 8);
    f << "{}";
  }
  ExpectLoadError(dir, {"model.safetensors", "runs past the end"});
}

}  // namespace
}  // namespace modserve
