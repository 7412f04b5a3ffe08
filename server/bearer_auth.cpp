#include "server/bearer_auth.h"

#include <algorithm>

#include "engine/secret_file.h"

namespace modserve {
namespace {

constexpr size_t kMinTokenChars = 16;

bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  // The time depends only on the lengths, never on where the first difference is.
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  const size_t n = std::max(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= static_cast<unsigned char>(x ^ y);
  }
  return diff == 0;
}

}  // namespace

StatusOr<BearerAuth> BearerAuth::FromToken(std::string token, const std::string& source) {
  token = std::string(TrimWhitespace(token));
  if (token.empty()) return InvalidArgument(source + " holds no token");
  if (token.size() < kMinTokenChars) {
    return InvalidArgument(source + " holds a token of " + std::to_string(token.size()) + " characters; use at least " +
                           std::to_string(kMinTokenChars));
  }
  for (char ch : token) {
    if (ch < 0x21 || ch > 0x7e) {
      return InvalidArgument(source + " holds a token with a character that is not printable ASCII (spaces included)");
    }
  }
  BearerAuth a;
  a.token_ = std::move(token);
  return a;
}

StatusOr<BearerAuth> BearerAuth::FromFile(const std::string& path) {
  auto text = ReadSecretFile("auth_token_file", path);
  if (!text.ok()) return text.status();
  return FromToken(std::move(*text), "auth_token_file: " + path);
}

Status BearerAuth::Check(std::optional<std::string_view> authorization) const {
  if (!enabled()) return Status::Ok();
  if (!authorization) {
    return Unauthenticated("this server needs a bearer token: send the metadata \"authorization: Bearer <token>\"");
  }
  constexpr std::string_view kScheme = "Bearer ";
  if (authorization->size() < kScheme.size() || authorization->substr(0, kScheme.size()) != kScheme) {
    return Unauthenticated("the authorization metadata must be \"Bearer <token>\"");
  }
  if (!ConstantTimeEquals(authorization->substr(kScheme.size()), token_)) {
    return Unauthenticated("the bearer token is not valid");
  }
  return Status::Ok();
}

}  // namespace modserve
