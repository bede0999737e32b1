"""Tiny, deterministic, offline stand-ins for the real model and dataset.

`uv run train-local --smoke` trains on these so a fresh checkout (or CI with no Hub access)
can run the whole pipeline in seconds: a byte-level BPE tokenizer trained on the spot, with
a chat template that marks the assistant turns (`{% generation %}`, what loss on the
assistant turns only needs), a 2-layer Llama-shaped model of about 100k parameters
(initialised wide, so that adapters alone can make it confident), and short chats whose
answers follow a rule the adapters can learn (the opposite of a word). src/smoke_assets.py
decides where a set lives and builds it once; the settings of a smoke run are
`configs/smoke.yaml` plus the paths. torch and transformers are imported inside `write()`.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast  # pants: no-infer-dep

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


def write(folder: Path, seed: int, train_size: int = 480, eval_size: int = 64) -> None:
    """model/ (tokenizer and chat template included), train.jsonl and eval.jsonl into `folder`, the same
    every time for `seed`."""
    import torch  # pants: no-infer-dep
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM  # pants: no-infer-dep

    train_rows, eval_rows = chats(train_size, seed), chats(eval_size, seed + 1)
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
    model.save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    for name, rows in (("train", train_rows), ("eval", eval_rows)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
