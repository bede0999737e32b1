"""Tiny, deterministic, offline stand-ins for the real model and dataset.

`uv run train-local --smoke` trains on these so a fresh checkout (or CI with no
Hub access) can run the whole pipeline in seconds: a WordPiece tokenizer trained on
the spot, a 2-layer DistilBERT of about 230k parameters, and imdb-shaped reviews.
The settings of a smoke run are `configs/smoke.yaml` plus `overrides()` (the paths).
torch and transformers are imported inside `build()`: the launcher reads the paths cheaply.
"""

from __future__ import annotations

import fcntl
import json
import random
import re
import shutil
import string
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers.models.distilbert.tokenization_distilbert import DistilBertTokenizer  # pants: no-infer-dep

ASSETS_DIR = ".smoke"
COMPLETE_MARKER = ".complete"
LABELS = ["neg", "pos"]
POSITIVE = [
    "great",
    "wonderful",
    "superb",
    "moving",
    "brilliant",
    "delightful",
    "charming",
    "excellent",
    "loved",
    "masterpiece",
]
NEGATIVE = ["awful", "boring", "dull", "terrible", "weak", "clumsy", "tedious", "dreadful", "hated", "mess"]
FILLER = [
    *("the", "film", "movie", "story", "plot", "acting", "cast", "director", "scenes", "music", "ending"),
    *("characters", "script", "was", "is", "felt", "seemed", "really", "quite", "very", "and", "but"),
    *("with", "a", "an", "of", "this", "that", "it", "its"),
]
UNKNOWN = "[UNK]"
SPECIAL_TOKENS = ("[PAD]", UNKNOWN, "[CLS]", "[SEP]", "[MASK]")
ASCII_PIECES = string.ascii_lowercase + string.digits + string.punctuation


def reviews(count: int, seed: int) -> list[dict[str, Any]]:
    """Reviews whose label follows the majority of their sentiment words (some noise)."""
    rng = random.Random(seed)  # noqa: S311 - synthetic data, not security
    rows = []
    for _ in range(count):
        label = rng.randrange(2)
        words = rng.choices(FILLER, k=rng.randint(8, 60))
        for _ in range(rng.randint(1, 4)):
            same = rng.random() < 0.8
            pool = POSITIVE if (label == 1) == same else NEGATIVE
            words.insert(rng.randrange(len(words) + 1), rng.choice(pool))
        rows.append({"text": " ".join(words).capitalize() + ".", "label": label})
    return rows


def vocabulary(corpus: list[str]) -> dict[str, int]:
    """WordPiece's vocabulary, spelled out: the special tokens, every word of the corpus, and each character
    (ASCII letters, digits and punctuation, and the corpus's own) alone and as a word's continuation
    (`##e`), so an unseen word still has pieces.

    Spelled out rather than trained: the `tokenizers` trainer breaks ties between equally frequent
    pieces in a random order (a Rust hash map), so each build got other token ids and trained
    another model; this list depends on the corpus alone.
    """
    words = sorted({word for text in corpus for word in _words(text)})
    characters = sorted(set(ASCII_PIECES) | {character for word in words for character in word})
    pieces = [*SPECIAL_TOKENS, *characters, *(f"##{character}" for character in characters), *words]
    return {piece: index for index, piece in enumerate(dict.fromkeys(pieces))}


def _words(text: str) -> list[str]:
    """What BertNormalizer(lowercase) and BertPreTokenizer make of `text`: lower-case words and punctuation."""
    return re.findall(r"\w+|[^\w\s]", text.lower())


def _tokenizer(corpus: list[str]) -> DistilBertTokenizer:
    # Imported here, and hidden from Pants' inference: the launcher imports this module
    # for its paths, and its tests must not depend on the training stack.
    from tokenizers import (  # pants: no-infer-dep
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )
    from transformers.models.distilbert.tokenization_distilbert import DistilBertTokenizer  # pants: no-infer-dep

    backend = Tokenizer(models.WordPiece(vocabulary(corpus), unk_token=UNKNOWN))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece()
    cls_id, sep_id = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    return DistilBertTokenizer(tokenizer_object=backend, model_max_length=512)


def assets_dir(output_dir: Path) -> Path:
    return output_dir / ASSETS_DIR


def files(target: Path) -> dict[str, Path]:
    return {"model": target / "model", "train": target / "train.jsonl", "eval": target / "eval.jsonl"}


def build(target: Path, seed: int = 0, train_size: int = 600, eval_size: int = 200) -> dict[str, Path]:
    """Write model/, train.jsonl and eval.jsonl under target (atomically); return their paths.

    The assets are deterministic: a complete set already there (from the same seed and
    sizes) is kept, so launchers sharing a folder never pull it from under each other.
    """
    marker = f"seed={seed} train={train_size} eval={eval_size}\n"
    target.parent.mkdir(parents=True, exist_ok=True)
    # Launchers started side by side (two runs, two "nodes" on one machine) build one at a time.
    with (target.parent / f"{target.name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / COMPLETE_MARKER).is_file() or (target / COMPLETE_MARKER).read_text(encoding="utf-8") != marker:
            _write(target, marker, seed, train_size, eval_size)
    return files(target)


def _write(target: Path, marker: str, seed: int, train_size: int, eval_size: int) -> None:
    import torch  # pants: no-infer-dep
    from transformers import DistilBertConfig, DistilBertForSequenceClassification  # pants: no-infer-dep

    train_rows, eval_rows = reviews(train_size, seed), reviews(eval_size, seed + 1)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-smoke-", dir=target.parent))
    try:
        tokenizer = _tokenizer([row["text"] for row in train_rows])
        torch.manual_seed(seed)
        config = DistilBertConfig(
            vocab_size=tokenizer.vocab_size, dim=64, n_layers=2, n_heads=2, hidden_dim=128,
            max_position_embeddings=512,
            id2label=dict(enumerate(LABELS)), label2id={name: i for i, name in enumerate(LABELS)},
        )  # fmt: skip
        DistilBertForSequenceClassification(config).save_pretrained(staging / "model")
        tokenizer.save_pretrained(staging / "model")
        for name, rows in (("train", train_rows), ("eval", eval_rows)):
            lines = "".join(json.dumps(row) + "\n" for row in rows)
            (staging / f"{name}.jsonl").write_text(lines, encoding="utf-8")
        (staging / COMPLETE_MARKER).write_text(marker, encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def overrides(assets: dict[str, Path]) -> dict[str, Any]:
    """The paths `configs/smoke.yaml` cannot know: where build() put the assets."""
    return {
        "model": {"checkpoint": str(assets["model"])},
        "data": {"train_file": str(assets["train"]), "eval_file": str(assets["eval"])},
    }
