#include "moe/deferred.h"

#include <iterator>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>

#include "runtime/process_state.h"

namespace kt {

void split_deferred(int32_t* ids, const float* weights, int M, int topk, int deferred, int32_t* deferred_ids) {
  const int keep = topk - deferred;
  for (int t = 0; t < M; ++t) {
    int32_t* row = ids + size_t(t) * topk;
    int32_t* later = deferred_ids + size_t(t) * topk;
    const float* w = weights + size_t(t) * topk;
    for (int k = 0; k < topk; ++k) {
      // rank of slot k: slots with a larger weight, or an equal weight and an earlier position
      int rank = 0;
      for (int j = 0; j < topk; ++j) rank += w[j] > w[k] || (w[j] == w[k] && j < k);
      later[k] = rank < keep ? -1 : row[k];
      if (rank >= keep) row[k] = -1;
    }
  }
}

namespace {

struct DeferredSlots {
  std::map<std::pair<const Engine*, int>, std::weak_ptr<DeferredSlot>> by_layer;
};

// As the engines and their workspaces: process-wide (fork-safe lock), entries kept while held.
std::shared_ptr<DeferredSlot> slot_of(const Engine* engine, int layer_idx) {
  auto& slots = process_state<DeferredSlots>();
  std::lock_guard<std::mutex> lock(slots.mu);
  // layers come and go: forget the slots nobody holds (an engine's address may be reused)
  for (auto it = slots.value.by_layer.begin(); it != slots.value.by_layer.end();)
    it = it->second.expired() ? slots.value.by_layer.erase(it) : std::next(it);
  auto& entry = slots.value.by_layer[{engine, layer_idx}];
  auto slot = entry.lock();
  if (!slot) {
    slot = std::make_shared<DeferredSlot>();
    entry = slot;
  }
  return slot;
}

}  // namespace

DeferredLinks::DeferredLinks(const Engine* engine, int layer_idx, int deferred, int topk)
    : layer_idx_(layer_idx), deferred_(deferred) {
  if (deferred < 0 || deferred >= topk)
    throw std::invalid_argument("max_deferred_experts_per_token=" + std::to_string(deferred) +
                                " must be in 0..num_experts_per_tok-1=" + std::to_string(topk - 1));
  if (layer_idx < 0) {
    if (deferred > 0)
      throw std::invalid_argument("max_deferred_experts_per_token=" + std::to_string(deferred) +
                                  " needs a layer_idx >= 0 (the deferred part goes to layer_idx + 1), got " +
                                  std::to_string(layer_idx));
    return;
  }
  if (layer_idx > 0) incoming_ = slot_of(engine, layer_idx - 1);
  if (deferred > 0) outgoing_ = slot_of(engine, layer_idx);
}

DeferredLinks::~DeferredLinks() {
  if (!outgoing_) return;
  std::lock_guard<std::mutex> lock(outgoing_->mu);
  outgoing_->pending = false;
}

DeferredLinks::Step DeferredLinks::begin(int M, int H) {
  Step step;
  if (!incoming_ && !outgoing_) return step;
  std::unique_lock<std::mutex> in_lock, out_lock;
  if (incoming_) in_lock = std::unique_lock<std::mutex>(incoming_->mu);
  if (outgoing_) out_lock = std::unique_lock<std::mutex>(outgoing_->mu);
  if (outgoing_ && outgoing_->pending) {
    outgoing_->pending = false;
    throw std::runtime_error(
        "layer " + std::to_string(layer_idx_) + ": the deferred experts of its previous forward (max_deferred_experts_per_token=" +
        std::to_string(deferred_) + ", " + std::to_string(outgoing_->M) + " tokens) were never added: no forward of layer " +
        std::to_string(layer_idx_ + 1) + " on the same engine followed it. The last MoE layer must use "
        "max_deferred_experts_per_token=0; the stale part is dropped");
  }
  if (incoming_ && incoming_->pending && (incoming_->M != M || incoming_->H != H)) {
    incoming_->pending = false;
    throw std::invalid_argument(
        "layer " + std::to_string(layer_idx_) + ": layer " + std::to_string(layer_idx_ - 1) + " left it the deferred experts of a forward of " +
        std::to_string(incoming_->M) + " tokens with hidden_size=" + std::to_string(incoming_->H) +
        ", but this forward has " + std::to_string(M) + " tokens with hidden_size=" + std::to_string(H) +
        "; the deferred part is dropped (the next layer must take the same tokens and hidden size)");
  }
  if (incoming_ && incoming_->pending) {
    incoming_->pending = false;
    step.add = incoming_->part;
  }
  if (outgoing_) {
    outgoing_->pending = true;
    outgoing_->M = M;
    outgoing_->H = H;
    step.produce = outgoing_->part;
  }
  return step;
}

}  // namespace kt
