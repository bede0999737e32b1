"""Texts and input files for predict and evaluate."""

from __future__ import annotations

import json
from pathlib import Path

WORDS = ["great", "awful", "moving", "dull", "the", "film", "was", "really", "brilliant", "tedious", "plot", "cast"]


def reviews(count: int, repeat: int = 1) -> list[str]:
    """Texts of varied length (so length-sorted batching reorders them), deterministic."""
    return [" ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(3 + i % 40)) * repeat for i in range(count)]


def write_jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"id": index, "text": text}) + "\n" for index, text in enumerate(texts)))
    return path
