// Tests for the torch-free safetensors reader/writer: round trips, and a clear
// DataLoss error (never a crash) for every kind of malformed file.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>

#include <nlohmann/json.hpp>

#include "engine/safetensors.h"
#include "safetensors_bytes.h"

namespace modserve {
namespace {

using testing::SafetensorsBytes;

StatusOr<SafetensorsFile> Parse(const std::vector<uint8_t>& bytes) { return SafetensorsFile::FromBytes(bytes, "x.safetensors"); }

TEST(Safetensors, RoundTripsThroughAFile) {
  std::vector<float> a = {1.5f, -2.0f, 3.25f, 0.0f, 7.0f, -0.5f};
  std::vector<uint16_t> b = {0x3f80, 0xc000};
  const std::string path = (std::filesystem::temp_directory_path() / "st_roundtrip.safetensors").string();
  ASSERT_TRUE(WriteSafetensors(path,
                               {{"a", DType::kF32, {2, 3}, a.data(), a.size() * 4}, {"b", DType::kBF16, {2}, b.data(), b.size() * 2}},
                               {{"format", "pt"}})
                  .ok());
  auto f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  const TensorInfo* ta = f->Find("a");
  ASSERT_NE(ta, nullptr);
  EXPECT_EQ(ta->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(ta->dtype, DType::kF32);
  EXPECT_EQ(std::memcmp(f->Data(*ta), a.data(), 24), 0);
  const TensorInfo* tb = f->Find("b");
  ASSERT_NE(tb, nullptr);
  EXPECT_EQ(tb->dtype, DType::kBF16);
  EXPECT_EQ(std::memcmp(f->Data(*tb), b.data(), 4), 0);
  EXPECT_EQ(f->header().metadata.at("format"), "pt");
  EXPECT_EQ(f->header().data_offset % 8, 0u) << "data section is 8-byte aligned";
  std::filesystem::remove(path);
}

TEST(Safetensors, MissingFileIsNotFound) {
  auto f = SafetensorsFile::Open("/nonexistent/model.safetensors");
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), StatusCode::kNotFound);
  EXPECT_NE(f.status().message().find("/nonexistent/model.safetensors"), std::string::npos);
}

struct BadCase {
  const char* name;
  std::vector<uint8_t> bytes;
  const char* expect;  // substring of the error message
};

TEST(Safetensors, MalformedFilesGiveClearErrors) {
  const std::string ok = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  std::vector<BadCase> cases = {
      {"too short", {1, 2, 3}, "too short"},
      {"header length past the end", SafetensorsBytes(ok, 8, 1000), "runs past the end"},
      {"huge header length", SafetensorsBytes(ok, 8, int64_t{1} << 40), "exceeds"},
      {"not json", SafetensorsBytes("{not json", 8), "header: not valid JSON: parse error at line 1, column 3"},
      {"a tensor twice", SafetensorsBytes(R"({"w":{"dtype":"I64","shape":[9],"data_offsets":[0,99]},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8),
       "key \"w\" appears twice"},
      {"an empty name twice", SafetensorsBytes(R"({"":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8),
       "key \"\" appears twice"},
      {"nested too deep", SafetensorsBytes(R"({"w":{"dtype":)" + std::string(100000, '[') + std::string(100000, ']') + "}}", 8),
       "nests deeper than 64 levels"},
      {"number too large", SafetensorsBytes(R"({"w":{"dtype":[)" + std::string(5000, '1') + R"(],"shape":[2],"data_offsets":[0,8]}})", 8),
       "not valid JSON: number overflow"},
      {"long dtype", SafetensorsBytes(R"({"w":{"dtype":")" + std::string(5000, 'x') + R"(","shape":[2],"data_offsets":[0,8]}})", 8),
       "unsupported dtype \"xxxx"},
      {"json array", SafetensorsBytes("[1,2]", 8), "not a JSON object"},
      {"missing fields", SafetensorsBytes(R"({"w":{"dtype":"F32"}})", 8), "tensor \"w\""},
      {"unsupported dtype", SafetensorsBytes(R"({"w":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})", 8), "unsupported dtype"},
      {"negative dim", SafetensorsBytes(R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8), "non-negative"},
      {"offsets past data", SafetensorsBytes(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4), "outside"},
      {"size mismatch", SafetensorsBytes(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8), "does not match"},
      {"reversed offsets", SafetensorsBytes(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", 8), "outside"},
      {"overlap", SafetensorsBytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8),
       "overlapping or gapped"},
      {"gap", SafetensorsBytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8), "overlapping or gapped"},
      {"trailing bytes", SafetensorsBytes(ok, 12), "cover"},
      {"huge shape", SafetensorsBytes(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", 8), "too large"},
      {"bad metadata", SafetensorsBytes(R"({"__metadata__":{"k":1}})", 0), "__metadata__"},
  };
  for (const auto& c : cases) {
    auto f = Parse(c.bytes);
    ASSERT_FALSE(f.ok()) << c.name;
    EXPECT_EQ(f.status().code(), StatusCode::kDataLoss) << c.name;
    EXPECT_NE(f.status().message().find(c.expect), std::string::npos) << c.name << ": " << f.status().message();
    EXPECT_NE(f.status().message().find("x.safetensors"), std::string::npos) << c.name << " names the file";
    EXPECT_LT(f.status().message().size(), 400u) << c.name << ": a value in the message is cut short";
  }
}

// Open checks what it is given before reading it: a directory is refused,
// and a header that does not account for a huge file fails before any of
// its bytes are read into memory.
TEST(Safetensors, OpenRefusesDirectoriesAndChecksTheHeaderBeforeReading) {
  const auto dir = std::filesystem::temp_directory_path() / "st_open_checks";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir / "model.safetensors");
  auto d = SafetensorsFile::Open((dir / "model.safetensors").string());
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find("not a regular file"), std::string::npos) << d.status().message();
  const std::string big = (dir / "big.safetensors").string();
  {
    const std::vector<uint8_t> head = SafetensorsBytes(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8);
    std::FILE* f = std::fopen(big.c_str(), "wb");
    ASSERT_NE(f, nullptr);
    ASSERT_EQ(std::fwrite(head.data(), 1, head.size(), f), head.size());
    std::fclose(f);
  }
  std::error_code ec;
  std::filesystem::resize_file(big, uint64_t{64} << 30, ec);  // 64 GiB, sparse: more than this machine's memory
  if (ec) GTEST_SKIP() << "cannot make a sparse 64 GiB file here: " << ec.message();
  auto b = SafetensorsFile::Open(big);
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(b.status().message().find("but the tensors cover 8"), std::string::npos) << b.status().message();
  std::filesystem::remove_all(dir);
}

TEST(Safetensors, RandomCorruptionNeverCrashes) {
  const std::string ok = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"BF16","shape":[2,2],"data_offsets":[8,16]}})";
  const std::vector<uint8_t> good = SafetensorsBytes(ok, 16);
  ASSERT_TRUE(Parse(good).ok());
  std::mt19937 rng(7);
  int rejected = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    std::vector<uint8_t> bytes = good;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) bytes[rng() % bytes.size()] = static_cast<uint8_t>(rng());
    if (rng() % 4 == 0) bytes.resize(rng() % bytes.size());  // truncation
    auto f = Parse(bytes);
    if (!f.ok()) {
      ++rejected;
      EXPECT_FALSE(f.status().message().empty());
    }
  }
  EXPECT_GT(rejected, 1000);
}

}  // namespace
}  // namespace modserve
