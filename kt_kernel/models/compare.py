"""Run a causal LM and compare it with a reference: teacher-forced logits, greedy decoding.

Both the end-to-end tests and the demo use these, with the bounds of AGREEMENT_BOUNDS.

* :func:`logit_agreement`: at every position, KL(reference || run) of the next-token
  distributions and whether the two argmaxes agree.
* :func:`check_greedy`: tokens a run decoded greedily, against the reference's logits for the
  same prefixes (the reference teacher-forced on the run's own tokens, so every step is checked,
  also after a divergence). A token must be the reference's argmax, except where the reference's
  own top-2 margin is below ``tie_margin``; there it must still be within ``tie_margin`` of the
  reference's best, so a near-tie excuses only a swap between near-tied tokens.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from kt_kernel.models._deps import require_transformers
from kt_kernel.timing import Stopwatch
from kt_kernel.formats import all_formats
from kt_kernel.formats import formats as method_formats

__all__ = ["REFERENCE_PROMPT", "Agreement", "Bounds", "AGREEMENT_BOUNDS", "GreedyCheck", "Generation",
           "logit_agreement", "check_greedy", "teacher_forced_logits", "generate_greedy"]

# The text the tests and the demo run teacher-forced: 339 characters, one token each with the
# tiny models' printable tokenizer.
REFERENCE_PROMPT = (
    "Mixture-of-Experts language models route every token to a few experts out of many. "
    "An inference engine keeps attention and the hottest experts on the GPU and hands the others "
    "to the CPU, where kt_kernel holds their weights in BF16, INT8 or INT4 and runs them with AVX2, "
    "AVX-512 or AMX kernels while the GPU works on the rest of the layer.\n")


@dataclass(frozen=True)
class Bounds:
    kl_mean: float      # mean KL(fp32 reference || run) over positions, nats: at most
    top1: float         # fraction of positions whose argmax agrees: at least
    tie_margin: float   # logit gap below which the reference's top-2 counts as a near-tie


# Per method, for the tiny models of kt_kernel.models.tiny (seed 0) run in fp32 with their experts
# on kt_kernel, against the same checkpoint in transformers' eager experts in fp32, over
# REFERENCE_PROMPT (339 positions): the agreement bounds of each format's record, where the
# measured figures behind them are given. A decoded token may differ from the reference's argmax
# only where the reference's own top-2 gap is below tie_margin.
AGREEMENT_BOUNDS = {f["method"]: Bounds(**f["agreement"]) for f in method_formats()}


def format_agreement_bounds(*names: str) -> Bounds:
    """The loosest of the agreement bounds of the format records ``names``: a LLAMAFILE run's
    bounds, whose layers take gate/up and down formats from a GGUF file's tensor types."""
    records = {f["name"]: f["agreement"] for f in all_formats()}
    got = [records[n] for n in names]
    return Bounds(kl_mean=max(a["kl_mean"] for a in got), top1=min(a["top1"] for a in got),
                  tie_margin=max(a["tie_margin"] for a in got))


@dataclass(frozen=True)
class Agreement:
    positions: int
    top1: float      # fraction of positions where the argmaxes agree
    kl_mean: float   # mean over positions of KL(reference || run), nats
    kl_max: float

    def __str__(self) -> str:
        return (f"top-1 agreement {self.top1:.3f} over {self.positions} positions, "
                f"KL mean {self.kl_mean:.2e} max {self.kl_max:.2e} nats")

    def within(self, bounds: Bounds) -> bool:
        return self.kl_mean <= bounds.kl_mean and self.top1 >= bounds.top1


def logit_agreement(logits: torch.Tensor, ref_logits: torch.Tensor) -> Agreement:
    """logits, ref_logits: [T, V] next-token logits at the same T positions."""
    if logits.shape != ref_logits.shape or logits.dim() != 2:
        raise ValueError(f"logits {tuple(logits.shape)} and ref_logits {tuple(ref_logits.shape)} must both be [T, V]")
    logp = torch.log_softmax(logits.double(), dim=-1)
    ref_logp = torch.log_softmax(ref_logits.double(), dim=-1)
    kl = (ref_logp.exp() * (ref_logp - logp)).sum(-1)                         # [T]
    top1 = (logits.argmax(-1) == ref_logits.argmax(-1)).double().mean()
    return Agreement(positions=logits.shape[0], top1=float(top1), kl_mean=float(kl.mean()), kl_max=float(kl.max()))


@dataclass
class GreedyCheck:
    tokens: int
    matched: int                                       # tokens equal to the reference's argmax
    near_ties: list = field(default_factory=list)      # positions excused by a near-tie
    mismatches: list = field(default_factory=list)     # (position, token, reference token, reference gap)

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def __str__(self) -> str:
        s = f"{self.matched}/{self.tokens} decoded tokens are the reference's argmax"
        if self.near_ties:
            s += f", {len(self.near_ties)} near-ties (positions {self.near_ties})"
        if self.mismatches:
            s += f", {len(self.mismatches)} clear mismatches (position, token, reference token, gap): {self.mismatches}"
        return s


def check_greedy(tokens, ref_logits: torch.Tensor, tie_margin: float) -> GreedyCheck:
    """tokens: [N] decoded greedily by the run; ref_logits: [N, V] the reference's logits for the
    prefix that precedes each of them."""
    tokens = torch.as_tensor(tokens).flatten().cpu()
    ref = ref_logits.double().cpu()
    if ref.shape[0] != tokens.numel():
        raise ValueError(f"{tokens.numel()} tokens but reference logits for {ref.shape[0]} positions")
    best = ref.argmax(-1)
    top2 = ref.topk(2, dim=-1).values
    check = GreedyCheck(tokens=tokens.numel(), matched=int((best == tokens).sum()))
    for i in torch.nonzero(best != tokens).flatten().tolist():
        gap_to_token = float(top2[i, 0] - ref[i, tokens[i]])
        if gap_to_token <= tie_margin:
            check.near_ties.append(i)
        else:
            check.mismatches.append((i, int(tokens[i]), int(best[i]), round(gap_to_token, 3)))
    return check


@torch.inference_mode()
def teacher_forced_logits(model, input_ids) -> torch.Tensor:
    """fp32 [T, V]: the next-token logits at every position of ``input_ids`` ([T] or [1, T])."""
    ids = torch.as_tensor(input_ids).reshape(1, -1).to(model.device)
    return model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits[0].float().cpu()


@dataclass
class Generation:
    tokens: list
    logits: torch.Tensor  # fp32 [N, V]: the logits each token was chosen from
    prompt_tokens: int
    prefill_s: float      # the forward over the prompt (first token chosen)
    decode_s: float       # the forwards of the other tokens, one token each

    @property
    def prefill_tokens_per_s(self) -> float:
        return self.prompt_tokens / self.prefill_s

    @property
    def decode_tokens_per_s(self) -> float:
        return (len(self.tokens) - 1) / self.decode_s if len(self.tokens) > 1 and self.decode_s > 0 else float("nan")


class _StepClock:
    """A logits processor that only notes when each step's logits are ready."""

    def __init__(self, on_step=None):
        self.clock = Stopwatch()
        self.times = []  # seconds from the start of generate
        self.on_step = on_step

    def __call__(self, input_ids, scores):
        self.times.append(self.clock.seconds)
        if self.on_step is not None:
            self.on_step(len(self.times))
        return scores


@torch.inference_mode()
def generate_greedy(model, input_ids, max_new_tokens: int, on_step=None) -> Generation:
    """Greedy decoding through transformers' ``generate`` (KV cache: the prompt in one forward,
    then one token per forward), timed per step. Stops early only at the model's EOS token."""
    transformers = require_transformers()
    ids = torch.as_tensor(input_ids).reshape(1, -1).to(model.device)
    clock = _StepClock(on_step)
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                         do_sample=False, logits_processor=transformers.LogitsProcessorList([clock]),
                         pad_token_id=model.generation_config.pad_token_id or 0,
                         return_dict_in_generate=True, output_logits=True)
    new = out.sequences[0, ids.shape[1]:].tolist()
    times = clock.times
    return Generation(tokens=new, logits=torch.cat(out.logits).float().cpu(), prompt_tokens=ids.shape[1],
                      prefill_s=times[0], decode_s=times[-1] - times[0])
