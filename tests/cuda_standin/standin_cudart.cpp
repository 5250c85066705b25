// A stand-in CUDA runtime for tests on machines without a GPU: the entry points kt_kernel's stream
// path uses (cpp/src/runtime/cuda_runtime.h) plus what the tests need to drive it (streams,
// capture into graphs and their replay, "device" memory). Each stream is a FIFO worked by one
// thread; device memory is host memory that cudaPointerGetAttributes reports as device memory.
// Stricter than CUDA where that catches our bugs: a host function that calls this runtime, and a
// copy under capture whose host side is not pinned, are counted as violations (standin_violations).
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

namespace {

enum Err : int { kSuccess = 0, kInvalidValue = 1, kNotPermitted = 800, kCaptureUnsupported = 900 };
enum Kind : int { kHostToHost = 0, kHostToDevice = 1, kDeviceToHost = 2 };

using Op = std::function<void()>;

struct Graph {
  std::vector<Op> ops;
};

struct Stream {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Op> queue;
  bool busy = false, stop = false;
  Graph* capture = nullptr;  // recording instead of running
  std::thread worker;

  Stream() : worker([this] { run(); }) {}
  ~Stream() {
    {
      std::lock_guard<std::mutex> lock(mu);
      stop = true;
    }
    cv.notify_all();
    worker.join();
  }
  void run();
  void push(Op op) {
    {
      std::lock_guard<std::mutex> lock(mu);
      queue.push_back(std::move(op));
    }
    cv.notify_all();
  }
  void drain() {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return queue.empty() && !busy; });
  }
};

thread_local bool t_in_host_fn = false;
std::mutex g_mu;
std::map<const char*, size_t> g_device, g_pinned;  // base -> bytes
int g_violations = 0, g_host_allocs = 0, g_last_error = 0;

void Stream::run() {
  std::unique_lock<std::mutex> lock(mu);
  for (;;) {
    cv.wait(lock, [&] { return stop || !queue.empty(); });
    if (queue.empty()) return;
    Op op = std::move(queue.front());
    queue.pop_front();
    busy = true;
    lock.unlock();
    op();
    lock.lock();
    busy = false;
    cv.notify_all();
  }
}

Stream* stream_of(void* s) {
  static Stream* legacy = new Stream;  // handle 0, the default stream
  return s ? static_cast<Stream*>(s) : legacy;
}

bool inside(const std::map<const char*, size_t>& m, const void* p) {
  auto c = static_cast<const char*>(p);
  auto it = m.upper_bound(c);
  if (it == m.begin()) return false;
  --it;
  return c < it->first + it->second;
}

// Every entry point starts here: host functions may not call the runtime.
int enter() {
  if (!t_in_host_fn) return kSuccess;
  std::lock_guard<std::mutex> lock(g_mu);
  ++g_violations;
  return g_last_error = kNotPermitted;
}

int fail(int err) {
  std::lock_guard<std::mutex> lock(g_mu);
  return g_last_error = err;
}

// Runs op in stream order, or records it into the graph being captured.
int enqueue(void* s, Op op) {
  Stream* st = stream_of(s);
  {
    std::lock_guard<std::mutex> lock(st->mu);
    if (st->capture) {
      st->capture->ops.push_back(std::move(op));
      return kSuccess;
    }
  }
  st->push(std::move(op));
  return kSuccess;
}

}  // namespace

extern "C" {

struct PointerAttributes {
  int type, device;
  void* device_pointer;
  void* host_pointer;
};

int cudaStreamCreate(void** s) {
  if (int e = enter()) return e;
  *s = new Stream;
  return kSuccess;
}

int cudaStreamDestroy(void* s) {
  if (int e = enter()) return e;
  if (!s) return fail(kInvalidValue);
  delete static_cast<Stream*>(s);  // finishes its queue first
  return kSuccess;
}

int cudaStreamSynchronize(void* s) {
  if (int e = enter()) return e;
  Stream* st = stream_of(s);
  {
    std::lock_guard<std::mutex> lock(st->mu);
    if (st->capture) return fail(kCaptureUnsupported);
  }
  st->drain();
  return kSuccess;
}

int cudaLaunchHostFunc(void* s, void (*fn)(void*), void* data) {
  if (int e = enter()) return e;
  return enqueue(s, [fn, data] {
    t_in_host_fn = true;
    fn(data);
    t_in_host_fn = false;
  });
}

int cudaMemcpyAsync(void* dst, const void* src, size_t n, int kind, void* s) {
  if (int e = enter()) return e;
  bool capturing;
  {
    Stream* st = stream_of(s);
    std::lock_guard<std::mutex> lock(st->mu);
    capturing = st->capture != nullptr;
  }
  if (capturing) {
    // CUDA captures copies between device and pinned memory only
    const void* host = kind == kDeviceToHost ? dst : kind == kHostToDevice ? src : nullptr;
    std::lock_guard<std::mutex> lock(g_mu);
    if (host && !inside(g_pinned, host)) {
      ++g_violations;
      return g_last_error = kInvalidValue;
    }
  }
  return enqueue(s, [dst, src, n] { std::memcpy(dst, src, n); });
}

int cudaStreamIsCapturing(void* s, int* status) {
  if (int e = enter()) return e;
  Stream* st = stream_of(s);
  std::lock_guard<std::mutex> lock(st->mu);
  *status = st->capture ? 1 : 0;
  return kSuccess;
}

int cudaStreamBeginCapture(void* s, int /*mode*/) {
  if (int e = enter()) return e;
  Stream* st = stream_of(s);
  std::lock_guard<std::mutex> lock(st->mu);
  if (st->capture) return fail(kInvalidValue);
  st->capture = new Graph;
  return kSuccess;
}

int cudaStreamEndCapture(void* s, void** graph) {
  if (int e = enter()) return e;
  Stream* st = stream_of(s);
  std::lock_guard<std::mutex> lock(st->mu);
  if (!st->capture) return fail(kInvalidValue);
  *graph = std::exchange(st->capture, nullptr);
  return kSuccess;
}

int cudaGraphInstantiate(void** exec, void* graph, unsigned long long /*flags*/) {
  if (int e = enter()) return e;
  *exec = new Graph(*static_cast<Graph*>(graph));
  return kSuccess;
}

int cudaGraphLaunch(void* exec, void* s) {
  if (int e = enter()) return e;
  for (const Op& op : static_cast<Graph*>(exec)->ops)
    if (int err = enqueue(s, op)) return err;
  return kSuccess;
}

int cudaGraphDestroy(void* graph) {
  delete static_cast<Graph*>(graph);
  return kSuccess;
}

int cudaGraphExecDestroy(void* exec) {
  delete static_cast<Graph*>(exec);
  return kSuccess;
}

int cudaHostAlloc(void** p, size_t n, unsigned /*flags*/) {
  if (int e = enter()) return e;
  *p = std::aligned_alloc(64, (n + 63) / 64 * 64);
  std::lock_guard<std::mutex> lock(g_mu);
  g_pinned[static_cast<const char*>(*p)] = n;
  ++g_host_allocs;
  return kSuccess;
}

int cudaFreeHost(void* p) {
  if (int e = enter()) return e;
  std::lock_guard<std::mutex> lock(g_mu);
  if (!g_pinned.erase(static_cast<const char*>(p))) return g_last_error = kInvalidValue;
  std::free(p);
  return kSuccess;
}

int cudaMalloc(void** p, size_t n) {
  if (int e = enter()) return e;
  *p = std::aligned_alloc(256, (n + 255) / 256 * 256);
  std::lock_guard<std::mutex> lock(g_mu);
  g_device[static_cast<const char*>(*p)] = n;
  return kSuccess;
}

int cudaFree(void* p) {
  if (int e = enter()) return e;
  std::lock_guard<std::mutex> lock(g_mu);
  if (!g_device.erase(static_cast<const char*>(p))) return g_last_error = kInvalidValue;
  std::free(p);
  return kSuccess;
}

int cudaPointerGetAttributes(PointerAttributes* a, const void* p) {
  if (int e = enter()) return e;
  std::lock_guard<std::mutex> lock(g_mu);
  const bool device = inside(g_device, p), pinned = inside(g_pinned, p);
  a->type = device ? 2 : pinned ? 1 : 0;
  a->device = device ? 0 : -1;
  a->device_pointer = device ? const_cast<void*>(p) : nullptr;
  a->host_pointer = device ? nullptr : const_cast<void*>(p);
  return kSuccess;
}

int cudaGetLastError() {
  std::lock_guard<std::mutex> lock(g_mu);
  return std::exchange(g_last_error, 0);
}

const char* cudaGetErrorString(int err) {
  switch (err) {
    case kSuccess: return "no error";
    case kInvalidValue: return "invalid argument";
    case kNotPermitted: return "operation not permitted (a CUDA call from a host function)";
    case kCaptureUnsupported: return "operation not permitted when stream is capturing";
    default: return "unknown error";
  }
}

// ---- test helpers (not CUDA) --------------------------------------------------------------

// A stand-in kernel: in stream order, sleeps ms milliseconds, then copies n bytes src -> dst.
int standin_sleep_then_copy(void* s, int ms, void* dst, const void* src, size_t n) {
  return enqueue(s, [=] {
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    std::memcpy(dst, src, n);
  });
}

int standin_violations() {
  std::lock_guard<std::mutex> lock(g_mu);
  return g_violations;
}

int standin_host_allocs() {
  std::lock_guard<std::mutex> lock(g_mu);
  return g_host_allocs;
}

}  // extern "C"
