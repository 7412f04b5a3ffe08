// Tests for ModelConfig: defaults, JSON round trip, and errors that name the key.
#include <gtest/gtest.h>

#include "engine/model_config.h"

namespace modserve {
namespace {

TEST(ModelConfig, DefaultsAreValidAndRouteEveryOtherLayer) {
  ModelConfig c;
  EXPECT_TRUE(c.Validate().ok());
  EXPECT_EQ(ModelConfig::DefaultRoutedLayers(6), (std::vector<int64_t>{1, 3, 5}));
  EXPECT_EQ(ModelConfig::DefaultRoutedLayers(1), (std::vector<int64_t>{}));
  EXPECT_TRUE(c.IsRouted(1));
  EXPECT_FALSE(c.IsRouted(0));
}

TEST(ModelConfig, TopKIsCeilOfCapacityTimesLength) {
  ModelConfig c;
  c.capacity = 0.125;
  EXPECT_EQ(c.TopK(256), 32);
  EXPECT_EQ(c.TopK(257), 33);
  EXPECT_EQ(c.TopK(1), 1);
  EXPECT_EQ(c.TopK(9), 2);
  c.capacity = 1.0;
  EXPECT_EQ(c.TopK(100), 100);
}

TEST(ModelConfig, JsonRoundTrip) {
  ModelConfig c;
  c.n_layers = 4;
  c.routed_layers = {0, 2};
  c.capacity = 0.25;
  c.weights_dtype = "bfloat16";
  c.training = {{"steps", 12}};
  auto back = ModelConfig::FromJson(c.ToJson(), "config.json");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->n_layers, 4);
  EXPECT_EQ(back->routed_layers, (std::vector<int64_t>{0, 2}));
  EXPECT_DOUBLE_EQ(back->capacity, 0.25);
  EXPECT_EQ(back->weights_dtype, "bfloat16");
  EXPECT_EQ(back->training["steps"], 12);
}

TEST(ModelConfig, DenseConfigHasNoRoutedLayers) {
  ModelConfig c;
  c.routing_enabled = false;
  auto back = ModelConfig::FromJson(c.ToJson(), "config.json");
  ASSERT_TRUE(back.ok());
  EXPECT_FALSE(back->routing_enabled);
  EXPECT_TRUE(back->routed_layers.empty());
  EXPECT_FALSE(back->IsRouted(1));
}

TEST(ModelConfig, InvalidFieldsNameTheKey) {
  struct Case {
    const char* pointer;  // JSON pointer of the field to change
    nlohmann::json value;
    const char* expect;
  };
  std::vector<Case> cases = {
      {"/architecture/n_heads", 5, "architecture.n_heads must divide d_model (got d_model 192, n_heads 5)"},
      {"/architecture/n_layers", 0, "architecture.n_layers must be in [1, 256] (got 0)"},
      {"/architecture/d_model", "big", "architecture.d_model"},
      {"/architecture/max_context", -1, "architecture.max_context must be in [1, 1048576] (got -1)"},
      {"/routing/capacity", 0.0, "routing.capacity"},
      {"/routing/capacity", 1.5, "routing.capacity must be in (0, 1] (got 1.5)"},
      {"/routing/routed_layers", nlohmann::json::array({1, 9}), "(got layer 9, n_layers 6)"},
      {"/routing/routed_layers", nlohmann::json::array({1, 1}), "must not repeat a layer (got layer 1 twice)"},
      {"/routing/routed_layers", "odd", "routing.routed_layers"},
      {"/tokenizer/type", "bpe", "tokenizer.type"},
      {"/tokenizer/bos_id", 3, "tokenizer.bos_id must be in [256, vocab_size) (got bos_id 3, eos_id 257, vocab_size 258)"},
      {"/weights/dtype", "float16", "weights.dtype must be \"float32\" or \"bfloat16\" (got \"float16\")"},
      // A misspelled key is refused, not left at its default.
      {"/architecture/num_heads", 6, "architecture.num_heads: unknown key (known: vocab_size, n_layers"},
      {"/routing/capcity", 0.5, "routing.capcity: unknown key"},
      {"/tokenizer/eos", 257, "tokenizer.eos: unknown key"},
      {"/extra", 1, "extra: unknown key"},
      {"/format", "something-else", "format must be \"modserve-checkpoint\""},
      {"/format_version", 99, "format_version 99 is not supported"},
      {"/weights/file", "other.safetensors", "weights.file must be \"model.safetensors\""},
  };
  for (const auto& c : cases) {
    nlohmann::json j = ModelConfig().ToJson();
    j[nlohmann::json::json_pointer(c.pointer)] = c.value;
    auto r = ModelConfig::FromJson(j, "m/config.json");
    ASSERT_FALSE(r.ok()) << c.pointer;
    EXPECT_NE(r.status().message().find(c.expect), std::string::npos) << r.status().message();
    EXPECT_NE(r.status().message().find("m/config.json"), std::string::npos);
  }
  {
    // 130 layers route 65 by default: one more than a token's 64-bit route mask holds.
    nlohmann::json many = ModelConfig().ToJson();
    many["architecture"]["n_layers"] = 130;
    many["routing"].erase("routed_layers");
    auto r = ModelConfig::FromJson(many, "m/config.json");
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("routing.routed_layers lists at most 64 layers (a token's route is a 64-bit mask of them) (got 65 layers)"), std::string::npos)
        << r.status().message();
    many["architecture"]["n_layers"] = 128;  // 64 routed: fits
    EXPECT_TRUE(ModelConfig::FromJson(many, "m/config.json").ok());
  }
  // Every field that shapes the model or its tokens is required.
  for (const char* pointer : {"/architecture/n_heads", "/architecture/max_context", "/architecture/rope_theta",
                              "/routing/capacity", "/tokenizer/eos_id"}) {
    nlohmann::json m = ModelConfig().ToJson();
    const nlohmann::json::json_pointer ptr(pointer);
    m[ptr.parent_pointer()].erase(ptr.back());
    auto r = ModelConfig::FromJson(m, "m/config.json");
    ASSERT_FALSE(r.ok()) << pointer;
    const std::string field = std::string(pointer + 1).replace(std::string(pointer + 1).find('/'), 1, ".");
    EXPECT_NE(r.status().message().find(field + ": missing (required)"), std::string::npos) << r.status().message();
  }
  nlohmann::json j = ModelConfig().ToJson();
  j.erase("architecture");
  auto r = ModelConfig::FromJson(j, "config.json");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("architecture"), std::string::npos);
}

}  // namespace
}  // namespace modserve
