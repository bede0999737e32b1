"""What the shared tests need of this task: prompts, serve flags, and the ways a run folder gets damaged."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tests.helpers.files import set_json, set_tensors

QUESTIONS = [f"What is the opposite of {word}?" for word in ("hot", "big", "fast", "early", "open", "loud")]
INPUT_COLUMN = "prompt"  # what predict reads of a row (or a conversation in `messages`)
MADE_BY_SERVING: tuple[str, ...] = ()  # nothing: a chat run is read as it is
EXACT_SERVING = ("--precision", "fp32")  # serve's flags for answers equal to the in-process engine's
SERVER_MODULE = "src.task.api"  # what serve's parent imports of the task (the API class's module)
WORKER_MODULES = ("src.task.api", "src.task.generator", "src.task.engine")  # and its worker
PREDICT_STARTED = "Completing"  # predict's line once the model is loaded and the prompts begin
BAD_DATA_SETTING = ("DATA__MESSAGES_COLUMN", "conversation")  # a column the smoke chats do not have


def rows(count: int) -> list[dict[str, Any]]:
    """Rows of a predict input file: an id and a prompt each."""
    return [{"id": str(index), INPUT_COLUMN: QUESTIONS[index % len(QUESTIONS)]} for index in range(count)]


def write_rows(path: Path, count: int) -> Path:
    """A .jsonl predict input of `count` rows."""
    path.write_text("".join(json.dumps(row) + "\n" for row in rows(count)), encoding="utf-8")
    return path


def write_a_minute_of_work(path: Path) -> Path:
    """A predict input that keeps it busy for about a minute on a laptop CPU (each answer up to 256 tokens)."""
    return write_rows(path, 3000)


def _remove_chat_template(model: Path) -> None:
    (model / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((model / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (model / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")


# How a chat run can be unfit to serve, besides what every model can suffer (tests/helpers/models.py).
def _foreign_tokenizer(model: Path) -> None:
    """Another valid tokenizer: this one with a thousand words more than the base model has embeddings for."""
    tokenizer = json.loads((model / "tokenizer.json").read_text())
    vocabulary = tokenizer["model"]["vocab"]
    vocabulary.update({f"word{index}": len(vocabulary) + index for index in range(1000)})
    (model / "tokenizer.json").write_text(json.dumps(tokenizer), encoding="utf-8")


def _misspell_q_proj(name: str) -> str:
    return name.replace("q_proj", "qq_proj")


ADAPTERS = "adapter_model.safetensors"
# How a chat run can be unfit to serve, besides what every model can suffer (tests/helpers/models.py).
MODEL_DAMAGES: dict[str, Callable[[Path], object]] = {
    "no-chat-template": _remove_chat_template,
    "chat-template-broken": lambda model: (model / "chat_template.jinja").write_text(
        "{{ messages[0]['content'] | x }}"
    ),
    "not-lora": lambda model: set_json(model / "adapter_config.json", peft_type="PREFIX_TUNING"),
    "lora-alpha-1e30": lambda model: set_json(model / "adapter_config.json", lora_alpha=1e30),
    "another-rank": lambda model: set_json(model / "adapter_config.json", r=16),
    "renamed-adapter-tensors": lambda model: set_tensors(model / ADAPTERS, None, lambda name: f"renamed.{name}"),
    "unknown-target-module": lambda model: set_tensors(model / ADAPTERS, None, _misspell_q_proj),
    "foreign-tokenizer": _foreign_tokenizer,
    "base-model-gone": lambda model: set_json(model / "run.json", base_model=str(model / "no-such-base")),
}
NEEDS_THE_RECORD: set[str] = set()  # each one of these the folder's own checks refuse


@contextlib.contextmanager
def engine(run_dir: Path, precision: str = "fp32") -> Iterator[Any]:
    """The run's engine as the server's worker opens it (src/task/generator.py), closed on the way out."""
    from src.config import load_settings
    from src.task.folder import inspect
    from src.task.generator import open_engine

    serving = load_settings(environ={}).serving.model_copy(update={"precision": precision})
    opened = open_engine(inspect(run_dir), serving)
    try:
        yield opened
    finally:
        opened.close()


def check_two_process_run(run_dir: Path, eval_file: Path, metrics: dict[str, Any]) -> None:
    """A run trained on 2 processes learned its rule."""
    with engine(run_dir) as opened:
        answer, _ = opened.complete([{"role": "user", "content": "What is the opposite of early?"}], 20)
    assert answer.startswith("The opposite of"), answer


def check_notebook(cells: dict[str, tuple[str, set[str]]]) -> None:
    """notebooks/starter.ipynb's own cells, by id: (printed text, kinds of rich output)."""
    chatted, _ = cells["chat"]
    answers = [line for line in chatted.strip().splitlines() if line.startswith("assistant:")]
    assert len(answers) == 3
    assert all("opposite of" in answer for answer in answers)  # the rule the adapters learned
