#include "engine/json_strict.h"

#include <optional>
#include <set>
#include <string>
#include <vector>

namespace modserve {

StatusOr<nlohmann::json> ParseJsonStrict(std::string_view text) {
  using Json = nlohmann::json;
  using Event = Json::parse_event_t;
  bool too_deep = false;
  std::optional<std::string> duplicate;  // the first key seen twice in one object (it may be "")
  std::vector<std::set<std::string>> keys;  // one set per open object
  const Json::parser_callback_t guard = [&](int depth, Event event, Json& parsed) {
    if (too_deep || duplicate) return false;  // refused: keep nothing more
    switch (event) {
      case Event::object_start:
      case Event::array_start:
        if (depth >= kMaxJsonDepth) {
          too_deep = true;
          return false;
        }
        if (event == Event::object_start) keys.emplace_back();
        return true;
      case Event::key:
        if (!keys.back().insert(parsed.get<std::string>()).second) duplicate = parsed.get<std::string>();
        return true;
      case Event::object_end:
        keys.pop_back();
        return true;
      default:
        return true;
    }
  };
  Json j;
  try {
    j = Json::parse(text.begin(), text.end(), guard, /*allow_exceptions=*/true);
  } catch (const Json::exception& e) {  // parse_error; out_of_range for a number too large
    std::string what = e.what();      // "[json.exception.parse_error.101] parse error at line 3, column 5: ..."
    if (const auto bracket = what.find("] "); what.rfind("[json.exception", 0) == 0 && bracket != std::string::npos) {
      what = what.substr(bracket + 2);
    }
    if (what.size() > 200) what = what.substr(0, 200) + "...";  // it may quote the input
    return InvalidArgument("not valid JSON: " + what);
  }
  if (too_deep) return InvalidArgument("JSON nests deeper than " + std::to_string(kMaxJsonDepth) + " levels");
  if (duplicate) return InvalidArgument("key \"" + *duplicate + "\" appears twice in one object");
  return j;
}

std::string JsonForMessage(const nlohmann::json& value, size_t max_chars) {
  std::string s = value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (s.size() > max_chars) s = s.substr(0, max_chars) + "...";
  return s;
}

}  // namespace modserve
