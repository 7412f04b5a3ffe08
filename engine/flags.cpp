#include "engine/flags.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <sstream>

namespace modserve {

Flags::Flags(std::string program, std::string summary) : program_(std::move(program)), summary_(std::move(summary)) {
  Define("help", "false", "print this help", true);
}

void Flags::Define(const std::string& name, const std::string& default_value, const std::string& help, bool is_bool) {
  if (!defs_.count(name)) order_.push_back(name);
  defs_[name] = Def{default_value, help, is_bool, false};
}

Status Flags::Parse(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0) {
      positional_.push_back(arg);
      continue;
    }
    std::string name = arg.substr(2), value;
    bool has_value = false;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    auto it = defs_.find(name);
    if (it == defs_.end()) return InvalidArgument("unknown flag --" + name + " (see --help)");
    if (!has_value) {
      if (it->second.is_bool) {
        // Bare "--name" is true; "--name true|false" takes the next argument.
        const bool next_is_bool = i + 1 < argc && (std::string(argv[i + 1]) == "true" || std::string(argv[i + 1]) == "false");
        value = next_is_bool ? argv[++i] : "true";
      } else {
        if (i + 1 >= argc) return InvalidArgument("flag --" + name + " needs a value");
        value = argv[++i];
      }
    }
    if (it->second.is_bool && value != "true" && value != "false") {
      return InvalidArgument("flag --" + name + " takes true or false, not \"" + value + "\"");
    }
    it->second.value = value;
    it->second.given = true;
  }
  if (!program_.empty() && Bool("help")) {
    std::printf("%s", Usage(program_, summary_).c_str());
    help_requested_ = true;
  }
  return Status::Ok();
}

std::string Flags::Usage(const std::string& program, const std::string& summary) const {
  std::ostringstream os;
  os << "usage: " << program << " [flags]\n" << summary << "\n\nflags:\n";
  for (const auto& name : order_) {
    const Def& d = defs_.at(name);
    os << "  --" << name << (d.is_bool ? "" : " VALUE") << "\n      " << d.help;
    if (!d.value.empty()) os << " (default: " << d.value << ")";
    os << "\n";
  }
  return os.str();
}

bool Flags::Has(const std::string& name) const {
  auto it = defs_.find(name);
  return it != defs_.end() && it->second.given;
}

std::string Flags::Str(const std::string& name) const { return defs_.at(name).value; }

StatusOr<int64_t> Flags::Int(const std::string& name) const {
  const std::string& v = defs_.at(name).value;
  char* end = nullptr;
  errno = 0;
  long long x = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || errno == ERANGE) return InvalidArgument("flag --" + name + " needs an integer, got \"" + v + "\"");
  return static_cast<int64_t>(x);
}

StatusOr<double> Flags::Double(const std::string& name) const {
  const std::string& v = defs_.at(name).value;
  char* end = nullptr;
  errno = 0;
  double x = std::strtod(v.c_str(), &end);
  if (v.empty() || *end != '\0' || errno == ERANGE) return InvalidArgument("flag --" + name + " needs a number, got \"" + v + "\"");
  return x;
}

bool Flags::Bool(const std::string& name) const { return defs_.at(name).value == "true"; }

Status Flags::Get(const std::string& name, int64_t* out) const {
  auto v = Int(name);
  if (!v.ok()) return v.status();
  *out = *v;
  return Status::Ok();
}

Status Flags::Get(const std::string& name, double* out) const {
  auto v = Double(name);
  if (!v.ok()) return v.status();
  *out = *v;
  return Status::Ok();
}

Status Flags::Get(const std::string& name, std::vector<int64_t>* out) const {
  const std::string& v = defs_.at(name).value;
  std::vector<int64_t> items;
  std::stringstream ss(v);
  std::string item;
  while (std::getline(ss, item, ',')) {
    char* end = nullptr;
    errno = 0;
    long long x = std::strtoll(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || errno == ERANGE) {
      return InvalidArgument("flag --" + name + " needs a comma-separated list of integers, got \"" + v + "\"");
    }
    items.push_back(static_cast<int64_t>(x));
  }
  *out = std::move(items);
  return Status::Ok();
}

int RunToolMain(const char* program, int argc, char** argv, Status (*body)(int, char**)) {
  Status st = body(argc, argv);
  if (!st.ok()) {
    std::fprintf(stderr, "%s: %s\n", program, st.message().c_str());
    return 1;
  }
  return 0;
}

}  // namespace modserve
