// Stress test of the engine (queue, stages, errors, sharing and release) for ThreadSanitizer:
// scripts/sanitize.sh builds it with -fsanitize=thread and runs it. Exits non-zero on a wrong result;
// TSan exits non-zero on a data race.
#include <atomic>
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "kt/engine.h"

namespace {

int failures = 0;

void expect(bool ok, const std::string& what) {
  if (!ok) {
    std::fprintf(stderr, "engine_stress: %s\n", what.c_str());
    ++failures;
  }
}

// A job of three stages, as a forward has: a shared one, a per-pool one reading what the first
// wrote, and a shared reduction. Returns the job; *sum is valid once it is done.
std::shared_ptr<kt::Job> submit_sum(kt::Engine& e, int n, std::shared_ptr<long> sum) {
  return e.submit([&e, n, sum] {
    std::vector<long> a(n), b(n);
    kt::Stage fill;
    fill.shared = true;
    fill.tasks[0] = n;
    fill.fn = [&](int, int t) { a[t] = t; };
    e.run(fill);
    kt::Stage twice;
    for (int p = 0; p < e.subpools(); ++p) twice.tasks[p] = n / e.subpools();
    twice.fn = [&](int p, int t) {
      const int i = p * (n / e.subpools()) + t;
      b[i] = 2 * a[i];
    };
    e.run(twice);
    long s = 0;
    for (long v : b) s += v;
    *sum = s;
  });
}

long expected_sum(int n, int pools) {
  const int covered = n / pools * pools;  // the per-pool stage covers whole shares
  return long(covered) * (covered - 1);
}

void queue_from_many_threads() {
  auto e = kt::Engine::shared(4, 2);
  std::vector<std::thread> submitters;
  for (int s = 0; s < 4; ++s)
    submitters.emplace_back([&e, s] {
      for (int i = 0; i < 200; ++i) {
        const int n = 64 + 8 * ((s + i) % 5);
        auto sum = std::make_shared<long>(-1);
        submit_sum(*e, n, sum)->wait();
        expect(*sum == expected_sum(n, 2), "a job's stages gave a wrong sum");
      }
    });
  for (auto& t : submitters) t.join();
}

void errors_reach_the_waiter() {
  auto e = kt::Engine::shared(3, 1);
  for (int i = 0; i < 200; ++i) {
    auto bad = e->submit([&e] {
      kt::Stage st;
      st.shared = true;
      st.tasks[0] = 16;
      st.fn = [](int, int t) {
        if (t == 7) throw std::runtime_error("task 7");
      };
      e->run(st);
    });
    auto sum = std::make_shared<long>(-1);
    auto good = submit_sum(*e, 32, sum);
    bool raised = false;
    try {
      bad->wait();
    } catch (const std::runtime_error&) {
      raised = true;
    }
    expect(raised, "a task's exception did not reach wait()");
    good->wait();
    expect(*sum == expected_sum(32, 1), "the job after a failed one gave a wrong sum");
  }
}

// Engines of several configurations taken and released from several threads while jobs run; an
// engine whose last holder lets go while its job is still queued finishes the job first.
void engines_come_and_go() {
  std::vector<std::thread> users;
  for (int u = 0; u < 4; ++u)
    users.emplace_back([u] {
      for (int i = 0; i < 100; ++i) {
        auto e = kt::Engine::shared(1 + (u + i) % 3, 1);
        auto sum = std::make_shared<long>(-1);
        auto job = submit_sum(*e, 24, sum);
        if (i % 2) {
          e.reset();  // maybe the last holder: the destructor runs the queued job, then joins
          job->wait();
        } else {
          job->wait();
        }
        expect(*sum == expected_sum(24, 1), "a job of a released engine gave a wrong sum");
      }
    });
  std::thread drainer([] {
    for (int i = 0; i < 100; ++i) kt::Engine::drain_all();
  });
  for (auto& t : users) t.join();
  drainer.join();
}

}  // namespace

int main() {
  queue_from_many_threads();
  errors_reach_the_waiter();
  engines_come_and_go();
  if (failures) return 1;
  std::puts("engine_stress: ok");
  return 0;
}
