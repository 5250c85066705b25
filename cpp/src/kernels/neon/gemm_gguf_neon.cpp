// [NOTE] The 13 GGUF block types at the neon tier (ARMv8.0 cores without dotprod: Cortex-A72,
// Graviton 1): each type's decode (gguf_<type>.h) in the driver of the neon_dotprod rows
// (gguf_driver.h) with SDOT's stand-in of SMULL, SMULL2, 2 SADDLP, ADDP and ADD (plus a DUP per row
// and lane, shared by the quads of a pass), the same exact int32 sums; rows in blocks of 4.
// decode (M = 1): the bytes per weight of the dotprod rows; per 16 weights the type's decode and
// 6 instructions where SDOT is one (at 2 NEON pipes, ~3 cycles per 16 weights: about one core's
// share of memory bandwidth for the 4-bit types; unmeasured).
#include "kernels/kernel_registry.h"
#include "kernels/neon/gguf_iq4_nl.h"
#include "kernels/neon/gguf_iq4_xs.h"
#include "kernels/neon/gguf_mxfp4.h"
#include "kernels/neon/gguf_q2_K.h"
#include "kernels/neon/gguf_q3_K.h"
#include "kernels/neon/gguf_q4_0.h"
#include "kernels/neon/gguf_q4_1.h"
#include "kernels/neon/gguf_q4_K.h"
#include "kernels/neon/gguf_q5_0.h"
#include "kernels/neon/gguf_q5_1.h"
#include "kernels/neon/gguf_q5_K.h"
#include "kernels/neon/gguf_q6_K.h"
#include "kernels/neon/gguf_q8_0.h"

namespace kt {

void gateup_q4_0_q8_32_4x16__neon(const GateUpArgs& a) { gguf_dot::gateup<Q4_0>(a); }
void down_q4_0_q8_32_4x16__neon(const DownArgs& a) { gguf_dot::down<Q4_0>(a); }
void gateup_q4_1_q8_32_4x16__neon(const GateUpArgs& a) { gguf_dot::gateup<Q4_1>(a); }
void down_q4_1_q8_32_4x16__neon(const DownArgs& a) { gguf_dot::down<Q4_1>(a); }
void gateup_q5_0_q8_32_4x16__neon(const GateUpArgs& a) { gguf_dot::gateup<Q5_0>(a); }
void down_q5_0_q8_32_4x16__neon(const DownArgs& a) { gguf_dot::down<Q5_0>(a); }
void gateup_q5_1_q8_32_4x16__neon(const GateUpArgs& a) { gguf_dot::gateup<Q5_1>(a); }
void down_q5_1_q8_32_4x16__neon(const DownArgs& a) { gguf_dot::down<Q5_1>(a); }
void gateup_q8_0_q8_32_4x16__neon(const GateUpArgs& a) { gguf_dot::gateup<Q8_0>(a); }
void down_q8_0_q8_32_4x16__neon(const DownArgs& a) { gguf_dot::down<Q8_0>(a); }
void gateup_iq4_nl_q8_32_4x16__neon(const GateUpArgs& a) { gguf_dot::gateup<Iq4Nl>(a); }
void down_iq4_nl_q8_32_4x16__neon(const DownArgs& a) { gguf_dot::down<Iq4Nl>(a); }
void gateup_mxfp4_q8_32_4x16__neon(const GateUpArgs& a) { gguf_dot::gateup<Mxfp4>(a); }
void down_mxfp4_q8_32_4x16__neon(const DownArgs& a) { gguf_dot::down<Mxfp4>(a); }
void gateup_q2_K_q8_256_4x16__neon(const GateUpArgs& a) { gguf_dot::gateup<Q2_K>(a); }
void down_q2_K_q8_256_4x16__neon(const DownArgs& a) { gguf_dot::down<Q2_K>(a); }
void gateup_q3_K_q8_256_4x16__neon(const GateUpArgs& a) { gguf_dot::gateup<Q3_K>(a); }
void down_q3_K_q8_256_4x16__neon(const DownArgs& a) { gguf_dot::down<Q3_K>(a); }
void gateup_q4_K_q8_256_4x16__neon(const GateUpArgs& a) { gguf_dot::gateup<Q4_K>(a); }
void down_q4_K_q8_256_4x16__neon(const DownArgs& a) { gguf_dot::down<Q4_K>(a); }
void gateup_q5_K_q8_256_4x16__neon(const GateUpArgs& a) { gguf_dot::gateup<Q5_K>(a); }
void down_q5_K_q8_256_4x16__neon(const DownArgs& a) { gguf_dot::down<Q5_K>(a); }
void gateup_q6_K_q8_256_4x16__neon(const GateUpArgs& a) { gguf_dot::gateup<Q6_K>(a); }
void down_q6_K_q8_256_4x16__neon(const DownArgs& a) { gguf_dot::down<Q6_K>(a); }
void gateup_iq4_xs_q8_256_4x16__neon(const GateUpArgs& a) { gguf_dot::gateup<Iq4Xs>(a); }
void down_iq4_xs_q8_256_4x16__neon(const DownArgs& a) { gguf_dot::down<Iq4Xs>(a); }

KT_KERNEL_ROW(q4_0, kNeonObj, q8_32, q4_0_q8_32_4x16__neon)
KT_KERNEL_ROW(q4_1, kNeonObj, q8_32, q4_1_q8_32_4x16__neon)
KT_KERNEL_ROW(q5_0, kNeonObj, q8_32, q5_0_q8_32_4x16__neon)
KT_KERNEL_ROW(q5_1, kNeonObj, q8_32, q5_1_q8_32_4x16__neon)
KT_KERNEL_ROW_IN(q8_0, kNeonObj, q8_32, q8_0_q8_32_4x16__neon, q8_0_words)
KT_KERNEL_ROW(iq4_nl, kNeonObj, q8_32, iq4_nl_q8_32_4x16__neon)
KT_KERNEL_ROW_IN(mxfp4, kNeonObj, q8_32, mxfp4_q8_32_4x16__neon, mxfp4_words)
KT_KERNEL_ROW(q2_K, kNeonObj, q8_256, q2_K_q8_256_4x16__neon)
KT_KERNEL_ROW(q3_K, kNeonObj, q8_256, q3_K_q8_256_4x16__neon)
KT_KERNEL_ROW_IN(q4_K, kNeonObj, q8_256, q4_K_q8_256_4x16__neon, q4_K_words)
KT_KERNEL_ROW_IN(q5_K, kNeonObj, q8_256, q5_K_q8_256_4x16__neon, q5_K_words)
KT_KERNEL_ROW_IN(q6_K, kNeonObj, q8_256, q6_K_q8_256_4x16__neon, q6_K_words)
KT_KERNEL_ROW_IN(iq4_xs, kNeonObj, q8_256, iq4_xs_q8_256_4x16__neon, iq4_xs_words)

}  // namespace kt
