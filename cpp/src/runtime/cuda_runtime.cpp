#include "runtime/cuda_runtime.h"

#include <dlfcn.h>

#include <cstdlib>
#include <fstream>
#include <mutex>
#include <stdexcept>
#include <type_traits>

namespace kt::cuda {
namespace {

std::mutex g_mu;
const Api* g_api = nullptr;  // set once, never freed: host functions may run until exit
bool g_maps_scanned = false;  // no libcudart was mapped when we last looked

// The path of a libcudart the process has already mapped, or "".
std::string mapped_cudart() {
  std::ifstream maps("/proc/self/maps");
  for (std::string line; std::getline(maps, line);) {
    const size_t slash = line.find('/');
    if (slash == std::string::npos) continue;
    const std::string path = line.substr(slash);
    const size_t base = path.rfind('/');
    if (path.compare(base + 1, 12, "libcudart.so") == 0) return path;
  }
  return "";
}

Api* load(const std::string& path) {
  // RTLD_NOLOAD first: the copy torch loaded, not a second instance with its own state
  void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_NOLOAD);
  if (!h) h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!h) throw std::runtime_error(std::string("cannot load the CUDA runtime ") + path + ": " + dlerror());
  auto api = new Api{};
  auto sym = [&](auto& fn, const char* name) {
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(h, name));
    if (!fn) throw std::runtime_error("the CUDA runtime " + path + " has no " + name);
  };
  sym(api->launch_host_func, "cudaLaunchHostFunc");
  sym(api->memcpy_async, "cudaMemcpyAsync");
  sym(api->stream_is_capturing, "cudaStreamIsCapturing");
  sym(api->host_alloc, "cudaHostAlloc");
  sym(api->free_host, "cudaFreeHost");
  sym(api->pointer_get_attributes, "cudaPointerGetAttributes");
  sym(api->get_last_error, "cudaGetLastError");
  sym(api->get_error_string, "cudaGetErrorString");
  api->path = path;
  return api;
}

}  // namespace

const Api* find_runtime(bool rescan) {
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_api) return g_api;
  const char* env = std::getenv(kRuntimeEnv);
  if (env && *env) {
    g_api = load(env);
    return g_api;
  }
  if (g_maps_scanned && !rescan) return nullptr;
  const std::string path = mapped_cudart();
  if (path.empty()) {
    g_maps_scanned = true;
    return nullptr;
  }
  g_api = load(path);
  return g_api;
}

const Api& require_runtime(const char* why) {
  if (const Api* api = find_runtime(/*rescan=*/true)) return *api;
  throw std::runtime_error(std::string(why) +
                           " needs the CUDA runtime, and none is loaded in this process (a CUDA build of torch "
                           "loads libcudart; or name one with " + kRuntimeEnv + "=/path/to/libcudart.so)");
}

void check(const Api& api, int err, const char* what) {
  if (err == 0) return;
  throw std::runtime_error(std::string(what) + ": " + api.get_error_string(err) + " (CUDA error " +
                           std::to_string(err) + ")");
}

bool is_device_pointer(const void* p) {
  const Api* api;
  try {
    api = find_runtime();
  } catch (const std::exception&) {
    return false;  // a bad KT_KERNEL_CUDART matters only where a runtime is required
  }
  if (!api) return false;
  PointerAttributes a{};
  if (api->pointer_get_attributes(&a, p) != 0) {
    api->get_last_error();  // clear it, or torch would report it after its next kernel
    return false;
  }
  return a.type == kMemoryDevice || a.type == kMemoryManaged;
}

}  // namespace kt::cuda
