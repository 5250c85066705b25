"""convert_gpu_weights (scripts/convert_gpu_weights.py): GPTQ of the GPU side on the CPU, layer by
layer, written in compressed-tensors' pack-quantized format. On the tiny reference models: the
output loads with transformers (decompressed on the CPU by compressed-tensors) to exactly the
weights compressed-tensors' decompressor gives; GPTQ's output error on the calibration inputs is
below round-to-nearest's for every quantized weight, and the whole model's KL against fp32 is below
RTN's; a run killed after a layer resumes to the same bytes; bad inputs are clear errors."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("compressed_tensors")

import transformers  # noqa: E402
from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor  # noqa: E402
from compressed_tensors.quantization import QuantizationConfig  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from kt_kernel.gpu_convert import GpuQuantSettings, convert_gpu_weights  # noqa: E402
from kt_kernel.gpu_convert.cli import main as cli_main  # noqa: E402
from kt_kernel.gpu_convert.convert import REPORT_NAME, WORK_DIR  # noqa: E402
from kt_kernel.gpu_convert.load import decompressed_state_dict  # noqa: E402
from kt_kernel.integrations.transformers import _model_on_meta  # noqa: E402
from kt_kernel.models.checkpoint import unquantized_config  # noqa: E402
from kt_kernel.models import PrintableTokenizer, UnsupportedModelError, logit_agreement, teacher_forced_logits  # noqa: E402
from kt_kernel.models.compare import REFERENCE_PROMPT  # noqa: E402
from kt_kernel.models.errors import CheckpointError  # noqa: E402
from kt_kernel.threads import torch_threads  # noqa: E402

ARCHS = ["qwen3_moe", "deepseek_v3", "mixtral"]
# small calibration, fast: 8 windows of 64 tokens (the default is 128 x 512)
FAST = dict(group_size=32, num_samples=8, max_length=64)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with torch_threads(1):  # the same bytes whatever the machine's core count
        yield


@pytest.fixture(scope="module")
def converted(tiny, tmp_path_factory):
    """(arch, algorithm, extra settings) -> (output folder, report), each converted once."""
    done = {}

    def get(arch, algorithm="gptq", **extra):
        key = (arch, algorithm, tuple(sorted(extra.items())))
        if key not in done:
            out = tmp_path_factory.mktemp("gpu") / f"{arch}-{algorithm}"
            report = convert_gpu_weights(tiny(arch), out, GpuQuantSettings(**{**FAST, **extra}, algorithm=algorithm))
            done[key] = out, report
        return done[key]
    return get


def _load(folder: Path):
    """The checkpoint in transformers, every weight decompressed to a plain float tensor on the CPU."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "the model already has a quantization_config": only dequantize is taken
        return transformers.AutoModelForCausalLM.from_pretrained(
            str(folder), dtype=torch.float32, quantization_config=transformers.CompressedTensorsConfig(dequantize=True))


def _tensors(folder: Path) -> dict:
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def _scheme(folder: Path):
    cfg = QuantizationConfig.model_validate(json.loads((folder / "config.json").read_text())["quantization_config"])
    return cfg.config_groups["group_0"]


def _decompressed(tensors: dict, base: str, scheme) -> torch.Tensor:
    local = {k[len(base) + 1:]: v for k, v in tensors.items() if k.startswith(base + ".weight_")}
    return PackedQuantizationCompressor.decompress(local, scheme)["weight"]


@pytest.mark.parametrize("arch", ARCHS)
def test_output_loads_in_transformers_as_compressed_tensors_decompresses_it(arch, converted, tiny):
    out, report = converted(arch)
    tensors, scheme = _tensors(out), _scheme(out)
    model = _load(out)
    params = dict(model.named_parameters())
    quantized = sorted({r["module"] for r in report["rows"]})
    assert quantized and all(f"{m}.weight_packed" in tensors and f"{m}.weight" not in tensors for m in quantized)
    source = _tensors(tiny(arch))
    kept = [k for k in source if k.rsplit(".", 1)[0] not in quantized]
    assert all(torch.equal(tensors[k], source[k]) for k in kept)  # the rest is copied as stored
    checked = 0
    for m in quantized:
        w = _decompressed(tensors, m, scheme).float()
        if ".experts." in m:  # transformers stacks the experts into gate_up_proj [E, 2I, H] / down_proj [E, H, I]
            layer_block, e, proj = m.rsplit(".", 2)
            e = int(e)
            block = layer_block.replace("block_sparse_moe", "mlp")
            if proj in ("down_proj", "w2"):
                got = params[f"{block}.down_proj"][e]
            else:
                I = params[f"{block}.gate_up_proj"].shape[1] // 2
                got = params[f"{block}.gate_up_proj"][e, :I] if proj in ("gate_proj", "w1") else \
                    params[f"{block}.gate_up_proj"][e, I:]
        else:
            got = params[m.replace("block_sparse_moe", "mlp") + ".weight"]
        assert torch.equal(got.detach(), w), m
        checked += 1
    assert checked == len(quantized)
    with torch.no_grad():
        logits = model(torch.arange(16)[None]).logits
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("arch", ARCHS)
def test_gptq_beats_round_to_nearest_on_every_weight_and_the_model(arch, converted, tiny):
    _, report = converted(arch)
    rows = report["rows"]
    kinds = {r["kind"] for r in rows}
    assert "routed expert" in kinds and "attention" in kinds
    worse = [r for r in rows if not r["error"] < r["rtn_error"]]
    assert not worse, worse[:3]
    assert all(r["tokens"] >= 0 and isinstance(r["fallback"], bool) for r in rows if r["kind"] == "routed expert")
    ids = torch.tensor(PrintableTokenizer().encode(REFERENCE_PROMPT))
    with torch.no_grad():
        ref = teacher_forced_logits(transformers.AutoModelForCausalLM.from_pretrained(str(tiny(arch)),
                                                                                      dtype=torch.float32), ids)
        kl = {}
        for alg in ("gptq", "rtn"):
            model = _load(converted(arch, alg)[0])
            kl[alg] = logit_agreement(teacher_forced_logits(model, ids), ref).kl_mean
    assert kl["gptq"] < kl["rtn"], kl


@pytest.mark.parametrize("extra", [dict(quant_type="W8A16", group_size=0), dict(symmetric=False),
                                   dict(act_order=True)], ids=["w8a16-channel", "asym", "act-order"])
def test_other_settings_load_and_beat_round_to_nearest(extra, converted):
    out, report = converted("qwen3_moe", **extra)
    worse = [r for r in report["rows"] if not r["error"] < r["rtn_error"]]
    assert not worse, worse[:3]
    weights = _scheme(out).weights
    assert weights.num_bits == (8 if extra.get("quant_type") == "W8A16" else 4)
    assert weights.symmetric == extra.get("symmetric", True)
    assert (weights.actorder is not None) == extra.get("act_order", False)
    tensors = _tensors(out)
    asym = not extra.get("symmetric", True)
    assert any(k.endswith("weight_zero_point") for k in tensors) == asym
    q = "model.layers.0.self_attn.q_proj"
    e = "model.layers.0.mlp.experts.3.down_proj"
    # kt_kernel's reader (load_hybrid_model's): compressed-tensors' decompressor on every weight
    model = _model_on_meta(unquantized_config(out), lambda m: decompressed_state_dict(out, m), torch.float32, "eager")
    params = dict(model.named_parameters())
    assert torch.equal(params[q + ".weight"].detach(), _decompressed(tensors, q, _scheme(out)).float())
    assert torch.equal(params["model.layers.0.mlp.experts.down_proj"][3].detach(),
                       _decompressed(tensors, e, _scheme(out)).float())
    if asym:  # transformers 5.25 stacks asymmetric routed experts without their zero points and fails
        return
    model = _load(out)
    assert torch.equal(dict(model.named_parameters())[q + ".weight"].detach(),
                       _decompressed(tensors, q, _scheme(out)).float())


def test_shards_and_index(tiny, tmp_path):
    out = tmp_path / "sharded"
    convert_gpu_weights(tiny("qwen3_moe"), out, GpuQuantSettings(**FAST, algorithm="rtn", max_shard_size=300_000))
    index = json.loads((out / "model.safetensors.index.json").read_text())
    files = sorted(p.name for p in out.glob("*.safetensors"))
    assert len(files) > 2 and set(index["weight_map"].values()) == set(files)
    assert all(p.stat().st_size <= 300_000 + 4096 or len(load_file(str(p))) == 1 for p in out.glob("*.safetensors"))
    _load(out)
    assert not (out / WORK_DIR).exists() and (out / REPORT_NAME).exists()


_KILLED = """
import os, signal, sys
from kt_kernel.gpu_convert import GpuQuantSettings, convert_gpu_weights
from kt_kernel.threads import torch_threads
def stop(i):
    os.kill(os.getpid(), signal.SIGKILL)
with torch_threads(1):
    convert_gpu_weights(sys.argv[1], sys.argv[2], GpuQuantSettings(group_size=32, num_samples=8, max_length=64),
                        on_layer=stop)
"""


def _digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_a_killed_run_resumes_to_the_same_bytes(tiny, converted, tmp_path):
    src = tiny("qwen3_moe")
    whole, _ = converted("qwen3_moe")
    out = tmp_path / "resumed"
    r = subprocess.run([sys.executable, "-c", _KILLED, str(src), str(out)], capture_output=True, text=True)
    assert r.returncode == -9, r.stderr[-2000:]
    state = json.loads((out / WORK_DIR / "state.json").read_text())
    assert state["done"] == 0 and not (out / "model.safetensors").exists()
    with pytest.raises(FileExistsError, match="other settings"):
        convert_gpu_weights(src, out, GpuQuantSettings(**{**FAST, "group_size": 64}))
    seen = []
    convert_gpu_weights(src, out, GpuQuantSettings(**FAST), on_layer=seen.append)
    assert seen == [1]  # layer 0 was not redone
    a, b = _digest(whole), _digest(out)
    a.pop(REPORT_NAME), b.pop(REPORT_NAME)  # it holds the seconds each layer took
    assert a == b


def test_bad_inputs_are_clear_errors(tiny, tmp_path, capsys):
    src = tiny("qwen3_moe")
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        convert_gpu_weights(tmp_path / "nowhere", tmp_path / "o1")
    (tmp_path / "plain").mkdir()
    with pytest.raises(CheckpointError, match="has no config.json"):
        convert_gpu_weights(tmp_path / "plain", tmp_path / "o2")
    with pytest.raises(ValueError, match="quant_type='W3A16': supported W4A16, W8A16"):
        GpuQuantSettings(quant_type="W3A16")
    with pytest.raises(ValueError, match=r"model\.layers\.0\.self_attn\.q_b_proj: group_size=128 does not divide its "
                                         r"input dimension 64"):
        convert_gpu_weights(tiny("deepseek_v3"), tmp_path / "o3", GpuQuantSettings(num_samples=2, max_length=32))
    assert not (tmp_path / "o3").exists()  # refused before anything was written
    user = tmp_path / "users"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="is not empty"):
        convert_gpu_weights(src, user, GpuQuantSettings(**FAST))
    assert (user / "notes.txt").read_text() == "mine"
    with pytest.raises(UnsupportedModelError, match="gpt-oss stores its experts fused"):
        convert_gpu_weights(tiny("gpt_oss"), tmp_path / "o4", GpuQuantSettings(**FAST))
    # the command line: exit status 2 and the message, no traceback
    assert cli_main(["--model_id", str(tmp_path / "nowhere"), "--output_dir", str(tmp_path / "o5")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["--model_id", str(src), "--output_dir", str(tmp_path / "o6"), "--quant_type", "W3A16"])
    assert cli_main(["--model_id", str(src), "--output_dir", str(tmp_path / "o7"), "--max_sequence_length", "100000"]) == 2
    assert "fewer than max_length=100000" in capsys.readouterr().err


def test_already_quantized_source_is_refused(converted, tmp_path):
    out, _ = converted("qwen3_moe")
    with pytest.raises(CheckpointError, match="already quantized"):
        convert_gpu_weights(out, tmp_path / "again", GpuQuantSettings(**FAST))


def test_command_line_writes_the_checkpoint(tiny, tmp_path, capsys):
    out = tmp_path / "cli"
    assert cli_main(["--model_id", str(tiny("mixtral")), "--output_dir", str(out), "--group_size", "32",
                     "--num_calibration_samples", "4", "--max_sequence_length", "32", "--no-progress",
                     "--ignore", "re:.*self_attn.o_proj$"]) == 0
    text = capsys.readouterr().out
    assert "W4A16 gptq (group 32, symmetric)" in text and "routed expert" in text
    tensors = _tensors(out)
    assert "model.layers.0.self_attn.o_proj.weight" in tensors  # ignored: kept as stored
    assert "model.layers.0.self_attn.q_proj.weight_packed" in tensors
    cfg = json.loads((out / "config.json").read_text())["quantization_config"]
    assert cfg["quant_method"] == "compressed-tensors" and cfg["format"] == "pack-quantized"
    assert "re:.*self_attn.o_proj$" in cfg["ignore"] and "lm_head" in cfg["ignore"]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    r = subprocess.run([sys.executable, str(Path(__file__).resolve().parents[1] / "scripts" / "convert_gpu_weights.py"),
                        "--help"], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and "--quant_type" in r.stdout


@pytest.mark.parametrize("arch", ["qwen3_moe", "deepseek_v3"])
def test_hybrid_gpu_side_from_gptq_cpu_side_from_the_cpu_converter(arch, converted, tiny, tmp_path):
    """README "Hybrid: quantize both sides": the GPU side (attention, dense and shared MLPs, the
    first 8 experts of each MoE layer) from convert_gpu_weights.py, the other experts from
    convert_cpu_weights.py's int4 through kt_kernel. Small perturbations of the logits add up, so
    the hybrid's KL against fp32 stays within twice the sum of each side's alone."""
    from kt_kernel.convert import convert_checkpoint
    from kt_kernel.integrations.transformers import kt_layers, load_hybrid_model, load_model, load_reference

    src = tiny(arch)
    cpu = tmp_path / "cpu-int4"
    convert_checkpoint(src, cpu, "int4", progress=False)
    ids = torch.tensor(PrintableTokenizer().encode(REFERENCE_PROMPT))
    with torch.no_grad():
        ref = teacher_forced_logits(load_reference(src), ids)
        kl, models = {}, {}
        for alg in ("gptq", "rtn"):
            gpu = converted(arch, alg)[0]
            models[alg] = model = load_hybrid_model(gpu, cpu, "AMXINT4", num_gpu_experts=8, dtype=torch.float32)
            layers = kt_layers(model)
            assert layers and all(k.num_gpu_experts == 8 and k.wrapper.weight_path == str(cpu) for k in layers)
            kl[alg] = logit_agreement(teacher_forced_logits(model, ids), ref)
        gpu_only = logit_agreement(teacher_forced_logits(_load(converted(arch)[0]), ids), ref).kl_mean
        cpu_only = logit_agreement(teacher_forced_logits(load_model(src, "AMXINT4", dtype=torch.float32), ids),
                                   ref).kl_mean
    assert kl["gptq"].kl_mean < kl["rtn"].kl_mean, kl
    assert kl["gptq"].kl_mean <= 2 * (gpu_only + cpu_only), (kl["gptq"], gpu_only, cpu_only)
    # the GPU experts are the GPTQ weights as transformers decompressed them
    tensors, scheme = _tensors(converted(arch)[0]), _scheme(converted(arch)[0])
    layer = kt_layers(models["gptq"])[0].layer_idx
    module = [m for n, m in models["gptq"].named_modules() if n == f"model.layers.{layer}.mlp.experts"][0]
    down = _decompressed(tensors, f"model.layers.{layer}.mlp.experts.5.down_proj", scheme).float()
    assert torch.equal(module.kt_gpu_down[5], down)
    # an asymmetric GPU side, which transformers' own loader cannot stack, runs too
    asym = load_hybrid_model(converted(arch, symmetric=False)[0], cpu, "AMXINT4", num_gpu_experts=8,
                             dtype=torch.float32)
    with torch.no_grad():
        kl_asym = logit_agreement(teacher_forced_logits(asym, ids), ref).kl_mean
    assert kl_asym <= 2 * (gpu_only + cpu_only), (kl_asym, gpu_only, cpu_only)


def test_fp8_release_as_the_source(tiny, tmp_path):
    """DeepSeek-V3 ships FP8: its e4m3 weights are decoded with their block scales (torch's
    float8_e4m3fn times weight_scale_inv) and quantized; the scales are not copied, and an FP8
    weight left unquantized is written decoded, in bf16."""
    from kt_kernel.checkpoint.hf import dequantize_fp8
    from kt_kernel.integrations.transformers import load_fp8_reference
    from kt_kernel.models.fp8_model import write_fp8_release

    rel = write_fp8_release(tiny("deepseek_v3"), tmp_path / "fp8")
    ids = torch.tensor(PrintableTokenizer().encode(REFERENCE_PROMPT))
    kl = {}
    with torch.no_grad():
        ref = teacher_forced_logits(load_fp8_reference(rel), ids)
        for alg in ("gptq", "rtn"):
            out = tmp_path / alg
            convert_gpu_weights(rel, out, GpuQuantSettings(**FAST, algorithm=alg, ignore=("re:.*self_attn.o_proj$",)))
            kl[alg] = logit_agreement(teacher_forced_logits(_load(out), ids), ref).kl_mean
    assert kl["gptq"] < kl["rtn"], kl
    tensors, source = _tensors(tmp_path / "gptq"), _tensors(rel)
    assert not [k for k in tensors if k.endswith("_scale_inv")]
    o = "model.layers.1.self_attn.o_proj.weight"
    assert source[o].dtype == torch.float8_e4m3fn and tensors[o].dtype == torch.bfloat16
    block = tuple(json.loads((rel / "config.json").read_text())["quantization_config"]["weight_block_size"])
    assert torch.equal(tensors[o], dequantize_fp8(source[o], source[o + "_scale_inv"], block).to(torch.bfloat16))
    assert "model.layers.1.mlp.experts.3.up_proj.weight_packed" in tensors
