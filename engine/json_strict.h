// ParseJsonStrict: nlohmann's JSON parser with the guards a file we load
// from an operator (config.json, a safetensors header) needs:
// - nesting deeper than kMaxJsonDepth is refused: copying or dumping a
//   value recurses once per level, so a hostile file could overflow the
//   stack later on;
// - a key that appears twice in one object is refused (nlohmann would keep
//   the last one silently, so the first would never be checked);
// - a syntax error says why and where (line and column).
// The message does not name the file: callers prefix it.
//
// Thread-safety: a pure function.
#pragma once

#include <string_view>

#include <nlohmann/json.hpp>

#include "engine/status.h"

namespace modserve {

inline constexpr int kMaxJsonDepth = 64;

StatusOr<nlohmann::json> ParseJsonStrict(std::string_view text);

// A value as JSON text for an error message, cut to about `max_chars`.
std::string JsonForMessage(const nlohmann::json& value, size_t max_chars = 64);

}  // namespace modserve
