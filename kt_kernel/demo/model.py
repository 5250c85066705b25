"""Generate text with a whole MoE model whose routed experts run on kt_kernel, and check it.

With no files: builds a tiny model of a real MoE architecture (random seeded weights, Hugging
Face layout) in a cache folder, loads it with transformers, quantizes the experts of every MoE
layer into kt_kernel (--method), generates from a prompt with the experts on kt_kernel, and
prints the method and ISA tier used, prefill and decode tokens/s, and the agreement with the
same checkpoint run by transformers' eager experts in fp32 (top-1 agreement and KL at every
position of the prompt and the generated text, teacher-forced; and whether each decoded token is
the reference's argmax). For the tiny models it ends with PASS or FAIL against the bounds of
kt_kernel.models.AGREEMENT_BOUNDS. --model runs a real HF MoE checkpoint instead (its tokenizer
files, bf16). --gguf PATH runs a model from a GGUF file, its routed experts as the file stores
them (method LLAMAFILE): a whole model (written by kt_kernel for its tiny models: with no file at
PATH the demo first writes the tiny model there, experts in --gguf-types, the rest q8_0) runs from
the file alone, everything outside the experts dequantized, against the whole file dequantized
in fp32; a file of experts only takes the rest of the model from its Hugging Face folder (the
tiny model, or --model), against that model with gguf's dequantization of the experts.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
from tqdm import tqdm

import kt_kernel
from kt_kernel.checkpoint import is_converted
from kt_kernel.checkpoint.ct_int4 import INT4_RELEASE_METHODS
from kt_kernel.isa_option import add_isa_argument, apply_isa_argument
from kt_kernel.timing import Stopwatch, step

__all__ = ["main", "parse_args"]


def parse_args(argv=None):
    from kt_kernel.models.architectures import ARCHITECTURES

    p = argparse.ArgumentParser(prog="kt-kernel-demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="deepseek_v3", choices=list(ARCHITECTURES),
                   help="architecture of the tiny model (default deepseek_v3)")
    p.add_argument("--model", default=None, metavar="PATH",
                   help="a Hugging Face MoE checkpoint folder (safetensors + tokenizer) to run instead of a tiny model")
    p.add_argument("--method", default="AMXINT4", choices=[*kt_kernel.METHODS, *INT4_RELEASE_METHODS],
                   help="weight format of the experts on kt_kernel (default AMXINT4)")
    p.add_argument("--gguf", default=None, metavar="PATH",
                   help="run the model of this GGUF file, its routed experts as stored (method LLAMAFILE; the tiny "
                        "model is written there first if it does not exist)")
    p.add_argument("--gguf-types", default="q4_K,q6_K", metavar="GATE_UP,DOWN",
                   help="GGUF types of the tiny model's experts written for --gguf (default q4_K,q6_K)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for kt_kernel and torch (default: all cores)")
    p.add_argument("--gpu-experts", type=int, default=0, metavar="N",
                   help="keep the first N experts of every MoE layer in torch on the model's device (default 0)")
    p.add_argument("--device", default="cpu", help="device of the model outside the kt_kernel experts (default cpu)")
    p.add_argument("--prompt", default=None, help="prompt text (default: a paragraph about MoE inference)")
    p.add_argument("--max-new-tokens", type=int, default=32, help="tokens to generate greedily (default 32)")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default=None,
                   help="dtype of the model outside the experts (default: float32 for tiny models, bfloat16 "
                        "for --model)")
    p.add_argument("--no-reference", action="store_true",
                   help="skip the fp32 reference (it needs the whole model in fp32 memory)")
    p.add_argument("--seed", type=int, default=0, help="seed of the tiny model's weights (default 0)")
    p.add_argument("--cache-dir", default=None, help="where tiny models are built (default $KT_KERNEL_CACHE or "
                                                     "~/.cache/kt_kernel)")
    add_isa_argument(p)
    args = p.parse_args(argv)
    if args.threads is not None and args.threads <= 0:
        p.error(f"--threads must be positive, got {args.threads}")
    if args.gpu_experts < 0:
        p.error(f"--gpu-experts must be >= 0, got {args.gpu_experts}")
    if args.max_new_tokens <= 0:
        p.error(f"--max-new-tokens must be positive, got {args.max_new_tokens}")
    try:
        device = torch.device(args.device)
    except RuntimeError as e:
        p.error(f"--device {args.device!r} is not a torch device: {e}")
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error(f"--device {args.device}: this torch build sees no CUDA device (torch.cuda.is_available() is "
                "False); use --device cpu")
    if args.model is not None:
        _refuse_converted_folder(p, args.model)
    types = args.gguf_types.split(",")
    if len(types) != 2:
        p.error(f"--gguf-types takes two GGUF types, GATE_UP,DOWN (e.g. q4_K,q6_K), not {args.gguf_types!r}")
    args.gguf_types = types
    if args.gguf is not None and args.model is not None and not Path(args.gguf).exists():
        p.error(f"--gguf {args.gguf} does not exist (the demo writes a GGUF file only for its tiny models)")
    apply_isa_argument(p, args)
    return args


def _refuse_converted_folder(p: argparse.ArgumentParser, path: str) -> None:
    """--model takes a Hugging Face checkpoint; a kt_kernel converted folder is refused by name."""
    if not is_converted(path):
        return
    origin = ""
    try:
        origin = json.loads((Path(path) / "kt_kernel_meta.json").read_text())["source"]["path"]
        origin = f" (this one was converted from {origin})"
    except (OSError, ValueError, KeyError, TypeError):
        pass
    p.error(f"--model {path} is a folder converted by kt-convert-cpu-weights; the demo needs the Hugging Face "
            f"checkpoint (config.json, safetensors, tokenizer){origin}. The demo has no option that takes converted "
            "weights: they load through KTMoEWrapper(weight_path=...)")


def main(argv=None) -> int:
    args = parse_args(argv)
    from kt_kernel.models import CheckpointError, UnsupportedModelError
    from kt_kernel.models._deps import require_transformers

    try:
        transformers = require_transformers()
    except ImportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    transformers.utils.logging.disable_progress_bar()
    try:
        return _run(args)
    except (CheckpointError, UnsupportedModelError, FileNotFoundError, ValueError) as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return 2


def _run(args) -> int:
    from kt_kernel.integrations.transformers import (kt_layers, load_fp8_model, load_fp8_reference, load_gguf_model,
                                                     load_gguf_reference, load_int4_model, load_int4_reference,
                                                     load_model, load_mxfp4_model, load_mxfp4_reference,
                                                     load_reference)
    from kt_kernel.checkpoint.ct_int4 import is_compressed_int4
    from kt_kernel.checkpoint.mxfp4 import is_mxfp4
    from kt_kernel.models.int4_model import write_int4_release
    from kt_kernel.models.fp8_model import write_fp8_release
    from kt_kernel.models.mxfp4_model import write_mxfp4_release
    from kt_kernel.models import (AGREEMENT_BOUNDS, ARCHITECTURES, build_tiny_model, check_greedy, generate_greedy,
                                  inspect_checkpoint, load_tokenizer, logit_agreement, teacher_forced_logits)
    from kt_kernel.models.compare import REFERENCE_PROMPT, format_agreement_bounds
    from kt_kernel.models.gguf_model import is_model_gguf, write_model_gguf

    clock = Stopwatch()
    tiny = args.model is None
    dtype = getattr(torch, args.dtype or ("float32" if tiny else "bfloat16"))
    info = kt_kernel.cpu_info()
    print("kt_kernel demo: an MoE model generating text with its routed experts on kt_kernel")
    print(f"CPU: {info['brand']} ({info['vendor']}); best tier {info['best_tier']}; AMX: {info['amx']}")

    gguf = args.gguf
    method = "LLAMAFILE" if gguf else args.method
    whole = gguf is not None and (is_model_gguf(gguf) if Path(gguf).exists() else tiny)
    if whole and Path(gguf).exists():
        if not tiny:
            raise ValueError(f"--gguf {gguf} holds a whole model; --model {args.model} would not be read: drop it")
        path = gguf
    elif tiny:
        # GGUF K-quants need rows of whole 256-weight super-blocks: the tiny model's I becomes 256
        overrides = {ARCHITECTURES[args.arch].intermediate_field: 256} if gguf else {}
        with step(f"building the tiny {args.arch} model (random weights, seed {args.seed})"):
            path = build_tiny_model(args.arch, seed=args.seed, cache_dir=args.cache_dir, **overrides)
        if whole:
            gate_up, down = args.gguf_types
            with step(f"writing it to {gguf} ({gate_up} gate/up, {down} down, the rest q8_0)"):
                write_model_gguf(path, gguf, gate_up=gate_up, down=down, other="q8_0")
        elif method == "FP8":
            release = path.parent / f"{path.name}-fp8-release"
            if not (release / "config.json").exists():
                with step(f"writing it as an FP8 release (e4m3 linear weights, 128 x 128 block scales) to {release}"):
                    _write_release(write_fp8_release, path, release)
            path = release
        elif method in INT4_RELEASE_METHODS:
            release = path.parent / f"{path.name}-int4-release"
            if not (release / "config.json").exists():
                with step(f"writing it as a compressed-tensors int4 release (Kimi-K2-Thinking's scheme) to {release}"):
                    _write_release(write_int4_release, path, release)
            path = release
        elif method == "MXFP4" and args.arch == "gpt_oss":
            release = path.parent / f"{path.name}-mxfp4-release"
            if not (release / "config.json").exists():
                with step(f"writing it as gpt-oss's MXFP4 release (e2m1 experts, a ue8m0 scale per 32) to {release}"):
                    _write_release(write_mxfp4_release, path, release)
            path = release
    else:
        path = args.model
    fp8 = not whole and _is_fp8_release(path)
    if fp8 and method != "FP8":
        raise ValueError(f"--model {path} is an FP8 release: run it with --method FP8 (its experts as stored)")
    mxfp4 = not whole and is_mxfp4(path)
    if mxfp4 and method != "MXFP4":
        raise ValueError(f"--model {path} is an MXFP4 release: run it with --method MXFP4 (its experts as stored)")
    int4 = not whole and is_compressed_int4(path)
    if int4 != (method in INT4_RELEASE_METHODS):
        raise ValueError(f"--model {path} is a compressed-tensors int4 release: run it with --method "
                         f"{' or '.join(INT4_RELEASE_METHODS)} (its experts as stored)" if int4 else
                         f"--method {method} runs compressed-tensors int4 releases as stored; {path} is not one")
    if whole:
        model_name, num_experts, tokenizer = _describe_gguf(gguf)
        tiny = True  # the demo writes (and so reads) only its tiny models as whole GGUF files
    elif fp8:
        model_name, num_experts, tokenizer = _describe_fp8(path)
    elif mxfp4:
        model_name, num_experts, tokenizer = _describe_mxfp4(path)
    elif int4:
        model_name, num_experts, tokenizer = _describe_int4(path)
    else:
        ckpt = inspect_checkpoint(path)
        model_name, num_experts, tokenizer = ckpt.describe(), ckpt.num_experts, load_tokenizer(path)
    noise = "  (random weights: the text is noise)" if tiny else ""
    print(f"model: {model_name}\n       {gguf if whole else path}{noise}")
    if args.gpu_experts > num_experts:
        raise ValueError(f"--gpu-experts {args.gpu_experts} exceeds the {num_experts} experts of a layer")
    prompt = tokenizer.encode(args.prompt if args.prompt is not None else REFERENCE_PROMPT)
    if not prompt:
        raise ValueError("the prompt encodes to no tokens")

    ref = None
    if not args.no_reference:
        what = ("the whole GGUF file dequantized" if whole else "the whole FP8 release decoded" if fp8 else
                "the MXFP4 release's experts decoded" if mxfp4 else
                "the int4 release's experts decoded" if int4 else
                "eager experts" + (", the GGUF experts dequantized" if gguf else ""))
        with step(f"loading the fp32 reference (transformers, {what})"):
            ref = (load_gguf_reference(gguf, device=args.device) if whole else
                   load_fp8_reference(path, device=args.device) if fp8 else
                   load_mxfp4_reference(path, device=args.device) if mxfp4 else
                   load_int4_reference(path, device=args.device) if int4 else
                   load_reference(path, device=args.device, gguf_experts=gguf, num_gpu_experts=args.gpu_experts))
    doing = (f"loading its experts from {gguf}" if gguf else "loading its e4m3 experts as stored" if fp8 else
             "loading its MXFP4 experts as stored" if mxfp4 else
             "loading its int4 experts as stored" if int4 else f"quantizing its experts to {method}")
    with step(f"loading the model in {str(dtype).replace('torch.', '')} and {doing}"):
        options = dict(dtype=dtype, device=args.device, num_gpu_experts=args.gpu_experts, cpuinfer_threads=args.threads)
        model = (load_gguf_model(gguf, **options) if whole else load_fp8_model(path, **options) if fp8 else
                 load_mxfp4_model(path, **options) if mxfp4 else
                 load_int4_model(path, method, **options) if int4 else
                 load_model(path, method, **options, **({"weight_path": gguf} if gguf else {})))
    layers = kt_layers(model)
    threads = next((lay.wrapper.cpuinfer_threads for lay in layers if lay.wrapper is not None), args.threads)
    if threads:
        torch.set_num_threads(threads)

    n = args.max_new_tokens
    what, took = f"generating {n} tokens greedily after a {len(prompt)}-token prompt", Stopwatch()
    # the bar stands in for the step's line on a terminal only (disable=None) and is cleared when
    # done, so that the output reads as the other steps' lines, on a terminal or in a log
    with tqdm(total=n, desc=f"  {what}", unit="token", leave=False, disable=None) as bar:
        generate_greedy(model, prompt[:16], 2)  # warm-up: first-call costs stay out of the timings
        gen = generate_greedy(model, prompt, n, on_step=lambda i: bar.update(i - bar.n))
    print(f"  {what}... done ({took.seconds:.1f} s)", flush=True)
    cpu_layers = [lay for lay in layers if lay.wrapper is not None]
    formats = sorted({f for lay in cpu_layers for f in lay.wrapper.formats})
    # a GGUF file's types and an int4 release's int4_g32_zp are stored formats: their records bound
    # the agreement with the same weights decoded, the demo's reference for them
    bounds = (format_agreement_bounds(*formats) if gguf or method in INT4_RELEASE_METHODS else
              AGREEMENT_BOUNDS[method])
    agreement = greedy = None
    if ref is not None:
        with step("running both models teacher-forced over prompt + generated text"):
            seq = torch.tensor(prompt + gen.tokens[:-1])
            logits, ref_logits = teacher_forced_logits(model, seq), teacher_forced_logits(ref, seq)
            agreement = logit_agreement(logits, ref_logits)
            greedy = check_greedy(gen.tokens, ref_logits[len(prompt) - 1:], bounds.tie_margin)

    shown = tokenizer.decode(prompt[-60:]) if len(prompt) > 60 else tokenizer.decode(prompt)
    print(f"\n  prompt (end): {'...' if len(prompt) > 60 else ''}{shown!r}")
    print(f"  generated:    {tokenizer.decode(gen.tokens)!r}\n")
    tiers = sorted({lay.wrapper.isa_tier for lay in cpu_layers})
    kernels = sorted({lay.wrapper.kernel_description for lay in cpu_layers})
    print(f"  method        {method} ({', '.join(formats)}); ISA tier {', '.join(tiers) or '-'}; "
          f"kernel {', '.join(kernels) or '-'}; {threads or 'all'} threads")
    print(f"  experts       {len(layers)} MoE layers x {num_experts} experts: "
          f"{num_experts - layers[0].num_gpu_experts} on kt_kernel, {layers[0].num_gpu_experts} in torch "
          f"on {args.device}; {sum(lay.wrapper.weight_bytes for lay in cpu_layers) / 1e6:.1f} MB packed")
    print(f"  prefill       {gen.prompt_tokens} tokens in {gen.prefill_s * 1e3:.1f} ms: "
          f"{gen.prefill_tokens_per_s:.0f} tokens/s")
    print(f"  decode        {len(gen.tokens) - 1} tokens in {gen.decode_s * 1e3:.1f} ms: "
          f"{gen.decode_tokens_per_s:.1f} tokens/s")
    if agreement is None:
        print(f"\nno fp32 reference (--no-reference); {clock.seconds:.0f} s in all")
        return 0
    print(f"  vs fp32       {agreement}")
    print(f"  greedy        {greedy} (near-tie: reference top-2 gap < {bounds.tie_margin})")
    if not tiny or args.dtype == "bfloat16":
        print(f"\n(the PASS/FAIL bounds are for tiny models in fp32; {clock.seconds:.0f} s in all)")
        return 0
    ok = agreement.within(bounds) and greedy.ok
    print(f"\n{'PASS' if ok else 'FAIL'}: {method} against the fp32 reference: KL mean {agreement.kl_mean:.2e} "
          f"(bound {bounds.kl_mean:g}), top-1 {agreement.top1:.3f} (bound {bounds.top1}), "
          f"{len(greedy.mismatches)} clear greedy mismatches ({clock.seconds:.0f} s in all)")
    return 0 if ok else 1


def _write_release(write, src: Path, dst: Path) -> None:
    """``write(src, folder)``'s release of the tiny model at src, written beside it once
    (atomically: a finished folder or none)."""
    import shutil
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
    try:
        write(src, tmp)
        try:
            os.replace(tmp, dst)
        except OSError:
            if not (dst / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _is_fp8_release(path) -> bool:
    from kt_kernel.checkpoint import ConversionError
    from kt_kernel.checkpoint.hf import open_hf_checkpoint

    try:
        return open_hf_checkpoint(path).dtype == "F8_E4M3"
    except ConversionError:
        return False  # inspect_checkpoint says what is wrong with it


def _describe_fp8(path) -> tuple:
    """(description, experts per layer, tokenizer) of an FP8 release."""
    from kt_kernel.checkpoint.hf import open_hf_checkpoint
    from kt_kernel.models import architecture, load_tokenizer

    ckpt = open_hf_checkpoint(path)
    model_type = ckpt.config.get("model_type")
    return (f"{architecture(model_type).label} ({model_type}, FP8 release, blocks {list(ckpt.fp8_block)}): "
            f"{ckpt.num_layers} layers, {len(ckpt.moe_layers)} MoE, {ckpt.num_experts} experts, hidden "
            f"{ckpt.hidden_size}, expert intermediate {ckpt.intermediate_size}", ckpt.num_experts, load_tokenizer(path))


def _describe_mxfp4(path) -> tuple:
    """(description, experts per layer, tokenizer) of a gpt-oss MXFP4 release."""
    from kt_kernel.checkpoint.mxfp4 import MXFP4Checkpoint
    from kt_kernel.models import architecture, load_tokenizer

    ckpt = MXFP4Checkpoint(path, "MXFP4")
    model_type = ckpt.config.get("model_type")
    return (f"{architecture(model_type).label} ({model_type}, MXFP4 release, swiglu_limit {ckpt.activation[0]:g}): "
            f"{ckpt.num_layers} layers, {len(ckpt.moe_layers)} MoE, {ckpt.num_experts} experts, hidden "
            f"{ckpt.hidden_size}, expert intermediate {ckpt.intermediate_size}", ckpt.num_experts, load_tokenizer(path))


def _describe_int4(path) -> tuple:
    """(description, experts per layer, tokenizer) of a compressed-tensors int4 release."""
    from kt_kernel.checkpoint.ct_int4 import CompressedInt4Checkpoint
    from kt_kernel.models import architecture, load_tokenizer

    ckpt = CompressedInt4Checkpoint(path, INT4_RELEASE_METHODS[0])
    model_type = ckpt.config.get("model_type")
    group = ckpt.args.get("group_size") or "channel"
    return (f"{architecture(model_type).label} ({model_type}, compressed-tensors int4 release, group {group}): "
            f"{ckpt.num_layers} layers, {len(ckpt.moe_layers)} MoE, {ckpt.num_experts} experts, hidden "
            f"{ckpt.hidden_size}, expert intermediate {ckpt.intermediate_size}", ckpt.num_experts, load_tokenizer(path))


def _describe_gguf(gguf) -> tuple:
    """(description, experts per layer, tokenizer) of a whole GGUF model written by kt_kernel of a
    tiny model; another file is refused, as the demo has no GGUF tokenizer."""
    from kt_kernel.checkpoint.gguf import open_gguf
    from kt_kernel.models import PrintableTokenizer, architecture
    from kt_kernel.models.gguf_model import TOKENIZER_KEY, gguf_config

    ckpt = open_gguf(gguf)
    if ckpt.metadata(TOKENIZER_KEY) != "printable-ascii":
        raise ValueError(f"--gguf {gguf} is a whole model, but not one of kt_kernel's tiny models (metadata "
                         f"{TOKENIZER_KEY}): the demo has no GGUF tokenizer; run it with "
                         "kt_kernel.integrations.transformers.load_gguf_model and the model's own tokenizer")
    config = gguf_config(gguf)
    row = architecture(config.model_type)
    return (f"{row.label} ({config.model_type}, GGUF {ckpt.arch}): {config.num_hidden_layers} layers, "
            f"{len(ckpt.moe_layers)} MoE, {ckpt.num_experts} experts top-{ckpt.experts_per_token}, hidden "
            f"{ckpt.hidden_size}, expert intermediate {ckpt.intermediate_size}",
            ckpt.num_experts, PrintableTokenizer())


if __name__ == "__main__":
    sys.exit(main())

