// Replays every file under tests/fuzz/corpus/<target>/ (the seed corpus and
// the inputs that once broke a target) through the fuzz targets in the normal
// build: a crash or a broken invariant aborts the test binary.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "fuzz_targets.h"

namespace modserve::fuzz {
namespace {

TEST(FuzzRegressions, EveryCorpusInputPasses) {
  const std::filesystem::path root = std::filesystem::path(MODSERVE_SOURCE_DIR) / "tests/fuzz/corpus";
  for (const auto& t : Targets()) {
    const auto dir = root / t.name;
    ASSERT_TRUE(std::filesystem::is_directory(dir)) << dir;
    int inputs = 0;
    for (const auto& f : std::filesystem::directory_iterator(dir)) {
      std::ifstream in(f.path(), std::ios::binary);
      const std::string bytes((std::istreambuf_iterator<char>(in)), {});
      SCOPED_TRACE(f.path().string());
      t.run(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
      ++inputs;
    }
    EXPECT_GT(inputs, 0) << t.name;
    std::printf("%s: %d inputs replayed\n", t.name, inputs);
  }
}

}  // namespace
}  // namespace modserve::fuzz
