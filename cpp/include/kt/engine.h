// The engine: a worker pool made of sub-pools (one per NUMA node later) and a FIFO task queue.
// Thread 0 of sub-pool 0 is the queue's thread: it takes jobs in order and, inside a job, leads
// the parallel stages and works in them like every other thread. Threads that have nothing to do
// spin for a few tens of microseconds and then sleep on a futex: an idle engine uses no CPU.
// Threads are pinned one per allowed CPU when there are no more threads than allowed CPUs
// (KT_KERNEL_PIN_THREADS=0 turns that off).
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace kt {

constexpr int kMaxSubpools = 64;

// One parallel stage. fn(pool, task) runs for every task of every sub-pool on that sub-pool's
// threads; with shared = true, tasks[0] tasks are spread over all threads of all sub-pools.
struct Stage {
  std::function<void(int pool, int task)> fn;
  int tasks[kMaxSubpools] = {};
  bool shared = false;
};

// A submitted job; wait() blocks until it ran and rethrows what it threw.
class Job {
 public:
  void wait();
  bool done() const { return done_.load(std::memory_order_acquire) != 0; }

 private:
  friend class Engine;
  std::function<void()> body_;
  std::exception_ptr error_;
  std::atomic<int> done_{0};
};

class Engine {
 public:
  Engine(int threads, int subpools);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // The process-wide engine for this configuration, created on first use.
  static std::shared_ptr<Engine> shared(int threads, int subpools);

  int threads() const { return threads_; }
  int subpools() const { return subpools_; }
  int threads_in(int pool) const { return pool_size_[pool]; }
  // CPU of each thread, empty when the threads are not pinned.
  const std::vector<int>& pinned_cpus() const { return pinned_cpus_; }

  std::shared_ptr<Job> submit(std::function<void()> body);
  // Runs a stage on all threads; call only from inside a job. Rethrows the first task error.
  void run(const Stage& stage);

 private:
  void queue_loop();               // thread 0
  void worker_loop(int tid);       // threads 1..threads-1
  void work(int tid);
  int pool_of(int tid) const { return thread_pool_[tid]; }

  int threads_, subpools_;
  std::vector<int> pool_size_, thread_pool_;
  std::vector<int> pinned_cpus_;
  std::vector<std::thread> threads_v_;

  // stage state, written by thread 0 before bumping generation_
  const Stage* stage_ = nullptr;
  std::atomic<uint32_t> generation_{0};
  std::atomic<int> remaining_{0};
  std::unique_ptr<std::atomic<int>[]> next_task_;  // per sub-pool, plus one for shared stages
  std::atomic<bool> abort_{false};
  std::mutex error_mu_;
  std::exception_ptr stage_error_;
  std::atomic<bool> stop_{false};

  // task queue
  std::mutex queue_mu_;
  std::condition_variable queue_cv_;
  std::deque<std::shared_ptr<Job>> queue_;
};

}  // namespace kt
