#include "engine/safetensors.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#include <nlohmann/json.hpp>

#include "engine/json_strict.h"

namespace modserve {

namespace {
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // the format's own limit

bool ParseDType(const std::string& s, DType* out) {
  if (s == "F32") { *out = DType::kF32; return true; }
  if (s == "BF16") { *out = DType::kBF16; return true; }
  return false;
}

Status Bad(const std::string& source, const std::string& what) {
  return DataLoss(source + ": " + what);
}
}  // namespace

const char* DTypeName(DType dtype) { return dtype == DType::kF32 ? "F32" : "BF16"; }
size_t DTypeSize(DType dtype) { return dtype == DType::kF32 ? 4 : 2; }

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

namespace {

// The header length a file's first 8 bytes give, checked against the file's size.
StatusOr<uint64_t> HeaderLength(const uint8_t* data, size_t available, uint64_t file_size, const std::string& source) {
  if (file_size < 8 || available < 8) {
    return Bad(source, "file is " + std::to_string(file_size) + " bytes, too short for a safetensors header");
  }
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | data[i];
  if (header_len > kMaxHeaderBytes) return Bad(source, "header length " + std::to_string(header_len) + " exceeds the 100 MiB limit");
  if (header_len > file_size - 8) {
    return Bad(source, "header length " + std::to_string(header_len) + " runs past the end of the file (" +
                           std::to_string(file_size) + " bytes; truncated?)");
  }
  return header_len;
}

// Parses the header from `data` (at least its first 8 + header length
// bytes) of a file of `file_size` bytes: the data section is the rest.
StatusOr<SafetensorsHeader> ParseHeader(const uint8_t* data, size_t available, uint64_t file_size, const std::string& source) {
  auto length = HeaderLength(data, available, file_size, source);
  if (!length.ok()) return length.status();
  const uint64_t header_len = *length;
  if (available - 8 < header_len) return Bad(source, "header not read whole");
  const char* begin = reinterpret_cast<const char*>(data + 8);
  auto parsed = ParseJsonStrict(std::string_view(begin, header_len));
  if (!parsed.ok()) return Bad(source, "header: " + parsed.status().message());
  const nlohmann::json& j = *parsed;
  if (!j.is_object()) return Bad(source, "header is not a JSON object");

  SafetensorsHeader h;
  h.data_offset = 8 + header_len;
  const uint64_t data_size = file_size - h.data_offset;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    const auto& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) return Bad(source, "__metadata__ must be an object of strings");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) return Bad(source, "__metadata__." + m.key() + " must be a string");
        h.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string where = "tensor \"" + name + "\": ";
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets")) {
      return Bad(source, where + "entry needs dtype, shape and data_offsets");
    }
    TensorInfo t;
    t.name = name;
    if (!v["dtype"].is_string() || !ParseDType(v["dtype"].get<std::string>(), &t.dtype)) {
      return Bad(source, where + "unsupported dtype " + JsonForMessage(v["dtype"]) + " (supported: F32, BF16)");
    }
    if (!v["shape"].is_array()) return Bad(source, where + "shape must be an array");
    uint64_t numel = 1;
    for (const auto& d : v["shape"]) {
      if (!d.is_number_unsigned()) return Bad(source, where + "shape entries must be non-negative integers");
      uint64_t dim = d.get<uint64_t>();
      if (__builtin_mul_overflow(numel, dim, &numel) || numel > (1ull << 40)) {
        return Bad(source, where + "shape is too large");
      }
      t.shape.push_back(static_cast<int64_t>(dim));
    }
    const auto& off = v["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned()) {
      return Bad(source, where + "data_offsets must be two non-negative integers");
    }
    t.begin = off[0].get<uint64_t>();
    t.end = off[1].get<uint64_t>();
    if (t.begin > t.end || t.end > data_size) {
      return Bad(source, where + "data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) +
                             ") fall outside the " + std::to_string(data_size) + "-byte data section (truncated?)");
    }
    if (t.end - t.begin != numel * DTypeSize(t.dtype)) {
      return Bad(source, where + "byte range of " + std::to_string(t.end - t.begin) + " does not match shape and dtype (" +
                             std::to_string(numel * DTypeSize(t.dtype)) + " bytes expected)");
    }
    h.tensors.push_back(std::move(t));
  }
  std::sort(h.tensors.begin(), h.tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t expected = 0;
  for (const auto& t : h.tensors) {
    if (t.begin != expected) {
      return Bad(source, "tensor \"" + t.name + "\": data_offsets start at " + std::to_string(t.begin) + " but the previous tensor ends at " +
                             std::to_string(expected) + " (overlapping or gapped ranges)");
    }
    expected = t.end;
  }
  if (expected != data_size) {
    return Bad(source, "data section is " + std::to_string(data_size) + " bytes but the tensors cover " + std::to_string(expected));
  }
  return h;
}

}  // namespace

StatusOr<SafetensorsHeader> ParseSafetensorsHeader(const uint8_t* data, size_t size, const std::string& source) {
  return ParseHeader(data, size, size, source);
}

StatusOr<SafetensorsFile> SafetensorsFile::FromBytes(std::vector<uint8_t> bytes, const std::string& source) {
  auto header = ParseSafetensorsHeader(bytes.data(), bytes.size(), source);
  if (!header.ok()) return header.status();
  return Assemble(std::move(bytes), std::move(header).value(), source);
}

SafetensorsFile SafetensorsFile::Assemble(std::vector<uint8_t> bytes, SafetensorsHeader header, const std::string& source) {
  SafetensorsFile f;
  f.bytes_ = std::move(bytes);
  f.header_ = std::move(header);
  f.source_ = source;
  for (size_t i = 0; i < f.header_.tensors.size(); ++i) f.index_[f.header_.tensors[i].name] = i;
  return f;
}

StatusOr<SafetensorsFile> SafetensorsFile::Open(const std::string& path) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(status)) return NotFound(path + ": cannot open file" + (ec ? ": " + ec.message() : ""));
  if (!std::filesystem::is_regular_file(status)) return DataLoss(path + ": not a regular file");
  const uint64_t size = std::filesystem::file_size(path, ec);
  if (ec) return DataLoss(path + ": cannot determine file size: " + ec.message());
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFound(path + ": cannot open file");
  // The header first: it is checked against the file's size before any
  // memory is taken for the tensors (a lying or huge file fails cheaply).
  std::vector<uint8_t> head(static_cast<size_t>(std::min<uint64_t>(size, 8)));
  if (!in.read(reinterpret_cast<char*>(head.data()), static_cast<std::streamsize>(head.size()))) return DataLoss(path + ": read failed");
  auto length = HeaderLength(head.data(), head.size(), size, path);
  if (!length.ok()) return length.status();
  head.resize(8 + *length);
  if (!in.read(reinterpret_cast<char*>(head.data() + 8), static_cast<std::streamsize>(*length))) return DataLoss(path + ": read failed");
  auto header = ParseHeader(head.data(), head.size(), size, path);
  if (!header.ok()) return header.status();
  std::vector<uint8_t> bytes;
  try {
    bytes.resize(static_cast<size_t>(size));
  } catch (const std::exception&) {  // bad_alloc, length_error
    return ResourceExhausted(path + ": its " + std::to_string(size) + " bytes do not fit in memory");
  }
  std::memcpy(bytes.data(), head.data(), head.size());
  const uint64_t rest = size - head.size();
  if (rest > 0 && !in.read(reinterpret_cast<char*>(bytes.data() + head.size()), static_cast<std::streamsize>(rest))) {
    return DataLoss(path + ": read failed");
  }
  return Assemble(std::move(bytes), std::move(header).value(), path);
}

const TensorInfo* SafetensorsFile::Find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &header_.tensors[it->second];
}

Status WriteSafetensors(const std::string& path, const std::vector<TensorBlob>& tensors,
                        const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    uint64_t numel = 1;
    for (int64_t d : t.shape) numel *= static_cast<uint64_t>(d);
    if (numel * DTypeSize(t.dtype) != t.nbytes) return InvalidArgument("tensor " + t.name + ": byte count does not match shape");
    header[t.name] = {{"dtype", DTypeName(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.nbytes}}};
    offset += t.nbytes;
  }
  std::string text = header.dump();
  while ((8 + text.size()) % 8 != 0) text.push_back(' ');  // align the data section
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return FailedPrecondition(tmp + ": cannot open for writing");
    uint64_t n = text.size();
    uint8_t len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(n >> (8 * i));
    out.write(reinterpret_cast<const char*>(len), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const auto& t : tensors) out.write(static_cast<const char*>(t.data), static_cast<std::streamsize>(t.nbytes));
    if (!out.flush()) return FailedPrecondition(tmp + ": write failed");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) return FailedPrecondition(path + ": cannot rename " + tmp + " into place");
  return Status::Ok();
}

}  // namespace modserve
