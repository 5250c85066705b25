#include "moe/stream_submit.h"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <utility>

namespace kt {
namespace {

constexpr size_t kAlign = 64;
constexpr uint16_t kBf16NaN = 0x7fc0;

size_t align_up(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

// Staging shared by all layers: the capture batch sizes, the layers to reserve for, and the pinned
// input buffers (see stream_submit.h).
struct SharedStaging {
  std::mutex mu;
  std::vector<int> sizes;
  std::vector<std::weak_ptr<StreamLayer>> layers;
  PinnedBuffer captured_in;
  std::vector<PinnedBuffer> retired_in;  // replaced captured_in buffers graphs may still use
  EagerStaging eager_in;
};

SharedStaging& shared() {
  static SharedStaging* s = new SharedStaging;  // never destroyed: host functions may outlive main
  return *s;
}

// Keeps a buffer of at least bytes in `fixed`; a replaced buffer stays alive in `retired`, since
// graphs captured earlier copy from and to it.
void reserve_fixed(PinnedBuffer& fixed, std::vector<PinnedBuffer>& retired, size_t bytes, const cuda::Api& api) {
  if (fixed.size() >= bytes) return;
  PinnedBuffer b(api, bytes);
  if (fixed.data()) retired.push_back(std::move(fixed));
  fixed = std::move(b);
}

std::string sizes_text(const std::vector<int>& sizes) {
  std::string s = "[";
  for (size_t i = 0; i < sizes.size(); ++i) s += (i ? ", " : "") + std::to_string(sizes[i]);
  return s + "]";
}

}  // namespace

// ---- pinned buffers -----------------------------------------------------------------------

PinnedBuffer::PinnedBuffer(const cuda::Api& api, size_t bytes) : api_(&api), size_(bytes) {
  void* p = nullptr;
  cuda::check(api, api.host_alloc(&p, bytes, cuda::kHostAllocPortable),
              ("cudaHostAlloc of " + std::to_string(bytes) + " bytes of pinned staging").c_str());
  data_ = static_cast<uint8_t*>(p);
}

PinnedBuffer& PinnedBuffer::operator=(PinnedBuffer&& o) noexcept {
  if (this != &o) {
    this->~PinnedBuffer();
    api_ = std::exchange(o.api_, nullptr);
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
  }
  return *this;
}

PinnedBuffer::~PinnedBuffer() {
  if (data_) api_->free_host(data_);  // an error here (the runtime shutting down) leaves nothing to do
  data_ = nullptr;
  size_ = 0;
}

// ---- staging grown outside capture -------------------------------------------------------

namespace {
void mark_passed(void* flag) { static_cast<std::atomic<bool>*>(flag)->store(true, std::memory_order_release); }
}  // namespace

uint8_t* EagerStaging::get(size_t bytes, const cuda::Api& api, cuda::Stream stream) {
  std::erase_if(retired_, [](const Retired& r) { return r.passed->load(std::memory_order_acquire); });
  if (buffer_.size() >= bytes) return buffer_.data();
  const size_t grown = std::max(bytes, buffer_.size() * 2);
  if (buffer_.data()) {
    Retired r{std::move(buffer_), std::make_unique<std::atomic<bool>>(false)};
    cuda::check(api, api.launch_host_func(stream, &mark_passed, r.passed.get()), "cudaLaunchHostFunc (staging)");
    retired_.push_back(std::move(r));
  }
  buffer_ = PinnedBuffer(api, grown);
  return buffer_.data();
}

// ---- one forward's host-function context --------------------------------------------------

// It holds what its host functions use, so that they stay valid if the StreamLayer goes first.
struct StreamLayer::Call {
  std::shared_ptr<MoeLayer> layer;
  std::shared_ptr<Errors> errors;
  MoeInputs inputs;  // the staged copies of the call's inputs
  uint16_t* out = nullptr;
  std::shared_ptr<Job> job;           // set by start_job, taken by finish_job
  std::exception_ptr error;           // what start_job caught
  std::atomic<bool> idle{true};       // finish_job has run: an eager context may be reused
  Call(std::shared_ptr<MoeLayer> l, std::shared_ptr<Errors> e) : layer(std::move(l)), errors(std::move(e)) {}
};

void StreamLayer::start_job(void* p) {
  auto* c = static_cast<Call*>(p);
  try {
    // The one call into the layer: it copies the staged inputs, so the next call's D2H copies
    // may overwrite them as soon as this returns.
    // out is pinned staging that outlives the job (see the StreamLayer's destructor): shared
    // without an owner.
    std::shared_ptr<uint16_t> out(std::shared_ptr<void>(), c->out);
    c->job = c->layer->submit(c->inputs, std::move(out));
  } catch (...) {
    c->error = std::current_exception();
  }
}

void StreamLayer::finish_job(void* p) {
  auto* c = static_cast<Call*>(p);
  std::exception_ptr err = std::exchange(c->error, nullptr);
  if (std::shared_ptr<Job> job = std::exchange(c->job, nullptr)) {
    try {
      job->wait();
    } catch (...) {
      err = std::current_exception();
    }
  }
  if (err) {
    std::fill_n(c->out, size_t(c->inputs.M) * c->layer->config().hidden, kBf16NaN);
    std::lock_guard<std::mutex> lock(c->errors->mu);
    if (!c->errors->first) c->errors->first = err;
  }
  c->idle.store(true, std::memory_order_release);
}

// ---- layer --------------------------------------------------------------------------------

StreamLayer::StreamLayer(std::shared_ptr<MoeLayer> layer) : layer_(std::move(layer)) {}

std::shared_ptr<StreamLayer> StreamLayer::create(std::shared_ptr<MoeLayer> layer) {
  std::shared_ptr<StreamLayer> s(new StreamLayer(std::move(layer)));
  std::vector<int> sizes;
  {
    SharedStaging& sh = shared();
    std::lock_guard<std::mutex> lock(sh.mu);
    std::erase_if(sh.layers, [](const std::weak_ptr<StreamLayer>& w) { return w.expired(); });
    sh.layers.push_back(s);
    sizes = sh.sizes;
  }
  if (!sizes.empty())
    if (const cuda::Api* api = cuda::find_runtime()) s->reserve_capture(*api, sizes);
  return s;
}

StreamLayer::~StreamLayer() {
  // Forwards still queued on a stream, and graphs that captured this layer, will touch its
  // contexts and pinned buffers; the stream may be gone, so we cannot wait for them. Leave those
  // to them: leaked, never freed under a host function or a job.
  bool busy = pending_ != nullptr || captured_;
  for (auto& c : eager_calls_) busy |= !c->idle.load(std::memory_order_acquire);
  if (busy) {
    struct Leftovers {
      PinnedBuffer captured_out;
      std::vector<PinnedBuffer> retired_out;
      EagerStaging eager_out;
      std::map<int, std::unique_ptr<Call>> captured_calls;
      std::vector<std::unique_ptr<Call>> eager_calls;
    };
    new Leftovers{std::move(captured_out_), std::move(retired_out_), std::move(eager_out_), std::move(captured_calls_),
                  std::move(eager_calls_)};
  }
}

size_t StreamLayer::input_bytes_per_token() const {
  const MoeConfig& c = layer_->config();
  return size_t(c.hidden) * 4 + size_t(c.topk) * (8 + 4);  // widest x, ids and weights
}

void StreamLayer::reserve_capture(const cuda::Api& api, const std::vector<int>& sizes) {
  if (sizes.empty()) return;
  const size_t max_m = size_t(*std::max_element(sizes.begin(), sizes.end()));
  {
    SharedStaging& sh = shared();
    std::lock_guard<std::mutex> lock(sh.mu);
    reserve_fixed(sh.captured_in, sh.retired_in, max_m * input_bytes_per_token() + 3 * kAlign, api);
  }
  std::lock_guard<std::mutex> lock(mu_);
  reserve_fixed(captured_out_, retired_out_, max_m * layer_->config().hidden * 2, api);
  for (int m : sizes)
    if (!captured_calls_.count(m)) captured_calls_.emplace(m, std::make_unique<Call>(layer_, errors_));
}

StreamLayer::Call& StreamLayer::eager_call() {
  for (auto& c : eager_calls_)
    if (c->idle.load(std::memory_order_acquire)) return *c;
  eager_calls_.push_back(std::make_unique<Call>(layer_, errors_));
  return *eager_calls_.back();
}

void StreamLayer::rethrow_error() {
  std::exception_ptr e;
  {
    std::lock_guard<std::mutex> lock(errors_->mu);
    e = std::exchange(errors_->first, nullptr);
  }
  if (e) std::rethrow_exception(e);
}

void StreamLayer::submit(cuda::Stream stream, const void* x, DType x_dtype, const void* ids, bool ids_int64,
                         const void* weights, DType w_dtype, int M) {
  rethrow_error();
  const cuda::Api& api = cuda::require_runtime("a forward on a CUDA stream");
  if (pending_) throw std::logic_error("submit on a CUDA stream called twice without sync");
  if (!layer_->loaded()) throw std::runtime_error("forward called before the expert weights were loaded (call load_weights_from_tensors first)");
  if (M <= 0) throw std::invalid_argument("a forward on a CUDA stream needs at least one token, got " + std::to_string(M));
  int status = cuda::kCaptureNone;
  cuda::check(api, api.stream_is_capturing(stream, &status), "cudaStreamIsCapturing");
  if (status == cuda::kCaptureInvalidated)
    throw std::runtime_error("the stream's CUDA-graph capture was invalidated by an earlier error");
  const bool capturing = status == cuda::kCaptureActive;

  const MoeConfig& cfg = layer_->config();
  const size_t x_bytes = size_t(M) * cfg.hidden * dtype_size(x_dtype);
  const size_t ids_bytes = size_t(M) * cfg.topk * (ids_int64 ? 8 : 4);
  const size_t w_bytes = size_t(M) * cfg.topk * dtype_size(w_dtype);
  const size_t in_bytes = align_up(x_bytes) + align_up(ids_bytes) + align_up(w_bytes);
  const size_t out_bytes = size_t(M) * cfg.hidden * 2;

  SharedStaging& sh = shared();
  auto capture_sizes = [&sh] {
    std::lock_guard<std::mutex> lock(sh.mu);
    return sh.sizes;
  };
  if (!capturing) {
    // Sizes set before a runtime was loaded are reserved at the first call outside capture.
    const std::vector<int> sizes = capture_sizes();
    bool missing;
    {
      std::lock_guard<std::mutex> lock(mu_);
      missing = std::any_of(sizes.begin(), sizes.end(), [&](int m) { return !captured_calls_.count(m); });
    }
    if (missing) reserve_capture(api, sizes);
  }
  Call* call;
  uint16_t* out;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (capturing) {
      // Nothing may allocate or block here: only what reserve_capture set up is used.
      auto it = captured_calls_.find(M);
      if (it == captured_calls_.end())
        throw std::runtime_error("CUDA-graph capture of a batch of " + std::to_string(M) +
                                 " tokens, whose staging buffers were not pre-allocated: call "
                                 "KTMoEWrapper.set_capture_batch_sizes with " + std::to_string(M) +
                                 " among the sizes before capturing (pre-allocated: " + sizes_text(capture_sizes()) + ")");
      call = it->second.get();
      if (captured_out_.size() < out_bytes)
        throw std::logic_error("pinned capture staging is smaller than a reserved batch needs");
    } else {
      call = &eager_call();
    }
    out = reinterpret_cast<uint16_t*>(captured_out_.size() >= out_bytes ? captured_out_.data()
                                                                         : eager_out_.get(out_bytes, api, stream));
  }
  uint8_t* in;
  {
    std::lock_guard<std::mutex> lock(sh.mu);
    if (capturing && sh.captured_in.size() < in_bytes)
      throw std::logic_error("pinned capture staging is smaller than a reserved batch needs");
    in = sh.captured_in.size() >= in_bytes ? sh.captured_in.data() : sh.eager_in.get(in_bytes, api, stream);
  }

  uint8_t* x_in = in;
  uint8_t* ids_in = x_in + align_up(x_bytes);
  uint8_t* w_in = ids_in + align_up(ids_bytes);
  cuda::check(api, api.memcpy_async(x_in, x, x_bytes, cuda::kDeviceToHost, stream), "cudaMemcpyAsync of hidden_states");
  cuda::check(api, api.memcpy_async(ids_in, ids, ids_bytes, cuda::kDeviceToHost, stream), "cudaMemcpyAsync of topk_ids");
  cuda::check(api, api.memcpy_async(w_in, weights, w_bytes, cuda::kDeviceToHost, stream),
              "cudaMemcpyAsync of topk_weights");
  call->idle.store(false, std::memory_order_relaxed);
  call->inputs = {.x = x_in, .x_dtype = x_dtype, .ids = ids_in, .ids_int64 = ids_int64, .weights = w_in,
                  .w_dtype = w_dtype, .M = M};
  call->out = out;
  cuda::check(api, api.launch_host_func(stream, &StreamLayer::start_job, call), "cudaLaunchHostFunc (submit)");
  pending_ = call;
  pending_capturing_ = capturing;
  captured_ |= capturing;
  last_stream_ = stream;
}

void StreamLayer::sync(cuda::Stream stream, void* out) {
  const cuda::Api& api = cuda::require_runtime("a forward on a CUDA stream");
  if (!pending_) throw std::logic_error("sync on a CUDA stream called without submit");
  if (stream != last_stream_)
    throw std::invalid_argument("sync_forward must use the stream submit_forward used (the job starts in its order)");
  int status = cuda::kCaptureNone;
  cuda::check(api, api.stream_is_capturing(stream, &status), "cudaStreamIsCapturing");
  if ((status == cuda::kCaptureActive) != pending_capturing_)
    throw std::runtime_error("submit_forward and sync_forward must both be inside one CUDA-graph capture, or both outside");
  // An earlier forward's error, taken before this forward's finish_job can report its own (which
  // the next call raises): this forward is consumed all the same (its job still completes), but
  // nothing is copied into out, which the caller drops when we raise.
  std::exception_ptr earlier;
  {
    std::lock_guard<std::mutex> lock(errors_->mu);
    earlier = std::exchange(errors_->first, nullptr);
  }
  Call* call = std::exchange(pending_, nullptr);
  cuda::check(api, api.launch_host_func(stream, &StreamLayer::finish_job, call), "cudaLaunchHostFunc (sync)");
  if (earlier) std::rethrow_exception(earlier);
  cuda::check(api, api.memcpy_async(out, call->out, size_t(call->inputs.M) * layer_->config().hidden * 2, cuda::kHostToDevice, stream),
              "cudaMemcpyAsync of the output");
}

void set_stream_capture_batch_sizes(const std::vector<int>& sizes) {
  SharedStaging& sh = shared();
  std::vector<std::shared_ptr<StreamLayer>> live;
  {
    std::lock_guard<std::mutex> lock(sh.mu);
    sh.sizes = sizes;
    for (auto& w : sh.layers)
      if (auto l = w.lock()) live.push_back(std::move(l));
  }
  const cuda::Api* api = cuda::find_runtime();
  if (!api) return;  // pinned when a runtime is loaded, by the layer's first call outside capture
  for (auto& l : live) l->reserve_capture(*api, sizes);
}

}  // namespace kt
