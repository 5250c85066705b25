// The MoE operator on the CPU experts of one layer:
//   out[t] = sum_k w[t,k] * down_e( silu(gate_e(x_t)) * up_e(x_t) ),  e = ids[t,k]
// e is a physical expert slot; ids of -1 and of slots that run on the GPU contribute nothing.
// The intermediate dimension I is split across sub-pools at load: sub-pool p owns gate/up rows
// and down columns [i0_p, i1_p) of every CPU expert and produces a partial output that the last
// stage sums in fp32.
// Lifetime: a job touches its layer, its staged inputs and its output. The staged inputs and the
// output are owned by the job (the output jointly with the caller), and the layer's destructor
// waits for the layer's last job: whatever order Python drops a wrapper, its tensors and the
// layer in, no job writes freed memory. Jobs still queued at process exit run before static
// destructors (Engine::drain_all, registered by the first layer).
// Loads and forwards of a layer are serialised: a load packs new weights aside and swaps them in
// inside an engine job, between two forwards, which see the old or the new weights.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "kt/engine.h"
#include "kt/formats.h"
#include "kt/kernels.h"

namespace kt {

class DeferredLinks;
struct DeferredPart;

struct MoeConfig {
  int num_experts = 0;  // physical slots
  int topk = 0;
  int hidden = 0;        // H
  int intermediate = 0;  // I
  FormatId format = FormatId::bf16;       // gate and up
  FormatId down_format = FormatId::bf16;  // down (a GGUF file may store it in another type)
  std::vector<uint8_t> on_cpu;  // per slot: 1 if its weights live here
  int chunk_tokens = 0;         // tokens per pass; larger calls run in chunks
  // Deferred experts (moe/deferred.h): per token, the deferred_experts slots of least routing
  // weight run as a second job whose sum is added to the output of layer_idx + 1's next forward
  // on the same engine. layer_idx < 0: the layer neither defers nor takes a deferred part.
  int layer_idx = -1;
  int deferred_experts = 0;
  // The gated activation (GluParams, kt/kernels.h): swiglu_limit 0 clamps nothing; swiglu_alpha 0
  // is SiLU, otherwise gpt-oss's g sigmoid(alpha g) (u + 1).
  float swiglu_limit = 0.f;
  float swiglu_alpha = 0.f;
};

// Optional per-expert biases, fp32, contiguous, over the logical experts: gate and up [E, I] (added
// to g and u before the activation), down [E, H] (added to the expert's output, so that the layer
// adds w * (down h + b) per routed expert, as gpt-oss). nullptr: that projection has none.
struct ExpertBiases {
  const float* gate = nullptr;
  const float* up = nullptr;
  const float* down = nullptr;
};

// One forward's inputs as the caller holds them: host memory, contiguous, read only until
// MoeLayer::submit returns (it copies them).
struct MoeInputs {
  const void* x = nullptr;  // hidden states [M, H]: f32, bf16 or f16 (x_dtype)
  DType x_dtype = DType::bf16;
  const void* ids = nullptr;  // expert slots [M, topk]: int32, or int64 with ids_int64; -1 for none
  bool ids_int64 = false;
  const void* weights = nullptr;  // routing weights [M, topk]: f32 or bf16 (w_dtype)
  DType w_dtype = DType::f32;
  int M = 0;  // tokens
};

struct MoeStats {
  size_t weight_bytes = 0;  // packed expert weights held in host memory
  int cpu_experts = 0;
};

class MoeLayer {
 public:
  MoeLayer(std::shared_ptr<Engine> engine, MoeConfig config);
  ~MoeLayer();

  // gate, up: [E_logical, I, H]; down: [E_logical, H, I]; dtype f32/bf16/f16, contiguous.
  // Slot p takes logical expert map[p]. Quantizes (each projection to its format) and packs on the
  // engine's threads.
  void load_from_tensors(const void* gate, const void* up, const void* down, DType dtype,
                         const int64_t* map, int num_logical, const ExpertBiases& biases = {});
  // Pre-quantized logical weights (a converted checkpoint, a GGUF file's tensors, an FP8 release);
  // projection j = 0 gate [I, H], 1 up [I, H], 2 down [H, I] of each of num_logical experts: array
  // i is the projection's format's array i (FormatTraits::arrays) in its file layout (file_bits 4:
  // two elements per byte, even k in the low nibble, rows padded to whole bytes; GGUF blocks: the
  // file's bytes), either stacked over the experts (arrays[i]: [E, N, row]) or one address per
  // expert (experts[i][e], nullptr for an expert no CPU slot takes).
  // Packs exactly as load_from_tensors packs the output of the format's quantize_ref; a format
  // with a check (FormatTraits::check) has every matrix checked first.
  // mapped[i]: array i is a read-only file mapping; after an expert's matrix is packed its pages
  // are released (madvise DONTNEED: a later read faults them in again from the file), so the
  // mapped source does not add to the peak RSS. Never set it for anonymous memory.
  struct QuantizedExperts {
    const void* arrays[kMaxFormatArrays] = {};
    std::vector<const void*> experts[kMaxFormatArrays];
    bool mapped[kMaxFormatArrays] = {};
  };
  void load_quantized(const QuantizedExperts proj[3], const int64_t* map, int num_logical,
                      const ExpertBiases& biases = {});
  bool loaded() const { return loaded_.load(std::memory_order_acquire); }

  // Validates and copies the inputs, then queues the forward. out ([M, H] bf16) is shared with
  // the job, which holds it until it is done. A row of x with NaN or Inf fails the job (its
  // wait() raises, naming the row); an id or weight out of range throws here.
  // With deferred_experts > 0 the returned job computes the kept slots, and a second job queued
  // behind it the deferred ones (moe/deferred.h); out gets the previous layer's deferred part.
  std::shared_ptr<Job> submit(const MoeInputs& call, std::shared_ptr<uint16_t> out);

  // Queues, behind the layer's forwards, the write of CPU slot `slot`'s weights as this layer
  // holds them (dequantized, rounded to bf16) into a caller's buffers, split over tp ranks the way
  // SGLang's tensor parallelism splits I: rank r owns channels [r*Ir, (r+1)*Ir), Ir = I / tp, and
  //   w13[r]  bf16 [2*Ir, H]   rows [0, Ir): gate channels, rows [Ir, 2*Ir): up channels
  //   w2[r]   bf16 [H, Ir]     the down columns of those channels
  // (SGLang's unquantized w13_weight / w2_weight of one expert). The buffers must stay valid until
  // the returned job is done. Throws std::invalid_argument for a GPU slot, an I that tp does not
  // divide, or a pointer list of the wrong length or holding a null pointer.
  std::shared_ptr<Job> submit_write_bf16(int slot, int tp, const std::vector<uint16_t*>& w13,
                                         const std::vector<uint16_t*>& w2);
  // Queues an empty job: it is done once every job queued on the layer's engine before it ran.
  std::shared_ptr<Job> submit_barrier();

  // The layer's best kernel (gate/up's; down's is down_kernel(), the same row unless down has a
  // format of its own); when it is a tile kernel (min_m > 0), buckets of fewer than min_m tokens
  // run vector_kernel() instead (the same packed weights and activation format).
  const KernelRow& kernel() const { return gate_up_.best(); }
  const KernelRow& vector_kernel() const { return gate_up_.vector(); }
  const KernelRow& kernel_for(int tokens) const { return gate_up_.for_tokens(tokens); }
  const KernelRow& down_kernel() const { return down_.best(); }
  // The CPU features its kernels were chosen for, and their name: the best tier they cover, or
  // "amx_emu" when the tile kernels run on the emulator (a test-only override).
  FeatureSet features() const { return features_; }
  std::string tier_label() const { return isa_label(features_); }
  // Per slot, the kernel that computed its bucket in the latest chunk of the latest forward that
  // routed tokens to it (nullptr: none); read it after that forward has completed. A deferred
  // job (deferred_experts > 0) does not change it.
  const std::vector<const KernelRow*>& last_kernels() const { return last_kernels_; }
  MoeStats stats() const;
  // The memory node of each page of sub-pool `pool`'s packed weights (kt/numa.h page_nodes); call
  // when no load is in flight.
  std::vector<int> weight_page_nodes(int pool) const;
  const MoeConfig& config() const { return cfg_; }
  // Sub-pool p owns intermediate channels [bounds[p], bounds[p+1]).
  const std::vector<int>& slice_bounds() const { return bounds_; }

 private:
  struct Slice;        // one sub-pool's packed weights
  struct Staging;      // a call's private copy of its inputs
  // Allocates the slices of the CPU slots and runs make(slot, which, q) once per (slot, matrix)
  // on the engine's threads, packing q into every sub-pool's slice. which: 0 gate, 1 up, 2 down.
  // The slices take the CPU slots' biases with them.
  void load_with(const int64_t* map, int num_logical,
                 const std::function<void(int slot, int which, QuantizedMatrix& q)>& make,
                 const ExpertBiases& biases);
  // Stage inputs, on the caller's thread: the call's private copy of its inputs, validated.
  std::shared_ptr<Staging> stage_inputs(const MoeInputs& call) const;
  // A copy of in whose ids are this call's deferred slots (removed from in), to be summed into part;
  // queue_deferred queues its forward on engine and returns its job.
  std::shared_ptr<Staging> split_off_deferred(Staging& in, int M, std::shared_ptr<DeferredPart> part);
  std::shared_ptr<Job> queue_deferred(Engine& engine, std::shared_ptr<Staging> later, int M);
  // The engine to queue on, replaced by one of this process's after a fork(); workspace: its scratch.
  std::shared_ptr<Engine> engine_for_this_process(std::shared_ptr<void>* workspace);
  void forward(const Staging& in, int M, uint16_t* out);
  // The stages of one chunk, in the order the data flows (docs/moe_stages.md; moe_layer.cpp's
  // [NOTE] has the map with shapes). Each reads the chunk and what the stages before it wrote.
  struct Chunk;
  // The kernels of one projection's format: the best row and, if that is a tile row, the vector
  // row that takes the buckets below its min_m.
  struct Kernels {
    const KernelRow* best_ = nullptr;
    const KernelRow* vector_ = nullptr;
    void select(FormatId format, FeatureSet have);
    const KernelRow& best() const { return *best_; }
    const KernelRow& vector() const { return *vector_; }
    const KernelRow& for_tokens(int tokens) const { return tokens >= best_->min_m ? *best_ : *vector_; }
  };
  void forward_chunk(const Chunk& c);
  int shared_tasks(int M, int H) const;
  void route(const Chunk& c);
  ActView quantize_x(const Chunk& c);
  void gate_up(const Chunk& c, const ActView& x);
  void quantize_h(const Chunk& c);
  void down(const Chunk& c);
  void combine(const Chunk& c);

  std::mutex mu_;  // guards engine_, workspace_ and last_job_
  std::shared_ptr<Engine> engine_;
  std::shared_ptr<Job> last_job_;  // the latest job that uses this layer; the destructor waits for it
  MoeConfig cfg_;
  FeatureSet features_;
  Kernels gate_up_, down_;
  std::vector<const KernelRow*> last_kernels_;
  const QuantizerRow* quantizer_[3];  // load_from_tensors' quantizers (gate, up, down), chosen with the kernels
  const ActCodecRow* act_codec_;   // the activation conversions of forward
  // The engine's forward scratch (moe_layer.cpp's Workspace, shared by the layers of one engine),
  // held so that it outlives each call: calls reuse its buffers instead of allocating them.
  std::shared_ptr<void> workspace_;
  std::vector<int> bounds_;
  std::vector<std::unique_ptr<Slice>> slices_;  // replaced only inside an engine job
  std::atomic<size_t> weight_bytes_{0};
  std::atomic<bool> loaded_{false};
  std::unique_ptr<DeferredLinks> deferred_;
};

// Staging buffers of calls, keyed by batch size and reused (set_capture_batch_sizes preallocates).
void set_capture_batch_sizes(const std::vector<int>& sizes);
std::vector<int> capture_batch_sizes();
void clear_buffer_cache();

}  // namespace kt
