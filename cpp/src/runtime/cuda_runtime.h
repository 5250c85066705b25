// The few CUDA runtime entry points the stream path uses, found at run time: the package builds
// and imports without CUDA, and a GPU process already has a libcudart loaded (torch's), whose
// per-thread device state and streams we must share. Declared here by hand (no CUDA headers).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace kt::cuda {

using Stream = void*;  // cudaStream_t
using HostFn = void (*)(void* user_data);

enum MemcpyKind : int { kHostToDevice = 1, kDeviceToHost = 2 };
enum CaptureStatus : int { kCaptureNone = 0, kCaptureActive = 1, kCaptureInvalidated = 2 };
enum MemoryType : int { kMemoryUnregistered = 0, kMemoryHost = 1, kMemoryDevice = 2, kMemoryManaged = 3 };
constexpr unsigned kHostAllocPortable = 1;  // pinned for every device and context

// cudaPointerAttributes as of CUDA 11-13, with room for fields a later runtime may append.
struct PointerAttributes {
  int type;
  int device;
  void* device_pointer;
  void* host_pointer;
  unsigned char reserved[128];
};

struct Api {
  int (*launch_host_func)(Stream, HostFn, void*);
  int (*memcpy_async)(void* dst, const void* src, size_t bytes, int kind, Stream);
  int (*stream_is_capturing)(Stream, int* status);
  int (*host_alloc)(void** ptr, size_t bytes, unsigned flags);
  int (*free_host)(void* ptr);
  int (*pointer_get_attributes)(PointerAttributes*, const void*);
  int (*get_last_error)();
  const char* (*get_error_string)(int);
  std::string path;  // the library the entry points come from
};

// Environment variable naming the libcudart to use instead of the one found in the process.
constexpr const char* kRuntimeEnv = "KT_KERNEL_CUDART";

// The runtime, loaded on first success and kept for the process: the library named by
// KT_KERNEL_CUDART, else a libcudart already mapped into the process. nullptr when neither
// exists; a KT_KERNEL_CUDART that cannot be loaded throws (why names the path). The process's
// maps are read again only with rescan (a CPU-only process keeps asking with CPU tensors).
const Api* find_runtime(bool rescan = false);
// find_runtime(rescan = true), or a runtime_error saying what to do when there is none.
const Api& require_runtime(const char* why);
// Throws runtime_error "<what>: <CUDA's message> (error N)" when err is not cudaSuccess.
void check(const Api& api, int err, const char* what);

// True when a runtime is loaded and it reports p as device (or managed) memory.
bool is_device_pointer(const void* p);

}  // namespace kt::cuda
