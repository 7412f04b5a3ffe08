// Safetensors: reader and writer for the standard safetensors file layout
// (8-byte little-endian header length, a JSON header naming every tensor's
// dtype, shape and byte range, then the raw little-endian tensor bytes).
//
// Torch-free on purpose: the parser is fuzzed and unit-tested on its own.
// Every malformed input (short file, lying header length, bad JSON, offsets
// out of range, overlapping or gapped ranges, a size that does not match the
// shape, a key twice, JSON nested too deep) yields a DataLoss status naming
// the file and the tensor, never a crash; Open checks the header against the
// file's size before it reads the tensors, and a file that is not a regular
// file or does not fit in memory is a clear error too.
//
// Thread-safety: SafetensorsFile is immutable after Open(); const methods may be
// called from any thread.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "engine/status.h"

namespace modserve {

enum class DType { kF32, kBF16 };

const char* DTypeName(DType dtype);  // "F32" / "BF16", as in the file format
size_t DTypeSize(DType dtype);

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets into the data section
  uint64_t end = 0;
  int64_t numel() const;
};

struct SafetensorsHeader {
  std::vector<TensorInfo> tensors;          // sorted by begin offset
  std::map<std::string, std::string> metadata;
  uint64_t data_offset = 0;                 // where the data section starts in the file
};

// Parses and validates the header of an in-memory file of `size` bytes.
StatusOr<SafetensorsHeader> ParseSafetensorsHeader(const uint8_t* data, size_t size, const std::string& source);

class SafetensorsFile {
 public:
  static StatusOr<SafetensorsFile> Open(const std::string& path);
  static StatusOr<SafetensorsFile> FromBytes(std::vector<uint8_t> bytes, const std::string& source);

  const SafetensorsHeader& header() const { return header_; }
  const TensorInfo* Find(const std::string& name) const;
  const uint8_t* Data(const TensorInfo& info) const { return bytes_.data() + header_.data_offset + info.begin; }
  const std::string& source() const { return source_; }

 private:
  static SafetensorsFile Assemble(std::vector<uint8_t> bytes, SafetensorsHeader header, const std::string& source);

  std::vector<uint8_t> bytes_;
  SafetensorsHeader header_;
  std::map<std::string, size_t> index_;
  std::string source_;
};

// A tensor to write: `data` points at numel * DTypeSize(dtype) little-endian bytes.
struct TensorBlob {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  size_t nbytes = 0;
};

// Writes atomically (to a temporary file, then renamed into place).
Status WriteSafetensors(const std::string& path, const std::vector<TensorBlob>& tensors,
                        const std::map<std::string, std::string>& metadata);

}  // namespace modserve
