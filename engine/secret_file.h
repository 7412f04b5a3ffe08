// Reading small files named by a config key or a flag (PEM certificates and
// keys, token files): the whole file, and a token trimmed of surrounding
// whitespace. Errors name the key or flag and the path, never the contents,
// since these files hold secrets.
//
// Thread-safety: pure functions.
#pragma once

#include <string>
#include <string_view>

#include "engine/status.h"

namespace modserve {

// The file's bytes; NOT_FOUND "<what>: <path> cannot be read" if it cannot be read.
StatusOr<std::string> ReadSecretFile(const std::string& what, const std::string& path);

// `text` without leading and trailing spaces, tabs and line ends.
std::string_view TrimWhitespace(std::string_view text);

}  // namespace modserve
