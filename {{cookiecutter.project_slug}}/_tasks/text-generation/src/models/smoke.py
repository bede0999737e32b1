"""Tiny, deterministic, offline stand-ins for the real model and dataset.

`uv run train-local --smoke` trains on these so a fresh checkout (or CI with no Hub access)
can run the whole pipeline in seconds: a byte-level BPE tokenizer trained on the spot, with
a chat template that marks the assistant turns (`{% generation %}`, what loss on the
assistant turns only needs), a 2-layer Llama-shaped model of about 100k parameters
(initialised wide, so that adapters alone can make it confident), and short chats whose
answers follow a rule the adapters can learn (the opposite of a word). The settings of a
smoke run are `configs/smoke.yaml` plus `overrides()` (the paths). torch and transformers
are imported inside `build()`: the launcher reads the paths cheaply.
"""

from __future__ import annotations

import fcntl
import json
import random
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast  # pants: no-infer-dep

ASSETS_DIR = ".smoke"
COMPLETE_MARKER = ".complete"
END = "<|end|>"
PAD = "<pad>"
ROLES = ("system", "user", "assistant")
# Turns are "<|role|>\n content <|end|>\n"; the assistant's content and its <|end|> are the
# generation (the tokens the loss counts); a prompt ends with "<|assistant|>\n".
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>\\n' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] + '<|end|>' }}{% endgeneration %}"
    "{% else %}{{ message['content'] + '<|end|>' }}{% endif %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)
OPPOSITES = [
    ("hot", "cold"), ("big", "small"), ("fast", "slow"), ("up", "down"), ("light", "dark"),
    ("happy", "sad"), ("early", "late"), ("open", "closed"), ("full", "empty"), ("hard", "soft"),
    ("old", "new"), ("rich", "poor"), ("loud", "quiet"), ("wet", "dry"), ("high", "low"),
]  # fmt: skip
QUESTIONS = ["What is the opposite of {}?", "Give the opposite of {}.", "Opposite of {}?"]
SYSTEM = "You answer in one short sentence."


def chats(count: int, seed: int) -> list[dict[str, Any]]:
    """Chats asking for a word's opposite, answered "The opposite of X is Y."; some with a system turn."""
    rng = random.Random(seed)  # noqa: S311 - synthetic data, not security
    pairs = OPPOSITES + [(b, a) for a, b in OPPOSITES]
    rows = []
    for _ in range(count):
        word, opposite = rng.choice(pairs)
        messages = [{"role": "system", "content": SYSTEM}] if rng.random() < 0.3 else []
        messages.append({"role": "user", "content": rng.choice(QUESTIONS).format(word)})
        messages.append({"role": "assistant", "content": f"The opposite of {word} is {opposite}."})
        rows.append({"messages": messages})
    return rows


def _tokenizer(corpus: list[str]) -> PreTrainedTokenizerFast:
    # Imported here, and hidden from Pants' inference: the launcher imports this module
    # for its paths, and its tests must not depend on the training stack.
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # pants: no-infer-dep
    from transformers import PreTrainedTokenizerFast  # pants: no-infer-dep

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    specials = [PAD, END, *(f"<|{role}|>" for role in ROLES)]
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=backend, eos_token=END, pad_token=PAD, chat_template=CHAT_TEMPLATE, model_max_length=512
    )


def assets_dir(output_dir: Path) -> Path:
    return output_dir / ASSETS_DIR


def files(target: Path) -> dict[str, Path]:
    return {"model": target / "model", "train": target / "train.jsonl", "eval": target / "eval.jsonl"}


def build(target: Path, seed: int = 0, train_size: int = 480, eval_size: int = 64) -> dict[str, Path]:
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
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM  # pants: no-infer-dep

    train_rows, eval_rows = chats(train_size, seed), chats(eval_size, seed + 1)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-smoke-", dir=target.parent))
    try:
        corpus = [turn["content"] for row in train_rows for turn in row["messages"]]
        tokenizer = _tokenizer(corpus)
        torch.manual_seed(seed)
        config = LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
            tie_word_embeddings=True, initializer_range=0.3,
        )  # fmt: skip
        model = LlamaForCausalLM(config)  # type: ignore[no-untyped-call]
        model.generation_config = GenerationConfig(  # type: ignore[no-untyped-call]
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, do_sample=False
        )
        model.save_pretrained(staging / "model")
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
