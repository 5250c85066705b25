"""Converted weights: convert_cpu_weights.py and KTMoEWrapper.load_weights.

Checkpoints are built here in the Hugging Face layout (config.json, two safetensors shards and an
index; per-expert keys or fused 3-D experts; bf16 or fp8 with block scales), small enough that the
file runs in seconds. A converted layer must give bit-identical output to load_weights_from_tensors
on the same weights: the converter stores the reference quantizer's logical arrays and the loader
packs them exactly as load_weights_from_tensors does.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from kt_kernel import KTMoEWrapper
from kt_kernel.convert import ConversionError, convert_checkpoint, dequantize_fp8, quantize_fp8

H, I, E, TOPK = 64, 40, 8, 2     # I = 40: a partial int4 group along K of down
LAYERS, DENSE = 3, 1              # layer 0 dense (first_k_dense_replace), layers 1, 2 MoE
FP8_BLOCK = (16, 16)
THREADS = 2


def _expert_weights(layer: int, seed: int = 0):
    g = torch.Generator().manual_seed(1000 * seed + layer)
    gate = torch.randn(E, I, H, generator=g) * H ** -0.5
    up = torch.randn(E, I, H, generator=g) * H ** -0.5
    down = torch.randn(E, H, I, generator=g) * I ** -0.5
    return gate, up, down


def _dequant(q: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """torch's own float8 decoding times the block scales."""
    N, K = q.shape
    return q.to(torch.float32) * s.to(torch.float32).repeat_interleave(FP8_BLOCK[0], 0).repeat_interleave(
        FP8_BLOCK[1], 1)[:N, :K]


def build_checkpoint(path: Path, *, layout="per-expert", dtype="bf16", seed=0, layers=LAYERS, drop_layer=None,
                     h=H, i=I, e=E, shards=2) -> Path:
    """A qwen3/deepseek-style HF checkpoint: embed + norms + a dense MLP in layer 0, experts in the rest."""
    global H, I, E
    H0, I0, E0 = H, I, E
    H, I, E = h, i, e
    try:
        path.mkdir(parents=True, exist_ok=True)
        cfg = {"model_type": "deepseek_v3", "hidden_size": H, "moe_intermediate_size": I, "intermediate_size": 2 * I,
               "n_routed_experts": E, "num_experts_per_tok": TOPK, "num_hidden_layers": layers,
               "first_k_dense_replace": DENSE, "vocab_size": 32}
        if dtype in ("fp8", "fp8-ue8m0"):
            cfg["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": list(FP8_BLOCK)}
        (path / "config.json").write_text(json.dumps(cfg))
        (path / "tokenizer.json").write_text('{"tiny": true}')
        g = torch.Generator().manual_seed(seed)
        n_shards, shards = shards, [{} for _ in range(shards)]
        shards[0]["model.embed_tokens.weight"] = torch.randn(32, H, generator=g).to(torch.bfloat16)
        shards[0]["model.layers.0.mlp.gate_proj.weight"] = torch.randn(2 * I, H, generator=g).to(torch.bfloat16)
        for layer in range(DENSE, layers):
            if layer == drop_layer:
                continue
            shard = shards[layer % n_shards]
            shard[f"model.layers.{layer}.input_layernorm.weight"] = torch.ones(H, dtype=torch.bfloat16)
            shard[f"model.layers.{layer}.mlp.gate.weight"] = torch.randn(E, H, generator=g).to(torch.bfloat16)
            gate, up, down = _expert_weights(layer, seed)
            prefix = f"model.layers.{layer}.mlp.experts"
            if layout == "fused":
                for name, w in (("gate_up_proj", torch.cat([gate, up], dim=1)), ("down_proj", down)):
                    if dtype == "fp8":
                        qs = [quantize_fp8(w[x], FP8_BLOCK) for x in range(E)]
                        shard[f"{prefix}.{name}"] = torch.stack([q for q, _ in qs])
                        shard[f"{prefix}.{name}_scale_inv"] = torch.stack([s for _, s in qs])
                    else:
                        shard[f"{prefix}.{name}"] = w.to(torch.bfloat16)
                continue
            for x in range(E):
                # experts spread over the shards too, as in real checkpoints
                shard = shards[(layer + x) % n_shards]
                for name, w in (("gate_proj", gate[x]), ("up_proj", up[x]), ("down_proj", down[x])):
                    if dtype.startswith("fp8"):
                        q, s = quantize_fp8(w, FP8_BLOCK, ue8m0=dtype == "fp8-ue8m0")
                        shard[f"{prefix}.{x}.{name}.weight"] = q
                        shard[f"{prefix}.{x}.{name}.weight_scale_inv"] = s
                    else:
                        shard[f"{prefix}.{x}.{name}.weight"] = w.to(torch.bfloat16).contiguous()
        weight_map = {}
        for n, shard in enumerate(shards):
            name = f"model-{n + 1:05d}-of-{n_shards:05d}.safetensors"
            save_file(shard, str(path / name))
            weight_map.update({k: name for k in shard})
        (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
        return path
    finally:
        H, I, E = H0, I0, E0


def source_experts(src: Path, layer: int, dtype="bf16"):
    """The layer's experts [E, N, K] as the checkpoint holds them, read back with torch (fp32)."""
    from safetensors import safe_open
    index = json.loads((src / "model.safetensors.index.json").read_text())["weight_map"]
    out = []
    for name in ("gate_proj", "up_proj", "down_proj"):
        ws = []
        for x in range(E):
            key = f"model.layers.{layer}.mlp.experts.{x}.{name}.weight"
            if key not in index:  # fused
                fk = f"model.layers.{layer}.mlp.experts.{'down_proj' if name == 'down_proj' else 'gate_up_proj'}"
                with safe_open(str(src / index[fk]), "pt") as f:
                    t = f.get_tensor(fk)[x]
                    t = _dequant(t, f.get_tensor(fk + "_scale_inv")[x]) if dtype.startswith("fp8") else t.float()
                ws.append(t if name == "down_proj" else (t[:I] if name == "gate_proj" else t[I:]))
                continue
            with safe_open(str(src / index[key]), "pt") as f:
                w = f.get_tensor(key)
                if dtype.startswith("fp8"):
                    w = _dequant(w, f.get_tensor(key + "_scale_inv"))
                ws.append(w.float())
        out.append(torch.stack(ws).contiguous())
    return out


def wrapper(method, layer, path=None, **kw):
    return KTMoEWrapper(layer_idx=layer, num_experts=E, num_experts_per_tok=TOPK, hidden_size=H,
                        moe_intermediate_size=I, cpuinfer_threads=THREADS, weight_path=str(path) if path else None,
                        method=method, **kw)


def run(w, seed=0, M=7):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(M, H, generator=g).to(torch.bfloat16)
    ids = torch.stack([torch.randperm(E, generator=g)[:TOPK] for _ in range(M)]).to(torch.int64)
    wts = torch.rand(M, TOPK, generator=g)
    return w.forward(x, ids, wts)


# kind -> (name, expert layout, expert dtype)
KINDS = {k[0]: k for k in (("per-expert", "per-expert", "bf16"), ("fused", "fused", "bf16"),
                           ("fp8", "per-expert", "fp8"), ("fused-fp8", "fused", "fp8"),
                           ("fp8-ue8m0", "per-expert", "fp8-ue8m0"))}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    return {kind: build_checkpoint(root / kind, layout=layout, dtype=dtype)
            for kind, layout, dtype in KINDS.values()}


@pytest.fixture(scope="module")
def converted(ckpt, tmp_path_factory):
    cache = {}

    def get(kind, method):
        if (kind, method) not in cache:
            out = tmp_path_factory.mktemp("out") / f"{kind}-{method}"
            convert_checkpoint(ckpt[kind], out, method, threads=THREADS, progress=False)
            cache[(kind, method)] = out
        return cache[(kind, method)]
    return get


MAPS = {
    "identity": (None, None),
    # repeated logical experts, two GPU slots (0 and 5), slot order differs from logical order
    "remapped": ([3, 3, 0, 7, 1, 2, 2, 5], [True, False, False, False, False, True, False, False]),
}


@pytest.mark.parametrize("mapping", sorted(MAPS))
@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("method", ["AMXINT4", "AMXINT8", "BF16"])
def test_converted_matches_load_from_tensors(ckpt, converted, kind, method, mapping):
    pmap, mask = MAPS[mapping]
    layer = 2
    a = wrapper(method, layer, converted(kind, method), gpu_experts_mask=mask)
    a.load_weights(pmap)
    b = wrapper(method, layer, gpu_experts_mask=mask)
    b.load_weights_from_tensors(*source_experts(ckpt[kind], layer, KINDS[kind][2]),
                                physical_to_logical_map=pmap)
    assert a.weight_bytes == b.weight_bytes
    assert torch.equal(run(a), run(b))


def test_hf_checkpoint_quantized_at_load(ckpt):
    pmap, mask = MAPS["remapped"]
    a = wrapper("AMXINT4", 1, ckpt["per-expert"], gpu_experts_mask=mask)
    a.load_weights(pmap)
    b = wrapper("AMXINT4", 1, gpu_experts_mask=mask)
    b.load_weights_from_tensors(*source_experts(ckpt["per-expert"], 1), physical_to_logical_map=pmap)
    assert torch.equal(run(a), run(b))


def test_gpu_slots_cost_no_host_memory(converted):
    full = wrapper("AMXINT4", 1, converted("per-expert", "AMXINT4"))
    full.load_weights()
    half = wrapper("AMXINT4", 1, converted("per-expert", "AMXINT4"), num_gpu_experts=E // 2)
    half.load_weights()
    assert half.weight_bytes * 2 == full.weight_bytes


@pytest.mark.parametrize("ue8m0", [False, True], ids=["fp32-scales", "ue8m0-scales"])
def test_fp8_dequantization_matches_torch(ue8m0):
    g = torch.Generator().manual_seed(3)
    w = torch.randn(40, 70, generator=g)
    q, s = quantize_fp8(w, FP8_BLOCK, ue8m0)
    want = q.to(torch.float32) * s.to(torch.float32).repeat_interleave(16, 0).repeat_interleave(16, 1)[:40, :70]
    got = dequantize_fp8(q, s, FP8_BLOCK)
    assert torch.equal(got, want)
    assert (got - w).abs().max() <= w.abs().max() / 8  # e4m3 keeps 3 mantissa bits: the scales are right


def test_output_folder(converted, ckpt):
    out = converted("per-expert", "AMXINT4")
    meta = json.loads((out / "kt_kernel_meta.json").read_text())
    assert meta["moe_layers"] == [1, 2] and meta["method"] == "AMXINT4" and meta["group"] == 32
    index = json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
    assert index["kt.layers.1.experts.gate.qweight"] == "kt-experts-L0001.safetensors"
    assert index["model.embed_tokens.weight"].startswith("kt-nonexpert-")
    assert (out / "config.json").read_bytes() == (ckpt["per-expert"] / "config.json").read_bytes()
    assert (out / "tokenizer.json").exists()
    from safetensors import safe_open
    with safe_open(str(out / index["model.embed_tokens.weight"]), "pt") as f, \
            safe_open(str(ckpt["per-expert"] / "model-00001-of-00002.safetensors"), "pt") as g:
        assert torch.equal(f.get_tensor("model.embed_tokens.weight"), g.get_tensor("model.embed_tokens.weight"))
    assert not list(out.glob("*.tmp"))


# ---- errors ---------------------------------------------------------------------------------

def test_wrong_method(converted):
    w = wrapper("AMXINT8", 1, converted("per-expert", "AMXINT4"))
    with pytest.raises(ConversionError, match=r"method is 'AMXINT4' in the converted weights but 'AMXINT8'"):
        w.load_weights()


def test_wrong_shapes(converted):
    w = KTMoEWrapper(layer_idx=1, num_experts=E, num_experts_per_tok=TOPK, hidden_size=H, moe_intermediate_size=2 * I,
                     cpuinfer_threads=THREADS, weight_path=str(converted("per-expert", "AMXINT4")), method="AMXINT4")
    with pytest.raises(ConversionError, match=rf"intermediate_size .* is {I} in the converted weights but {2 * I}"):
        w.load_weights()
    w = KTMoEWrapper(layer_idx=1, num_experts=2 * E, num_experts_per_tok=TOPK, hidden_size=H,
                     moe_intermediate_size=I, cpuinfer_threads=THREADS,
                     weight_path=str(converted("per-expert", "AMXINT4")), method="AMXINT4")
    with pytest.raises(ConversionError, match=rf"num_experts is {E} in the converted weights but {2 * E}"):
        w.load_weights()


def test_not_an_moe_layer(converted):
    with pytest.raises(ConversionError, match=r"layer_idx 0 is not among the converted MoE layers \[1, 2\]"):
        wrapper("AMXINT4", 0, converted("per-expert", "AMXINT4")).load_weights()


def test_truncated_layer_file(converted, tmp_path):
    import shutil
    out = tmp_path / "t"
    shutil.copytree(converted("per-expert", "AMXINT4"), out)
    f = out / "kt-experts-L0001.safetensors"
    os.truncate(f, f.stat().st_size - 100)
    with pytest.raises(ConversionError, match=r"kt-experts-L0001.safetensors is truncated: tensor .* ends at byte"):
        wrapper("AMXINT4", 1, out).load_weights()


def test_foreign_safetensors_file(converted, tmp_path):
    import shutil
    out = tmp_path / "f"
    shutil.copytree(converted("per-expert", "AMXINT4"), out)
    save_file({"x": torch.zeros(3)}, str(out / "kt-experts-L0001.safetensors"))
    with pytest.raises(ConversionError, match=r"metadata kt_format=None, expected '1' \(a file from another conversion"):
        wrapper("AMXINT4", 1, out).load_weights()


def test_missing_layer_in_source(tmp_path):
    src = build_checkpoint(tmp_path / "src", drop_layer=2)
    with pytest.raises(ConversionError, match=r"config.json makes layer 2 an MoE layer .*no experts for it"):
        convert_checkpoint(src, tmp_path / "out", "int4", progress=False)


def test_truncated_source_shard(tmp_path):
    src = build_checkpoint(tmp_path / "src")
    f = src / "model-00002-of-00002.safetensors"
    os.truncate(f, f.stat().st_size - 10)
    with pytest.raises(ConversionError, match=r"model-00002-of-00002.safetensors is truncated"):
        convert_checkpoint(src, tmp_path / "out", "int4", progress=False)


def test_wrong_input_type_and_nonempty_output(ckpt, tmp_path):
    with pytest.raises(ConversionError, match=r"--input-type fp8 but the expert weights .* are BF16"):
        convert_checkpoint(ckpt["per-expert"], tmp_path / "a", "int4", input_type="fp8", progress=False)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x").write_text("")
    with pytest.raises(ConversionError, match=r"exists and is not empty; pass --resume"):
        convert_checkpoint(ckpt["per-expert"], tmp_path / "b", "int4", progress=False)


def test_unfinished_conversion_does_not_load(converted, tmp_path):
    import shutil
    out = tmp_path / "u"
    shutil.copytree(converted("per-expert", "AMXINT4"), out)
    (out / "kt_kernel_meta.json").unlink()
    with pytest.raises(ValueError, match=r"has no kt_kernel_meta.json: .*conversion did not finish"):
        wrapper("AMXINT4", 1, out).load_weights()


# ---- kill, resume, memory (subprocesses) ----------------------------------------------------

_KILLER = textwrap.dedent("""
    import os, signal, sys
    from kt_kernel.convert import convert as c
    real, n = c.write_file, [0]
    def write_file(path, tensors, meta):       # killed while writing the second layer's file
        n[0] += 1
        if n[0] == 2:
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(b"partial")
            os.kill(os.getpid(), signal.SIGKILL)
        return real(path, tensors, meta)
    c.write_file = write_file
    c.convert_checkpoint(sys.argv[1], sys.argv[2], "int4", threads=2, progress=False)
""")


def test_kill_then_resume_gives_identical_files(ckpt, converted, tmp_path):
    out = tmp_path / "killed"
    r = subprocess.run([sys.executable, "-c", _KILLER, str(ckpt["per-expert"]), str(out)])
    assert r.returncode == -9
    assert (out / "kt-experts-L0001.safetensors").exists() and not (out / "kt_kernel_meta.json").exists()
    with pytest.raises(ValueError):
        wrapper("AMXINT4", 1, out).load_weights()  # an unfinished folder never loads
    script = Path(__file__).resolve().parents[1] / "scripts" / "convert_cpu_weights.py"
    r = subprocess.run([sys.executable, str(script), "--input-path", str(ckpt["per-expert"]), "--output", str(out),
                        "--quant-method", "int4", "--threads", "2", "--resume", "--no-progress"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    ref = converted("per-expert", "AMXINT4")
    names = sorted(p.name for p in ref.iterdir())
    assert sorted(p.name for p in out.iterdir()) == names
    for name in names:
        if name == "kt_kernel_meta.json":
            a, b = (json.loads((d / name).read_text()) for d in (out, ref))
            assert a == b
        else:
            assert (out / name).read_bytes() == (ref / name).read_bytes(), name


_RSS = textwrap.dedent("""
    import json, sys
    from kt_kernel.convert import convert_checkpoint, open_hf_checkpoint
    def status(field):
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    src = open_hf_checkpoint(sys.argv[1])
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")                  # resets VmHWM (peak RSS) to the current RSS
    base = status("VmRSS")
    rec = convert_checkpoint(sys.argv[1], sys.argv[2], "int4", threads=2, progress=False)
    peak = status("VmHWM")
    out_layer = max(v["bytes"] for v in rec["files"].values())
    print(json.dumps({"base": base, "peak": peak, "src_layer": src.layer_bytes(src.moe_layers[0]),
                      "out_layer": out_layer, "total_src": sum(src.layer_bytes(l) for l in src.moe_layers),
                      "seconds": rec["_stats"]["seconds"], "bytes": rec["_stats"]["source_bytes_converted"]}))
""")


def test_conversion_rss_stays_within_one_layer(tmp_path):
    # 9 MoE layers of 16 experts [256, 512] bf16: 12.6 MB of source experts per layer, 113 MB in all
    src = build_checkpoint(tmp_path / "big", layers=10, h=512, i=256, e=16)
    r = subprocess.run([sys.executable, "-c", _RSS, str(src), str(tmp_path / "out")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    bound = m["src_layer"] + m["out_layer"]
    grew = m["peak"] - m["base"]
    print(f"RSS grew {grew / 1e6:.1f} MB (bound: one source layer {m['src_layer'] / 1e6:.1f} MB + one output layer "
          f"{m['out_layer'] / 1e6:.1f} MB; all source experts {m['total_src'] / 1e6:.1f} MB); "
          f"{m['bytes'] / m['seconds'] / 1e9:.3f} GB/s")
    assert grew <= bound + 16e6, m  # fixed overhead: thread stacks, allocator arenas, first-call buffers


_LOAD_RSS = textwrap.dedent("""
    import json, sys
    from kt_kernel import KTMoEWrapper
    def status(field):
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    w = KTMoEWrapper(layer_idx=1, num_experts=16, num_experts_per_tok=2, hidden_size=1024, moe_intermediate_size=512,
                     cpuinfer_threads=2, weight_path=sys.argv[1], method="BF16", num_gpu_experts=4)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = status("VmRSS")
    w.load_weights()
    print(json.dumps({"grew": status("VmHWM") - base, "packed": w.weight_bytes}))
""")


def test_load_rss_close_to_packed_size(tmp_path):
    # one MoE layer, 16 experts [512, 1024] bf16 (50 MB), 12 of them on the CPU: mapping and reading
    # the file must not hold its pages beside the packed copy (that would be twice the packed size)
    src = build_checkpoint(tmp_path / "src", layers=2, h=1024, i=512, e=16)
    convert_checkpoint(src, tmp_path / "out", "bf16", threads=THREADS, progress=False)
    r = subprocess.run([sys.executable, "-c", _LOAD_RSS, str(tmp_path / "out")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    print(f"load RSS grew {m['grew'] / 1e6:.1f} MB for {m['packed'] / 1e6:.1f} MB of packed weights")
    assert m["grew"] <= 1.1 * m["packed"] + 8e6, m


@pytest.mark.parametrize("arch", ["deepseek_v3", "mixtral", "qwen3_moe"])
def test_tiny_models_of_the_model_driver(arch, tmp_path):
    """Checkpoints saved by transformers (kt_kernel.models): the config field names and expert key
    names of the real architectures (n_routed_experts + first_k_dense_replace, num_local_experts +
    block_sparse_moe.w1/w3/w2, num_experts + moe_intermediate_size)."""
    pytest.importorskip("transformers")
    from kt_kernel.models import architecture, build_tiny_model
    from kt_kernel.models.checkpoint import read_tensor_index

    src = build_tiny_model(arch)
    row = architecture(arch)
    cfg = json.loads((src / "config.json").read_text())
    # transformers 5 saves Qwen3-MoE's expert count as num_local_experts: read whichever is there
    e = next(cfg[f] for f in ("n_routed_experts", "num_experts", "num_local_experts") if cfg.get(f))
    h, i = cfg["hidden_size"], cfg[row.intermediate_field]
    out = tmp_path / "out"
    rec = convert_checkpoint(src, out, "int4", threads=THREADS, progress=False)
    layer = rec["moe_layers"][-1]
    assert rec["moe_layers"] == ([1, 2] if arch == "deepseek_v3" else [0, 1])
    index = read_tensor_index(src)
    from safetensors import safe_open
    ws = []
    for proj in range(3):
        ts = []
        for x in range(e):
            key = row.expert_key(layer, x, proj)
            with safe_open(str(src / index[key].file), "pt") as f:
                ts.append(f.get_tensor(key))
        ws.append(torch.stack(ts).contiguous())
    kw = dict(layer_idx=layer, num_experts=e, num_experts_per_tok=cfg["num_experts_per_tok"], hidden_size=h,
              moe_intermediate_size=i, cpuinfer_threads=THREADS, method="AMXINT4")
    a, b = KTMoEWrapper(weight_path=str(out), **kw), KTMoEWrapper(**kw)
    a.load_weights()
    b.load_weights_from_tensors(*ws)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, h, generator=g).to(torch.bfloat16)
    ids = torch.stack([torch.randperm(e, generator=g)[:kw["num_experts_per_tok"]] for _ in range(5)])
    wts = torch.rand(5, kw["num_experts_per_tok"], generator=g)
    assert torch.equal(a.forward(x, ids, wts), b.forward(x, ids, wts))


# ---- the checkpoint readers (kt_kernel.checkpoint), the loader's one way in ---------------------


def test_open_checkpoint_gives_the_reader_of_each_kind(ckpt, converted):
    """An HF folder gives float weights (stored_method None: quantized by the packer); a converted
    folder gives its format's logical arrays, those of the reference quantizer, bit for bit."""
    from kt_kernel import _ext
    from kt_kernel.checkpoint import open_checkpoint

    hf, conv = open_checkpoint(ckpt["per-expert"]), open_checkpoint(converted("per-expert", "AMXINT8"))
    assert (hf.kind, hf.stored_method, conv.kind, conv.stored_method) == ("hf", None, "converted", "AMXINT8")
    for reader in (hf, conv):
        assert (reader.num_experts, reader.hidden_size, reader.intermediate_size, reader.moe_layers) == (E, H, I, [1, 2])
    assert conv.fingerprint == hf.fingerprint  # the folder names the checkpoint it came from
    down = _expert_weights(2)[2][5].to(torch.bfloat16).to(torch.float32)
    assert torch.equal(hf.expert(2, 5, 2), down)
    want = _ext.quantize("int8_pc", down.numpy())
    with conv.layer_arrays(2, {5}) as arrays:
        assert (arrays[("down", "qweight")][5] == want["values"]).all()
        assert (arrays[("down", "scale")][5] == want["scale"]).all()
    with pytest.raises(ConversionError, match=r"method is 'AMXINT8' in the converted weights but 'AMXINT4' in this"):
        conv.check_layer(2, "AMXINT4", H, I)
    with pytest.raises(ConversionError, match=r"layer_idx 0 is not an MoE layer \(MoE layers: \[1, 2\]\)"):
        hf.check_layer(0, "AMXINT4", H, I)


# ---- cpu_save: layers quantized at load are kept, and later starts load them -------------------


@pytest.mark.parametrize("method", ["AMXINT4", "AMXINT8", "BF16"])
def test_cpu_save_from_tensors(ckpt, tmp_path, method):
    """cpu_save=True keeps the layer in weight_path, all logical experts of it (GPU slots included),
    and the output is bit-identical to a plain load_weights_from_tensors; a later wrapper with
    another GPU mask loads the saved folder with load_weights."""
    pmap, mask = MAPS["remapped"]
    weights = {layer: source_experts(ckpt["per-expert"], layer) for layer in (1, 2)}
    for layer in (1, 2):
        a = wrapper(method, layer, tmp_path / "save", gpu_experts_mask=mask, cpu_save=True)
        a.load_weights_from_tensors(*weights[layer], physical_to_logical_map=pmap)
        b = wrapper(method, layer, gpu_experts_mask=mask)
        b.load_weights_from_tensors(*weights[layer], physical_to_logical_map=pmap)
        assert torch.equal(run(a), run(b))
    meta = json.loads((tmp_path / "save" / "kt_kernel_meta.json").read_text())
    assert meta["moe_layers"] == [1, 2] and meta["method"] == method and meta["num_experts"] == E
    later = wrapper(method, 2, tmp_path / "save")  # no GPU experts now: every expert comes from the file
    later.load_weights()
    full = wrapper(method, 2)
    full.load_weights_from_tensors(*weights[2])
    assert torch.equal(run(later), run(full))


def test_cpu_save_from_checkpoint_then_reuse(ckpt, tmp_path, monkeypatch):
    """With weight_path an HF checkpoint and cpu_save=FOLDER, the first load quantizes and saves; a
    second wrapper with the same arguments loads the saved layer without quantizing anything."""
    import kt_kernel.loading as load_mod

    pmap, mask = MAPS["remapped"]
    save = tmp_path / "saved"
    a = wrapper("AMXINT4", 1, ckpt["per-expert"], gpu_experts_mask=mask, cpu_save=str(save))
    a.load_weights(pmap)
    plain = wrapper("AMXINT4", 1, ckpt["per-expert"], gpu_experts_mask=mask)
    plain.load_weights(pmap)
    assert torch.equal(run(a), run(plain))
    first = (save / "kt-experts-L0001.safetensors").stat().st_mtime_ns

    def no_quantizing(*args, **kw):
        raise AssertionError("the saved layer should have been loaded, not quantized again")
    monkeypatch.setattr(load_mod, "save_layer", no_quantizing)
    b = wrapper("AMXINT4", 1, ckpt["per-expert"], gpu_experts_mask=mask, cpu_save=save)
    b.load_weights(pmap)
    assert torch.equal(run(b), run(plain))
    assert (save / "kt-experts-L0001.safetensors").stat().st_mtime_ns == first


def test_cpu_save_errors(ckpt, tmp_path):
    with pytest.raises(TypeError, match="cpu_save must be False, True or a folder path"):
        wrapper("AMXINT4", 1, cpu_save=3)
    with pytest.raises(ValueError, match="pass cpu_save=FOLDER"):
        wrapper("AMXINT4", 1, ckpt["per-expert"], cpu_save=True).load_weights()
    with pytest.raises(ValueError, match="no weight_path was given"):
        wrapper("AMXINT4", 1, cpu_save=True).load_weights_from_tensors(*source_experts(ckpt["per-expert"], 1))
    with pytest.raises(ConversionError, match="which kt_kernel did not write"):
        wrapper("AMXINT4", 1, ckpt["fused"], cpu_save=ckpt["per-expert"]).load_weights()
    # a folder holds one conversion: another method, or layers from another checkpoint, raise
    save = tmp_path / "one"
    wrapper("AMXINT8", 1, ckpt["per-expert"], cpu_save=save).load_weights()
    with pytest.raises(ConversionError, match="method is 'AMXINT8' there but 'AMXINT4' here"):
        wrapper("AMXINT4", 2, ckpt["per-expert"], cpu_save=save).load_weights()
    with pytest.raises(ConversionError, match="source.fingerprint is"):
        wrapper("AMXINT8", 2, ckpt["fused"], cpu_save=save).load_weights()
    assert json.loads((save / "kt_kernel_meta.json").read_text())["moe_layers"] == [1]


def test_many_shards_and_layers(tmp_path):
    """Six MoE layers over five shards, each layer's experts spread over several shards, fused
    fp8 and per-expert bf16: every layer converts and loads bit-identically to
    load_weights_from_tensors; non-expert tensors are copied byte for byte into files split at
    --max-shard-gb."""
    from safetensors import safe_open
    for kind in ("per-expert", "fused-fp8"):
        _, layout, dtype = KINDS[kind]
        src = build_checkpoint(tmp_path / kind, layout=layout, dtype=dtype, layers=7, shards=5)
        assert len(list(src.glob("*.safetensors"))) == 5
        out = tmp_path / f"{kind}-out"
        cli = Path(__file__).resolve().parents[1] / "scripts" / "convert_cpu_weights.py"
        r = subprocess.run([sys.executable, str(cli), "--input-path", str(src), "--output", str(out),
                            "--quant-method", "int4", "--threads", "2", "--no-progress", "--max-shard-gb", "1e-6"],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        meta = json.loads((out / "kt_kernel_meta.json").read_text())
        assert meta["moe_layers"] == [1, 2, 3, 4, 5, 6]
        for layer in meta["moe_layers"]:
            a = wrapper("AMXINT4", layer, out)
            a.load_weights()
            b = wrapper("AMXINT4", layer)
            b.load_weights_from_tensors(*source_experts(src, layer, dtype))
            assert torch.equal(run(a, seed=layer), run(b, seed=layer)), (kind, layer)
        src_index = json.loads((src / "model.safetensors.index.json").read_text())["weight_map"]
        out_index = json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
        nonexpert = [k for k in src_index if ".experts." not in k]
        files = {out_index[k] for k in nonexpert}
        assert len(files) == len(nonexpert)  # 1 kB shards: every tensor has a file of its own
        for k in nonexpert:
            with safe_open(str(src / src_index[k]), "pt") as f, safe_open(str(out / out_index[k]), "pt") as g:
                assert torch.equal(f.get_tensor(k), g.get_tensor(k)), k


def test_nan_weights_name_the_expert_and_large_weights_convert(tmp_path):
    from safetensors.torch import load_file
    src = build_checkpoint(tmp_path / "src", layers=2)

    def edit(key, fn):
        shard = next(f for f in src.glob("*.safetensors") if key in load_file(f))
        tensors = load_file(shard)
        fn(tensors[key])
        save_file(tensors, str(shard))
    nan_key = "model.layers.1.mlp.experts.3.up_proj.weight"
    edit(nan_key, lambda t: t.__setitem__((5, 7), float("nan")))
    # finite weights whose sum overflows fp32 must not be taken for Inf
    edit("model.layers.1.mlp.experts.2.up_proj.weight", lambda t: t.fill_(3e38))
    with pytest.raises(ConversionError, match=r"layer 1 expert 3 up: NaN or Inf at \[5, 7\]"):
        convert_checkpoint(src, tmp_path / "bad", "int8", threads=THREADS, progress=False)
    edit(nan_key, lambda t: t.__setitem__((5, 7), 0.0))
    convert_checkpoint(src, tmp_path / "good", "int8", threads=THREADS, progress=False)
