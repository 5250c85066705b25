// The GGUF block formats (kt/gguf_blocks.h): what each block type defines, and the record
// functions every one of them shares.
//
// A block type's file (cpp/src/formats/<type>.cpp) defines three overloads:
//   dequantize_block(b, out)   the kK weights of block b, as ggml dequantizes them (the format's truth)
//   quantize_block(x, b)       ours: kK fp32 weights into a valid block (test data, load_from_tensors)
//   dot_block(b, a)            sum_k w[k] * a.d * a.q[k] over the block, by integer sums per sub-block
//                              then the scales (the reference kernel's block product)
// and ends with KT_GGUF_FORMAT(<type>, <Block>), which instantiates the record's functions below.
//
// Logical representation: one array "blocks", uint8 [N, K / kK * sizeof(Block)]: each row its blocks,
// as a GGUF tensor stores it. Packed: GgufPanelBlock<Block> per k-block (the rows of a panel side by
// side, bytes unchanged), so load is a copy and unpack_row returns dequantize_block's values.
#pragma once
#include <cstring>
#include <stdexcept>
#include <string>

#include "kt/formats.h"
#include "kt/gguf_blocks.h"
#include "formats/gguf_word_layout.h"
#include "kernels/kernel_registry.h"

namespace kt {

#define KT_GGUF_BLOCK_FUNCTIONS(Block, Act)         \
  void dequantize_block(const Block& b, float* out); \
  void quantize_block(const float* x, Block* b);     \
  float dot_block(const Block& b, const Act& a);

KT_GGUF_BLOCK_FUNCTIONS(BlockQ4_0, ActQ8x32)
KT_GGUF_BLOCK_FUNCTIONS(BlockQ4_1, ActQ8x32)
KT_GGUF_BLOCK_FUNCTIONS(BlockQ5_0, ActQ8x32)
KT_GGUF_BLOCK_FUNCTIONS(BlockQ5_1, ActQ8x32)
KT_GGUF_BLOCK_FUNCTIONS(BlockQ8_0, ActQ8x32)
KT_GGUF_BLOCK_FUNCTIONS(BlockIq4Nl, ActQ8x32)
KT_GGUF_BLOCK_FUNCTIONS(BlockMxfp4, ActQ8x32)
KT_GGUF_BLOCK_FUNCTIONS(BlockQ2_K, ActQ8x256)
KT_GGUF_BLOCK_FUNCTIONS(BlockQ3_K, ActQ8x256)
KT_GGUF_BLOCK_FUNCTIONS(BlockQ4_K, ActQ8x256)
KT_GGUF_BLOCK_FUNCTIONS(BlockQ5_K, ActQ8x256)
KT_GGUF_BLOCK_FUNCTIONS(BlockQ6_K, ActQ8x256)
KT_GGUF_BLOCK_FUNCTIONS(BlockIq4Xs, ActQ8x256)
#undef KT_GGUF_BLOCK_FUNCTIONS

namespace gguf {

template <class Block>
size_t row_bytes(int K) { return size_t(K / Block::kK) * sizeof(Block); }

template <class Block>
void check_k(const char* name, int K) {
  if (K % Block::kK)
    throw std::invalid_argument(std::string(name) + " rows hold whole blocks of " + std::to_string(Block::kK) +
                                " weights; K=" + std::to_string(K) + " is not a multiple");
}

template <class Block>
void quantize_ref(FormatId id, const float* w, int N, int K, QuantizedMatrix* out) {
  const FormatTraits& f = format_traits(id);
  check_k<Block>(f.name, K);
  shape_quantized(f, N, K, out);
  Block* blocks = out->array<Block>(0);
  for (size_t i = 0; i < size_t(N) * (K / Block::kK); ++i) quantize_block(w + i * Block::kK, &blocks[i]);
}

template <class Block>
void dequantize_ref(const QuantizedMatrix& q, float* out) {
  const Block* blocks = q.array<Block>(0);
  for (size_t i = 0; i < size_t(q.N) * (q.K / Block::kK); ++i) dequantize_block(blocks[i], out + i * Block::kK);
}

// Rows [n0, n1), k [k0, k1) (k0, k1 multiples of kK) into panels of GgufPanelBlock; rows past n1
// of the last panel are zero blocks (d = 0: they dequantize to zeros).
template <class Block>
void pack(const QuantizedMatrix& q, int n0, int n1, int k0, int k1, uint8_t* dst) {
  using PB = GgufPanelBlock<Block>;
  const int nb = (k1 - k0) / Block::kK, row_blocks = q.K / Block::kK, b0 = k0 / Block::kK;
  const int panels = (n1 - n0 + kPanelN - 1) / kPanelN;
  const Block* src = q.array<Block>(0);
  std::memset(dst, 0, sizeof(PB) * nb * size_t(panels));
  PB* out = reinterpret_cast<PB*>(dst);
  for (int p = 0; p < panels; ++p)
    for (int c = 0; c < kPanelN && n0 + p * kPanelN + c < n1; ++c) {
      const Block* row = src + size_t(n0 + p * kPanelN + c) * row_blocks + b0;
      for (int s = 0; s < nb; ++s) out[size_t(p) * nb + s].b[c] = row[s];
    }
}

template <class Block>
void unpack_row(const uint8_t* data, int Kp, int n, int K, float* out) {
  using PB = GgufPanelBlock<Block>;
  const int nb = Kp / Block::kK;
  const PB* panel = reinterpret_cast<const PB*>(data) + size_t(n / kPanelN) * nb;
  for (int s = 0; s < K / Block::kK; ++s) dequantize_block(panel[s].b[n % kPanelN], out + s * Block::kK);
}

// Where the word-interleaved layout (formats/gguf_word_layout.h) puts the bytes of block c of a
// k-block: its word g at word(g, c), its kTail other bytes at tail(c). The words begin at byte
// kFrom of the block: the block type's kWordsFrom where it has one (q8_0, whose fp16 d leads its
// 32 weights), else 0.
template <class Block>
struct WordPlaces {
  static constexpr size_t kWords = sizeof(Block) / 4, kTail = sizeof(Block) % 4;
  static constexpr size_t kFrom = [] {
    if constexpr (requires { Block::kWordsFrom; }) return size_t(Block::kWordsFrom);
    else return size_t(0);
  }();
  static_assert(kFrom <= kTail, "the words must leave the block's other bytes around them");
  static constexpr size_t word(size_t g, int c) { return 64 * g + 4 * size_t(c); }
  static constexpr size_t tail(int c) { return 64 * kWords + kTail * size_t(c); }
  // block bytes <-> their places: the words, then the bytes before them and after them at tail(c)
  static void place(const uint8_t* block, uint8_t* pb, int c) {
    for (size_t g = 0; g < kWords; ++g) std::memcpy(pb + word(g, c), block + kFrom + 4 * g, 4);
    std::memcpy(pb + tail(c), block, kFrom);
    std::memcpy(pb + tail(c) + kFrom, block + kFrom + 4 * kWords, kTail - kFrom);
  }
  static void gather(const uint8_t* pb, int c, uint8_t* block) {
    for (size_t g = 0; g < kWords; ++g) std::memcpy(block + kFrom + 4 * g, pb + word(g, c), 4);
    std::memcpy(block, pb + tail(c), kFrom);
    std::memcpy(block + kFrom + 4 * kWords, pb + tail(c) + kFrom, kTail - kFrom);
  }
};

// pack, then each k-block's bytes word-interleaved
template <class Block>
void pack_words(const QuantizedMatrix& q, int n0, int n1, int k0, int k1, uint8_t* dst) {
  using P = WordPlaces<Block>;
  constexpr size_t PB = sizeof(GgufPanelBlock<Block>);
  pack<Block>(q, n0, n1, k0, k1, dst);
  const size_t blocks = size_t((k1 - k0) / Block::kK) * ((n1 - n0 + kPanelN - 1) / kPanelN);
  uint8_t file[PB];
  for (size_t i = 0; i < blocks; ++i) {
    uint8_t* pb = dst + i * PB;
    std::memcpy(file, pb, PB);
    for (int c = 0; c < kPanelN; ++c) P::place(file + c * sizeof(Block), pb, c);
  }
}

// row n's blocks gathered back from the word-interleaved panels, then dequantize_block
template <class Block>
void unpack_row_words(const uint8_t* data, int Kp, int n, int K, float* out) {
  using P = WordPlaces<Block>;
  constexpr size_t PB = sizeof(GgufPanelBlock<Block>);
  const int nb = Kp / Block::kK, c = n % kPanelN;
  const uint8_t* panel = data + size_t(n / kPanelN) * nb * PB;
  for (int s = 0; s < K / Block::kK; ++s) {
    const uint8_t* pb = panel + s * PB;
    Block b;
    P::gather(pb, c, reinterpret_cast<uint8_t*>(&b));
    dequantize_block(b, out + s * Block::kK);
  }
}

}  // namespace gguf

// The word-interleaved layout of GGUF format `fmt` (formats/gguf_word_layout.h), fmt##_words.
#define KT_GGUF_WORD_LAYOUT(fmt, Block)                                                             \
  void fmt##_pack_words(const QuantizedMatrix& q, int n0, int n1, int k0, int k1, uint8_t* dst) {  \
    gguf::pack_words<Block>(q, n0, n1, k0, k1, dst);                                                \
  }                                                                                                 \
  void fmt##_unpack_row_words(const uint8_t* data, int Kp, int n, int K, float* out) {             \
    gguf::unpack_row_words<Block>(data, Kp, n, K, out);                                             \
  }                                                                                                 \
  const PanelLayout fmt##_words{#fmt "_words", fmt##_pack_words, fmt##_unpack_row_words};

// The record functions of GGUF format `fmt` (a FormatId) with blocks `Block`, and its quantizer row.
#define KT_GGUF_FORMAT(fmt, Block)                                                                  \
  void fmt##_quantize_ref(const float* w, int N, int K, QuantizedMatrix* out) {                    \
    gguf::quantize_ref<Block>(FormatId::fmt, w, N, K, out);                                         \
  }                                                                                                 \
  void fmt##_dequantize_ref(const QuantizedMatrix& q, float* out) { gguf::dequantize_ref<Block>(q, out); } \
  void fmt##_pack(const QuantizedMatrix& q, int n0, int n1, int k0, int k1, uint8_t* dst) {         \
    gguf::pack<Block>(q, n0, n1, k0, k1, dst);                                                      \
  }                                                                                                 \
  void fmt##_unpack_row(const uint8_t* data, int Kp, int n, int K, float* out) {                    \
    gguf::unpack_row<Block>(data, Kp, n, K, out);                                                   \
  }                                                                                                 \
  KT_REFERENCE_QUANTIZER_ROW(fmt, fmt##_quantize_ref)

}  // namespace kt
