"""Calibration data for GPTQ (kt_kernel.gpu_convert.calibration): local .txt / .jsonl files or
folders, the built-in corpus, and fixed-length token windows; never a download."""
from __future__ import annotations

import json

import pytest
import torch

from kt_kernel.gpu_convert.calibration import BUILTIN_CORPUS, calibration_samples, load_texts
from kt_kernel.models import PrintableTokenizer


def test_files_and_folders(tmp_path):
    (tmp_path / "a.txt").write_text("first paragraph\nstill first\n\nsecond paragraph\n\n\n")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "from jsonl"}) + "\n\n" + json.dumps({"text": "again"}) + "\n")
    (tmp_path / "ignored.md").write_text("not read")
    assert load_texts(tmp_path / "a.txt") == ["first paragraph\nstill first", "second paragraph"]
    assert load_texts(tmp_path) == ["first paragraph\nstill first", "second paragraph", "from jsonl", "again"]
    assert load_texts(None) == list(BUILTIN_CORPUS)


def test_bad_data_is_refused_by_name(tmp_path):
    with pytest.raises(FileNotFoundError, match="calibration data .*nothere does not exist"):
        load_texts(tmp_path / "nothere")
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"txt": 1}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2 has no string field \"text\""):
        load_texts(tmp_path / "bad.jsonl")
    (tmp_path / "broken.jsonl").write_text("{not json\n")
    with pytest.raises(ValueError, match=r"broken\.jsonl:1 is not a JSON line"):
        load_texts(tmp_path / "broken.jsonl")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="holds no text \\(no .txt or .jsonl file\\)"):
        load_texts(empty)
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(ValueError, match=r"x\.csv: calibration files are \.txt"):
        load_texts(tmp_path / "x.csv")


def test_samples_are_fixed_windows_of_the_joined_text():
    tok = PrintableTokenizer()
    texts = load_texts(None)
    s = calibration_samples(tok, texts, 8, 128)
    assert s.shape == (8, 128) and s.dtype == torch.int64
    joined = tok.encode("\n\n".join(texts))
    assert s[0].tolist() == joined[:128] and s[-1].tolist() == joined[-128:]
    assert torch.equal(s, calibration_samples(tok, texts, 8, 128))
    assert len(joined) > 2000, "the built-in corpus should give several distinct windows"
    with pytest.raises(ValueError, match="fewer than max_length=100000"):
        calibration_samples(tok, texts, 2, 100000)
    with pytest.raises(ValueError, match="num_samples=0"):
        calibration_samples(tok, texts, 0, 16)
