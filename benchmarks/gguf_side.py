"""One side of bench_gguf.py, alone in its process: it loads the MoE layer of a GGUF file, times
every M on the protocol's inputs and saves the outputs. bench_gguf.py runs it; by hand:

    python benchmarks/gguf_side.py {ours,torch,upstream} CASE.json

CASE.json: {"gguf": file (or "fp8" / "rawint4" / "gptq" / "mxfp4": a release's folder, RELEASE_LAYERS),
"inputs": torch.save'd {"x", "ids", "w"} of the largest M, "out": where the results go
(torch.save), "tokens", "threads", "iters", "min_time", "warmup"; for the decode cases
M <= "paired_max_m" of the sides run here: "paired_rounds", "paired_calls", "paired_mib"
(paired_rounds)}. The layer's shape comes from the file's metadata. Sides:
  ours      KTMoEWrapper(method="LLAMAFILE", weight_path=file): the file's blocks as they are, each
            projection in its tensor's type;
  torch     the protocol's PyTorch bf16 peer (kt_kernel.torch_moe) on gguf's dequantization;
  upstream  upstream kt-kernel 0.7.2's KTMoEWrapper(method="LLAMAFILE", weight_path=file), run by
            the Python of its own environment, whose package is also named kt_kernel: this file
            imports nothing of this repository's package at its top, and the timing it shares
            with every side, kt_kernel/timing.py (standard library only), by its path.
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import gguf
import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
PROJECTIONS = ("gate", "up", "down")
SETTLE_S = 0.05  # torch's OpenMP threads spin a while after each torch op: let them stop before a timed block


def projection_shape(proj: str, H: int, I: int) -> tuple[int, int]:
    """(rows, columns) of one expert's projection: gate and up [I, H], down [H, I]."""
    return (H, I) if proj == "down" else (I, H)


def _timing():
    """kt_kernel/timing.py of this repository, loaded by path (in the upstream environment
    `import kt_kernel` is upstream's package)."""
    spec = importlib.util.spec_from_file_location("kt_timing", ROOT / "kt_kernel" / "timing.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


class GgufLayer:
    """Block 0's expert tensors of a GGUF file and the shape its metadata gives; both packages
    load it with method LLAMAFILE."""
    method, layer_idx = "LLAMAFILE", 0

    def __init__(self, path: str):
        self.path = path
        self.reader = gguf.GGUFReader(path)
        fields = {k: f.contents() for k, f in self.reader.fields.items() if not k.startswith("GGUF.")}
        arch = fields["general.architecture"]
        self.H = int(fields[f"{arch}.embedding_length"])
        self.I = int(fields[f"{arch}.expert_feed_forward_length"])
        self.E = int(fields[f"{arch}.expert_count"])
        self.K = int(fields[f"{arch}.expert_used_count"])
        by_name = {t.name: t for t in self.reader.tensors}
        self.tensors = {p: by_name[f"blk.0.ffn_{p}_exps.weight"] for p in PROJECTIONS}

    def ggml_type(self, proj: str) -> gguf.GGMLQuantizationType:
        return gguf.GGMLQuantizationType(int(self.tensors[proj].tensor_type))

    def blocks(self, proj: str) -> np.ndarray:
        """The tensor's bytes, [E, rows, row bytes] (a view of the file)."""
        return self.tensors[proj].data

    def dequantize(self, proj: str, e: int) -> np.ndarray:
        """fp32 [rows, cols] of expert e: gguf's dequantizer."""
        return gguf.quants.dequantize(self.blocks(proj)[e], self.ggml_type(proj)).astype(np.float32, copy=False)


class Fp8Layer:
    """Layer 1's experts of an FP8 release's folder (DeepSeek-V3 layout: per-expert e4m3 weights,
    weight_scale_inv per block of weight_block_size), the shape its config.json gives; both
    packages load it with method FP8."""
    method, layer_idx = "FP8", 1

    def __init__(self, path: str):
        self.block = self._open(path)["weight_block_size"]

    def _open(self, path: str) -> dict:
        """Sets the path and the layer's shape from config.json; returns its quantization_config."""
        self.path = path
        cfg = json.loads((Path(path) / "config.json").read_text())
        self.H, self.I = cfg["hidden_size"], cfg["moe_intermediate_size"]
        self.E, self.K = cfg["n_routed_experts"], cfg["num_experts_per_tok"]
        return cfg["quantization_config"]

    def dequantize(self, proj: str, e: int) -> np.ndarray:
        """fp32 [rows, cols] of expert e: torch's float8_e4m3fn decoding times the block scales."""
        from safetensors import safe_open
        key = f"model.layers.{self.layer_idx}.mlp.experts.{e}.{proj}_proj.weight"
        with safe_open(str(Path(self.path) / "model.safetensors"), "pt") as f:
            q, s = f.get_tensor(key), f.get_tensor(key + "_scale_inv")
        bn, bk = self.block
        n, k = q.shape
        return (q.float() * s.float().repeat_interleave(bn, 0).repeat_interleave(bk, 1)[:n, :k]).numpy()


class Int4Layer(Fp8Layer):
    """Layer 1's experts of a compressed-tensors int4 release's folder (DeepSeek-V3 names:
    weight_packed, bf16 weight_scale per group, symmetric); both packages load it with method
    RAWINT4."""
    method = "RAWINT4"

    def __init__(self, path: str):
        self.group = self._open(path)["config_groups"]["group_0"]["weights"]["group_size"]

    def dequantize(self, proj: str, e: int) -> np.ndarray:
        """fp32 [rows, cols] of expert e: scale * (nibble - 8), nibble i of each int32 word at bits 4i."""
        from safetensors import safe_open
        key = f"model.layers.{self.layer_idx}.mlp.experts.{e}.{proj}_proj.weight"
        with safe_open(str(Path(self.path) / "model.safetensors"), "pt") as f:
            packed, scale = f.get_tensor(key + "_packed"), f.get_tensor(key + "_scale")
        b = packed.view(torch.uint8).numpy()
        q = np.stack([b & 0xF, b >> 4], axis=-1).reshape(b.shape[0], -1).astype(np.float32) - 8
        return q * np.repeat(scale.float().numpy(), self.group, axis=1)


class GptqLayer(Fp8Layer):
    """Layer 1's experts of an AutoGPTQ int4 release's folder (DeepSeek-V3 names: qweight packed
    along K, qzeros, fp16 scales per group, symmetric, checkpoint_format gptq); both packages load
    it with method GPTQ_INT4."""
    method = "GPTQ_INT4"

    def __init__(self, path: str):
        self.group = self._open(path)["group_size"]

    def dequantize(self, proj: str, e: int) -> np.ndarray:
        """fp32 [rows, cols] of expert e: scale * (q - zero point), q nibble j of qweight row i at k
        = 8i + j, the zero point of column 8c + j at bits 4j of qzeros column c, stored minus one."""
        from safetensors import safe_open
        base = f"model.layers.{self.layer_idx}.mlp.experts.{e}.{proj}_proj"
        with safe_open(str(Path(self.path) / "model.safetensors"), "pt") as f:
            qw, qz, s = (f.get_tensor(f"{base}.{p}").numpy() for p in ("qweight", "qzeros", "scales"))
        words, zwords = qw.view(np.uint32), qz.view(np.uint32)
        q = np.stack([(words >> (4 * j)) & 0xF for j in range(8)], axis=1).reshape(-1, words.shape[1])
        z = np.stack([(zwords >> (4 * j)) & 0xF for j in range(8)], axis=2).reshape(zwords.shape[0], -1) + 1
        z = z[:, :q.shape[1]].repeat(self.group, axis=0)
        return (s.astype(np.float32).repeat(self.group, axis=0) * (q.astype(np.float32) - z)).T.copy()


class Mxfp4Layer:
    """Layer 0's experts of a gpt-oss MXFP4 release's folder (gate_up_proj / down_proj _blocks and
    _scales fused over the experts, gate and up interleaved along 2I), the shape its config.json
    gives; both packages load it with method MXFP4. Upstream's MXFP4 reads DeepSeek-V4-Flash's
    layout instead ({base}.ffn.experts.{e}.w1 / w3 / w2 .weight [N, K/2] and .scale [N, K/32] per
    expert), so the folder's UPSTREAM_DIR holds the same blocks in that layout (upstream_path)."""
    method, layer_idx = "MXFP4", 0
    UPSTREAM_DIR = "upstream"

    def __init__(self, path: str):
        self.path = path
        self.upstream_path = str(Path(path) / self.UPSTREAM_DIR)
        cfg = json.loads((Path(path) / "config.json").read_text())
        self.H, self.I = cfg["hidden_size"], cfg["intermediate_size"]
        self.E, self.K = cfg["num_local_experts"], cfg["num_experts_per_tok"]

    def dequantize(self, proj: str, e: int) -> np.ndarray:
        """fp32 [rows, cols] of expert e: the e2m1 values times 2^(s - 127) (kt_kernel's
        dequantize_gpt_oss, imported here: this side of the layer runs in this repository's
        environment only); gate and up are rows 0::2 and 1::2 of gate_up_proj."""
        from safetensors import safe_open
        from kt_kernel.checkpoint.mxfp4 import dequantize_gpt_oss
        fused = "down_proj" if proj == "down" else "gate_up_proj"
        key = f"model.layers.{self.layer_idx}.mlp.experts.{fused}"
        with safe_open(str(Path(self.path) / "model.safetensors"), "np") as f:
            blocks, scales = f.get_slice(key + "_blocks")[e], f.get_slice(key + "_scales")[e]
        if proj != "down":
            rows = slice(0, None, 2) if proj == "gate" else slice(1, None, 2)
            blocks, scales = blocks[rows], scales[rows]
        return dequantize_gpt_oss(blocks, scales)


# the releases a case may name besides a GGUF file: case key -> its layer
RELEASE_LAYERS = {"fp8": Fp8Layer, "rawint4": Int4Layer, "gptq": GptqLayer, "mxfp4": Mxfp4Layer}


def open_layer(case: dict):
    """The layer a case names: "gguf" (a GGUF file), or a release's folder (RELEASE_LAYERS)."""
    for kind, layer in RELEASE_LAYERS.items():
        if kind in case:
            return layer(case[kind])
    return GgufLayer(case["gguf"])


# ---- the sides: each returns (forward(x, ids, w) -> bf16 [M, H], what it ran) ----------------

def ours(layer, case: dict):
    import kt_kernel
    from kt_kernel import KTMoEWrapper

    wrapper = KTMoEWrapper(layer_idx=layer.layer_idx, num_experts=layer.E, num_experts_per_tok=layer.K,
                           hidden_size=layer.H, moe_intermediate_size=layer.I, cpuinfer_threads=case["threads"],
                           threadpool_count=1, weight_path=layer.path, chunked_prefill_size=max(case["tokens"]),
                           method=layer.method)
    wrapper.load_weights()
    return wrapper.forward, {"formats": list(wrapper.formats), "kernel": wrapper.kernel_description,
                             "tier": wrapper.isa_tier, "weight_bytes": wrapper.weight_bytes,
                             "prefetch": kt_kernel.cpu_info()["stream_prefetch"]}


def torch_peer(layer, case: dict):
    from kt_kernel.torch_moe import TORCH_PEER, moe_forward

    weights = {}
    for p in PROJECTIONS:
        weights[p] = torch.empty(layer.E, *projection_shape(p, layer.H, layer.I), dtype=torch.bfloat16)
        for e in range(layer.E):
            weights[p][e] = torch.from_numpy(layer.dequantize(p, e))

    def forward(x, ids, w):
        return moe_forward(x, ids, w, weights["gate"], weights["up"], weights["down"])

    return forward, {"kernel": f"{TORCH_PEER} F.linear ({torch.backends.cpu.get_cpu_capability()})"}


def _drop_pin_memory() -> None:
    """Upstream allocates its staging buffers with pin_memory=True, which fails without CUDA: the
    same buffers in pageable memory."""
    for name in ("zeros", "empty", "full", "ones"):
        original = getattr(torch, name)

        def pageable(*args, _original=original, **kwargs):
            kwargs.pop("pin_memory", None)
            return _original(*args, **kwargs)

        setattr(torch, name, pageable)


def upstream(layer, case: dict):
    os.environ.setdefault("KT_FORCE_SYNC_SUBMIT", "1")  # no CUDA stream to hang its callbacks on
    _drop_pin_memory()
    import kt_kernel
    from kt_kernel import KTMoEWrapper

    wrapper = KTMoEWrapper(layer_idx=layer.layer_idx, num_experts=layer.E, num_experts_per_tok=layer.K,
                           hidden_size=layer.H, moe_intermediate_size=layer.I, gpu_experts_mask=None,
                           cpuinfer_threads=case["threads"], threadpool_count=1,
                           weight_path=getattr(layer, "upstream_path", layer.path),  # MXFP4: its own layout
                           chunked_prefill_size=max(case["tokens"]), method=layer.method)
    wrapper.load_weights(torch.arange(layer.E, dtype=torch.int64))  # its FP8 wrapper requires the map

    def forward(x, ids, w):
        # its output is a staging buffer that the next call of the same M overwrites
        return wrapper.forward(x, ids, w, None)

    return forward, {"kernel": f"kt-kernel {getattr(kt_kernel, '__version__', '?')} {layer.method}"}


SIDES = {"ours": ours, "torch": torch_peer, "upstream": upstream}


def paired_rounds(call, case: dict, timing) -> list:
    """[(read bandwidth GB/s, median seconds of the calls right after it)] of case["paired_rounds"]
    rounds: kt_kernel's probe, then case["paired_calls"] calls, in turn. This machine's bandwidth
    changes within seconds (a VM beside others: 36 or 64 GB/s), so a decode figure is set against
    the bandwidth measured beside it, round by round. Each probe leaves the caches cold. In this
    repository's environment only (the upstream side has no kt_kernel probe)."""
    from kt_kernel import _ext

    pairs = []
    for _ in range(case["paired_rounds"]):
        bw = _ext.probe_bandwidth(case["threads"], case["paired_mib"], 1)["best_gbps"]
        t = timing.time_calls(call, case["paired_calls"])
        pairs.append((bw, t.median))
    return pairs


def run(side: str, case: dict) -> dict:
    timing = _timing()
    torch.set_num_threads(case["threads"] if side == "torch" else 1)
    layer = open_layer(case)
    loading = timing.Stopwatch()
    forward, info = SIDES[side](layer, case)
    info["load_s"] = loading.seconds
    inputs = torch.load(case["inputs"], weights_only=True)
    cases, outputs = {}, {}
    for M in case["tokens"]:
        x, ids, w = (inputs[k][:M].contiguous() for k in ("x", "ids", "w"))
        outputs[M] = forward(x, ids, w).clone()
        time.sleep(SETTLE_S)
        clock = timing.Stopwatch(load=True)
        t = timing.time_calls(lambda: forward(x, ids, w), case["iters"], min_seconds=case["min_time"],
                              warmup=case["warmup"])
        cases[M] = {"median_s": t.median, "min_s": min(t.seconds), "max_s": max(t.seconds),
                    "iters": len(t.seconds), "busy_cores": t.busy_cores, "other_cores": clock.other_cores()}
        if side != "upstream" and M <= case.get("paired_max_m", 0):
            cases[M]["paired"] = paired_rounds(lambda: forward(x, ids, w), case, timing)
    return {"side": side, "threads": case["threads"], "info": info, "cases": cases, "outputs": outputs}


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] not in SIDES:
        sys.exit(f"usage: gguf_side.py {{{','.join(SIDES)}}} CASE.json")
    with open(argv[1]) as f:
        case = json.load(f)
    torch.save(run(argv[0], case), case["out"])


if __name__ == "__main__":
    main()
