// Worker pool and task queue. See kt/engine.h for the threading model.
#include "kt/engine.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include <sched.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <tuple>
#include <stdexcept>
#include <string>
#include <utility>

#include "runtime/process_state.h"

namespace kt {
namespace {

// About 20-50 us of pause before a waiting thread sleeps: long enough to bridge the gap between
// two stages of one forward, short enough that an idle engine leaves the cores alone.
constexpr int kSpinIterations = 2000;

// The spin-wait hint: pause on x86 (yields the core's pipeline to its sibling thread), yield on ARM.
inline void cpu_relax() {
#if defined(__x86_64__)
  _mm_pause();
#elif defined(__aarch64__)
  __asm__ volatile("yield");
#endif
}

template <class Pred>
bool spin_until(Pred pred) {
  for (int i = 0; i < kSpinIterations; ++i) {
    if (pred()) return true;
    cpu_relax();
  }
  return pred();
}

// The CPUs this process may run on, in order.
std::vector<int> allowed_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> cpus;
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return cpus;
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &set)) cpus.push_back(c);
  return cpus;
}

// Pins the calling thread to one CPU. Unpinned, Linux tends to wake a pool thread on the core of
// the thread that woke it, and two threads streaming weights on one core while the other idles
// doubled the time of a cold single-token forward (docs/benchmarks/notes.md, "Thread pinning").
void pin_to_set(const std::vector<int>& cpus) {
  cpu_set_t set;
  CPU_ZERO(&set);
  for (int c : cpus) CPU_SET(c, &set);
  sched_setaffinity(0, sizeof(set), &set);  // best effort: a refusal leaves the thread unpinned
}
void pin_to(int cpu) { pin_to_set({cpu}); }

// The live engines by (threads, subpools, placement); an engine goes when its last holder releases it.
struct EngineRegistry {
  std::map<std::tuple<int, int, std::vector<PoolPlacement>>, std::weak_ptr<Engine>> engines;
};

}  // namespace

bool Job::orphaned() const { return !done() && pid_ != getpid(); }

void Job::join() noexcept {
  if (orphaned()) return;
  // No spinning here: the caller is not one of the engine's threads, and with as many engine
  // threads as cores a spinning caller would take a core from them.
  while (!done()) done_.wait(0, std::memory_order_acquire);
}

void Job::wait() {
  if (orphaned())
    throw std::runtime_error("this forward was submitted in process " + std::to_string(pid_) +
                             " before it called fork(); it never runs in this child process (pid " +
                             std::to_string(getpid()) + "): submit it again here");
  join();
  if (error_) std::rethrow_exception(error_);
}

Engine::Engine(int threads, int subpools, std::vector<PoolPlacement> placement)
    : threads_(threads), subpools_(subpools), pid_(getpid()), placement_(std::move(placement)) {
  if (subpools < 1 || subpools > kMaxSubpools)
    throw std::invalid_argument("threadpool_count=" + std::to_string(subpools) + " must be in 1.." +
                                std::to_string(kMaxSubpools));
  if (threads < subpools)
    throw std::invalid_argument("cpuinfer_threads=" + std::to_string(threads) +
                                " must be at least threadpool_count=" + std::to_string(subpools) +
                                " (each sub-pool needs a thread)");
  for (int p = 0; p < subpools; ++p) {
    pool_size_.push_back(threads / subpools + (p < threads % subpools ? 1 : 0));
    for (int i = 0; i < pool_size_.back(); ++i) thread_pool_.push_back(p);
  }
  next_task_ = std::make_unique<std::atomic<int>[]>(subpools + 1);
  if (!placement_.empty()) {
    if (int(placement_.size()) != subpools)
      throw std::invalid_argument("a placement names " + std::to_string(placement_.size()) + " sub-pools, not " +
                                  std::to_string(subpools));
    // each sub-pool's threads on its node's CPUs: one per CPU while they suffice, else all on all
    for (int t = 0, first = 0; t < threads; ++t) {
      const int p = thread_pool_[t];
      if (t > 0 && thread_pool_[t - 1] != p) first = t;
      const std::vector<int>& cpus = placement_[p].cpus;
      if (cpus.empty()) throw std::invalid_argument("sub-pool " + std::to_string(p) + " is placed on no CPU");
      pinned_cpus_.push_back(pool_size_[p] <= int(cpus.size()) ? cpus[t - first] : -1);
    }
  } else {
    // One thread per allowed CPU, in order, unless that would put two on one CPU or
    // KT_KERNEL_PIN_THREADS=0 asks for none (processes sharing CPUs without their own masks).
    std::vector<int> cpus = allowed_cpus();
    const char* pin_env = std::getenv("KT_KERNEL_PIN_THREADS");
    const bool pin = threads <= int(cpus.size()) && !(pin_env && std::strcmp(pin_env, "0") == 0);
    if (pin) pinned_cpus_.assign(cpus.begin(), cpus.begin() + threads);
  }
  auto pin = [this](int t) {
    if (pinned_cpus_.empty()) return;
    if (pinned_cpus_[t] >= 0) pin_to(pinned_cpus_[t]);
    else pin_to_set(placement_[thread_pool_[t]].cpus);
  };
  threads_v_.emplace_back([this, pin] {
    pin(0);
    queue_loop();
  });
  for (int t = 1; t < threads; ++t)
    threads_v_.emplace_back([this, t, pin] {
      pin(t);
      worker_loop(t);
    });
}

Engine::~Engine() {
  if (!owned_by_this_process()) {
    // A forked child: the threads are the parent's, and joining them would wait forever. Their
    // handles and the queue's condition variable are left as they are (a std::thread destroyed
    // unjoined would terminate; see queue_cv_).
    new std::vector<std::thread>(std::move(threads_v_));
    queue_cv_.release();
    return;
  }
  {
    std::lock_guard<std::mutex> lock(queue_mu_);
    stop_.store(true);
  }
  queue_cv_->notify_all();
  threads_v_[0].join();  // finishes queued jobs first, their stages with the workers
  workers_exit_.store(true, std::memory_order_release);
  generation_.fetch_add(1, std::memory_order_release);
  generation_.notify_all();
  for (size_t i = 1; i < threads_v_.size(); ++i) threads_v_[i].join();
}

bool Engine::owned_by_this_process() const { return pid_ == getpid(); }

std::shared_ptr<Engine> Engine::shared(int threads, int subpools, const std::vector<PoolPlacement>& placement) {
  auto& registry = process_state<EngineRegistry>();
  std::lock_guard<std::mutex> lock(registry.mu);
  auto& engines = registry.value.engines;
  for (auto it = engines.begin(); it != engines.end();)
    it = it->second.expired() ? engines.erase(it) : std::next(it);
  std::weak_ptr<Engine>& slot = engines[{threads, subpools, placement}];
  std::shared_ptr<Engine> e = slot.lock();
  if (!e || !e->owned_by_this_process()) {
    e = std::make_shared<Engine>(threads, subpools, placement);
    slot = e;
  }
  return e;
}

void Engine::drain_all() {
  std::vector<std::shared_ptr<Engine>> live;
  {
    auto& registry = process_state<EngineRegistry>();
    std::lock_guard<std::mutex> lock(registry.mu);
    for (auto& [config, weak] : registry.value.engines)
      if (auto e = weak.lock(); e && e->owned_by_this_process()) live.push_back(std::move(e));
  }
  // jobs run in order: once an empty job has run, so have all before it
  for (auto& e : live) e->submit([] {})->join();
  // `live` may hold the last reference to an engine: its destructor joins its threads here
}

std::shared_ptr<Job> Engine::submit(std::function<void()> body) {
  if (!owned_by_this_process())
    throw std::runtime_error("this engine was created in process " + std::to_string(pid_) +
                             " before fork(); its threads do not exist in this child process (pid " +
                             std::to_string(getpid()) + ")");
  auto job = std::make_shared<Job>();
  job->body_ = std::move(body);
  job->pid_ = pid_;
  {
    std::lock_guard<std::mutex> lock(queue_mu_);
    if (stop_.load()) throw std::runtime_error("engine is shutting down");
    queue_.push_back(job);
  }
  queue_cv_->notify_one();
  return job;
}

void Engine::queue_loop() {
  for (;;) {
    std::shared_ptr<Job> job;
    {
      std::unique_lock<std::mutex> lock(queue_mu_);
      queue_cv_->wait(lock, [&] { return stop_.load() || !queue_.empty(); });
      if (queue_.empty()) return;  // stop requested and nothing left
      job = std::move(queue_.front());
      queue_.pop_front();
    }
    try {
      job->body_();
    } catch (...) {
      job->error_ = std::current_exception();
    }
    job->body_ = nullptr;  // release captured buffers before waking the waiter
    job->done_.store(1, std::memory_order_release);
    job->done_.notify_all();
  }
}

void Engine::run(const Stage& stage) {
  // A shared stage of one task (decode's input quantization and output rounding) runs here
  // without the workers: waking them only to find nothing to do made this thread wait for
  // the slowest wake-up (tens of microseconds from sleep), and the next stage's wake-up
  // overlaps with this thread's own share of that stage's work instead.
  if (stage.shared && stage.tasks[0] <= 1) {
    if (stage.tasks[0] == 1) stage.fn(pool_of(0), 0);
    return;
  }
  stage_ = &stage;
  for (int p = 0; p <= subpools_; ++p) next_task_[p].store(0, std::memory_order_relaxed);
  abort_.store(false, std::memory_order_relaxed);
  stage_error_ = nullptr;
  remaining_.store(threads_ - 1, std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_release);
  generation_.notify_all();
  work(0);
  if (!spin_until([&] { return remaining_.load(std::memory_order_acquire) == 0; }))
    for (int r; (r = remaining_.load(std::memory_order_acquire)) != 0;) remaining_.wait(r, std::memory_order_acquire);
  stage_ = nullptr;
  if (stage_error_) std::rethrow_exception(stage_error_);
}

void Engine::worker_loop(int tid) {
  uint32_t seen = 0;
  for (;;) {
    if (!spin_until([&] { return generation_.load(std::memory_order_acquire) != seen; }))
      generation_.wait(seen, std::memory_order_acquire);
    seen = generation_.load(std::memory_order_acquire);
    if (workers_exit_.load(std::memory_order_acquire)) return;
    work(tid);
    if (remaining_.fetch_sub(1, std::memory_order_acq_rel) == 1) remaining_.notify_one();
  }
}

void Engine::work(int tid) {
  const Stage& s = *stage_;
  const int pool = s.shared ? 0 : pool_of(tid);
  std::atomic<int>& next = s.shared ? next_task_[subpools_] : next_task_[pool];
  const int n = s.tasks[pool];
  for (;;) {
    if (abort_.load(std::memory_order_relaxed)) return;
    int task = next.fetch_add(1, std::memory_order_relaxed);
    if (task >= n) return;
    try {
      s.fn(s.shared ? pool_of(tid) : pool, task);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mu_);
      if (!stage_error_) stage_error_ = std::current_exception();
      abort_.store(true, std::memory_order_relaxed);
    }
  }
}

}  // namespace kt
