// The word-interleaved panel layout of the GGUF K-quants, q8_0 and mxfp4, read by their AVX512-VNNI kernels.
//
// A k-block of a panel holds the 16 rows' blocks of that k (GgufPanelBlock, the format's own
// layout: block c at byte c * sizeof(Block)). Word-interleaved, the same bytes are
//   | word 0 of blocks 0..15 | word 1 of blocks 0..15 | ... | word W-1 of blocks 0..15 | tails |
// word g of block c (its bytes 4g .. 4g+3) at byte 64 g + 4 c, W = sizeof(Block) / 4, then the
// sizeof(Block) % 4 bytes left of each block (q6_K's trailing fp16 d, q8_0's leading one, whose
// words begin at its byte 2, mxfp4's leading exponent byte), block c's at 64 W + T c.
// A zmm load is then one word of the 16 rows, lane c = row c: what vpdpbusd multiplies, with no
// transposes at run time (transposing the file's blocks cost more than the products at m = 1).
// Packing permutes bytes once at load (no dequantization, no size change).
// Declarations only: the kernel objects that name these are compiled with their own ISA flags.
#pragma once
#include "kt/kernels.h"

namespace kt {

extern const PanelLayout q8_0_words;
extern const PanelLayout q4_K_words;
extern const PanelLayout q5_K_words;
extern const PanelLayout q6_K_words;
extern const PanelLayout iq4_xs_words;
extern const PanelLayout mxfp4_words;

}  // namespace kt
