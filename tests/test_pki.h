// Test PKI: made once per test process with the openssl CLI in a temporary
// folder: a CA, a server certificate for localhost / 127.0.0.1 and a client
// certificate it signed, and a second ("rogue") CA with its own client
// certificate. Certs()("server.pem") is a file's path.
//
// Thread-safety: Certs() is made on first use (a function-local static).
#pragma once

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include <gtest/gtest.h>

namespace modserve::testing {

class Pki {
 public:
  Pki() {
    dir_ = ::testing::TempDir() + "/modserve-pki-" + std::to_string(::getpid());
    std::filesystem::create_directories(dir_);
    std::ofstream(dir_ + "/make.sh") << R"(set -e
exec >openssl.log 2>&1
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >server.ext
for ca in ca rogue; do
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=$ca -keyout $ca.key -out $ca.pem
done
openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout server.key -out server.csr
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile server.ext -out server.pem
for pair in client:ca rogue-client:rogue; do
  name=${pair%%:*}; ca=${pair##*:}
  openssl req -newkey rsa:2048 -nodes -subj /CN=$name -keyout $name.key -out $name.csr
  openssl x509 -req -in $name.csr -CA $ca.pem -CAkey $ca.key -CAcreateserial -days 2 -out $name.pem
done
)";
    ok_ = std::system(("cd " + dir_ + " && bash make.sh").c_str()) == 0;
  }
  ~Pki() { std::filesystem::remove_all(dir_); }
  bool ok() const { return ok_; }
  std::string operator()(const std::string& name) const { return dir_ + "/" + name; }
  std::string Read(const std::string& name) const {
    std::ifstream in((*this)(name));
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

 private:
  std::string dir_;
  bool ok_ = false;
};

inline const Pki& Certs() {
  static const Pki pki;
  return pki;
}

}  // namespace modserve::testing
