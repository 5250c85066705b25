// Process-wide state guarded by a mutex (the engine registry, the staging-buffer pool).
// It is never destroyed: a job still running while the process exits may use it after static
// destructors have started. fork() never copies it while another thread holds its mutex:
// pthread_atfork takes the mutex before the fork and releases it in the parent and the child,
// so a child does not wait forever for a lock whose holder was not copied.
#pragma once
#include <pthread.h>

#include <mutex>

namespace kt {

template <class T>
struct ProcessState {
  std::mutex mu;
  T value;
};

// The one ProcessState<T> of the process; T names the state (one type per use).
template <class T>
ProcessState<T>& process_state() {
  static ProcessState<T>* const state = [] {
    auto* s = new ProcessState<T>();
    pthread_atfork([] { process_state<T>().mu.lock(); }, [] { process_state<T>().mu.unlock(); },
                   [] { process_state<T>().mu.unlock(); });
    return s;
  }();
  return *state;
}

}  // namespace kt
