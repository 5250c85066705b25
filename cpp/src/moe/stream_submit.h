// A layer's forward in the order of a CUDA stream (see docs/design.md, "CUDA streams and graph capture"):
//   submit: D2H copies of x, ids, weights into pinned staging, then a host function that starts
//           the CPU job (MoeLayer::submit) from the staged inputs
//   sync:   a host function that waits for the job, then the H2D copy of the bf16 output [M, H]
// Both return once the work is enqueued. Host functions run on CUDA's callback thread, which may
// not call CUDA, so they only start, wait for and report on jobs.
//
// Staging: the inputs go through one pinned buffer shared by every layer (the submit host function
// copies them out before the stream moves on, so stream order serializes its users); each layer
// has its own pinned output (a layer has one forward between submit and sync, but the next layer's
// job may run before this layer's H2D copy). Batch sizes given to reserve_capture get buffers and
// host-function contexts that stay put, so a captured graph's nodes keep pointing at live memory;
// other calls outside capture grow separate buffers on demand.
#pragma once
#include <atomic>
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "kt/moe.h"
#include "runtime/cuda_runtime.h"

namespace kt {

// Pinned host memory from the CUDA runtime; freed with it.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  PinnedBuffer(const cuda::Api& api, size_t bytes);
  PinnedBuffer(PinnedBuffer&& o) noexcept { *this = std::move(o); }
  PinnedBuffer& operator=(PinnedBuffer&& o) noexcept;
  ~PinnedBuffer();
  uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  const cuda::Api* api_ = nullptr;
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// Pinned staging for calls outside capture, grown on demand without blocking: a replaced buffer
// is freed once the stream has run a host function enqueued after its last use.
class EagerStaging {
 public:
  uint8_t* get(size_t bytes, const cuda::Api& api, cuda::Stream stream);

 private:
  struct Retired {
    PinnedBuffer buffer;
    std::unique_ptr<std::atomic<bool>> passed;  // set on the stream after the buffer's last use
  };
  PinnedBuffer buffer_;
  std::vector<Retired> retired_;
};

class StreamLayer : public std::enable_shared_from_this<StreamLayer> {
 public:
  // Registers the layer so that set_stream_capture_batch_sizes reaches it.
  static std::shared_ptr<StreamLayer> create(std::shared_ptr<MoeLayer> layer);
  ~StreamLayer();

  // x: [M, H] of x_dtype, ids: [M, topk] int32/int64, weights: [M, topk] f32/bf16, all device
  // memory on stream's device. Under capture, M must be a reserved batch size.
  void submit(cuda::Stream stream, const void* x, DType x_dtype, const void* ids, bool ids_int64,
              const void* weights, DType w_dtype, int M);
  // out: device memory for [M, H] bf16; stream: the one submit used. After enqueueing the wait,
  // rethrows the error of an earlier forward (see rethrow_error) instead of copying the output.
  void sync(cuda::Stream stream, void* out);
  // Rethrows (once) the error of a forward whose host functions have run: a job that threw, or
  // inputs MoeLayer::submit rejected. Outputs of such a forward are NaN.
  void rethrow_error();
  // Pins the output staging and the host-function contexts of these batch sizes (plus what is
  // already reserved).
  void reserve_capture(const cuda::Api& api, const std::vector<int>& sizes);
  size_t input_bytes_per_token() const;

 private:
  struct Call;
  struct Errors {  // what host functions report; the only lock they take
    std::mutex mu;
    std::exception_ptr first;
  };
  explicit StreamLayer(std::shared_ptr<MoeLayer> layer);
  static void start_job(void* call);   // host function of submit
  static void finish_job(void* call);  // host function of sync
  Call& eager_call();

  std::shared_ptr<MoeLayer> layer_;
  std::shared_ptr<Errors> errors_ = std::make_shared<Errors>();
  std::mutex mu_;                           // the staging and contexts
  PinnedBuffer captured_out_;               // output staging of reserved batch sizes
  std::vector<PinnedBuffer> retired_out_;   // replaced captured_out_ buffers graphs may still use
  EagerStaging eager_out_;                  // output staging of larger calls outside capture
  std::map<int, std::unique_ptr<Call>> captured_calls_;  // batch size -> context, fixed
  std::vector<std::unique_ptr<Call>> eager_calls_;       // reused once their sync ran
  Call* pending_ = nullptr;                 // submitted, sync not yet enqueued
  bool pending_capturing_ = false;          // pending_ was submitted under capture
  cuda::Stream last_stream_ = nullptr;
  bool captured_ = false;                   // a graph may hold host functions of captured_calls_
};

// Sets the batch sizes CUDA graphs are captured with and pins their staging for every live
// StreamLayer (and for layers created later) when a CUDA runtime is loaded.
void set_stream_capture_batch_sizes(const std::vector<int>& sizes);

}  // namespace kt
