// WireBytes: a gRPC ByteBuffer's bytes as one string, for the raw-bytes
// methods that decode requests themselves (request_decoding.h).
//
// Thread-safety: a pure function.
#pragma once

#include <grpcpp/support/byte_buffer.h>

#include <string>
#include <vector>

namespace modserve {

inline std::string WireBytes(const grpc::ByteBuffer& bytes) {
  std::vector<grpc::Slice> slices;
  std::string wire;
  if (bytes.Dump(&slices).ok()) {
    for (const auto& sl : slices) wire.append(reinterpret_cast<const char*>(sl.begin()), sl.size());
  }
  return wire;
}

}  // namespace modserve
