// Flags: a small command-line parser for modserve's tools. Accepts
// "--name value", "--name=value" and, for a boolean, bare "--name" (true) or
// "--name true|false"; every flag must be
// declared, so a typo is an error that names the flag.
//
// Thread-safety: not thread-safe; parse once at start-up.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "engine/status.h"

namespace modserve {

class Flags {
 public:
  Flags() = default;
  // A tool's flags: also defines --help, which makes Parse() print the usage
  // and help_requested() return true.
  Flags(std::string program, std::string summary);

  // Declares a flag with a default value (as text) and a help line.
  void Define(const std::string& name, const std::string& default_value, const std::string& help, bool is_bool = false);
  Status Parse(int argc, char** argv);
  std::string Usage(const std::string& program, const std::string& summary) const;

  bool Has(const std::string& name) const;  // given on the command line
  std::string Str(const std::string& name) const;
  StatusOr<int64_t> Int(const std::string& name) const;
  StatusOr<double> Double(const std::string& name) const;
  bool Bool(const std::string& name) const;
  // Typed reads into an existing variable, for chaining with MODSERVE_RETURN_IF_ERROR.
  Status Get(const std::string& name, int64_t* out) const;
  Status Get(const std::string& name, double* out) const;
  // A comma-separated list of integers ("" is an empty list).
  Status Get(const std::string& name, std::vector<int64_t>* out) const;
  const std::vector<std::string>& positional() const { return positional_; }
  bool help_requested() const { return help_requested_; }

 private:
  struct Def {
    std::string value, help;
    bool is_bool = false, given = false;
  };
  std::map<std::string, Def> defs_;
  std::vector<std::string> order_;
  std::vector<std::string> positional_;
  std::string program_, summary_;
  bool help_requested_ = false;
};

// A tool's main(): runs `body`, prints "<program>: <message>" on error and
// returns the process exit code (0 on success, 1 on error).
int RunToolMain(const char* program, int argc, char** argv, Status (*body)(int, char**));

}  // namespace modserve
