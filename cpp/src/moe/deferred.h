// Deferred experts (max_deferred_experts_per_token = d; docs/design.md, "Deferred experts").
// A forward of layer L with d > 0 splits each token's topk slots: the topk - d slots with the
// largest routing weights make this call's output; the other d run as a second job, queued right
// behind the first, so that they overlap what the caller does next. That job's fp32 sum [M, H]
// waits in layer L's DeferredSlot until the forward of layer L + 1 on the same engine adds it to
// its own output before the bf16 rounding. The engine runs jobs one at a time in submit order, so
// the deferred job has finished before L + 1's job reads its sum, and L + 1's job has read it
// before L's next deferred job rewrites it (L cannot submit again before L + 1 took the part).
#pragma once
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <vector>

namespace kt {

class Engine;

// Per token t: of ids[t, :], the topk - deferred slots with the largest weights stay; the others
// move to deferred_ids[t, :] (ids gets -1 there, deferred_ids gets -1 everywhere else). Every slot
// is ranked, whatever it holds (-1, a GPU expert, a CPU expert); equal weights keep the earlier slot.
void split_deferred(int32_t* ids, const float* weights, int M, int topk, int deferred, int32_t* deferred_ids);

// The deferred part of one layer's latest forward. Written only by that layer's deferred job and
// read only by the next layer's job (the ordering above), so the buffer is reused call after call.
struct DeferredPart {
  std::vector<float> sum;    // [M, H] fp32
  std::exception_ptr error;  // what the deferred job threw; the consumer's job rethrows it
};

// What one layer_idx hands to the next on one engine.
struct DeferredSlot {
  std::mutex mu;
  bool pending = false;  // submitted, not yet taken by layer_idx + 1
  int M = 0, H = 0;      // of the pending forward
  std::shared_ptr<DeferredPart> part = std::make_shared<DeferredPart>();
};

// A layer's two slots: incoming (layer_idx - 1: added to this layer's output) and outgoing
// (layer_idx: this layer's deferred part; only when deferred > 0).
class DeferredLinks {
 public:
  // layer_idx < 0 takes part in no chain (then deferred must be 0).
  DeferredLinks(const Engine* engine, int layer_idx, int deferred, int topk);
  // A part this layer left pending goes with it: no later layer_idx + 1 forward adds it.
  ~DeferredLinks();
  DeferredLinks(const DeferredLinks&) = delete;
  DeferredLinks& operator=(const DeferredLinks&) = delete;

  struct Step {
    std::shared_ptr<const DeferredPart> add;  // the previous layer's pending part, or null
    std::shared_ptr<DeferredPart> produce;    // where this forward's deferred job writes, or null
  };
  // At submit, after the inputs were validated: takes the previous layer's pending part and marks
  // this layer's as pending. Throws, and drops the stale part it names, when this layer's part of
  // the previous forward was never taken, or when the previous layer's part does not fit this call
  // (another token count or hidden size). Nothing changes when it throws for another reason.
  Step begin(int M, int H);

 private:
  int layer_idx_, deferred_;
  std::shared_ptr<DeferredSlot> incoming_, outgoing_;
};

}  // namespace kt
