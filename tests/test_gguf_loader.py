"""The GGUF reader (kt_kernel.checkpoint.gguf) on tiny files written by tests/gguf_files.py: one
file, a split set, a folder, mixed types, and every bad input giving a GGUFError that names the
file (and tensor), never a crash."""
from __future__ import annotations

import os
import re

import numpy as np
import pytest
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFEndian, GGUFValueType, GGUFWriter

import reference
from format_expectations import kernel_row
from format_expectations import ACT_ATOL
from gguf_files import (ARCH, PROJ, dequantized, expert_tensors, kt_format, model_meta, random_blocks, write_gguf,
                        write_split)
from kt_kernel import KTMoEWrapper
from kt_kernel.checkpoint import ConversionError, open_checkpoint
from kt_kernel.checkpoint import gguf as gguf_reader
from kt_kernel.checkpoint.gguf import GGUFCheckpoint, GGUFError, open_gguf
from kt_kernel.formats import all_formats

E, H, I, TOPK = 4, 256, 512, 2
LAYERS = (1, 2)
# the ggml types method LLAMAFILE is to run (issue 20; MXFP4, gpt-oss GGUFs, issue 21), each read by the kt
# format of its spelling
SUPPORTED = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS",
             "MXFP4", "BF16", "F16", "F32")
EVERY_FORMAT = {t: kt_format(t) for t in SUPPORTED}


def gguf_formats() -> dict:
    return gguf_reader.ggml_type_formats()


@pytest.fixture
def rng():
    return np.random.default_rng(20)


def _model(rng, types=("Q8_0", "Q8_0", "Q8_0"), layers=LAYERS):
    return expert_tensors(rng, E, H, I, layers, types)


def _write(path, tensors, meta=None, **kw):
    return write_gguf(path, tensors, model_meta(E, H, I, TOPK) if meta is None else meta, **kw)


def _check_layer_views(reader, tensors, layer):
    gate, up, down = reader.projections(layer)
    for j, t in enumerate((gate, up, down)):
        ggml_type, data = tensors[f"blk.{layer}.{PROJ[j]}.weight"]
        assert t.ggml_type == ggml_type and t.format == gguf_formats()[ggml_type]
        assert t.blocks.dtype == np.uint8 and t.blocks.shape == data.shape
        assert not t.blocks.flags.writeable
        np.testing.assert_array_equal(t.blocks, data)


# ---- good files ---------------------------------------------------------------------------

def test_single_file(tmp_path, rng):
    tensors = _model(rng)
    f = _write(tmp_path / "m.gguf", tensors)
    r = open_gguf(f)
    assert (r.arch, r.num_experts, r.experts_per_token, r.hidden_size, r.intermediate_size) == (ARCH, E, TOPK, H, I)
    assert r.moe_layers == list(LAYERS) and r.stored_method == "LLAMAFILE" and r.kind == "gguf"
    for layer in LAYERS:
        _check_layer_views(r, tensors, layer)
        r.check_layer(layer, "LLAMAFILE", H, I, num_experts=E, num_experts_per_tok=TOPK)
    assert r.layer_formats(1) == ("q8_0", "q8_0")


def test_metadata_arrays_dropped(tmp_path, rng):
    """The cached reader keeps no tokenizer (its parsed arrays are hundreds of MB in real files)."""
    extra = {"tokenizer.ggml.tokens": ("add_array", ["a", "b", "c"]), "{arch}.rope.dims": ("add_array", [1, 2])}
    r = open_gguf(_write(tmp_path / "m.gguf", _model(rng), model_meta(E, H, I, TOPK) | extra))
    fields = r.shards[0][1].fields
    assert "tokenizer.ggml.tokens" not in fields and f"{ARCH}.rope.dims" not in fields
    assert f"{ARCH}.expert_count" in fields and r.num_experts == E


def test_views_are_the_mapped_file(tmp_path, rng):
    """The blocks are a view of the file's memory map, not a copy."""
    tensors = _model(rng)
    f = _write(tmp_path / "m.gguf", tensors)
    r = open_gguf(f)
    gate = r.projections(1)[0].blocks
    mapped = r.shards[0][1].data
    base = mapped.ctypes.data
    assert base <= gate.ctypes.data < base + len(mapped)
    assert np.shares_memory(gate, mapped)


def test_reader_cached_per_path(tmp_path, rng):
    f = _write(tmp_path / "m.gguf", _model(rng))
    assert open_gguf(f) is open_gguf(str(f)) is open_gguf(tmp_path / "." / "m.gguf")
    assert open_gguf(tmp_path) is open_gguf(f)  # the folder resolves to the same file
    # a file rewritten in place is read again
    first = open_gguf(f)
    _write(f, _model(np.random.default_rng(1)), meta=model_meta(E, H, I, topk=3))
    os.utime(f, ns=(os.stat(f).st_atime_ns, os.stat(f).st_mtime_ns + 10**9))
    assert open_gguf(f) is not first and open_gguf(f).experts_per_token == 3


@pytest.mark.parametrize("types", [("Q4_K", "Q4_K", "Q6_K"), ("Q4_0", "Q4_0", "Q8_0"), ("IQ4_XS", "IQ4_XS", "BF16")],
                         ids=lambda t: "-".join(t[1:]))
def test_mixed_types(tmp_path, rng, types):
    """gate/up in one type, down in another, as llama.cpp's Q4_K_M files store them."""
    tensors = _model(rng, types)
    r = open_gguf(_write(tmp_path / "m.gguf", tensors))
    _check_layer_views(r, tensors, 2)
    assert r.layer_formats(2) == (gguf_formats()[types[0]], gguf_formats()[types[2]])


@pytest.mark.parametrize("ggml_type", SUPPORTED)
def test_every_supported_type(tmp_path, rng, ggml_type):
    tensors = _model(rng, (ggml_type,) * 3, layers=(0,))
    r = open_gguf(_write(tmp_path / "m.gguf", tensors))
    _check_layer_views(r, tensors, 0)
    # the views read back as gguf's own dequantization of what was written
    gate = r.projections(0)[0]
    np.testing.assert_array_equal(dequantized(gate.blocks, ggml_type),
                                  dequantized(tensors["blk.0.ffn_gate_exps.weight"][1], ggml_type))


def test_format_table():
    """Each supported ggml type maps to the kt format of its ggml spelling (bf16 the existing one),
    from the format records' gguf_type."""
    assert gguf_formats() == EVERY_FORMAT


def test_split_set(tmp_path, rng):
    tensors = _model(rng, ("Q4_K", "Q4_K", "Q6_K"), layers=(0, 1, 2))
    paths = write_split(tmp_path, "model", tensors, model_meta(E, H, I, TOPK), shards=2)  # 5 + 4 tensors
    for p in paths:  # any shard opens the whole set
        r = open_gguf(p)
        assert [s for s, _ in r.shards] == paths
        assert r.moe_layers == [0, 1, 2]
        for layer in (0, 1, 2):
            _check_layer_views(r, tensors, layer)
    # layer 1's tensors lie in different shards
    assert len({t.file for t in open_gguf(paths[0]).projections(1)}) > 1


def test_folder(tmp_path, rng):
    tensors = _model(rng)
    f = _write(tmp_path / "m.gguf", tensors)
    (tmp_path / "README.md").write_text("not a model")
    r = open_gguf(tmp_path)
    assert r.shards[0][0] == f.resolve()
    _check_layer_views(r, tensors, 1)
    assert open_checkpoint(tmp_path) is r and open_checkpoint(f) is r


def test_folder_of_a_split_set(tmp_path, rng):
    tensors = _model(rng)
    paths = write_split(tmp_path, "m", tensors, model_meta(E, H, I, TOPK), shards=2)
    assert [s for s, _ in open_gguf(tmp_path).shards] == [p.resolve() for p in paths]


def test_mixtral_style_feed_forward_length(tmp_path, rng):
    """Files without expert_feed_forward_length (Mixtral as arch llama) give the experts' size as
    feed_forward_length."""
    meta = model_meta(E, H, I, TOPK)
    meta["{arch}.feed_forward_length"] = meta.pop("{arch}.expert_feed_forward_length")
    r = open_gguf(_write(tmp_path / "m.gguf", _model(rng), meta, arch="llama"))
    assert r.intermediate_size == I
    r.check_layer(1, "LLAMAFILE", H, I)


# ---- the wrapper's sizes ------------------------------------------------------------------

@pytest.mark.parametrize("field, args, named", [
    ("hidden", dict(hidden_size=H * 2), "embedding_length (hidden_size) is 256 in the GGUF file but 512"),
    ("inter", dict(intermediate_size=I // 2), "expert_feed_forward_length (moe_intermediate_size) is 512"),
    ("experts", dict(num_experts=E + 1), "expert_count (num_experts; no physical_to_logical_map given) is 4"),
    ("topk", dict(num_experts_per_tok=TOPK + 1), "expert_used_count (num_experts_per_tok) is 2"),
])
def test_check_layer_against_wrapper(tmp_path, rng, field, args, named):
    r = open_gguf(_write(tmp_path / "m.gguf", _model(rng)))
    kw = dict(hidden_size=H, intermediate_size=I) | args
    with pytest.raises(GGUFError, match=named.replace("(", r"\(").replace(")", r"\)")) as e:
        r.check_layer(1, "LLAMAFILE", **kw)
    assert str(tmp_path / "m.gguf") in str(e.value)


def test_other_method_refused(tmp_path, rng):
    r = open_gguf(_write(tmp_path / "m.gguf", _model(rng)))
    with pytest.raises(GGUFError, match="load it with method='LLAMAFILE'"):
        r.check_layer(1, "AMXINT4", H, I)


def test_missing_layer(tmp_path, rng):
    r = open_gguf(_write(tmp_path / "m.gguf", _model(rng)))
    with pytest.raises(GGUFError, match=r"has no tensor blk\.7\.ffn_gate_exps\.weight.*MoE layers: 1\.\.2"):
        r.check_layer(7, "LLAMAFILE", H, I)


# ---- bad inputs: a GGUFError (a ConversionError, a ValueError) naming the file --------------

def _raises(path, match, layer=None):
    with pytest.raises(GGUFError, match=match) as e:
        r = open_gguf(path)
        if layer is not None:
            r.projections(layer)
    assert issubclass(GGUFError, ConversionError) and issubclass(GGUFError, ValueError)
    return str(e.value)


def test_not_gguf(tmp_path):
    f = tmp_path / "model.gguf"
    f.write_bytes(b"PK\x03\x04 a zip file" * 10)
    assert str(f) in _raises(f, "is not a GGUF file")
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    _raises(empty, "is not a GGUF file")


def test_bad_version(tmp_path):
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF" + (99).to_bytes(4, "little") + bytes(64))
    _raises(f, "is not a readable GGUF file.*version 99")


@pytest.mark.parametrize("keep", [0.02, 0.3, 0.6, 0.9, 0.999])
def test_truncated(tmp_path, rng, keep):
    """Cut anywhere: in the metadata, the tensor infos or the data."""
    f = _write(tmp_path / "m.gguf", _model(rng), extra={"token_embd.weight": ("F32", random_blocks(rng, "F32", (8, H)))})
    data = f.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[:max(8, int(len(data) * keep))])
    msg = _raises(cut, "truncated")
    assert str(cut) in msg


def test_big_endian(tmp_path, rng):
    f = _write(tmp_path / "be.gguf", _model(rng), endianess=GGUFEndian.BIG)
    _raises(f, "other byte order")


def test_truncated_header_before_data(tmp_path, rng):
    """A file cut within the header: the reader's short reads become the truncation error."""
    f = _write(tmp_path / "m.gguf", _model(rng))
    data = f.read_bytes()
    for n in (9, 17, 30, 100):
        cut = tmp_path / f"cut{n}.gguf"
        cut.write_bytes(data[:n])
        _raises(cut, "truncated or damaged")


def test_huge_array_length_does_not_hang(tmp_path, rng):
    """A damaged array length (2**60 entries) in the metadata raises instead of looping."""
    f = tmp_path / "m.gguf"
    key = b"tokenizer.ggml.scores"
    f.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + (0).to_bytes(8, "little") + (1).to_bytes(8, "little")
                  + len(key).to_bytes(8, "little") + key + (9).to_bytes(4, "little")    # ARRAY
                  + (6).to_bytes(4, "little") + (2 ** 60).to_bytes(8, "little") + bytes(16))  # of FLOAT32
    _raises(f, "truncated or damaged")


def test_shape_disagrees_with_metadata(tmp_path, rng):
    """The metadata agrees with the wrapper but a tensor does not: the file and tensor are named."""
    tensors = _model(rng)
    tensors["blk.2.ffn_down_exps.weight"] = ("Q8_0", random_blocks(rng, "Q8_0", (E, H, I // 2)))
    f = _write(tmp_path / "m.gguf", tensors)
    msg = _raises(f, r"tensor blk\.2\.ffn_down_exps\.weight has ggml shape ne=\[256, 256, 4\]", layer=2)
    assert str(f) in msg and "ne=[512, 256, 4]" in msg
    open_gguf(f).projections(1)  # the other layer is fine


def test_expert_count_disagrees(tmp_path, rng):
    tensors = _model(rng)
    tensors["blk.1.ffn_gate_exps.weight"] = ("Q8_0", random_blocks(rng, "Q8_0", (E + 2, I, H)))
    _raises(_write(tmp_path / "m.gguf", tensors), r"blk\.1\.ffn_gate_exps\.weight .*expert_count=4", layer=1)


def test_missing_expert_tensor(tmp_path, rng):
    tensors = _model(rng)
    del tensors["blk.1.ffn_up_exps.weight"]
    f = _write(tmp_path / "m.gguf", tensors)
    assert str(f) in _raises(f, r"has no tensor blk\.1\.ffn_up_exps\.weight, the routed experts of layer 1", layer=1)


def test_fused_gate_up_named(tmp_path, rng):
    tensors = _model(rng)
    tensors["blk.1.ffn_gate_up_exps.weight"] = tensors.pop("blk.1.ffn_gate_exps.weight")
    _raises(_write(tmp_path / "m.gguf", tensors), "ffn_gate_up_exps.weight, gate and up fused", layer=1)


def test_expert_biases_are_refused_naming_what_runs_them(tmp_path, rng):
    """gpt-oss GGUFs carry expert biases (ffn_*_exps.bias): LLAMAFILE would silently drop them."""
    tensors = _model(rng)
    bias = ("F32", np.zeros((E, I), np.float32).view(np.uint8).reshape(E, I * 4))
    _raises(_write(tmp_path / "m.gguf", tensors, extra={"blk.2.ffn_gate_exps.bias": bias}),
            r"layer 2's experts have biases \(blk\.2\.ffn_gate_exps\.bias; gpt-oss\).*method MXFP4", layer=2)


@pytest.mark.parametrize("ggml_type", ["IQ2_XXS", "TQ1_0", "IQ3_S", "Q8_1"])
def test_unsupported_type(tmp_path, rng, ggml_type):
    tensors = _model(rng)
    _, size = GGML_QUANT_SIZES[GGMLQuantizationType[ggml_type]]
    block = GGML_QUANT_SIZES[GGMLQuantizationType[ggml_type]][0]
    tensors["blk.1.ffn_down_exps.weight"] = (ggml_type, rng.integers(0, 256, (E, H, I // block * size), dtype=np.uint8))
    f = _write(tmp_path / "m.gguf", tensors)
    msg = _raises(f, rf"blk\.1\.ffn_down_exps\.weight has ggml type {ggml_type}, which method LLAMAFILE does not run",
                  layer=1)
    assert str(f) in msg and "supported types: F32, F16, Q4_0, Q4_1, Q5_0" in msg and "IQ4_XS, BF16" in msg


def test_gate_up_types_differ(tmp_path, rng):
    tensors = _model(rng, ("Q4_K", "Q5_K", "Q6_K"))
    _raises(_write(tmp_path / "m.gguf", tensors),
            r"blk\.1\.ffn_gate_exps\.weight is Q4_K but blk\.1\.ffn_up_exps\.weight is Q5_K", layer=1)


def test_not_a_moe_model(tmp_path, rng):
    meta = model_meta(E, H, I, TOPK)
    del meta["{arch}.expert_count"]
    _raises(_write(tmp_path / "m.gguf", _model(rng), meta), r"expert_count is missing \(a model without routed")


def test_bad_metadata_value(tmp_path, rng):
    meta = model_meta(E, H, I, TOPK) | {"{arch}.embedding_length": "4096"}
    _raises(_write(tmp_path / "m.gguf", _model(rng), meta), "embedding_length is '4096', expected a positive integer")


@pytest.mark.parametrize("value", [("add_array", [4096]), ("add_float32", 4096.0), ("add_bool", True),
                                   ("add_uint32", 0)], ids=["array", "float", "bool", "0"])
def test_metadata_of_another_kind(tmp_path, rng, value):
    meta = model_meta(E, H, I, TOPK) | {"{arch}.embedding_length": value}
    _raises(_write(tmp_path / "m.gguf", _model(rng), meta), re.escape(f"embedding_length is {value[1]!r}, expected a positive"))


def test_empty_metadata_array(tmp_path):
    """An empty array (gguf's writer refuses them; other writers may not) is a list, not a crash."""
    def string(v):
        return len(v).to_bytes(8, "little") + v.encode()

    def kv(key, vtype, payload):
        return string(key) + int(vtype).to_bytes(4, "little") + payload

    def u32(v):
        return v.to_bytes(4, "little")

    kvs = [kv("general.architecture", GGUFValueType.STRING, string(ARCH)),
           kv(f"{ARCH}.expert_count", GGUFValueType.UINT32, u32(E)),
           kv(f"{ARCH}.expert_used_count", GGUFValueType.UINT32, u32(TOPK)),
           kv(f"{ARCH}.embedding_length", GGUFValueType.ARRAY, u32(GGUFValueType.UINT32) + (0).to_bytes(8, "little"))]
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF" + u32(3) + (0).to_bytes(8, "little") + len(kvs).to_bytes(8, "little") + b"".join(kvs))
    _raises(f, re.escape("embedding_length is [], expected a positive integer"))


def test_missing_shard(tmp_path, rng):
    paths = write_split(tmp_path, "m", _model(rng), model_meta(E, H, I, TOPK), shards=3)
    paths[1].unlink()
    for p in (paths[0], paths[2], tmp_path):
        _raises(p, r"one shard of a split set of 3, and 1 of them is missing .*m-00002-of-00003\.gguf")


def test_split_tensor_count_wrong(tmp_path, rng):
    tensors = _model(rng)
    paths = write_split(tmp_path, "m", tensors, model_meta(E, H, I, TOPK), shards=2, tensors_count=len(tensors) + 1)
    _raises(paths[0], f"holds {len(tensors)} tensors, but its metadata split.tensors.count says {len(tensors) + 1}")


def test_split_shard_renamed(tmp_path, rng):
    paths = write_split(tmp_path, "m", _model(rng), model_meta(E, H, I, TOPK), shards=2)
    other = tmp_path / "x.gguf"
    paths[1].rename(other)
    _raises(other, "but its name does not follow llama.cpp's NAME-00002-of-00002.gguf")


def test_split_shards_swapped(tmp_path, rng):
    paths = write_split(tmp_path, "m", _model(rng), model_meta(E, H, I, TOPK), shards=2)
    tmp = tmp_path / "t"
    paths[0].rename(tmp)
    paths[1].rename(paths[0])
    tmp.rename(paths[1])
    _raises(paths[0], "metadata split.no / split.count are")


def test_folder_with_two_models(tmp_path, rng):
    _write(tmp_path / "a.gguf", _model(rng))
    write_split(tmp_path, "b", _model(rng), model_meta(E, H, I, TOPK), shards=2)
    _raises(tmp_path, r"holds 2 GGUF models: a\.gguf, b-\*-of-00002\.gguf")


def test_folder_without_gguf(tmp_path):
    _raises(tmp_path, "holds no .gguf file")


def test_missing_path(tmp_path):
    _raises(tmp_path / "nope.gguf", "does not exist")


@pytest.mark.parametrize("down, part", [("BF16", "qweight"), ("F16", "values"), ("Q8_0", "blocks")])
def test_layer_arrays(tmp_path, rng, down, part):
    """One array per projection, under the part name of its format's one array (bf16: the
    existing format's "qweight")."""
    tensors = _model(rng, ("Q8_0", "Q8_0", down))
    r = open_gguf(_write(tmp_path / "m.gguf", tensors))
    with r.layer_arrays(1, {0, 1}) as arrays:
        assert set(arrays) == {("gate", "blocks"), ("up", "blocks"), ("down", part)}
        np.testing.assert_array_equal(arrays[("down", part)], tensors["blk.1.ffn_down_exps.weight"][1])


def test_reader_class_direct(tmp_path, rng):
    """GGUFCheckpoint itself (no cache) opens a shard path the same way."""
    tensors = _model(rng)
    paths = write_split(tmp_path, "m", tensors, model_meta(E, H, I, TOPK), shards=2)
    r = GGUFCheckpoint(paths[1])
    assert r.fingerprint == open_gguf(paths[0]).fingerprint


def test_split_set_written_by_gguf(tmp_path, rng):
    """A split set as gguf's own writer (split_max_tensors, llama.cpp's convert script) names and
    numbers it."""
    tensors = _model(rng, ("Q4_K", "Q4_K", "Q6_K"))
    w = GGUFWriter(tmp_path / "model.gguf", ARCH, split_max_tensors=4)
    for k, v in model_meta(E, H, I, TOPK).items():
        w.add_uint32(k.replace("{arch}", ARCH), v)
    for name, (t, data) in tensors.items():
        w.add_tensor(name, data, raw_dtype=GGMLQuantizationType[t])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    shards = sorted(tmp_path.glob("*.gguf"))
    assert [p.name for p in shards] == [f"model-{i:05d}-of-00002.gguf" for i in (1, 2)]
    r = open_gguf(shards[1])
    for layer in LAYERS:
        _check_layer_views(r, tensors, layer)


# ---- end to end: KTMoEWrapper(method="LLAMAFILE") on a GGUF file ----------------------------


# gate/up type, down type of the end-to-end runs (those the build registers run)
E2E_TYPES = [("Q8_0", "Q8_0"), ("Q4_K", "Q6_K"), ("Q6_K", "Q8_0"), ("Q4_0", "Q8_0"), ("IQ4_XS", "Q5_K"),
             ("F16", "F32"), ("Q8_0", "F16"), ("BF16", "F16"), ("Q4_K", "BF16")]
E2E_E, E2E_TOPK = 8, 3


# ||out - ref|| / ||ref|| against the float64 reference on gguf's dequantized weights, without the
# kernels' activation rounding: the q8 activation blocks (x and h to 8 bits per 32 or 256 values)
# measure 1.0-1.6% (q8_32) and 1.9-3.3% (q8_256: one scale per 256 heavy-tailed h values) on these
# weights; bf16 activations 2^-9 rms, fp32 ones nothing, beside the bf16 output's 0.2%. "A few %":
# the bounds below. A wiring mistake (another expert, projection or format) is off by 30% or more.
PLAIN_REL = {"q8_32": 0.03, "q8_256": 0.05, "bf16": 0.01, "f32": 0.01}


def _check_forward(layer, types, x, ids, w, weights, **routing):
    """The layer's output against the float64 reference on the dequantized ``weights`` (gate, up,
    down): elementwise within the bf16 output's rounding and ACT_ATOL once the activation rounding
    of the kernels serving this tier is emulated (as tests/test_gguf_moe.py), and within PLAIN_REL
    without emulation."""
    gu, dn = (gguf_formats()[t] for t in types)
    acts = [kernel_row(fmt, layer.isa_tier)["act"] for fmt in (gu, dn)]
    out = layer.forward(x, ids, w)
    plain = reference.moe_forward(x, ids, w, *weights, **routing)
    assert _rel(out, plain) < max(PLAIN_REL[a] for a in acts), (types, acts, _rel(out, plain))
    record = next(r for r in all_formats() if r["name"] == dn)
    bounds = reference.slice_bounds(I, layer.threadpool_count, record["group"], record["k_align"])
    ref = reference.moe_forward(x.float(), ids, w, *weights, act=acts[0], h_act=acts[1], slice_bounds=bounds,
                                **routing)
    atol = max(ACT_ATOL[a] for a in acts) * ref.abs().max()
    err = (out.double() - ref).abs()
    assert (err <= 2.0**-8 * ref.abs() + atol).all(), f"{types}: worst error {err.max():.3g} (max|ref| {ref.abs().max():.3g})"
    return out


def _e2e_file(tmp_path, types, seed=0):
    rng = np.random.default_rng(seed)
    tensors = expert_tensors(rng, E2E_E, H, I, LAYERS, (types[0], types[0], types[1]))
    f = write_gguf(tmp_path / "moe.gguf", tensors, model_meta(E2E_E, H, I, E2E_TOPK))
    deq = [dequantized(tensors[f"blk.1.{p}.weight"][1], tensors[f"blk.1.{p}.weight"][0]) for p in PROJ]
    return f, [np.asarray(d, np.float64) for d in deq]


def _wrapper(path, num_experts=E2E_E, **kw):
    return KTMoEWrapper(layer_idx=1, num_experts=num_experts, num_experts_per_tok=E2E_TOPK, hidden_size=H,
                        moe_intermediate_size=I, cpuinfer_threads=2, weight_path=str(path), method="LLAMAFILE", **kw)


def _inputs(M, slots, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(M, H, generator=g).to(torch.bfloat16)
    ids = torch.stack([torch.randperm(slots, generator=g)[:E2E_TOPK] for _ in range(M)])
    w = torch.softmax(torch.randn(M, E2E_TOPK, generator=g), dim=-1)
    return x, ids, w


def _rel(out, ref) -> float:
    return float(torch.linalg.norm(out.double() - ref) / torch.linalg.norm(ref))


@pytest.mark.parametrize("types", E2E_TYPES, ids="-".join)
def test_llamafile_forward(tmp_path, types):
    f, (gate, up, down) = _e2e_file(tmp_path, types)
    layer = _wrapper(f)
    assert (layer._layer.format, layer._layer.down_format) == (gguf_formats()[types[0]], gguf_formats()[types[1]])
    layer.load_weights()
    for M in (1, 7, 33):
        _check_forward(layer, types, *_inputs(M, E2E_E, seed=M), (gate, up, down))


def test_llamafile_two_subpools(tmp_path):
    """Two sub-pools split I: each rounds its own slice of h (the reference's slice_bounds)."""
    types = ("Q4_K", "Q6_K")
    f, weights = _e2e_file(tmp_path, types, seed=2)
    layer = _wrapper(f, threadpool_count=2)
    layer.load_weights()
    _check_forward(layer, types, *_inputs(9, E2E_E), weights)


def test_llamafile_physical_to_logical_map(tmp_path):
    """Slot p runs logical expert pmap[p] of the file: 6 slots over 8 logical experts, one twice."""
    types = ("Q8_0", "Q8_0")
    f, (gate, up, down) = _e2e_file(tmp_path, types, seed=3)
    pmap = torch.tensor([5, 0, 7, 2, 5, 3])
    layer = _wrapper(f, num_experts=len(pmap))
    layer.load_weights(pmap)
    x, ids, w = _inputs(16, len(pmap))
    out = _check_forward(layer, types, x, ids, w, (gate, up, down), physical_to_logical_map=pmap.tolist())
    identity = reference.moe_forward(x, ids, w, gate, up, down)  # the map matters
    assert _rel(out, identity) > 0.2


def test_llamafile_gpu_experts_not_loaded(tmp_path):
    types = ("Q8_0", "Q8_0")
    f, (gate, up, down) = _e2e_file(tmp_path, types, seed=4)
    full = _wrapper(f)
    full.load_weights()
    part = _wrapper(f, num_gpu_experts=3)
    part.load_weights()
    assert part.weight_bytes * E2E_E == full.weight_bytes * (E2E_E - 3)
    _check_forward(part, types, *_inputs(16, E2E_E), (gate, up, down), gpu_mask=[True] * 3 + [False] * (E2E_E - 3))


def test_llamafile_split_set_and_folder(tmp_path):
    rng = np.random.default_rng(5)
    tensors = expert_tensors(rng, E2E_E, H, I, LAYERS, ("Q8_0",) * 3)
    write_split(tmp_path, "moe", tensors, model_meta(E2E_E, H, I, E2E_TOPK), shards=2)
    deq = [dequantized(tensors[f"blk.1.{p}.weight"][1], "Q8_0") for p in PROJ]
    for path in (tmp_path, tmp_path / "moe-00002-of-00002.gguf"):
        layer = _wrapper(path)
        layer.load_weights()
        _check_forward(layer, ("Q8_0", "Q8_0"), *_inputs(8, E2E_E), deq)


def test_llamafile_errors(tmp_path):
    f, _ = _e2e_file(tmp_path, ("Q8_0", "Q8_0"))
    with pytest.raises(ValueError, match="method LLAMAFILE runs the experts of a GGUF file.*no weight_path"):
        KTMoEWrapper(layer_idx=1, num_experts=E2E_E, num_experts_per_tok=E2E_TOPK, hidden_size=H,
                     moe_intermediate_size=I, cpuinfer_threads=2, method="LLAMAFILE")
    layer = _wrapper(f)
    with pytest.raises(ValueError, match="method LLAMAFILE loads the experts of a GGUF file.*take the methods BF16"):
        layer.load_weights_from_tensors(torch.zeros(E2E_E, I, H), torch.zeros(E2E_E, I, H), torch.zeros(E2E_E, H, I))
    with pytest.raises(GGUFError, match=r"expert_used_count \(num_experts_per_tok\) is 3 in the GGUF file but 2"):
        KTMoEWrapper(layer_idx=1, num_experts=E2E_E, num_experts_per_tok=2, hidden_size=H, moe_intermediate_size=I,
                     cpuinfer_threads=2, weight_path=str(f), method="LLAMAFILE")
    with pytest.raises(GGUFError, match=r"has no tensor blk\.9\.ffn_gate_exps\.weight"):
        KTMoEWrapper(layer_idx=9, num_experts=E2E_E, num_experts_per_tok=E2E_TOPK, hidden_size=H,
                     moe_intermediate_size=I, cpuinfer_threads=2, weight_path=str(f), method="LLAMAFILE")
    with pytest.raises(GGUFError, match="expert_count .* is 8 in the GGUF file but 6"):
        _wrapper(f, num_experts=6).load_weights()  # no map: the slots are the file's experts
    other = KTMoEWrapper(layer_idx=1, num_experts=E2E_E, num_experts_per_tok=E2E_TOPK, hidden_size=H,
                         moe_intermediate_size=I, cpuinfer_threads=2, weight_path=str(f), method="BF16")
    with pytest.raises(GGUFError, match="load it with method='LLAMAFILE'"):
        other.load_weights()


def test_llamafile_gpu_mask_edit_reloads(tmp_path):
    """sglang-kt moves experts by editing gpu_experts_mask in place: the layer is rebuilt with the
    file's formats and reloaded from the GGUF file."""
    types = ("Q8_0", "F16")
    f, (gate, up, down) = _e2e_file(tmp_path, types, seed=6)
    layer = _wrapper(f, num_gpu_experts=3)
    layer.load_weights()
    mask = torch.zeros(E2E_E, dtype=torch.bool)
    mask[5:] = True
    layer.gpu_experts_mask.copy_(mask)
    _check_forward(layer, types, *_inputs(16, E2E_E), (gate, up, down), gpu_mask=mask.tolist())
    assert (layer._layer.format, layer._layer.down_format) == ("q8_0", "f16")


def test_llamafile_file_changed_after_construction(tmp_path):
    f, _ = _e2e_file(tmp_path, ("Q8_0", "Q8_0"))
    layer = _wrapper(f)
    _e2e_file(tmp_path, ("Q8_0", "F16"))  # rewritten in place with another down type
    os.utime(f, ns=(os.stat(f).st_atime_ns, os.stat(f).st_mtime_ns + 10**9))
    with pytest.raises(ValueError, match=r"now stores the experts as \('q8_0', 'f16'\), not \('q8_0', 'q8_0'\)"):
        layer.load_weights()
