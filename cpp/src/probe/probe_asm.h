// Text macros for the probe loops in cpp/src/kernels/<isa>/probe_*.cpp: each loop iteration is asm
// with every accumulator a named register operand, so the compiler can neither keep accumulators
// in memory nor rotate them through copies (it did both with intrinsics, and with one asm statement
// per array element). Only macros: no code, no symbols, no ISA.
#pragma once

// Accumulators c0..c11 (ymm loops: 16 registers) or c0..c15 (zmm loops: 32 registers).
#define KT_PROBE_DECL12(T, init) T c0 = init, c1 = init, c2 = init, c3 = init, c4 = init, c5 = init, \
  c6 = init, c7 = init, c8 = init, c9 = init, c10 = init, c11 = init
#define KT_PROBE_DECL16(T, init) KT_PROBE_DECL12(T, init), c12 = init, c13 = init, c14 = init, c15 = init
#define KT_PROBE_FOLD12(op) (op(op(op(op(c0, c1), op(c2, c3)), op(op(c4, c5), op(c6, c7))), \
  op(op(c8, c9), op(c10, c11))))
#define KT_PROBE_FOLD16(op) op(KT_PROBE_FOLD12(op), op(op(c12, c13), op(c14, c15)))

// Output operands. A "+" operand counts twice against GCC's limit of 30 operands per asm, so zmm
// loops issue two statements of 8 accumulators: KT_PROBE_OUT8(cons, KT_PROBE_LO8) binds c0..c7 to
// operands %[c0]..%[c7], KT_PROBE_OUT8(cons, KT_PROBE_HI8) binds c8..c15 to the same names.
#define KT_PROBE_OUT12(cons) [c0] cons(c0), [c1] cons(c1), [c2] cons(c2), [c3] cons(c3), [c4] cons(c4), \
  [c5] cons(c5), [c6] cons(c6), [c7] cons(c7), [c8] cons(c8), [c9] cons(c9), [c10] cons(c10), [c11] cons(c11)
#define KT_PROBE_OUT8_(cons, v0, v1, v2, v3, v4, v5, v6, v7) [c0] cons(v0), [c1] cons(v1), [c2] cons(v2), \
  [c3] cons(v3), [c4] cons(v4), [c5] cons(v5), [c6] cons(v6), [c7] cons(v7)
#define KT_PROBE_OUT8(cons, list) KT_PROBE_OUT8_(cons, list)
#define KT_PROBE_LO8 c0, c1, c2, c3, c4, c5, c6, c7
#define KT_PROBE_HI8 c8, c9, c10, c11, c12, c13, c14, c15

// "insn b, a, cN": cN = cN + a * b for 3-operand accumulate instructions (AT&T operand order).
#define KT_PROBE_ACC(insn, n) insn " %[b], %[a], %[c" #n "]\n\t"
#define KT_PROBE_ACC8(insn) KT_PROBE_ACC(insn, 0) KT_PROBE_ACC(insn, 1) KT_PROBE_ACC(insn, 2) \
  KT_PROBE_ACC(insn, 3) KT_PROBE_ACC(insn, 4) KT_PROBE_ACC(insn, 5) KT_PROBE_ACC(insn, 6) KT_PROBE_ACC(insn, 7)
#define KT_PROBE_ACC12(insn) KT_PROBE_ACC8(insn) KT_PROBE_ACC(insn, 8) KT_PROBE_ACC(insn, 9) \
  KT_PROBE_ACC(insn, 10) KT_PROBE_ACC(insn, 11)

// pmaddubsw chains: t = pmaddubsw(cN as u8, b as s8); cN = cN + t (int16, wrapping). Each chain
// feeds its own accumulator back as the u8 operand, so no two chains share a product.
#define KT_PROBE_MADD(n) "vpmaddubsw %[b], %[c" #n "], %[t]\n\tvpaddw %[t], %[c" #n "], %[c" #n "]\n\t"
#define KT_PROBE_MADD8 KT_PROBE_MADD(0) KT_PROBE_MADD(1) KT_PROBE_MADD(2) KT_PROBE_MADD(3) KT_PROBE_MADD(4) \
  KT_PROBE_MADD(5) KT_PROBE_MADD(6) KT_PROBE_MADD(7)
#define KT_PROBE_MADD12 KT_PROBE_MADD8 KT_PROBE_MADD(8) KT_PROBE_MADD(9) KT_PROBE_MADD(10) KT_PROBE_MADD(11)

// aarch64 (cpp/src/kernels/neon, cpp/src/kernels/sve): "insn cN<acc>, a<sa>, b<sb>", cN = cN + a . b
// in the destination-first order, with the arrangement suffixes of the instruction (".4s", ".16b";
// SVE's ".s", ".b", and an index such as ".s[0]").
#define KT_PROBE_ARM(insn, acc, sa, sb, n) insn " %[c" #n "]" acc ", %[a]" sa ", %[b]" sb "\n\t"
#define KT_PROBE_ARM8(insn, acc, sa, sb) KT_PROBE_ARM(insn, acc, sa, sb, 0) KT_PROBE_ARM(insn, acc, sa, sb, 1) \
  KT_PROBE_ARM(insn, acc, sa, sb, 2) KT_PROBE_ARM(insn, acc, sa, sb, 3) KT_PROBE_ARM(insn, acc, sa, sb, 4)      \
  KT_PROBE_ARM(insn, acc, sa, sb, 5) KT_PROBE_ARM(insn, acc, sa, sb, 6) KT_PROBE_ARM(insn, acc, sa, sb, 7)
