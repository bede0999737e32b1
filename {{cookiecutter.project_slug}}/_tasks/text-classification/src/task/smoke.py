"""Tiny, deterministic, offline stand-ins for the real model and dataset.

`uv run train-local --smoke` trains on these so a fresh checkout (or CI with no Hub access)
can run the whole pipeline in seconds: a WordPiece tokenizer over the corpus's words, a 2-layer
DistilBERT of about 230k parameters, and imdb-shaped reviews. src/smoke_assets.py decides where
a set lives and builds it once; the settings of a smoke run are `configs/smoke.yaml` plus the
paths. torch and transformers are imported inside `write()`: the launcher imports this cheaply.
"""

from __future__ import annotations

import json
import random
import re
import string
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers.models.distilbert.tokenization_distilbert import DistilBertTokenizer  # pants: no-infer-dep

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


def write(folder: Path, seed: int, train_size: int = 600, eval_size: int = 200) -> None:
    """model/ (tokenizer included), train.jsonl and eval.jsonl into `folder`, the same every time for `seed`."""
    import torch  # pants: no-infer-dep
    from transformers import DistilBertConfig, DistilBertForSequenceClassification  # pants: no-infer-dep

    train_rows, eval_rows = reviews(train_size, seed), reviews(eval_size, seed + 1)
    tokenizer = _tokenizer([row["text"] for row in train_rows])
    torch.manual_seed(seed)
    config = DistilBertConfig(
        vocab_size=tokenizer.vocab_size, dim=64, n_layers=2, n_heads=2, hidden_dim=128, max_position_embeddings=512,
        id2label=dict(enumerate(LABELS)), label2id={name: i for i, name in enumerate(LABELS)},
    )  # fmt: skip
    DistilBertForSequenceClassification(config).save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    for name, rows in (("train", train_rows), ("eval", eval_rows)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
