// What the 32-weight GGUF blocks (q4_0, q4_1, q5_0, q5_1, iq4_nl) share: 32 4-bit values in 16
// bytes, weight k < 16 in the low nibble of byte k, weight k + 16 in its high nibble; q5_0 / q5_1
// add bit 4 of weight k as bit k of a little-endian uint32.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

namespace kt {
namespace block32 {

// The low 4 bits of weight k of 16 nibble bytes qs.
inline int nibble(const uint8_t* qs, int k) { return k < 16 ? qs[k] & 15 : qs[k - 16] >> 4; }

// The 32 nibbles q[k] & 15 into 16 bytes.
inline void pack_nibbles(const uint8_t* q, uint8_t* qs) {
  for (int j = 0; j < 16; ++j) qs[j] = uint8_t((q[j] & 15) | (q[j + 16] & 15) << 4);
}

// The fifth bits of q5_0 / q5_1: bit k is bit 4 of weight k.
inline uint32_t high_bits(const uint8_t* qh) {
  uint32_t h;
  std::memcpy(&h, qh, 4);
  return h;
}
// The 5-bit q[k] of q5_0 / q5_1 from the nibbles qs and the fifth bits h.
inline int q5(const uint8_t* qs, uint32_t h, int k) { return nibble(qs, k) | int(h >> k & 1) << 4; }
inline void pack_high_bits(const uint8_t* q, uint8_t* qh) {
  uint32_t h = 0;
  for (int k = 0; k < 32; ++k) h |= uint32_t(q[k] >> 4 & 1) << k;
  std::memcpy(qh, &h, 4);
}

// The weight of largest |x| among x[0..31], sign kept (the first of equals, as ggml), 0 if none.
inline float signed_absmax(const float* x) {
  float amax = 0.f, max = 0.f;
  for (int k = 0; k < 32; ++k)
    if (std::fabs(x[k]) > amax) {
      amax = std::fabs(x[k]);
      max = x[k];
    }
  return max;
}

}  // namespace block32
}  // namespace kt
