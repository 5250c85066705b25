// Formats that store each weight as a plain value, one k of the panel's channels per block (f16,
// f32): Block::w[c] = W[c, s]. Padded channels and k are zero.
#pragma once
#include <cstring>

#include "kt/formats.h"

namespace kt::value_format {

template <class Block, class T>
void pack(FormatId id, const QuantizedMatrix& q, int n0, int n1, int k0, int k1, uint8_t* dst) {
  const int kp = k1 - k0;  // kK = 1: no padding of k
  const size_t pb = format_traits(id).panel_bytes(kp);
  const T* v = q.array<T>(0);
  const int panels = (n1 - n0 + kPanelN - 1) / kPanelN;
  std::memset(dst, 0, pb * panels);
  for (int p = 0; p < panels; ++p) {
    Block* blocks = reinterpret_cast<Block*>(dst + pb * p);
    for (int c = 0; c < kPanelN && n0 + p * kPanelN + c < n1; ++c) {
      const T* row = v + size_t(n0 + p * kPanelN + c) * q.K + k0;
      for (int k = 0; k < kp; ++k) blocks[k].w[c] = row[k];
    }
  }
}

template <class Block, class T>
void unpack_row(FormatId id, const uint8_t* data, int Kp, int n, int K, float* out, float (*widen)(T)) {
  const Block* blocks = reinterpret_cast<const Block*>(data + format_traits(id).panel_bytes(Kp) * size_t(n / kPanelN));
  for (int k = 0; k < K; ++k) out[k] = widen(blocks[k].w[n % kPanelN]);
}

}  // namespace kt::value_format
