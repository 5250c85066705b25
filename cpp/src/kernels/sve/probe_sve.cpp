// [NOTE] Machine-limit probe loops for the sve tier (driven by cpp/src/probe/probe.cpp), each over 16
// independent accumulators of the run-time vector length VL (the figures below are per 128 bits;
// probe.cpp scales them by VL / 128):
//   read_sum__sve:       xor-folds a buffer with whole-vector loads, 8 independent accumulators.
//   fma_f32_z__sve:      fmla z.s, z.s, z.s[0]: 4 MACs = 8 flops per 128 bits.
//   int8_sdot_z__sve:    sdot z.s, z.b, z.b: 16 int8 multiply-adds = 32 ops per 128 bits.
//   int8_smmla_z__sve:   smmla z.s, z.b, z.b (2x8 by 8x2 per 128-bit segment): 32 MACs = 64 ops.
//   bf16_bfmmla_z__sve:  bfmmla z.s, z.h, z.h (2x4 by 4x2 per segment): 16 MACs = 32 flops.
#include <arm_sve.h>

#include "probe/probe.h"
#include "probe/probe_asm.h"

namespace kt::probe {

uint64_t read_sum__sve(const void* p, size_t bytes) {
  const uint8_t* v = static_cast<const uint8_t*>(p);
  const svbool_t all = svptrue_b8();
  const size_t vb = svcntb();
  svuint8_t a0 = svdup_u8(0), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
  for (size_t i = 0; i + 8 * vb <= bytes; i += 8 * vb) {
    a0 = sveor_x(all, a0, svld1(all, v + i));
    a1 = sveor_x(all, a1, svld1(all, v + i + vb));
    a2 = sveor_x(all, a2, svld1(all, v + i + 2 * vb));
    a3 = sveor_x(all, a3, svld1(all, v + i + 3 * vb));
    a4 = sveor_x(all, a4, svld1(all, v + i + 4 * vb));
    a5 = sveor_x(all, a5, svld1(all, v + i + 5 * vb));
    a6 = sveor_x(all, a6, svld1(all, v + i + 6 * vb));
    a7 = sveor_x(all, a7, svld1(all, v + i + 7 * vb));
  }
  a0 = sveor_x(all, sveor_x(all, sveor_x(all, a0, a1), sveor_x(all, a2, a3)),
               sveor_x(all, sveor_x(all, a4, a5), sveor_x(all, a6, a7)));
  return svlasta(svpfalse(), svreinterpret_u64(a0));  // lane 0
}

uint64_t fma_f32_z__sve(int64_t iters) {
  KT_PROBE_DECL16(svfloat32_t, svdup_f32(1.0f));
  const svfloat32_t a = svdup_f32(1e-7f), b = a;
  for (int64_t i = 0; i < iters; ++i) {
    asm volatile(KT_PROBE_ARM8("fmla", ".s", ".s", ".s[0]") : KT_PROBE_OUT8("+w", KT_PROBE_LO8) : [a] "w"(a), [b] "y"(b));
    asm volatile(KT_PROBE_ARM8("fmla", ".s", ".s", ".s[0]") : KT_PROBE_OUT8("+w", KT_PROBE_HI8) : [a] "w"(a), [b] "y"(b));
  }
  const svbool_t all = svptrue_b32();
  const auto add = [&](svfloat32_t x, svfloat32_t y) { return svadd_x(all, x, y); };
  return svlasta(svpfalse(), svreinterpret_u64(KT_PROBE_FOLD16(add)));
}

// cN = insn(cN, a, b) with int8 (or bf16) operands into int32 accumulators (their bits are only
// folded), 16 of them
#define KT_PROBE_SVE_LOOP(insn, src, a, b)                                                                   \
  KT_PROBE_DECL16(svint32_t, svdup_s32(1));                                                                    \
  for (int64_t i = 0; i < iters; ++i) {                                                                        \
    asm volatile(KT_PROBE_ARM8(insn, ".s", src, src) : KT_PROBE_OUT8("+w", KT_PROBE_LO8) : [a] "w"(a), [b] "w"(b)); \
    asm volatile(KT_PROBE_ARM8(insn, ".s", src, src) : KT_PROBE_OUT8("+w", KT_PROBE_HI8) : [a] "w"(a), [b] "w"(b)); \
  }                                                                                                            \
  const svbool_t all = svptrue_b32();                                                                          \
  const auto fold = [&](svint32_t x, svint32_t y) { return sveor_x(all, x, y); };                              \
  return svlasta(svpfalse(), svreinterpret_u64(KT_PROBE_FOLD16(fold)));

uint64_t int8_sdot_z__sve(int64_t iters) {
  const svint8_t a = svdup_s8(3), b = svdup_s8(-2);
  KT_PROBE_SVE_LOOP("sdot", ".b", a, b)
}

uint64_t int8_smmla_z__sve(int64_t iters) {
  const svint8_t a = svdup_s8(3), b = svdup_s8(-2);
  KT_PROBE_SVE_LOOP("smmla", ".b", a, b)
}

uint64_t bf16_bfmmla_z__sve(int64_t iters) {
  const svuint16_t a = svdup_u16(0x3400), b = a;  // bf16 2^-23
  KT_PROBE_SVE_LOOP("bfmmla", ".h", a, b)
}

#undef KT_PROBE_SVE_LOOP

}  // namespace kt::probe
