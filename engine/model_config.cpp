#include "engine/model_config.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <sstream>

namespace modserve {

bool ModelConfig::IsRouted(int64_t layer) const {
  return routing_enabled &&
         std::find(routed_layers.begin(), routed_layers.end(), layer) != routed_layers.end();
}

int64_t ModelConfig::TopK(int64_t seq_len) const {
  // The small epsilon keeps e.g. 0.125 * 256 = 32 from rounding up to 33.
  auto k = static_cast<int64_t>(std::ceil(capacity * static_cast<double>(seq_len) - 1e-9));
  return std::clamp<int64_t>(k, 1, seq_len);
}

std::vector<int64_t> ModelConfig::DefaultRoutedLayers(int64_t n_layers) {
  std::vector<int64_t> out;
  for (int64_t l = 1; l < n_layers; l += 2) out.push_back(l);
  return out;
}

Status ModelConfig::Validate() const {
  // "KEY must ... (got VALUE)": the value that broke the rule is echoed so a
  // typo can be found without opening the file.
  auto bad = [](const std::string& key, const auto& got, const std::string& why) {
    std::ostringstream os;
    os << key << " " << why << " (got " << got << ")";
    return InvalidArgument(os.str());
  };
  const std::string dims = "d_model " + std::to_string(d_model) + ", n_heads " + std::to_string(n_heads);
  if (vocab_size < 258 || vocab_size > 1 << 20) return bad("architecture.vocab_size", vocab_size, "must be in [258, 1048576]");
  if (n_layers < 1 || n_layers > 256) return bad("architecture.n_layers", n_layers, "must be in [1, 256]");
  if (d_model < 2 || d_model > 65536) return bad("architecture.d_model", d_model, "must be in [2, 65536]");
  if (n_heads < 1 || n_heads > d_model) return bad("architecture.n_heads", dims, "must be in [1, d_model]");
  if (d_model % n_heads != 0) return bad("architecture.n_heads", dims, "must divide d_model");
  if (head_dim() % 2 != 0) {
    return bad("architecture.n_heads", dims, "must leave an even head dimension (d_model / n_heads) for RoPE");
  }
  if (d_ff < 1 || d_ff > 1 << 20) return bad("architecture.d_ff", d_ff, "must be in [1, 1048576]");
  if (max_context < 1 || max_context > 1 << 20) return bad("architecture.max_context", max_context, "must be in [1, 1048576]");
  if (!(rope_theta > 1.0) || !std::isfinite(rope_theta)) return bad("architecture.rope_theta", rope_theta, "must be a finite number > 1");
  if (!(norm_eps > 0.0) || !(norm_eps < 1.0)) return bad("architecture.norm_eps", norm_eps, "must be in (0, 1)");
  const std::string ids = "bos_id " + std::to_string(bos_id) + ", eos_id " + std::to_string(eos_id) + ", vocab_size " +
                          std::to_string(vocab_size);
  if (bos_id < 256 || bos_id >= vocab_size) return bad("tokenizer.bos_id", ids, "must be in [256, vocab_size)");
  if (eos_id < 256 || eos_id >= vocab_size || eos_id == bos_id) {
    return bad("tokenizer.eos_id", ids, "must be in [256, vocab_size) and differ from bos_id");
  }
  if (weights_dtype != "float32" && weights_dtype != "bfloat16") {
    return bad("weights.dtype", "\"" + weights_dtype + "\"", "must be \"float32\" or \"bfloat16\"");
  }
  if (routing_enabled) {
    if (!(capacity > 0.0) || !(capacity <= 1.0)) return bad("routing.capacity", capacity, "must be in (0, 1]");
    if (routed_layers.empty()) return bad("routing.routed_layers", "[]", "must list at least one layer when routing is enabled");
    if (routed_layers.size() > 64) {
      return bad("routing.routed_layers", std::to_string(routed_layers.size()) + " layers",
                 "lists at most 64 layers (a token's route is a 64-bit mask of them)");
    }
    std::set<int64_t> seen;
    for (int64_t l : routed_layers) {
      if (l < 0 || l >= n_layers) {
        return bad("routing.routed_layers", "layer " + std::to_string(l) + ", n_layers " + std::to_string(n_layers),
                   "must hold layers in [0, n_layers)");
      }
      if (!seen.insert(l).second) return bad("routing.routed_layers", "layer " + std::to_string(l) + " twice", "must not repeat a layer");
    }
    if (predictor_hidden < 1 || predictor_hidden > 65536) {
      return bad("routing.predictor_hidden", predictor_hidden, "must be in [1, 65536]");
    }
  }
  const std::string quoted_mode = "\"" + mode + "\"";
  if (mode != "mod" && mode != "staged" && mode != "integrated") {
    return bad("mode", quoted_mode, "must be \"mod\", \"staged\" or \"integrated\"");
  }
  if (mode == "mod") {
    if (moe_experts != 0) {
      return bad("moe.experts", std::to_string(moe_experts) + " with mode \"mod\"", "needs mode \"staged\" or \"integrated\"");
    }
  } else {
    if (!routing_enabled) return bad("mode", quoted_mode, "needs routing.enabled (MoDE routes the routed layers)");
    if (moe_experts < 2 || moe_experts > 64) return bad("moe.experts", moe_experts, "must be in [2, 64] in mode " + quoted_mode);
    if (moe_top_k < 1 || moe_top_k > moe_experts) {
      return bad("moe.top_k", "top_k " + std::to_string(moe_top_k) + ", experts " + std::to_string(moe_experts),
                 "must be in [1, moe.experts]");
    }
    if (mode == "integrated" && moe_top_k != 1) return bad("moe.top_k", moe_top_k, "must be 1 in mode \"integrated\"");
    if (mode == "integrated" && !(capacity < 1.0)) {
      return bad("routing.capacity", capacity, "must be < 1 in mode \"integrated\" (the no-op expert takes the rest)");
    }
    if (!(moe_capacity_factor >= 1.0) || !(moe_capacity_factor <= 16.0)) {
      return bad("moe.capacity_factor", moe_capacity_factor, "must be in [1, 16]");
    }
  }
  return Status::Ok();
}

nlohmann::json ModelConfig::ToJson() const {
  nlohmann::json j;
  j["format"] = "modserve-checkpoint";
  j["format_version"] = 1;
  j["architecture"] = {{"vocab_size", vocab_size}, {"n_layers", n_layers}, {"d_model", d_model},
                       {"n_heads", n_heads},       {"d_ff", d_ff},         {"max_context", max_context},
                       {"rope_theta", rope_theta}, {"norm_eps", norm_eps}};
  j["routing"] = {{"enabled", routing_enabled},
                  {"capacity", capacity},
                  {"routed_layers", routing_enabled ? routed_layers : std::vector<int64_t>{}},
                  {"predictor_hidden", predictor_hidden}};
  j["mode"] = mode;
  if (mode != "mod") {
    j["moe"] = {{"experts", moe_experts}, {"top_k", moe_top_k}, {"capacity_factor", moe_capacity_factor}};
  }
  j["tokenizer"] = {{"type", "byte"}, {"bos_id", bos_id}, {"eos_id", eos_id}};
  j["weights"] = {{"file", "model.safetensors"}, {"dtype", weights_dtype}};
  j["training"] = training;
  return j;
}

namespace {

enum class Need { kOptional, kRequired };

// Reads a field of a JSON object into `out`, checking its type; an optional
// one that is missing keeps the value `out` has.
template <typename T>
Status Read(const nlohmann::json& obj, const std::string& section, const char* key, T* out, Need need = Need::kRequired) {
  if (!obj.contains(key)) {
    if (need == Need::kOptional) return Status::Ok();
    return InvalidArgument((section.empty() ? std::string(key) : section + "." + key) + ": missing (required)");
  }
  const auto& v = obj.at(key);
  try {
    if constexpr (std::is_same_v<T, bool>) {
      if (!v.is_boolean()) throw std::runtime_error("expected a boolean");
    } else if constexpr (std::is_integral_v<T>) {
      if (!v.is_number_integer()) throw std::runtime_error("expected an integer");
    } else if constexpr (std::is_floating_point_v<T>) {
      if (!v.is_number()) throw std::runtime_error("expected a number");
    } else if constexpr (std::is_same_v<T, std::string>) {
      if (!v.is_string()) throw std::runtime_error("expected a string");
    }
    *out = v.get<T>();
  } catch (const std::exception& e) {
    return InvalidArgument((section.empty() ? std::string(key) : section + "." + key) + ": " + e.what());
  }
  return Status::Ok();
}

Status Section(const nlohmann::json& j, const char* name, nlohmann::json* out) {
  if (!j.contains(name)) return InvalidArgument(std::string("missing section \"") + name + "\"");
  if (!j.at(name).is_object()) return InvalidArgument(std::string("section \"") + name + "\" must be an object");
  *out = j.at(name);
  return Status::Ok();
}

// A misspelled key would otherwise leave its field at the default, silently.
Status OnlyKeys(const nlohmann::json& obj, const std::string& section, std::initializer_list<const char*> known) {
  for (auto it = obj.begin(); it != obj.end(); ++it) {
    if (std::find_if(known.begin(), known.end(), [&](const char* k) { return it.key() == k; }) != known.end()) continue;
    std::string list;
    for (const char* k : known) list += (list.empty() ? "" : ", ") + std::string(k);
    return InvalidArgument((section.empty() ? std::string() : section + ".") + it.key() + ": unknown key (known: " + list + ")");
  }
  return Status::Ok();
}

Status ParseInto(const nlohmann::json& j, ModelConfig* c) {
  if (!j.is_object()) return InvalidArgument("top level must be a JSON object");
  MODSERVE_RETURN_IF_ERROR(OnlyKeys(j, "", {"format", "format_version", "architecture", "routing", "mode", "moe", "tokenizer", "weights", "training"}));
  std::string format = "modserve-checkpoint";
  MODSERVE_RETURN_IF_ERROR(Read(j, "", "format", &format, Need::kOptional));
  if (format != "modserve-checkpoint") return InvalidArgument("format must be \"modserve-checkpoint\" (got \"" + format + "\")");
  int64_t version = 1;
  MODSERVE_RETURN_IF_ERROR(Read(j, "", "format_version", &version, Need::kOptional));
  if (version != 1) return InvalidArgument("format_version " + std::to_string(version) + " is not supported (this build reads 1)");
  nlohmann::json arch, routing, tok;
  MODSERVE_RETURN_IF_ERROR(Section(j, "architecture", &arch));
  MODSERVE_RETURN_IF_ERROR(OnlyKeys(arch, "architecture", {"vocab_size", "n_layers", "d_model", "n_heads", "d_ff", "max_context", "rope_theta", "norm_eps"}));
  MODSERVE_RETURN_IF_ERROR(Read(arch, "architecture", "vocab_size", &c->vocab_size));
  MODSERVE_RETURN_IF_ERROR(Read(arch, "architecture", "n_layers", &c->n_layers));
  MODSERVE_RETURN_IF_ERROR(Read(arch, "architecture", "d_model", &c->d_model));
  MODSERVE_RETURN_IF_ERROR(Read(arch, "architecture", "n_heads", &c->n_heads));
  MODSERVE_RETURN_IF_ERROR(Read(arch, "architecture", "d_ff", &c->d_ff));
  MODSERVE_RETURN_IF_ERROR(Read(arch, "architecture", "max_context", &c->max_context));
  MODSERVE_RETURN_IF_ERROR(Read(arch, "architecture", "rope_theta", &c->rope_theta));
  MODSERVE_RETURN_IF_ERROR(Read(arch, "architecture", "norm_eps", &c->norm_eps));
  MODSERVE_RETURN_IF_ERROR(Section(j, "routing", &routing));
  MODSERVE_RETURN_IF_ERROR(OnlyKeys(routing, "routing", {"enabled", "capacity", "predictor_hidden", "routed_layers"}));
  MODSERVE_RETURN_IF_ERROR(Read(routing, "routing", "enabled", &c->routing_enabled));
  const Need routed = c->routing_enabled ? Need::kRequired : Need::kOptional;
  MODSERVE_RETURN_IF_ERROR(Read(routing, "routing", "capacity", &c->capacity, routed));
  MODSERVE_RETURN_IF_ERROR(Read(routing, "routing", "predictor_hidden", &c->predictor_hidden, routed));
  c->routed_layers = ModelConfig::DefaultRoutedLayers(c->n_layers);
  if (routing.contains("routed_layers")) {
    const auto& rl = routing.at("routed_layers");
    if (!rl.is_array()) return InvalidArgument("routing.routed_layers must be an array of layer indices");
    c->routed_layers.clear();
    for (const auto& v : rl) {
      if (!v.is_number_integer()) return InvalidArgument("routing.routed_layers must hold integers");
      c->routed_layers.push_back(v.get<int64_t>());
    }
  }
  if (!c->routing_enabled) c->routed_layers.clear();
  MODSERVE_RETURN_IF_ERROR(Read(j, "", "mode", &c->mode, Need::kOptional));
  if (j.contains("moe")) {
    nlohmann::json moe;
    MODSERVE_RETURN_IF_ERROR(Section(j, "moe", &moe));
    MODSERVE_RETURN_IF_ERROR(OnlyKeys(moe, "moe", {"experts", "top_k", "capacity_factor"}));
    MODSERVE_RETURN_IF_ERROR(Read(moe, "moe", "experts", &c->moe_experts));
    MODSERVE_RETURN_IF_ERROR(Read(moe, "moe", "top_k", &c->moe_top_k));
    MODSERVE_RETURN_IF_ERROR(Read(moe, "moe", "capacity_factor", &c->moe_capacity_factor, Need::kOptional));
  }
  MODSERVE_RETURN_IF_ERROR(Section(j, "tokenizer", &tok));
  MODSERVE_RETURN_IF_ERROR(OnlyKeys(tok, "tokenizer", {"type", "bos_id", "eos_id"}));
  std::string type = "byte";
  MODSERVE_RETURN_IF_ERROR(Read(tok, "tokenizer", "type", &type, Need::kOptional));
  if (type != "byte") return InvalidArgument("tokenizer.type must be \"byte\" (got \"" + type + "\")");
  MODSERVE_RETURN_IF_ERROR(Read(tok, "tokenizer", "bos_id", &c->bos_id));
  MODSERVE_RETURN_IF_ERROR(Read(tok, "tokenizer", "eos_id", &c->eos_id));
  if (j.contains("weights")) {
    nlohmann::json w;
    MODSERVE_RETURN_IF_ERROR(Section(j, "weights", &w));
    MODSERVE_RETURN_IF_ERROR(OnlyKeys(w, "weights", {"file", "dtype"}));
    std::string file = "model.safetensors";
    MODSERVE_RETURN_IF_ERROR(Read(w, "weights", "file", &file, Need::kOptional));
    if (file != "model.safetensors") return InvalidArgument("weights.file must be \"model.safetensors\" (got \"" + file + "\")");
    MODSERVE_RETURN_IF_ERROR(Read(w, "weights", "dtype", &c->weights_dtype, Need::kOptional));
  }
  if (j.contains("training")) c->training = j.at("training");
  return c->Validate();
}

}  // namespace

StatusOr<ModelConfig> ModelConfig::FromJson(const nlohmann::json& j, const std::string& source) {
  ModelConfig c;
  Status st = ParseInto(j, &c);
  if (!st.ok()) return InvalidArgument(source + ": " + st.message());
  return c;
}

}  // namespace modserve
