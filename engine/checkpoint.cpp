#include "engine/checkpoint.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "engine/json_strict.h"
#include "engine/safetensors.h"

namespace modserve {

namespace fs = std::filesystem;

namespace {

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << "]";
  return os.str();
}

std::string CountString(double n) {
  std::ostringstream os;
  os.precision(n < 1e15 ? 15 : 3);  // exact while it is a count anyone would type
  os << n;
  return os.str();
}

// A config asking for more than twice the parameters the file holds is
// refused before the model is built: a typo such as d_model 1920 for 192
// would otherwise allocate (and randomly initialise) that whole model first,
// and a large one could end the process for memory instead of naming the
// mismatch. Closer counts build the model, which is then cheap, so the
// tensor-by-tensor check can name the tensor that differs.
Status CheckParameterCount(const ModelConfig& cfg, const SafetensorsFile& file, const std::string& path) {
  double in_file = 0;
  for (const auto& t : file.header().tensors) in_file += static_cast<double>(t.numel());
  const double wanted = MoDTransformerImpl::ParameterCount(cfg);
  if (wanted <= 2 * in_file) return Status::Ok();
  return DataLoss(path + ": config.json describes a model of " + CountString(wanted) + " parameters but the file holds " +
                  CountString(in_file) + " (check the architecture and routing sizes in config.json)");
}

}  // namespace

StatusOr<ModelConfig> LoadModelConfig(const std::string& dir) {
  const std::string path = (fs::path(dir) / "config.json").string();
  std::error_code ec;
  const auto status = fs::status(path, ec);
  if (!fs::exists(status)) return NotFound(path + ": cannot open (is \"" + dir + "\" a model directory?)");
  if (!fs::is_regular_file(status)) return InvalidArgument(path + ": not a regular file");  // a FIFO would block the open
  std::ifstream in(path);
  if (!in) return NotFound(path + ": cannot open (is \"" + dir + "\" a model directory?)");
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return DataLoss(path + ": read failed");
  auto j = ParseJsonStrict(ss.str());
  if (!j.ok()) return InvalidArgument(path + ": " + j.status().message());
  return ModelConfig::FromJson(*j, path);
}

StatusOr<MoDTransformer> LoadCheckpoint(const std::string& dir) {
  auto cfg = LoadModelConfig(dir);
  if (!cfg.ok()) return cfg.status();
  const std::string path = (fs::path(dir) / "model.safetensors").string();
  auto file = SafetensorsFile::Open(path);
  if (!file.ok()) return file.status();
  const DType want = cfg->weights_dtype == "bfloat16" ? DType::kBF16 : DType::kF32;
  MODSERVE_RETURN_IF_ERROR(CheckParameterCount(*cfg, *file, path));

  try {
    MoDTransformer model(*cfg);
    torch::NoGradGuard no_grad;
    std::set<std::string> expected;
    for (auto& p : model->named_parameters()) {
      const std::string& name = p.key();
      expected.insert(name);
      const TensorInfo* info = file->Find(name);
      if (!info) return DataLoss(path + ": tensor \"" + name + "\" is missing (the config expects it)");
      std::vector<int64_t> want_shape = p.value().sizes().vec();
      if (info->shape != want_shape) {
        return DataLoss(path + ": tensor \"" + name + "\" has shape " + ShapeString(info->shape) + " but the config implies " +
                        ShapeString(want_shape));
      }
      if (info->dtype != want) {
        return DataLoss(path + ": tensor \"" + name + "\" has dtype " + DTypeName(info->dtype) + " but config.json says " +
                        cfg->weights_dtype);
      }
      // Copy through an aligned buffer: offsets in the file need not be aligned.
      auto raw = torch::empty(want_shape, want == DType::kBF16 ? torch::kBFloat16 : torch::kFloat);
      std::memcpy(raw.data_ptr(), file->Data(*info), info->end - info->begin);
      if (!torch::isfinite(raw).all().item<bool>()) {
        return DataLoss(path + ": tensor \"" + name + "\" holds NaN or infinite values");
      }
      p.value().copy_(raw.to(torch::kFloat));
    }
    for (const auto& t : file->header().tensors) {
      if (!expected.count(t.name)) return DataLoss(path + ": unexpected tensor \"" + t.name + "\" (not part of the configured model)");
    }
    model->eval();
    return model;
  } catch (const c10::Error& e) {
    return Internal(path + ": " + e.what_without_backtrace());
  } catch (const std::bad_alloc&) {
    return ResourceExhausted(path + ": the model does not fit in memory");
  } catch (const std::exception& e) {
    return Internal(path + ": " + e.what());
  }
}

Status SaveCheckpoint(MoDTransformer& model, const std::string& dir) {
  const ModelConfig& cfg = model->config();
  MODSERVE_RETURN_IF_ERROR(cfg.Validate());
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return FailedPrecondition(dir + ": cannot create directory: " + ec.message());
  const bool bf16 = cfg.weights_dtype == "bfloat16";
  std::vector<torch::Tensor> keep;  // owns the bytes the blobs point at
  std::vector<TensorBlob> blobs;
  for (auto& p : model->named_parameters()) {
    auto t = p.value().detach().to(bf16 ? torch::kBFloat16 : torch::kFloat).contiguous();
    keep.push_back(t);
    blobs.push_back(TensorBlob{p.key(), bf16 ? DType::kBF16 : DType::kF32, t.sizes().vec(), t.data_ptr(),
                               static_cast<size_t>(t.numel() * t.element_size())});
  }
  MODSERVE_RETURN_IF_ERROR(WriteSafetensors((fs::path(dir) / "model.safetensors").string(), blobs, {{"format", "pt"}}));
  const std::string cfg_path = (fs::path(dir) / "config.json").string();
  const std::string tmp = cfg_path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << cfg.ToJson().dump(2) << "\n";
    if (!out.flush()) return FailedPrecondition(tmp + ": write failed");
  }
  fs::rename(tmp, cfg_path, ec);
  if (ec) return FailedPrecondition(cfg_path + ": cannot rename into place: " + ec.message());
  return Status::Ok();
}

}  // namespace modserve
