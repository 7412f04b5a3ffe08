#include "engine/secret_file.h"

#include <fstream>
#include <iterator>

namespace modserve {

StatusOr<std::string> ReadSecretFile(const std::string& what, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFound(what + ": " + path + " cannot be read");
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::string_view TrimWhitespace(std::string_view text) {
  constexpr std::string_view kSpace = " \t\r\n";
  const auto first = text.find_first_not_of(kSpace);
  if (first == std::string_view::npos) return {};
  return text.substr(first, text.find_last_not_of(kSpace) - first + 1);
}

}  // namespace modserve
