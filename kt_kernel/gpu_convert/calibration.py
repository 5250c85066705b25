"""Calibration data for GPTQ without a network: local text files, or a small built-in corpus.

``load_texts(path)`` reads a ``.txt`` file (paragraphs split at blank lines), a ``.jsonl`` file (the
``text`` field of each line) or a folder of them (sorted by name); ``load_texts(None)`` gives the
built-in corpus. ``calibration_samples(tokenizer, texts, n, length)`` tokenizes the texts with the
model's own tokenizer (any object with ``encode(text) -> ids``), joins them, and cuts ``n``
windows of ``length`` tokens from evenly spaced places, the same for the same inputs. Nothing is
ever downloaded.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch

__all__ = ["BUILTIN_CORPUS", "load_texts", "calibration_samples"]

# Varied registers (narrative, technical, dialogue, lists, numbers, code) so that a model's
# activations are not all of one kind; written for kt_kernel.
BUILTIN_CORPUS = (
    "The harbour was quiet before dawn. Fishing boats rocked against the pier, their ropes creaking, and a "
    "single gull walked the length of the sea wall as if inspecting it. By six the first trucks arrived, and "
    "the market filled with voices bargaining over the night's catch.",
    "A mixture-of-experts layer sends each token to a few of its many feed-forward networks. A small router "
    "scores the experts, keeps the best k, and weights their outputs; the experts that are not chosen cost "
    "nothing for that token, which is why such models can hold far more parameters than they use per step.",
    "\"Did you lock the back door?\" she asked.\n\"Twice,\" he said. \"And I checked the windows, and the gate, "
    "and the shed. Nobody is getting in tonight.\"\n\"That is what worries me,\" she said, and turned off the light.",
    "Ingredients: 250 g flour, 2 eggs, 300 ml milk, a pinch of salt, butter for the pan.\n1. Whisk the eggs "
    "and milk.\n2. Sift in the flour and salt; beat until smooth.\n3. Rest the batter for 30 minutes.\n4. Fry "
    "thin layers in a hot buttered pan, about a minute per side.",
    "def fibonacci(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n\n"
    "print([fibonacci(i) for i in range(10)])  # [0, 1, 1, 2, 3, 5, 8, 13, 21, 34]",
    "In 1850 the town counted 4,210 inhabitants; by 1900 it had 18,932, and by 1950, after two wars and the "
    "closing of the mill, 11,407. The census of 2020 recorded 23,115 people, a third of them born elsewhere.",
    "Photosynthesis converts light into chemical energy. In the chloroplast, water is split, oxygen is "
    "released, and the energy captured drives the fixing of carbon dioxide into sugars, which the plant "
    "uses to grow and to store for the night and the winter.",
    "The committee met on Tuesday to review the budget. Three proposals were discussed: repairing the "
    "library roof, extending the bus route to the new estate, and funding the summer programme for "
    "children. After a long debate the roof was approved and the other two were deferred to March.",
    "Q: Why does ice float?\nA: Water expands when it freezes, because its molecules arrange themselves in an "
    "open hexagonal lattice. Ice is therefore about nine percent less dense than liquid water, and floats.",
    "She had not expected the mountains to be so quiet. The wind dropped at sunset, and in the silence she "
    "could hear the stream far below, the small shifting of stones, her own breath. Tomorrow they would "
    "cross the pass; tonight there was only the fire and the first stars.",
    "SELECT customer_id, COUNT(*) AS orders, SUM(total) AS spent\nFROM orders\nWHERE placed_at >= '2024-01-01'\n"
    "GROUP BY customer_id\nHAVING COUNT(*) > 3\nORDER BY spent DESC\nLIMIT 20;",
    "Les trains partent toutes les vingt minutes. Der Zug nach Berlin hat zehn Minuten Verspätung. El museo "
    "abre a las nueve y cierra a las seis. Il concerto è stato annullato a causa della pioggia.",
)


def _read_file(path: Path) -> list:
    if path.suffix == ".jsonl":
        texts = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except ValueError as e:
                raise ValueError(f"{path}:{n} is not a JSON line ({e})") from e
            if not isinstance(item, dict) or not isinstance(item.get("text"), str):
                raise ValueError(f"{path}:{n} has no string field \"text\"")
            texts.append(item["text"])
        return texts
    if path.suffix == ".txt":
        return [p.strip() for p in path.read_text(encoding="utf-8").split("\n\n") if p.strip()]
    raise ValueError(f"{path}: calibration files are .txt (paragraphs) or .jsonl (a \"text\" per line)")


def load_texts(path=None) -> list:
    """The calibration texts of ``path`` (a .txt or .jsonl file, or a folder of them), or the
    built-in corpus for None. Raises naming the path when it is missing or holds no text."""
    if path is None:
        return list(BUILTIN_CORPUS)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"calibration data {path} does not exist")
    files = sorted(p for p in path.iterdir() if p.suffix in (".txt", ".jsonl")) if path.is_dir() else [path]
    texts = [t for f in files for t in _read_file(f)]
    if not texts:
        raise ValueError(f"calibration data {path} holds no text" + (" (no .txt or .jsonl file)" if not files else ""))
    return texts


def calibration_samples(tokenizer, texts: list, num_samples: int, max_length: int,
                        separator: Optional[str] = "\n\n") -> torch.Tensor:
    """int64 [n, max_length] token windows of the joined texts, n = num_samples, taken at evenly
    spaced offsets (overlapping when the texts are short). Raises when the texts hold fewer than
    max_length tokens."""
    if num_samples < 1 or max_length < 1:
        raise ValueError(f"num_samples={num_samples} and max_length={max_length} must be at least 1")
    ids = list(tokenizer.encode((separator or "").join(texts)))
    if len(ids) < max_length:
        raise ValueError(f"the calibration texts hold {len(ids)} tokens, fewer than max_length={max_length}: give "
                         "more text (--dataset) or a shorter --max_sequence_length")
    tokens = torch.tensor(ids, dtype=torch.int64)
    span = len(ids) - max_length
    starts = [span * i // max(num_samples - 1, 1) for i in range(num_samples)]
    return torch.stack([tokens[s:s + max_length] for s in starts])
