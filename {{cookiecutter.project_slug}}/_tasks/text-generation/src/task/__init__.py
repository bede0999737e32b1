"""The text-generation task: what this project hands the core (src/contract.py's Task).

LoRA chat fine-tuning: its settings (src/config.py, with the `lora` section), its tiny offline
model and chats (smoke.py), its run folder check (folder.py), its training recipe (training.py:
TRL's SFTTrainer), its OpenAI-compatible API (api.py, schemas.py), the model (generator.py) and
the engine that decodes conversations in one continuous batch (engine.py), its evaluation
(scoring.py: eval loss, perplexity) and prediction (completion.py). Light: the parts that
import torch or LitServe are loaded by the commands that use them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from src import contract, flags
from src.config import ServingSettings, Settings
from src.devices import serving_precision, surely_cpu_only
from src.flags import Command, Flag
from src.task import smoke
from src.task.completion import ADDED, conversations
from src.task.folder import ADAPTER, RunFolder, describe, inspect
from src.task.schemas import EXAMPLE as EXAMPLE
from src.task.schemas import ROUTE as ROUTE

if TYPE_CHECKING:
    from src.task.api import ChatAPI

PRECISIONS = "auto, fp32, bf16 or fp16"
SERVE = Command("serve", "Serve the fine-tuned chat model as an OpenAI-compatible API.", (
    *flags.SERVE_FLAGS,
    Flag("--precision", "serving.precision", PRECISIONS),
))  # fmt: skip
EVALUATE = Command("evaluate", "Eval loss and perplexity of a finished run, and its report.", (
    *flags.EVALUATE_FLAGS,
    Flag("--data", None, "evaluate on this .jsonl/.json/.parquet file of chats instead", flags.PATH),
))  # fmt: skip
PREDICT = Command("predict", "A completion for each prompt in a file.", (
    Flag("input", None, "prompts: .jsonl/.json/.parquet rows with messages or prompt, or .txt lines; - for stdin",
         {"metavar": "INPUT"}),
    *flags.PREDICT_FLAGS,
    Flag("--max-tokens", "serving.default_max_tokens", "the most new tokens per completion", flags.NUMBER),
    Flag("--temperature", None, "0 (default): the likeliest tokens; higher samples more freely",
         {"type": float, "default": 0.0}),
    Flag("--precision", "serving.precision", PRECISIONS),
))  # fmt: skip


def load_training() -> contract.TrainingRecipe:
    from src.task import training  # the Trainer's stack: seconds to import, so only when training

    return training


def choose(serving: ServingSettings, folder: RunFolder) -> contract.Engine:
    """PyTorch, in the precision the device suits (on a GPU the worker resolves auto: that needs torch)."""
    on_cpu = serving.accelerator == "cpu" or (serving.accelerator == "auto" and surely_cpu_only(os.environ))
    return contract.Engine(
        "pytorch", serving_precision(serving.precision, "cpu", on_cpu="fp32") if on_cpu else serving.precision
    )


def local_base(folder: RunFolder) -> Path | None:
    """The base model, when it is a folder on this machine (a replica has to be sent it with the adapters)."""
    base = Path(folder.base_model).expanduser()
    return base if folder.base_model.startswith(("/", "./", "../", "~")) and base.is_dir() else None


def build_api(folder: RunFolder, serving: ServingSettings, engine: contract.Engine, threads: int) -> ChatAPI:
    from src.task.api import ChatAPI  # litserve: only for the server

    return ChatAPI(folder, serving, engine, threads)


def load_evaluation() -> contract.EvaluationRecipe[RunFolder]:
    from src.task.scoring import evaluate_run

    return evaluate_run


def load_prediction() -> contract.PredictionRecipe[RunFolder]:
    from src.task.completion import complete_rows

    return complete_rows


TASK = contract.Task[RunFolder](
    name="text-generation",
    settings=Settings,
    model_files=ADAPTER,
    smoke=smoke.write,
    inspect=inspect,
    metrics=(
        contract.Metric("perplexity", "perplexity", ".4g", higher_is_better=False, during_training="eval_loss"),
        contract.Metric("eval_loss", "eval loss", higher_is_better=False),
    ),
    training=load_training,
    serving=contract.Serving(SERVE, ROUTE, EXAMPLE, choose, build_api, describe, local_base),
    evaluation=contract.Evaluation(EVALUATE, load_evaluation),
    prediction=contract.Prediction(PREDICT, "completions", conversations, lambda folder: ADDED, load_prediction),
)
