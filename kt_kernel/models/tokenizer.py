"""Tokenizers for the demo and the tests: a self-contained one for the tiny models, the
checkpoint's own (transformers' AutoTokenizer) for real ones."""
from __future__ import annotations

from pathlib import Path

from kt_kernel.models._deps import require_transformers

__all__ = ["PrintableTokenizer", "load_tokenizer"]

TINY_MARKER = "kt_kernel_tiny.json"  # written by kt_kernel.models.tiny next to config.json


class PrintableTokenizer:
    """One token per character of printable ASCII plus newline: 96 ids, so that whatever a random
    model generates decodes to printable text. Characters outside the alphabet encode as '?'."""

    alphabet = "\n" + "".join(chr(c) for c in range(32, 127))
    vocab_size = len(alphabet)
    _ids = {c: i for i, c in enumerate(alphabet)}

    def encode(self, text: str) -> list:
        unknown = self._ids["?"]
        return [self._ids.get(c, unknown) for c in text]

    def decode(self, ids) -> str:
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"token id {bad[0]} is outside the printable tokenizer's 0..{self.vocab_size - 1}")
        return "".join(self.alphabet[i] for i in ids)


def load_tokenizer(path):
    """The tokenizer of the model in ``path``: PrintableTokenizer for a tiny model built by
    kt_kernel.models.tiny, else the checkpoint's tokenizer files through AutoTokenizer (local
    files only). Both offer ``encode(text) -> ids`` and ``decode(ids) -> text``."""
    path = Path(path)
    if (path / TINY_MARKER).exists():
        return PrintableTokenizer()
    transformers = require_transformers()
    try:
        return transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as e:  # transformers raises OSError, ValueError, ... for missing files
        raise FileNotFoundError(f"{path} has no tokenizer transformers can load ({e}); tokenizer.json or the "
                                "tokenizer files of the original checkpoint are needed") from e
