"""Integrity of converted folders and the converter's handling of its output folder.

Loading detects changed bytes in what it reads (each tensor kind of a layer file, its header,
kt_kernel_meta.json), naming the file; ``--resume`` verifies the layers it keeps, rewrites bad
ones, keeps the user's files and refuses another conversion; write failures (no space,
read-only) leave no partial file; malformed metadata fields are named.
"""
from __future__ import annotations

import errno
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kt_kernel.convert import ConversionError, convert_checkpoint, verify_folder
from kt_kernel.checkpoint import layout as L
from kt_kernel.checkpoint import safetensors_io
from kt_kernel.checkpoint.safetensors_io import read_header
from kt_kernel import KTMoEWrapper
from test_convert import E, H, THREADS, TOPK, build_checkpoint, run, wrapper

LAYER = 1
CLI = Path(__file__).resolve().parents[1] / "scripts" / "convert_cpu_weights.py"


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    return build_checkpoint(tmp_path_factory.mktemp("src") / "ckpt")


@pytest.fixture(scope="module")
def converted(src, tmp_path_factory):
    cache = {}

    def get(method):
        if method not in cache:
            cache[method] = tmp_path_factory.mktemp("conv") / method
            convert_checkpoint(src, cache[method], method, threads=THREADS, progress=False)
        return cache[method]
    return get


def _copy(folder: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(folder, out)
    return out


def _flip(file: Path, offset: int, n: int = 64) -> None:
    data = bytearray(file.read_bytes())
    data[offset:offset + n] = bytes(b ^ 0x5A for b in data[offset:offset + n])
    file.write_bytes(bytes(data))


def _expert_offset(file: Path, key: str, expert: int) -> tuple[int, int]:
    """(file offset, bytes) of ``expert``'s slice of tensor ``key``."""
    h = read_header(file)
    b, e = h.tensors[key]["data_offsets"]
    step = (e - b) // E
    return h.data_start + b + expert * step, step


# each tensor kind the converter writes, per method
PARTS = [("AMXINT4", "gate", "qweight"), ("AMXINT4", "up", "scale"), ("AMXINT4", "down", "min"),
         ("AMXINT8", "down", "qweight"), ("AMXINT8", "gate", "scale"), ("BF16", "up", "qweight")]


@pytest.mark.parametrize("method,proj,part", PARTS, ids=[f"{m}-{p}-{q}" for m, p, q in PARTS])
def test_flipped_tensor_bytes_detected_at_load(converted, tmp_path, method, proj, part):
    out = _copy(converted(method), tmp_path)
    file = out / L.layer_file(LAYER)
    key = L.key(LAYER, proj, part)
    off, step = _expert_offset(file, key, 3)
    _flip(file, off + step // 2 - 32 if step > 64 else off, min(64, step))
    with pytest.raises(ConversionError, match=rf"{file}: expert 3 of {key} does not match its checksum.*--resume"):
        wrapper(method, LAYER, out).load_weights()


def test_only_the_experts_read_are_verified_and_verification_can_be_turned_off(converted, tmp_path, monkeypatch):
    out = _copy(converted("AMXINT4"), tmp_path)
    file = out / L.layer_file(LAYER)
    off, step = _expert_offset(file, L.key(LAYER, "gate", "qweight"), 0)
    _flip(file, off)
    ref = wrapper("AMXINT4", LAYER, converted("AMXINT4"), num_gpu_experts=1)
    ref.load_weights()
    gpu0 = wrapper("AMXINT4", LAYER, out, num_gpu_experts=1)  # slot 0, the damaged expert, is not read
    gpu0.load_weights()
    assert torch.equal(run(gpu0), run(ref))
    with pytest.raises(ConversionError, match="expert 0 of .*gate.qweight"):
        wrapper("AMXINT4", LAYER, out).load_weights()
    monkeypatch.setenv("KT_KERNEL_VERIFY_WEIGHTS", "0")
    wrapper("AMXINT4", LAYER, out).load_weights()  # explicitly unverified: loads the damaged bytes
    monkeypatch.setenv("KT_KERNEL_VERIFY_WEIGHTS", "no")
    with pytest.raises(ValueError, match="KT_KERNEL_VERIFY_WEIGHTS='no'"):
        wrapper("AMXINT4", LAYER, out).load_weights()


def test_flipped_header_bytes_detected_at_load(converted, tmp_path):
    out = _copy(converted("AMXINT4"), tmp_path)
    file = out / L.layer_file(LAYER)
    raw = file.read_bytes()
    fp = read_header(file).metadata["source"]
    i = raw.index(fp.encode())  # the source fingerprint, a field loading reads nothing from
    file.write_bytes(raw[:i] + fp[::-1].encode() + raw[i + len(fp):])
    with pytest.raises(ConversionError, match=rf"{file}: its (metadata source|header does not match)"):
        wrapper("AMXINT4", LAYER, out).load_weights()


def test_changed_meta_detected_at_load(converted, tmp_path):
    out = _copy(converted("AMXINT4"), tmp_path)
    meta_file = out / L.META_FILE
    meta = json.loads(meta_file.read_text())
    meta["num_hidden_layers"] += 1  # valid, and nothing loading checks it against
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(ConversionError, match=rf"{meta_file} does not match its checksum meta_xxh3"):
        wrapper("AMXINT4", LAYER, out).load_weights()


def test_folder_from_before_checksums_is_verified_by_its_sha256(converted, tmp_path):
    """Folders written before per-expert checksums recorded a sha256 per layer file: they load,
    verified against it; a folder recording no checksum at all says to re-run the converter."""
    out = _copy(converted("AMXINT4"), tmp_path)
    meta_file, file = out / L.META_FILE, out / L.layer_file(LAYER)
    meta = json.loads(meta_file.read_text())
    del meta["meta_xxh3"]
    for name, entry in meta["files"].items():
        entry.pop("header_xxh3")
        entry["sha256"] = hashlib.sha256((out / name).read_bytes()).hexdigest()
    meta_file.write_text(json.dumps(meta))
    wrapper("AMXINT4", LAYER, out).load_weights()
    _flip(file, file.stat().st_size - 100)
    with pytest.raises(ConversionError, match=rf"{file} does not match its sha256"):
        wrapper("AMXINT4", LAYER, out).load_weights()
    for entry in meta["files"].values():
        entry.pop("sha256")
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(ConversionError, match=rf"records no checksum of {file.name}.*re-run the converter"):
        wrapper("AMXINT4", LAYER, out).load_weights()


def _flip_last_expert(out: Path) -> None:
    """The last expert's min of layer 1: in a GPU slot of a loader it would never be read."""
    file = out / L.layer_file(LAYER)
    _flip(file, _expert_offset(file, L.key(LAYER, "up", "min"), E - 1)[0], 8)


FOLDER_FILES = {
    "layer_gpu_expert": _flip_last_expert,
    "nonexpert": lambda out: _flip(out / "kt-nonexpert-00000.safetensors",
                                   (out / "kt-nonexpert-00000.safetensors").stat().st_size - 64),
    "index": lambda out: (out / L.INDEX_FILE).write_text((out / L.INDEX_FILE).read_text().replace("L0001", "L0002", 1)),
    "copied_config": lambda out: (out / "config.json").write_text((out / "config.json").read_text() + " "),
}


@pytest.mark.parametrize("kind", list(FOLDER_FILES))
def test_verify_folder_checks_every_file(converted, tmp_path, kind):
    out = _copy(converted("AMXINT4"), tmp_path)
    verify_folder(out)
    FOLDER_FILES[kind](out)
    differs = r"(: expert \d+ of \S+ does not match| is missing or does not match| does not match)"
    with pytest.raises(ConversionError, match=rf"{out}/[\w.-]+{differs}"):
        verify_folder(out)


# ---- malformed kt_kernel_meta.json --------------------------------------------------------

META_CASES = {
    "moe_layers_string": (lambda m: m.update(moe_layers="1"), "moe_layers"),
    "group_string": (lambda m: m.update(group="x"), "group"),
    "files_missing": (lambda m: m.pop("files"), "files"),
    "source_number": (lambda m: m.update(source=3), "source"),
    "num_experts_negative": (lambda m: m.update(num_experts=-8), "num_experts"),
    "file_bytes_missing": (lambda m: m["files"][L.layer_file(LAYER)].pop("bytes"),
                           rf"files\.{L.layer_file(LAYER)}\.bytes"),
    "method_unknown": (lambda m: m.update(method="AMXINT5", format="int5"), "method"),
    "not_an_object": (lambda m: (m.clear(), m.update(x=1)) and None, "kt_format"),
}


@pytest.mark.parametrize("case", list(META_CASES))
def test_malformed_meta_field_named(converted, tmp_path, case):
    edit, field = META_CASES[case]
    out = _copy(converted("AMXINT4"), tmp_path)
    meta_file = out / L.META_FILE
    meta = json.loads(meta_file.read_text())
    edit(meta)
    meta_file.write_text(json.dumps(meta))
    # a map is given, so the field is read as it is (not compared with the wrapper's num_experts)
    with pytest.raises(ConversionError, match=rf"{meta_file}: field {field} "):
        wrapper("AMXINT4", LAYER, out).load_weights(list(range(E)))


def test_malformed_meta_refused_by_resume(src, converted, tmp_path):
    out = _copy(converted("AMXINT4"), tmp_path)
    meta_file = out / L.META_FILE
    meta_file.write_text(json.dumps(dict(json.loads(meta_file.read_text()), hidden_size=-64)))
    with pytest.raises(ConversionError, match=rf"{meta_file}: field hidden_size is -64"):
        convert_checkpoint(src, out, "int4", threads=THREADS, resume=True, progress=False)
    assert meta_file.exists()


def test_damaged_meta_resume_needs_overwrite_and_keeps_verified_layers(src, converted, tmp_path):
    out = _copy(converted("AMXINT4"), tmp_path)
    meta_file, layer = out / L.META_FILE, out / L.layer_file(LAYER)
    meta_file.write_text(meta_file.read_text().replace('"num_hidden_layers": 3', '"num_hidden_layers": 4'))
    with pytest.raises(ConversionError, match=r"does not match its checksum meta_xxh3.*--resume --overwrite"):
        convert_checkpoint(src, out, "int4", threads=THREADS, resume=True, progress=False)
    before = layer.stat().st_mtime_ns
    convert_checkpoint(src, out, "int4", threads=THREADS, resume=True, overwrite=True, progress=False)
    assert layer.stat().st_mtime_ns == before  # verified, so kept
    assert meta_file.read_bytes() == (converted("AMXINT4") / L.META_FILE).read_bytes()


# ---- --resume -----------------------------------------------------------------------------

def test_resume_keeps_user_files_and_rewrites_a_corrupted_layer(src, converted, tmp_path):
    ref = converted("AMXINT4")
    out = _copy(ref, tmp_path)
    (out / "notes.txt").write_text("mine")
    (out / "draft.tmp").write_text("mine too")
    file = out / L.layer_file(LAYER)
    off, _ = _expert_offset(file, L.key(LAYER, "down", "scale"), 5)
    _flip(file, off, 8)
    convert_checkpoint(src, out, "int4", threads=THREADS, resume=True, progress=False)
    assert (out / "notes.txt").read_text() == "mine" and (out / "draft.tmp").read_text() == "mine too"
    assert file.read_bytes() == (ref / file.name).read_bytes()
    wrapper("AMXINT4", LAYER, out).load_weights()


def test_resume_refuses_a_user_file_it_would_replace(src, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text("{}")  # the user's, not a copy of the input's
    with pytest.raises(ConversionError, match=rf"{out / 'config.json'} exists and the converter did not write it"):
        convert_checkpoint(src, out, "int4", threads=THREADS, resume=True, progress=False)
    assert (out / "config.json").read_text() == "{}"


@pytest.fixture(scope="module")
def other_sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("others")
    return {"intermediate_size": build_checkpoint(root / "geometry", i=48),
            "source.fingerprint": build_checkpoint(root / "deeper", layers=4),
            # same config and shapes, other weights (a fine-tune): only the path tells them apart
            "source.path": build_checkpoint(root / "seed", seed=1)}


@pytest.mark.parametrize("field", ["method", "intermediate_size", "source.fingerprint", "source.path"])
def test_resume_refuses_another_conversion_unless_overwrite(src, converted, other_sources, tmp_path, field):
    out = _copy(converted("AMXINT4"), tmp_path)
    (out / "notes.txt").write_text("mine")
    source, method = (src, "int8") if field == "method" else (other_sources[field], "int4")
    before = (out / L.layer_file(LAYER)).read_bytes()
    with pytest.raises(ConversionError, match=rf"{out} holds another conversion: {field} is .*--overwrite"):
        convert_checkpoint(source, out, method, threads=THREADS, resume=True, progress=False)
    assert (out / L.layer_file(LAYER)).read_bytes() == before and (out / L.META_FILE).exists()
    r = subprocess.run([sys.executable, str(CLI), "--input-path", str(source), "--output", str(out),
                        "--quant-method", method, "--threads", str(THREADS), "--resume", "--overwrite",
                        "--no-progress"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    meta = json.loads((out / L.META_FILE).read_text())
    assert meta["method"] == ("AMXINT8" if method == "int8" else "AMXINT4")
    assert (out / "notes.txt").read_text() == "mine"
    KTMoEWrapper(layer_idx=LAYER, num_experts=E, num_experts_per_tok=TOPK, hidden_size=H,
                 moe_intermediate_size=meta["intermediate_size"], cpuinfer_threads=THREADS, weight_path=str(out),
                 method=meta["method"]).load_weights()


@pytest.mark.parametrize("where", ["equal", "inside"])
def test_output_equal_to_or_inside_input_refused(src, tmp_path, where):
    inp = tmp_path / "ckpt"
    shutil.copytree(src, inp)
    names = sorted(p.name for p in inp.iterdir())
    out = inp if where == "equal" else inp / "converted"
    with pytest.raises(ConversionError, match=rf"--output {out} is (the input folder|inside the input folder)"):
        convert_checkpoint(inp, out, "int4", threads=THREADS, resume=True, progress=False)
    assert sorted(p.name for p in inp.iterdir()) == names


# ---- write failures -----------------------------------------------------------------------

def _no_leftovers(out: Path) -> None:
    assert not list(out.glob("*.tmp")), sorted(p.name for p in out.iterdir())
    assert not (out / L.META_FILE).exists()
    for f in out.glob("kt-*.safetensors"):
        read_header(f)  # any layer file left is complete (for --resume)


def test_no_space_injected(src, tmp_path, monkeypatch):
    out = tmp_path / "out"
    real, n = safetensors_io.os.fsync, [0]

    def fsync(fd):  # the disk fills while the second layer file is written
        n[0] += 1
        if n[0] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)
    monkeypatch.setattr(safetensors_io.os, "fsync", fsync)
    with pytest.raises(ConversionError, match=rf"cannot write the converted weights into {out}: No space left"):
        convert_checkpoint(src, out, "int4", threads=THREADS, progress=False)
    _no_leftovers(out)


def test_unreadable_source_named_as_such(src, tmp_path, monkeypatch):
    """An input error during the conversion is not reported as a write failure of the output."""
    from kt_kernel.checkpoint.hf import HFCheckpoint
    shard = src / "model-00001-of-00002.safetensors"

    def gone(self, key, index=None):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(shard))
    monkeypatch.setattr(HFCheckpoint, "read", gone)
    with pytest.raises(ConversionError, match=rf"cannot read {shard}: No such file or directory"):
        convert_checkpoint(src, tmp_path / "out", "int4", threads=THREADS, progress=False)


def test_read_only_output_injected(src, tmp_path, monkeypatch):
    out = tmp_path / "out"

    def read_only(path, mode="r", *a, **kw):
        if "w" in mode:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return open(path, mode, *a, **kw)
    monkeypatch.setattr(safetensors_io, "open", read_only, raising=False)
    with pytest.raises(ConversionError, match=rf"cannot write the converted weights into {out}: Read-only file system"):
        convert_checkpoint(src, out, "int4", threads=THREADS, progress=False)
    _no_leftovers(out)


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 200 KiB tmpfs (tests run as root; skipped where mounting is not allowed)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_no_space_on_a_small_tmpfs_cli(src, small_tmpfs):
    """A real ENOSPC from the command line: one line naming the folder, no .tmp left."""
    big = build_checkpoint(small_tmpfs.parent / "big", h=256, i=128)  # ~400 KiB of int4 layers
    out = small_tmpfs / "out"
    r = subprocess.run([sys.executable, str(CLI), "--input-path", str(big), "--output", str(out),
                        "--threads", str(THREADS), "--no-progress"], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"cannot write the converted weights into {out}: No space left on device" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    _no_leftovers(out)


def test_read_only_mount_cli(src, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    r = subprocess.run(["mount", "--bind", "-o", "ro", str(ro), str(ro)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot bind-mount read-only here: {r.stderr.strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=True)  # older kernels ignore ro on --bind
        out = ro / "out"
        r = subprocess.run([sys.executable, str(CLI), "--input-path", str(src), "--output", str(out),
                            "--threads", str(THREADS), "--no-progress"], capture_output=True, text=True)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert f"cannot write the converted weights into {out}: Read-only file system" in r.stderr
        assert not out.exists()
    finally:
        subprocess.run(["umount", str(ro)], check=True)
