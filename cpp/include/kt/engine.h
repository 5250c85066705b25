// The engine: a worker pool made of sub-pools (one per NUMA node later) and a FIFO task queue.
// Thread 0 of sub-pool 0 is the queue's thread: it takes jobs in order and, inside a job, leads
// the parallel stages and works in them like every other thread. Threads that have nothing to do
// spin for a few tens of microseconds and then sleep on a futex: an idle engine uses no CPU.
// Threads are pinned one per allowed CPU when there are no more threads than allowed CPUs
// (KT_KERNEL_PIN_THREADS=0 turns that off).
// Lifetime: Engine::shared hands out one engine per configuration while someone holds it; the
// last holder's release stops and joins its threads. After fork() an engine belongs to the parent:
// its threads do not exist in the child, so there it refuses new jobs (MoeLayer then takes a new
// engine of the child's) and its destructor leaves the thread handles alone.
#pragma once
#include "kt/numa.h"
#include <sys/types.h>

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
  // Blocks until the job ran, without rethrowing its error; returns at once for an orphan.
  void join() noexcept;
  bool done() const { return done_.load(std::memory_order_acquire) != 0; }
  // Submitted in the parent of this forked process and not run there before the fork: it never
  // runs in this process.
  bool orphaned() const;

 private:
  friend class Engine;
  std::function<void()> body_;
  std::exception_ptr error_;
  std::atomic<int> done_{0};
  pid_t pid_ = 0;  // the submitting process
};

class Engine {
 public:
  // placement: empty, or one PoolPlacement per sub-pool (its threads pinned to its CPUs, one per
  // CPU while they suffice, else each to all of them; its layers' weights on its memory node).
  Engine(int threads, int subpools, std::vector<PoolPlacement> placement = {});
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // The engine of this configuration in this process, created when nobody holds one.
  static std::shared_ptr<Engine> shared(int threads, int subpools, const std::vector<PoolPlacement>& placement = {});
  // Waits until the jobs queued on every live engine have run (at process exit).
  static void drain_all();
  // False in a child forked after this engine was created (its threads are the parent's).
  bool owned_by_this_process() const;

  int threads() const { return threads_; }
  int subpools() const { return subpools_; }
  int threads_in(int pool) const { return pool_size_[pool]; }
  // CPU of each thread, empty when the threads are not pinned (with a placement: -1 for a thread
  // pinned to all of its node's CPUs).
  const std::vector<int>& pinned_cpus() const { return pinned_cpus_; }
  const std::vector<PoolPlacement>& placement() const { return placement_; }
  // The memory node of sub-pool `pool`'s weights, -1 for none.
  int mem_node(int pool) const { return placement_.empty() ? -1 : placement_[pool].mem_node; }

  // Throws in a forked child (see owned_by_this_process).
  std::shared_ptr<Job> submit(std::function<void()> body);
  // Runs a stage on all threads; call only from inside a job. Rethrows the first task error.
  void run(const Stage& stage);

 private:
  void queue_loop();               // thread 0
  void worker_loop(int tid);       // threads 1..threads-1
  void work(int tid);
  int pool_of(int tid) const { return thread_pool_[tid]; }

  int threads_, subpools_;
  pid_t pid_;  // the creating process
  std::vector<int> pool_size_, thread_pool_;
  std::vector<int> pinned_cpus_;
  std::vector<PoolPlacement> placement_;
  std::vector<std::thread> threads_v_;

  // stage state, written by thread 0 before bumping generation_
  const Stage* stage_ = nullptr;
  std::atomic<uint32_t> generation_{0};
  std::atomic<int> remaining_{0};
  std::unique_ptr<std::atomic<int>[]> next_task_;  // per sub-pool, plus one for shared stages
  std::atomic<bool> abort_{false};
  std::mutex error_mu_;
  std::exception_ptr stage_error_;
  std::atomic<bool> stop_{false};          // no more jobs: thread 0 exits once the queue is empty
  std::atomic<bool> workers_exit_{false};  // set after thread 0 has exited: no more stages

  // task queue. queue_cv_ is on the heap so that a forked child can leave it undestroyed: the
  // parent's thread 0 may have been waiting on it, and destroying a condition variable waits for
  // its waiters, which in the child never come back.
  std::mutex queue_mu_;
  std::unique_ptr<std::condition_variable> queue_cv_ = std::make_unique<std::condition_variable>();
  std::deque<std::shared_ptr<Job>> queue_;
};

}  // namespace kt
