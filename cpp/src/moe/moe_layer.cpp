// [NOTE] The MoE operator. submit stages a call's inputs on the caller's thread; its forward then
// runs as one job on the engine, chunk by chunk, one function per stage (docs/moe_stages.md):
//     stage_inputs (caller)    x, ids, weights -> the call's Staging, validated
//   0 route        (leader)    routing buckets: rows of each CPU expert, heaviest expert first
//   1 quantize_x   (shared)    x -> act format                           xq: [M, Hp]
//   2 gate_up      (per pool)  h = silu(x W_gate^T) * (x W_up^T)         h_p: [rows, Ip_p]  fp32
//   3 quantize_h   (per pool)  h -> act format                           hq_p
//   4 down         (per pool)  out_p[t] = sum_rows w * (h W_down^T)      out_p: [M, Hpad] fp32
//   5 combine      (shared)    out[t] = bf16(sum_p out_p[t])
// The activation, silu(gate) * up, is the gate/up kernels' store epilogue, so h is written once.
// gate_up tasks are (expert, panel range); down tasks are panel ranges of H over all experts,
// so no two threads write the same output element. down adds a token's experts in slot order,
// so a token's output does not depend on the other tokens of the call (chunking included).
#include "kt/moe.h"
#include "kt/numa.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>

#include <sys/mman.h>
#include <unistd.h>

#include "moe/deferred.h"
#include "moe/routing.h"
#include "runtime/host_memory.h"
#include "runtime/process_state.h"

namespace kt {

namespace {

// Scratch of one engine's forwards; jobs on an engine run one at a time, so one per engine. Every
// layer on the engine holds it (MoeLayer::workspace_), so its buffers persist from call to call.
struct Workspace {
  Buckets buckets;
  std::vector<uint8_t> xq;
  std::vector<float> xscale;
  std::vector<int32_t> xgsum;
  std::vector<int32_t> by_size;  // bucket indices, most rows first
  struct Pool {
    std::vector<float> h;
    std::vector<uint8_t> hq;
    std::vector<float> hscale;
    std::vector<int32_t> hgsum;
    ActView hview;  // hq, hscale and hgsum as the down kernels read them (set by quantize_h)
    std::vector<float> out;
    std::vector<int32_t> task_expert, task_p0, task_p1;
  };
  std::vector<Pool> pools;
};

struct Workspaces {
  std::map<const Engine*, std::weak_ptr<Workspace>> by_engine;
};

std::shared_ptr<Workspace> workspace_for(const Engine* engine) {
  auto& all = process_state<Workspaces>();
  std::lock_guard<std::mutex> lock(all.mu);
  // engines come and go: forget the workspaces nobody holds (an engine's address may be reused)
  for (auto it = all.value.by_engine.begin(); it != all.value.by_engine.end();)
    it = it->second.expired() ? all.value.by_engine.erase(it) : std::next(it);
  std::weak_ptr<Workspace>& slot = all.value.by_engine[engine];
  auto ws = slot.lock();
  if (!ws) {
    ws = std::make_shared<Workspace>();
    ws->pools.resize(engine->subpools());
    slot = ws;
  }
  return ws;
}

template <class T>
void grow(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
}

int ceil_div(int a, int b) { return (a + b - 1) / b; }

// Rows [r0, ...) of v.
ActView rows_from(const ActView& v, int r0) {
  ActView rows = v;
  rows.data += size_t(r0) * v.stride;
  rows.scale += r0;
  rows.gsum += size_t(r0) * v.gsum_stride;
  return rows;
}

// ---- staging buffers of calls -------------------------------------------------------------

struct StagingPool {
  std::vector<int> capture_sizes;
  std::map<int, std::vector<std::vector<uint8_t>>> free;  // batch size -> free buffers
};

std::vector<uint8_t> acquire_staging(int M, size_t bytes) {
  auto& pool = process_state<StagingPool>();
  std::lock_guard<std::mutex> lock(pool.mu);
  auto it = pool.value.free.find(M);
  if (it != pool.value.free.end())
    for (auto b = it->second.begin(); b != it->second.end(); ++b)
      if (b->size() >= bytes) {
        std::vector<uint8_t> out = std::move(*b);
        it->second.erase(b);
        return out;
      }
  return std::vector<uint8_t>(bytes);
}

void release_staging(int M, std::vector<uint8_t> buf) {
  auto& pool = process_state<StagingPool>();
  std::lock_guard<std::mutex> lock(pool.mu);
  const std::vector<int>& sizes = pool.value.capture_sizes;
  if (std::find(sizes.begin(), sizes.end(), M) != sizes.end()) pool.value.free[M].push_back(std::move(buf));
}

// Copies n IEEE values (their bits) and tells whether all are finite. A value is Inf or NaN when
// its exponent field (exp_mask) is all ones; adding the field's lowest bit then carries into the
// sign bit. OR-ing those sums needs no compare or branch, so the loop vectorizes and runs at the
// speed of memcpy (a bool reduction did not vectorize: 4x slower).
template <class Bits>
bool copy_finite(const Bits* src, Bits* dst, size_t n, Bits exp_mask) {
  const Bits exp_lsb = Bits(exp_mask & ~(exp_mask << 1));
  const Bits carry = Bits(exp_mask + exp_lsb);  // the sign bit
  Bits sums = 0;
  for (size_t i = 0; i < n; ++i) {
    const Bits v = src[i];
    dst[i] = v;
    sums |= Bits((v & exp_mask) + exp_lsb);
  }
  return !(sums & carry);
}

// Copies rows [0, M) of x ([M, H] of dtype) into dst; returns the first row with NaN or Inf, or -1.
int copy_rows_finite(const void* x, DType dtype, int M, int H, void* dst) {
  for (int t = 0; t < M; ++t) {
    const size_t at = size_t(t) * H;
    bool finite;
    if (dtype == DType::f32)
      finite = copy_finite(static_cast<const uint32_t*>(x) + at, static_cast<uint32_t*>(dst) + at, H, 0x7f800000u);
    else
      finite = copy_finite(static_cast<const uint16_t*>(x) + at, static_cast<uint16_t*>(dst) + at, H,
                           uint16_t(dtype == DType::bf16 ? 0x7f80 : 0x7c00));
    if (!finite) return t;  // the job fails before it reads x: the rest need not be copied
  }
  return -1;
}

}  // namespace

void set_capture_batch_sizes(const std::vector<int>& sizes) {
  auto& pool = process_state<StagingPool>();
  std::lock_guard<std::mutex> lock(pool.mu);
  pool.value.capture_sizes = sizes;
}

std::vector<int> capture_batch_sizes() {
  auto& pool = process_state<StagingPool>();
  std::lock_guard<std::mutex> lock(pool.mu);
  return pool.value.capture_sizes;
}

void clear_buffer_cache() {
  auto& pool = process_state<StagingPool>();
  std::lock_guard<std::mutex> lock(pool.mu);
  pool.value.free.clear();
}

// ---- layer --------------------------------------------------------------------------------

struct MoeLayer::Slice {
  int i0 = 0, i1 = 0;
  std::vector<PackedMatrix> gate, up, down;  // per slot; empty for GPU slots
  HostBuffer arena;
  size_t bytes = 0;
  // Per slot, where the layer has them: the slice's channels of the gate and up biases, padded
  // with zeros to whole panels; the down bias [Hpad], in one slice only (it is added once).
  std::vector<std::vector<float>> gate_bias, up_bias, down_bias;
  bool gated = false;  // the kernels need GluParams: biases, or a clamp or alpha in the config
};

// A call's staging: x, then ids and weights from a 64-byte boundary (x's bytes need not be a
// multiple of 4, and ids and weights are read as int32 and float).
static size_t staged_x_bytes(int M, int H, DType x_dtype) { return (size_t(M) * H * dtype_size(x_dtype) + 63) / 64 * 64; }
static size_t staging_bytes(int M, int H, int K, DType x_dtype) { return staged_x_bytes(M, H, x_dtype) + 2 * size_t(M) * K * 4; }

struct MoeLayer::Staging {
  // The buffer goes back to the pool when the job holding this is done with it (or when a
  // submit that failed drops it).
  Staging(int tokens, size_t bytes) : M(tokens), buf(acquire_staging(tokens, bytes)) {}
  ~Staging() { release_staging(M, std::move(buf)); }
  int M;
  std::vector<uint8_t> buf;
  const uint8_t* x;
  DType x_dtype;
  int nonfinite_row;  // the first row of x with NaN or Inf, -1 if none
  const int32_t* ids;
  const float* weights;
  std::shared_ptr<Workspace> ws;
  std::shared_ptr<const DeferredPart> add;  // the previous layer's deferred part, added before rounding
  std::shared_ptr<DeferredPart> sum_into;   // a deferred job's: the fp32 sum goes here, not to out
};

MoeLayer::MoeLayer(std::shared_ptr<Engine> engine, MoeConfig config)
    : engine_(std::move(engine)), cfg_(std::move(config)) {
  auto fail = [](const std::string& m) { throw std::invalid_argument(m); };
  if (cfg_.num_experts <= 0) fail("num_experts=" + std::to_string(cfg_.num_experts) + " must be positive");
  if (cfg_.topk <= 0 || cfg_.topk > cfg_.num_experts)
    fail("num_experts_per_tok=" + std::to_string(cfg_.topk) + " must be in 1..num_experts=" + std::to_string(cfg_.num_experts));
  if (cfg_.hidden <= 0) fail("hidden_size=" + std::to_string(cfg_.hidden) + " must be positive");
  if (cfg_.intermediate <= 0) fail("moe_intermediate_size=" + std::to_string(cfg_.intermediate) + " must be positive");
  if (int(cfg_.on_cpu.size()) != cfg_.num_experts)
    fail("the GPU expert mask has " + std::to_string(cfg_.on_cpu.size()) + " entries, expected num_experts=" + std::to_string(cfg_.num_experts));
  if (cfg_.chunk_tokens <= 0) fail("chunked_prefill_size=" + std::to_string(cfg_.chunk_tokens) + " must be positive");
  deferred_ = std::make_unique<DeferredLinks>(engine_.get(), cfg_.layer_idx, cfg_.deferred_experts, cfg_.topk);
  // GGUF blocks cannot be padded: the K of each matrix must be whole blocks
  const FormatTraits& gu = format_traits(cfg_.format);
  const FormatTraits& dn = format_traits(cfg_.down_format);
  if (gu.whole_blocks() && cfg_.hidden % gu.k_align)
    fail(std::string(gu.name) + " gate/up rows are whole blocks of " + std::to_string(gu.k_align) +
         " weights: hidden_size=" + std::to_string(cfg_.hidden) + " is not a multiple");
  if (dn.whole_blocks() && cfg_.intermediate % dn.k_align)
    fail(std::string(dn.name) + " down rows are whole blocks of " + std::to_string(dn.k_align) +
         " weights: moe_intermediate_size=" + std::to_string(cfg_.intermediate) + " is not a multiple");
  features_ = active_features();
  stream_prefetch();  // a bad KT_KERNEL_PREFETCH raises here, not in a kernel
  gate_up_.select(cfg_.format, features_);
  down_.select(cfg_.down_format, features_);
  last_kernels_.assign(cfg_.num_experts, nullptr);
  for (int j = 0; j < 3; ++j) quantizer_[j] = &select_quantizer(j == 2 ? cfg_.down_format : cfg_.format, features_);
  act_codec_ = &select_act_codec(features_);
  workspace_ = workspace_for(engine_.get());
  // Split I across sub-pools in units that keep both gate/up panels and down groups (blocks) whole.
  const int unit = std::max(kPanelN, dn.k_step());
  const int units = ceil_div(cfg_.intermediate, unit);
  const int pools = engine_->subpools();
  bounds_.push_back(0);
  for (int p = 0, done = 0; p < pools; ++p) {
    done += units / pools + (p < units % pools ? 1 : 0);
    bounds_.push_back(std::min(done * unit, cfg_.intermediate));
  }
  // Jobs still queued when the process exits run before static destructors free what they use.
  // Registered after the kernel and format tables the layer uses exist, so it runs before their
  // destructors (atexit handlers and static destructors run in reverse order of registration).
  static const bool drain_at_exit = std::atexit([] { Engine::drain_all(); }) == 0;
  (void)drain_at_exit;
}

void MoeLayer::Kernels::select(FormatId format, FeatureSet have) {
  best_ = &select_kernel(format, have);
  vector_ = best_->min_m > 0 ? &select_vector_kernel(format, have) : best_;
  // one packing of the weights and one quantization of x (or h) serve both kernels
  if (vector_->layout != best_->layout)
    throw std::logic_error(std::string("kernel table: ") + best_->name + " and its vector kernel " + vector_->name +
                           " read different packed layouts");
  if (vector_->act != best_->act)
    throw std::logic_error(std::string("kernel table: ") + best_->name + " reads " + act_format_name(best_->act) +
                           " but its vector kernel " + vector_->name + " reads " + act_format_name(vector_->act));
}

MoeLayer::~MoeLayer() {
  // The layer's jobs touch it until they are done: its last job (jobs run in order) must have run.
  // Its error, if any, has nobody to go to. In a forked child the parent's jobs never run here.
  if (last_job_) last_job_->join();
}

std::vector<int> MoeLayer::weight_page_nodes(int pool) const {
  if (pool < 0 || pool >= int(slices_.size()))
    throw std::invalid_argument("sub-pool " + std::to_string(pool) + " out of range: the layer has " +
                                std::to_string(slices_.size()) + " (loaded: " + (loaded() ? "yes" : "no") + ")");
  const Slice& s = *slices_[pool];
  return s.bytes ? page_nodes(s.arena.get(), s.bytes) : std::vector<int>{};
}

MoeStats MoeLayer::stats() const {
  MoeStats s;
  s.weight_bytes = weight_bytes_.load(std::memory_order_relaxed);
  for (uint8_t c : cfg_.on_cpu) s.cpu_experts += c;
  return s;
}

namespace {

// Throws naming the first non-finite bias of a CPU slot's logical expert.
void check_biases(const char* name, const float* b, const std::vector<int>& cpu_slots, const int64_t* map, int N) {
  if (!b) return;
  for (int slot : cpu_slots)
    for (int n = 0; n < N; ++n)
      if (!std::isfinite(b[size_t(map[slot]) * N + n]))
        throw std::invalid_argument(std::string(name) + " of logical expert " + std::to_string(map[slot]) +
                                    " is NaN or Inf at [" + std::to_string(n) + "]");
}

// b[n0, n1) of logical expert e's row of N, padded with zeros to `padded` floats; empty when no b.
std::vector<float> bias_part(const float* b, int64_t e, int N, int n0, int n1, int padded) {
  if (!b) return {};
  std::vector<float> v(size_t(padded), 0.f);
  std::memcpy(v.data(), b + size_t(e) * N + n0, size_t(n1 - n0) * 4);
  return v;
}

}  // namespace

void MoeLayer::load_with(const int64_t* map, int num_logical,
                         const std::function<void(int slot, int which, QuantizedMatrix& q)>& make,
                         const ExpertBiases& biases) {
  const int E = cfg_.num_experts, H = cfg_.hidden;
  std::vector<int> cpu_slots;
  for (int p = 0; p < E; ++p) {
    if (!cfg_.on_cpu[p]) continue;
    if (map[p] < 0 || map[p] >= num_logical)
      throw std::invalid_argument("physical_to_logical_map[" + std::to_string(p) + "] = " + std::to_string(map[p]) +
                                  " is out of range: the weight tensors hold " + std::to_string(num_logical) + " experts");
    cpu_slots.push_back(p);
  }
  check_biases("gate_bias", biases.gate, cpu_slots, map, cfg_.intermediate);
  check_biases("up_bias", biases.up, cpu_slots, map, cfg_.intermediate);
  check_biases("down_bias", biases.down, cpu_slots, map, H);
  const bool gated = biases.gate || biases.up || cfg_.swiglu_limit != 0.f || cfg_.swiglu_alpha != 0.f;
  const FormatTraits& gu = format_traits(cfg_.format);
  const FormatTraits& dn = format_traits(cfg_.down_format);
  std::shared_ptr<void> workspace;
  const std::shared_ptr<Engine> engine = engine_for_this_process(&workspace);
  const int pools = engine->subpools();
  std::vector<std::unique_ptr<Slice>> slices;
  size_t bytes = 0;
  for (int p = 0; p < pools; ++p) {
    auto s = std::make_unique<Slice>();
    s->i0 = bounds_[p];
    s->i1 = bounds_[p + 1];
    const int ni = s->i1 - s->i0;
    s->gate.resize(E);
    s->up.resize(E);
    s->down.resize(E);
    size_t off = 0;
    for (int slot : cpu_slots) {
      auto shape = [&](PackedMatrix& m, const FormatTraits& f, int N, int K) {
        m.N = N;
        m.K = K;
        m.Kp = round_up(K, f.k_align);
        m.panels = ceil_div(N, kPanelN);
        m.panel_bytes = f.panel_bytes(m.Kp);
        m.data = reinterpret_cast<uint8_t*>(off);  // offset until the arena exists
        off += (m.bytes() + 63) / 64 * 64;
      };
      shape(s->gate[slot], gu, ni, H);
      shape(s->up[slot], gu, ni, H);
      shape(s->down[slot], dn, H, ni);
    }
    s->gated = gated;
    s->gate_bias.resize(E);
    s->up_bias.resize(E);
    s->down_bias.resize(E);
    // the down bias goes with the first slice that has channels: its down stage adds it once
    const bool adds_down_bias =
        ni > 0 && std::none_of(slices.begin(), slices.end(), [](const auto& o) { return o->i1 > o->i0; });
    const int padded = ceil_div(ni, kPanelN) * kPanelN;
    for (int slot : cpu_slots) {
      s->gate_bias[slot] = bias_part(biases.gate, map[slot], cfg_.intermediate, s->i0, s->i1, padded);
      s->up_bias[slot] = bias_part(biases.up, map[slot], cfg_.intermediate, s->i0, s->i1, padded);
      if (adds_down_bias) s->down_bias[slot] = bias_part(biases.down, map[slot], H, 0, H, round_up(H, kPanelN));
    }
    s->bytes = off;
    bytes += off;
    s->arena = alloc_weights(off);
    // the sub-pool's node holds its weights: bound before the packing threads first touch them
    if (const int node = engine->mem_node(p); node >= 0) bind_memory(s->arena.get(), off, node);
    for (int slot : cpu_slots)
      for (auto* m : {&s->gate[slot], &s->up[slot], &s->down[slot]})
        m->data = s->arena.get() + reinterpret_cast<size_t>(m->data);
    slices.push_back(std::move(s));
  }

  // One task per (slot, matrix): make the logical matrix once, pack each sub-pool's slice. The
  // new slices replace the old inside the job, so no forward runs while they are swapped; the old
  // ones are freed on return, by this thread.
  auto job = engine->submit([&] {
    Stage st;
    st.shared = true;
    st.tasks[0] = int(cpu_slots.size()) * 3;
    st.fn = [&](int, int task) {
      const int slot = cpu_slots[task / 3], which = task % 3;
      thread_local QuantizedMatrix q;
      make(slot, which, q);
      for (auto& s : slices) {
        if (s->i1 == s->i0) continue;
        if (which == 2) pack_for(down_.best(), q, 0, H, s->i0, s->i1, s->down[slot].data);
        else pack_for(gate_up_.best(), q, s->i0, s->i1, 0, H, (which == 0 ? s->gate[slot] : s->up[slot]).data);
      }
    };
    engine->run(st);
    slices_.swap(slices);
    weight_bytes_.store(bytes, std::memory_order_relaxed);
    loaded_.store(true, std::memory_order_release);
  });
  job->wait();
}

std::shared_ptr<Engine> MoeLayer::engine_for_this_process(std::shared_ptr<void>* workspace) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!engine_->owned_by_this_process()) {
    // A forked child inherited this layer: its engine's threads stayed in the parent, and so did
    // the layer's jobs that had not run. The child gets an engine (and scratch) of its own.
    engine_ = Engine::shared(engine_->threads(), engine_->subpools(), engine_->placement());
    workspace_ = workspace_for(engine_.get());
    last_job_ = nullptr;
  }
  *workspace = workspace_;
  return engine_;
}

void MoeLayer::load_from_tensors(const void* gate, const void* up, const void* down, DType dtype,
                                 const int64_t* map, int num_logical, const ExpertBiases& biases) {
  const int H = cfg_.hidden, I = cfg_.intermediate;
  // Convert to fp32 and quantize with the layer's quantizer (bit-identical to the reference's).
  const size_t esz = dtype_size(dtype);
  load_with(map, num_logical, [&](int slot, int which, QuantizedMatrix& q) {
      const int N = which == 2 ? H : I, K = which == 2 ? I : H;
      const uint8_t* base = static_cast<const uint8_t*>(which == 0 ? gate : which == 1 ? up : down);
      const uint8_t* src = base + size_t(map[slot]) * size_t(N) * K * esz;
      thread_local std::vector<float> w;
      w.resize(size_t(N) * K);
      if (dtype == DType::f32) {
        std::memcpy(w.data(), src, w.size() * 4);
      } else {
        for (int n = 0; n < N; ++n)
          act_codec_->widen(dtype, reinterpret_cast<const uint16_t*>(src) + size_t(n) * K, K, w.data() + size_t(n) * K);
      }
      for (size_t i = 0; i < w.size(); ++i) {
        if (!std::isfinite(w[i]))
          throw std::invalid_argument(std::string(which == 0 ? "gate" : which == 1 ? "up" : "down") +
                                      " weights of logical expert " + std::to_string(map[slot]) + " contain NaN or Inf at [" +
                                      std::to_string(i / K) + ", " + std::to_string(i % K) + "]");
      }
      quantizer_[which]->quantize(w.data(), N, K, &q);
  }, biases);
}

namespace {

// Releases this process's pages of a read-only file mapping [p, p + n), widened to whole pages.
void drop_file_pages(const void* p, size_t n) {
  if (!p || !n) return;
  static const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
  const uintptr_t b = reinterpret_cast<uintptr_t>(p) & ~(page - 1);
  const uintptr_t e = (reinterpret_cast<uintptr_t>(p) + n + page - 1) & ~(page - 1);
  madvise(reinterpret_cast<void*>(b), e - b, MADV_DONTNEED);
}

}  // namespace

void MoeLayer::load_quantized(const QuantizedExperts proj[3], const int64_t* map, int num_logical,
                              const ExpertBiases& biases) {
  const int H = cfg_.hidden, I = cfg_.intermediate;
  static const char* const kProj[3] = {"gate", "up", "down"};
  for (int j = 0; j < 3; ++j)
    for (int i = 0; i < kMaxFormatArrays; ++i)
      if (!proj[j].experts[i].empty() && int(proj[j].experts[i].size()) != num_logical)
        throw std::invalid_argument(std::string(kProj[j]) + " array " + std::to_string(i) + " has " +
                                    std::to_string(proj[j].experts[i].size()) + " expert addresses for " +
                                    std::to_string(num_logical) + " experts");
  load_with(map, num_logical, [&](int slot, int which, QuantizedMatrix& q) {
    const int N = which == 2 ? H : I, K = which == 2 ? I : H;
    const FormatTraits& f = format_traits(which == 2 ? cfg_.down_format : cfg_.format);
    const size_t e = size_t(map[slot]);
    shape_quantized(f, N, K, &q);
    for (int i = 0; i < f.num_arrays(); ++i) {
      const FormatArray& a = f.arrays[i];
      const size_t elems = f.array_row_elems(i, K), elem_bytes = element_type(a.dtype).bytes;
      const size_t row = a.file_bits == 4 ? (elems + 1) / 2 : elems * elem_bytes;
      const QuantizedExperts& in = proj[which];
      const uint8_t* src = in.experts[i].empty() ? static_cast<const uint8_t*>(in.arrays[i]) + e * N * row
                                                 : static_cast<const uint8_t*>(in.experts[i][e]);
      if (!src)
        throw std::invalid_argument(std::string(kProj[which]) + " " + a.name + " of logical expert " +
                                    std::to_string(e) + " was not given, and slot " + std::to_string(slot) + " takes it");
      uint8_t* dst = q.arrays[i].data();
      if (a.file_bits == 4) {
        for (int n = 0; n < N; ++n)
          for (size_t k = 0; k < elems; ++k) {
            const uint8_t b = src[n * row + k / 2];
            dst[n * elems + k] = k & 1 ? b >> 4 : b & 0xf;
          }
      } else {
        std::memcpy(dst, src, N * row);
      }
      if (in.mapped[i]) drop_file_pages(src, N * row);
    }
    if (f.check) {
      try {
        f.check(q);
      } catch (const std::invalid_argument& err) {
        throw std::invalid_argument(std::string(kProj[which]) + " weights (" + f.name + ") of logical expert " +
                                    std::to_string(e) + ": " + err.what());
      }
    }
  }, biases);
}

// stage inputs, on the caller's thread. Reads the caller's x, ids and weights; writes the call's
// Staging: x as it is (its first row with NaN or Inf noted, for the job to raise), ids as int32
// and weights as fp32. Throws for an id or weight out of range: the caller may overwrite its
// tensors as soon as submit returns, so they are checked now.
std::shared_ptr<MoeLayer::Staging> MoeLayer::stage_inputs(const MoeInputs& call) const {
  const int H = cfg_.hidden, K = cfg_.topk, E = cfg_.num_experts, M = call.M;
  if (M < 0) throw std::invalid_argument("token count " + std::to_string(M) + " is negative");
  const size_t xbytes = staged_x_bytes(M, H, call.x_dtype);
  const size_t ibytes = size_t(M) * K * 4;
  auto in = std::make_shared<Staging>(M, staging_bytes(M, H, K, call.x_dtype));
  uint8_t* xs = in->buf.data();
  int32_t* is = reinterpret_cast<int32_t*>(xs + xbytes);
  float* ws = reinterpret_cast<float*>(xs + xbytes + ibytes);
  in->nonfinite_row = copy_rows_finite(call.x, call.x_dtype, M, H, xs);
  for (size_t i = 0; i < size_t(M) * K; ++i) {
    int64_t id = call.ids_int64 ? static_cast<const int64_t*>(call.ids)[i] : static_cast<const int32_t*>(call.ids)[i];
    if (id < -1 || id >= E)
      throw std::invalid_argument("topk_ids[" + std::to_string(i / K) + ", " + std::to_string(i % K) + "] = " +
                                  std::to_string(id) + " is out of range: valid ids are -1 and 0.." + std::to_string(E - 1) +
                                  " (num_experts=" + std::to_string(E) + ")");
    is[i] = int32_t(id);
    float wv;
    if (call.w_dtype == DType::f32) wv = static_cast<const float*>(call.weights)[i];
    else wv = bf16_to_f32(static_cast<const uint16_t*>(call.weights)[i]);
    if (!std::isfinite(wv))
      throw std::invalid_argument("topk_weights[" + std::to_string(i / K) + ", " + std::to_string(i % K) + "] is " +
                                  std::to_string(wv) + ": routing weights must be finite");
    ws[i] = wv;
  }
  in->x = xs;
  in->x_dtype = call.x_dtype;
  in->ids = is;
  in->weights = ws;
  return in;
}

std::shared_ptr<Job> MoeLayer::submit(const MoeInputs& call, std::shared_ptr<uint16_t> out) {
  if (!loaded()) throw std::runtime_error("forward called before the expert weights were loaded (call load_weights_from_tensors first)");
  const int M = call.M;
  std::shared_ptr<Staging> in = stage_inputs(call);
  std::shared_ptr<void> workspace;
  const std::shared_ptr<Engine> engine = engine_for_this_process(&workspace);
  in->ws = std::static_pointer_cast<Workspace>(std::move(workspace));
  const DeferredLinks::Step deferral = deferred_->begin(M, cfg_.hidden);
  in->add = deferral.add;
  std::shared_ptr<Staging> later = deferral.produce ? split_off_deferred(*in, M, deferral.produce) : nullptr;
  // The jobs own their staged inputs and share out; `this` stays valid because the destructor
  // waits for last_job_. Submitting under mu_ keeps last_job_ the latest job in queue order.
  std::lock_guard<std::mutex> lock(mu_);
  auto job = engine->submit([this, in, M, out] { forward(*in, M, out.get()); });
  last_job_ = job;
  if (later) last_job_ = queue_deferred(*engine, std::move(later), M);
  return job;
}

std::shared_ptr<Job> MoeLayer::submit_write_bf16(int slot, int tp, const std::vector<uint16_t*>& w13,
                                                 const std::vector<uint16_t*>& w2) {
  const int E = cfg_.num_experts, H = cfg_.hidden, I = cfg_.intermediate;
  if (!loaded()) throw std::invalid_argument("the layer's weights are not loaded yet");
  if (slot < 0 || slot >= E)
    throw std::invalid_argument("expert_id=" + std::to_string(slot) + " is out of range: expected 0.." + std::to_string(E - 1));
  if (!cfg_.on_cpu[slot])
    throw std::invalid_argument("expert_id=" + std::to_string(slot) +
                                " is a GPU expert: its weights are not held in host memory, only those of CPU experts");
  if (tp < 1 || I % tp != 0)
    throw std::invalid_argument("gpu_tp_count=" + std::to_string(tp) + " must be a positive divisor of moe_intermediate_size=" +
                                std::to_string(I));
  for (const auto* list : {&w13, &w2}) {
    const char* name = list == &w13 ? "w13_weight_ptrs" : "w2_weight_ptrs";
    if (int(list->size()) != tp)
      throw std::invalid_argument(std::string(name) + " has " + std::to_string(list->size()) + " entries, expected gpu_tp_count=" +
                                  std::to_string(tp));
    for (int r = 0; r < tp; ++r)
      if (!(*list)[r]) throw std::invalid_argument(std::string(name) + "[" + std::to_string(r) + "] is a null pointer");
  }
  const int Ir = I / tp;
  std::shared_ptr<void> workspace;
  const std::shared_ptr<Engine> engine = engine_for_this_process(&workspace);
  std::lock_guard<std::mutex> lock(mu_);
  Engine* eng = engine.get();  // runs the job, so outlives it
  auto job = engine->submit([this, slot, Ir, H, w13, w2, eng] {
    // one task per (sub-pool slice, matrix, panel of kPanelN rows)
    struct Task {
      const Slice* s;
      int which, n0, n1;
    };
    std::vector<Task> tasks;
    for (const auto& s : slices_) {
      if (s->i1 == s->i0) continue;
      for (int which = 0; which < 3; ++which) {
        const int N = which == 2 ? H : s->i1 - s->i0;
        for (int n0 = 0; n0 < N; n0 += kPanelN) tasks.push_back({s.get(), which, n0, std::min(N, n0 + kPanelN)});
      }
    }
    Stage st;
    st.shared = true;
    st.tasks[0] = int(tasks.size());
    st.fn = [&](int, int t) {
      const Task& task = tasks[t];
      const Slice& s = *task.s;
      const PackedMatrix& m = task.which == 0 ? s.gate[slot] : task.which == 1 ? s.up[slot] : s.down[slot];
      const KernelRow& kernel = (task.which == 2 ? down_ : gate_up_).best();
      thread_local std::vector<float> row;
      row.resize(m.K);
      for (int n = task.n0; n < task.n1; ++n) {
        unpack_row_for(kernel, m.data, m.Kp, n, m.K, row.data());
        if (task.which < 2) {
          // gate/up row n is channel i; rank i / Ir, row (i % Ir) of its gate or up half
          const int i = s.i0 + n;
          uint16_t* dst = w13[i / Ir] + (size_t(task.which == 1 ? Ir : 0) + i % Ir) * H;
          for (int k = 0; k < H; ++k) dst[k] = f32_to_bf16(row[k]);
        } else {
          // down row n is output h = n; its column k is channel i = i0 + k
          for (int k = 0; k < m.K; ++k) {
            const int i = s.i0 + k;
            w2[i / Ir][size_t(n) * Ir + i % Ir] = f32_to_bf16(row[k]);
          }
        }
      }
    };
    eng->run(st);
  });
  last_job_ = job;
  return job;
}

std::shared_ptr<Job> MoeLayer::submit_barrier() {
  std::shared_ptr<void> workspace;
  const std::shared_ptr<Engine> engine = engine_for_this_process(&workspace);
  return engine->submit([] {});
}

std::shared_ptr<MoeLayer::Staging> MoeLayer::split_off_deferred(Staging& in, int M, std::shared_ptr<DeferredPart> part) {
  const int K = cfg_.topk;
  const size_t bytes = staging_bytes(M, cfg_.hidden, K, in.x_dtype);
  auto later = std::make_shared<Staging>(M, bytes);
  std::memcpy(later->buf.data(), in.buf.data(), bytes);
  const uint8_t* base = in.buf.data();
  auto at = [&](const void* p) { return later->buf.data() + (static_cast<const uint8_t*>(p) - base); };
  later->x = at(in.x);
  later->x_dtype = in.x_dtype;
  later->nonfinite_row = in.nonfinite_row;
  later->ids = reinterpret_cast<const int32_t*>(at(in.ids));
  later->weights = reinterpret_cast<const float*>(at(in.weights));
  later->ws = in.ws;
  later->sum_into = std::move(part);
  split_deferred(const_cast<int32_t*>(in.ids), in.weights, M, K, cfg_.deferred_experts,
                 reinterpret_cast<int32_t*>(at(in.ids)));
  return later;
}

std::shared_ptr<Job> MoeLayer::queue_deferred(Engine& engine, std::shared_ptr<Staging> later, int M) {
  return engine.submit([this, later, M] {
    DeferredPart& part = *later->sum_into;
    part.error = nullptr;
    try {
      forward(*later, M, nullptr);
    } catch (...) {
      part.error = std::current_exception();  // raised again by the job that adds the part
      throw;
    }
  });
}

// ---- forward: a chunk in stages -----------------------------------------------------------

// One chunk of a forward as its stages see it. Each stage reads what the stages before it wrote
// to the workspace and writes its own output there; only combine writes outside it.
struct MoeLayer::Chunk {
  const Staging& in;  // the call's staged inputs
  Workspace& ws;      // the engine's scratch: buckets, xq and each pool's h, hq and out
  int t0 = 0, M = 0;  // the chunk is tokens [t0, t0 + M) of the call, M > 0
  uint16_t* out;      // the call's output [M_call, H] bf16; nullptr in a deferred job
  ActFormat x_af;     // the activation formats the gate/up kernels read (x) and the down kernels (h)
  ActFormat h_af;
  int Hp = 0;         // H padded to gate/up's k_align: the K of gate/up
  int Hpad = 0;       // H padded to whole panels: the row length of each pool's out
};

void MoeLayer::forward(const Staging& in, int M, uint16_t* out) {
  if (in.nonfinite_row >= 0)
    throw std::invalid_argument("hidden_states row " + std::to_string(in.nonfinite_row) + " contains NaN or Inf");
  if (in.add && in.add->error) {
    try {
      std::rethrow_exception(in.add->error);
    } catch (const std::exception& e) {
      throw std::runtime_error("layer " + std::to_string(cfg_.layer_idx) + ": the deferred experts of layer " +
                               std::to_string(cfg_.layer_idx - 1) + " failed: " + e.what());
    }
  }
  // a deferred job leaves last_kernels_ to the forward the caller synced (and may read meanwhile)
  if (in.sum_into) in.sum_into->sum.resize(size_t(M) * cfg_.hidden);
  else std::fill(last_kernels_.begin(), last_kernels_.end(), nullptr);
  const int H = cfg_.hidden;
  const int k_align = format_traits(cfg_.format).k_align;
  for (int t0 = 0; t0 < M; t0 += cfg_.chunk_tokens)
    forward_chunk({.in = in,
                   .ws = *in.ws,
                   .t0 = t0,
                   .M = std::min(cfg_.chunk_tokens, M - t0),
                   .out = out,
                   .x_af = gate_up_.best().act,
                   .h_af = down_.best().act,
                   .Hp = round_up(H, k_align),
                   .Hpad = round_up(H, kPanelN)});
}

void MoeLayer::forward_chunk(const Chunk& c) {
  route(c);
  if (c.ws.buckets.rows() > 0) {  // else no CPU expert has a row: each pool's out is zeros
    const ActView x = quantize_x(c);
    gate_up(c, x);
    quantize_h(c);
  }
  down(c);
  combine(c);
}

// stage 0, on the engine's leader (the queue's thread). Reads the chunk's ids and weights; writes
// ws.buckets and, but in a deferred job, the kernel of each routed slot to last_kernels_.
void MoeLayer::route(const Chunk& c) {
  const int K = cfg_.topk;
  Buckets& b = c.ws.buckets;
  build_buckets(c.in.ids + size_t(c.t0) * K, c.in.weights + size_t(c.t0) * K, c.M, K, cfg_.on_cpu, &b);
  // per bucket: the tile kernel from its min_m tokens up, the vector kernel below
  if (!c.in.sum_into)
    for (size_t j = 0; j < b.experts.size(); ++j) last_kernels_[b.experts[j]] = &kernel_for(b.count[j]);
}

// Tasks of a shared stage over M rows of H values: about 4 per thread, or one (the leader's
// alone, Engine::run) below kLeaderValues values, where waking a sleeping worker (about 30 us in
// a VM) costs more than the work (about 0.3 ns per value): M = 8 decode at shape A spent 33 us
// in quantize_x with the workers woken, for 3 us of quantization.
int MoeLayer::shared_tasks(int M, int H) const {
  constexpr int64_t kLeaderValues = int64_t(1) << 16;
  return int64_t(M) * H <= kLeaderValues ? 1 : std::min(M, engine_->threads() * 4);
}

// stage 1, shared by all threads. Reads the chunk's rows of the staged x; writes them in the act
// format to ws.xq, xscale and xgsum, and returns the kernels' view of them.
ActView MoeLayer::quantize_x(const Chunk& c) {
  Workspace& ws = c.ws;
  const int H = cfg_.hidden, M = c.M, Hp = c.Hp;
  const size_t xrow = act_row_bytes(c.x_af, Hp);
  grow(ws.xq, size_t(M) * xrow);
  grow(ws.xscale, size_t(M));
  grow(ws.xgsum, size_t(M) * q8_gsum_stride(Hp));
  const uint8_t* xin = c.in.x + size_t(c.t0) * H * dtype_size(c.in.x_dtype);
  const DType xdt = c.in.x_dtype;
  const int tasks = shared_tasks(M, H);
  Stage st;
  st.shared = true;
  st.tasks[0] = tasks;
  st.fn = [&](int, int task) {
    thread_local std::vector<float> tmp;
    tmp.resize(H);
    for (int t = int(int64_t(M) * task / tasks); t < int(int64_t(M) * (task + 1) / tasks); ++t) {
      const float* src;
      if (xdt == DType::f32) {
        src = reinterpret_cast<const float*>(xin) + size_t(t) * H;
      } else {
        act_codec_->widen(xdt, reinterpret_cast<const uint16_t*>(xin) + size_t(t) * H, H, tmp.data());
        src = tmp.data();
      }
      if (!act_codec_->quantize(c.x_af, src, H, Hp, ws.xq.data() + size_t(t) * xrow, &ws.xscale[t],
                                ws.xgsum.data() + size_t(t) * q8_gsum_stride(Hp)))
        throw std::invalid_argument("hidden_states row " + std::to_string(c.t0 + t) + " contains NaN or Inf");
    }
  };
  engine_->run(st);
  return {.format = c.x_af, .data = ws.xq.data(), .stride = xrow, .scale = ws.xscale.data(),
          .gsum = ws.xgsum.data(), .gsum_stride = q8_gsum_stride(Hp), .Kp = Hp};
}

// stage 2, per pool. Reads x (stage 1), ws.buckets and the pool's gate and up weights; writes the
// pool's h[row] = silu(x W_gate^T) * (x W_up^T) for every row of every bucket, the SiLU and the
// product fused into the kernels' store. Tasks are (bucket, panel range) in ws.pools[p].task_*.
void MoeLayer::gate_up(const Chunk& c, const ActView& x) {
  Workspace& ws = c.ws;
  const Buckets& b = ws.buckets;
  const int rows = b.rows(), n_exp = int(b.experts.size());
  // Largest buckets first: tasks are claimed in order, so the stage ends on small ones and the
  // threads finish together (longest-processing-time-first).
  std::vector<int32_t>& by_size = ws.by_size;
  by_size.resize(n_exp);
  for (int j = 0; j < n_exp; ++j) by_size[j] = j;
  std::stable_sort(by_size.begin(), by_size.end(), [&](int32_t l, int32_t r) { return b.count[l] > b.count[r]; });
  Stage st;
  for (int p = 0; p < engine_->subpools(); ++p) {
    Workspace::Pool& wp = ws.pools[p];
    const int panels = ceil_div(slices_[p]->i1 - slices_[p]->i0, kPanelN);
    wp.task_expert.clear();
    wp.task_p0.clear();
    wp.task_p1.clear();
    if (panels == 0) continue;
    grow(wp.h, size_t(rows) * panels * kPanelN);
    // enough tasks for dynamic balance: about 4 per thread, never splitting below one panel
    const int want = engine_->threads_in(p) * 4;
    const int chunks = std::min(panels, std::max(1, ceil_div(want, n_exp)));
    for (int j : by_size)
      for (int k = 0; k < chunks; ++k) {
        wp.task_expert.push_back(j);
        wp.task_p0.push_back(panels * k / chunks);
        wp.task_p1.push_back(panels * (k + 1) / chunks);
      }
    st.tasks[p] = int(wp.task_expert.size());
  }
  st.fn = [&](int p, int task) {
    Workspace::Pool& wp = ws.pools[p];
    const Slice& s = *slices_[p];
    const int j = wp.task_expert[task], slot = b.experts[j];
    const int ldh = ceil_div(s.i1 - s.i0, kPanelN) * kPanelN;
    const GluParams glu{.gate_bias = s.gate_bias[slot].empty() ? nullptr : s.gate_bias[slot].data(),
                        .up_bias = s.up_bias[slot].empty() ? nullptr : s.up_bias[slot].data(),
                        .limit = cfg_.swiglu_limit != 0.f ? cfg_.swiglu_limit : __builtin_inff(),
                        .alpha = cfg_.swiglu_alpha};
    kernel_for(b.count[j]).gateup({.gate = &s.gate[slot], .up = &s.up[slot], .act = x,
                                   .rows = b.tok.data() + b.offset[j], .m = b.count[j],
                                   .p0 = wp.task_p0[task], .p1 = wp.task_p1[task],
                                   .h = wp.h.data() + size_t(b.offset[j]) * ldh, .ldh = size_t(ldh),
                                   .glu = s.gated ? &glu : nullptr});
  };
  engine_->run(st);
}

// stage 3, per pool. Reads the pool's h (stage 2); writes it in the act format to the pool's hq,
// hscale and hgsum, and the pool's hview of them for stage 4.
void MoeLayer::quantize_h(const Chunk& c) {
  const int rows = c.ws.buckets.rows();
  const int k_align = format_traits(cfg_.down_format).k_align;
  Stage st;
  for (int p = 0; p < engine_->subpools(); ++p) {
    const int ni = slices_[p]->i1 - slices_[p]->i0;
    if (ni == 0) continue;
    Workspace::Pool& wp = c.ws.pools[p];
    const int kp = round_up(ni, k_align);
    const size_t hrow = act_row_bytes(c.h_af, kp);
    grow(wp.hq, size_t(rows) * hrow);
    grow(wp.hscale, size_t(rows));
    grow(wp.hgsum, size_t(rows) * q8_gsum_stride(kp));
    wp.hview = {.format = c.h_af, .data = wp.hq.data(), .stride = hrow, .scale = wp.hscale.data(),
                .gsum = wp.hgsum.data(), .gsum_stride = q8_gsum_stride(kp), .Kp = kp};
    st.tasks[p] = std::min(rows, engine_->threads_in(p) * 4);
  }
  st.fn = [&](int p, int task) {
    Workspace::Pool& wp = c.ws.pools[p];
    const ActView& hv = wp.hview;
    const int ni = slices_[p]->i1 - slices_[p]->i0, ldh = ceil_div(ni, kPanelN) * kPanelN, n = st.tasks[p];
    for (int r = int(int64_t(rows) * task / n); r < int(int64_t(rows) * (task + 1) / n); ++r)
      if (!act_codec_->quantize(c.h_af, wp.h.data() + size_t(r) * ldh, ni, hv.Kp, wp.hq.data() + size_t(r) * hv.stride,
                                &wp.hscale[r], wp.hgsum.data() + size_t(r) * hv.gsum_stride))
        throw std::runtime_error("expert intermediate activations overflowed to Inf/NaN (token " +
                                 std::to_string(c.t0 + c.ws.buckets.tok[r]) +
                                 "); the weights or inputs are out of range");
  };
  engine_->run(st);
}

// stage 4, per pool. Reads the pool's hq (stage 3), ws.buckets and the pool's down weights; writes
// the pool's out[t] = sum over t's rows of w * (h W_down^T), zeros for a token without rows. Tasks
// are panel ranges of H, each zeroing then accumulating its columns, so no two threads write the
// same element; a token's experts are added in slot order, so its output does not depend on the
// other tokens of the call.
void MoeLayer::down(const Chunk& c) {
  Workspace& ws = c.ws;
  const Buckets& b = ws.buckets;
  const int M = c.M, Hpad = c.Hpad, h_panels = Hpad / kPanelN;
  // Every task does the same work (the same experts over as many panels). About 4 per thread
  // balance prefill against a thread that falls behind; at decode (up to 2 rows per expert) one
  // per thread gives each expert's panels the longest runs to stream (docs/benchmarks/notes.md).
  const int per_thread = b.rows() <= 2 * int(b.experts.size()) ? 1 : 4;
  Stage st;
  for (int p = 0; p < engine_->subpools(); ++p) {
    grow(ws.pools[p].out, size_t(M) * Hpad);
    st.tasks[p] = std::min(h_panels, engine_->threads_in(p) * per_thread);
  }
  st.fn = [&](int p, int task) {
    Workspace::Pool& wp = ws.pools[p];
    const Slice& s = *slices_[p];
    const int n = st.tasks[p];
    const int p0 = h_panels * task / n, p1 = h_panels * (task + 1) / n;
    for (int t = 0; t < M; ++t)
      std::memset(wp.out.data() + size_t(t) * Hpad + p0 * kPanelN, 0, size_t(p1 - p0) * kPanelN * 4);
    if (s.i1 == s.i0) return;
    const size_t n_by_slot = b.by_slot.size();
    for (size_t q = 0; q < n_by_slot; ++q) {
      const int j = b.by_slot[q], slot = b.experts[j], r0 = b.offset[j];
      DownArgs a{.down = &s.down[slot], .act = rows_from(wp.hview, r0), .m = b.count[j],
                 .tok = b.tok.data() + r0, .weight = b.weight.data() + r0, .p0 = p0, .p1 = p1,
                 .out = wp.out.data(), .ldo = size_t(Hpad)};
      if (q + 1 < n_by_slot) a.next = s.down[b.experts[b.by_slot[q + 1]]].data;
      down_.for_tokens(b.count[j]).down(a);
      if (!s.down_bias[slot].empty())  // out[t] += w * b_down over this task's columns
        for (int i = 0; i < b.count[j]; ++i) {
          float* o = wp.out.data() + size_t(a.tok[i]) * Hpad;
          const float w = a.weight[i];
          for (int n = p0 * kPanelN; n < p1 * kPanelN; ++n) o[n] += w * s.down_bias[slot][n];
        }
    }
  };
  engine_->run(st);
}

// stage 5, shared by all threads. Reads every pool's out (stage 4) and the previous layer's deferred
// part; writes out[t] = bf16(sum_p out_p[t] + deferred[t]) for the chunk's tokens, or, in a
// deferred job, the fp32 sum to its part.
void MoeLayer::combine(const Chunk& c) {
  Workspace& ws = c.ws;
  const int H = cfg_.hidden, M = c.M, t0 = c.t0, Hpad = c.Hpad, pools = engine_->subpools();
  const int tasks = shared_tasks(M, H);
  Stage st;
  st.shared = true;
  st.tasks[0] = tasks;
  st.fn = [&](int, int task) {
    for (int t = int(int64_t(M) * task / tasks); t < int(int64_t(M) * (task + 1) / tasks); ++t) {
      float* o0 = ws.pools[0].out.data() + size_t(t) * Hpad;
      for (int p = 1; p < pools; ++p) {
        const float* op = ws.pools[p].out.data() + size_t(t) * Hpad;
        for (int h = 0; h < H; ++h) o0[h] += op[h];
      }
      if (c.in.add) {
        const float* prev = c.in.add->sum.data() + size_t(t0 + t) * H;
        for (int h = 0; h < H; ++h) o0[h] += prev[h];
      }
      if (c.in.sum_into) std::memcpy(c.in.sum_into->sum.data() + size_t(t0 + t) * H, o0, size_t(H) * 4);
      else act_codec_->round_bf16(o0, H, c.out + size_t(t0 + t) * H);
    }
  };
  engine_->run(st);
}

}  // namespace kt
