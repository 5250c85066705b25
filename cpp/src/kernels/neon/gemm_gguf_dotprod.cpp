// [NOTE] The 13 GGUF block types at the neon_dotprod tier: each type's decode (gguf_<type>.h) in the
// SDOT driver (gguf_driver.h), rows in blocks of 8 (32-weight types) or 6 (K-quants).
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

void gateup_q4_0_q8_32_8x16__dotprod(const GateUpArgs& a) { gguf_dot::gateup<Q4_0>(a); }
void down_q4_0_q8_32_8x16__dotprod(const DownArgs& a) { gguf_dot::down<Q4_0>(a); }
void gateup_q4_1_q8_32_8x16__dotprod(const GateUpArgs& a) { gguf_dot::gateup<Q4_1>(a); }
void down_q4_1_q8_32_8x16__dotprod(const DownArgs& a) { gguf_dot::down<Q4_1>(a); }
void gateup_q5_0_q8_32_8x16__dotprod(const GateUpArgs& a) { gguf_dot::gateup<Q5_0>(a); }
void down_q5_0_q8_32_8x16__dotprod(const DownArgs& a) { gguf_dot::down<Q5_0>(a); }
void gateup_q5_1_q8_32_8x16__dotprod(const GateUpArgs& a) { gguf_dot::gateup<Q5_1>(a); }
void down_q5_1_q8_32_8x16__dotprod(const DownArgs& a) { gguf_dot::down<Q5_1>(a); }
void gateup_q8_0_q8_32_8x16__dotprod(const GateUpArgs& a) { gguf_dot::gateup<Q8_0>(a); }
void down_q8_0_q8_32_8x16__dotprod(const DownArgs& a) { gguf_dot::down<Q8_0>(a); }
void gateup_iq4_nl_q8_32_8x16__dotprod(const GateUpArgs& a) { gguf_dot::gateup<Iq4Nl>(a); }
void down_iq4_nl_q8_32_8x16__dotprod(const DownArgs& a) { gguf_dot::down<Iq4Nl>(a); }
void gateup_mxfp4_q8_32_8x16__dotprod(const GateUpArgs& a) { gguf_dot::gateup<Mxfp4>(a); }
void down_mxfp4_q8_32_8x16__dotprod(const DownArgs& a) { gguf_dot::down<Mxfp4>(a); }
void gateup_q2_K_q8_256_6x16__dotprod(const GateUpArgs& a) { gguf_dot::gateup<Q2_K>(a); }
void down_q2_K_q8_256_6x16__dotprod(const DownArgs& a) { gguf_dot::down<Q2_K>(a); }
void gateup_q3_K_q8_256_6x16__dotprod(const GateUpArgs& a) { gguf_dot::gateup<Q3_K>(a); }
void down_q3_K_q8_256_6x16__dotprod(const DownArgs& a) { gguf_dot::down<Q3_K>(a); }
void gateup_q4_K_q8_256_6x16__dotprod(const GateUpArgs& a) { gguf_dot::gateup<Q4_K>(a); }
void down_q4_K_q8_256_6x16__dotprod(const DownArgs& a) { gguf_dot::down<Q4_K>(a); }
void gateup_q5_K_q8_256_6x16__dotprod(const GateUpArgs& a) { gguf_dot::gateup<Q5_K>(a); }
void down_q5_K_q8_256_6x16__dotprod(const DownArgs& a) { gguf_dot::down<Q5_K>(a); }
void gateup_q6_K_q8_256_6x16__dotprod(const GateUpArgs& a) { gguf_dot::gateup<Q6_K>(a); }
void down_q6_K_q8_256_6x16__dotprod(const DownArgs& a) { gguf_dot::down<Q6_K>(a); }
void gateup_iq4_xs_q8_256_6x16__dotprod(const GateUpArgs& a) { gguf_dot::gateup<Iq4Xs>(a); }
void down_iq4_xs_q8_256_6x16__dotprod(const DownArgs& a) { gguf_dot::down<Iq4Xs>(a); }

KT_KERNEL_ROW(q4_0, kDotprodObj, q8_32, q4_0_q8_32_8x16__dotprod)
KT_KERNEL_ROW(q4_1, kDotprodObj, q8_32, q4_1_q8_32_8x16__dotprod)
KT_KERNEL_ROW(q5_0, kDotprodObj, q8_32, q5_0_q8_32_8x16__dotprod)
KT_KERNEL_ROW(q5_1, kDotprodObj, q8_32, q5_1_q8_32_8x16__dotprod)
KT_KERNEL_ROW_IN(q8_0, kDotprodObj, q8_32, q8_0_q8_32_8x16__dotprod, q8_0_words)
KT_KERNEL_ROW(iq4_nl, kDotprodObj, q8_32, iq4_nl_q8_32_8x16__dotprod)
KT_KERNEL_ROW_IN(mxfp4, kDotprodObj, q8_32, mxfp4_q8_32_8x16__dotprod, mxfp4_words)
KT_KERNEL_ROW(q2_K, kDotprodObj, q8_256, q2_K_q8_256_6x16__dotprod)
KT_KERNEL_ROW(q3_K, kDotprodObj, q8_256, q3_K_q8_256_6x16__dotprod)
KT_KERNEL_ROW_IN(q4_K, kDotprodObj, q8_256, q4_K_q8_256_6x16__dotprod, q4_K_words)
KT_KERNEL_ROW_IN(q5_K, kDotprodObj, q8_256, q5_K_q8_256_6x16__dotprod, q5_K_words)
KT_KERNEL_ROW_IN(q6_K, kDotprodObj, q8_256, q6_K_q8_256_6x16__dotprod, q6_K_words)
KT_KERNEL_ROW_IN(iq4_xs, kDotprodObj, q8_256, iq4_xs_q8_256_6x16__dotprod, iq4_xs_words)

}  // namespace kt
