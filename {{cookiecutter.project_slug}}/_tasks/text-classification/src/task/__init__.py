"""The text-classification task: what this project hands the core (src/contract.py's Task).

Its settings (src/config.py), its tiny offline model (smoke.py), its model folder check
(folder.py), its training recipe (training.py), its API (api.py, answering POST /predict) and
what it runs (parity.py, runtimes.py), its evaluation (scoring.py) and prediction
(labelling.py). Light: the parts that import torch or LitServe are loaded by the commands that
use them.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from src import contract, flags
from src.config import ServingSettings, Settings
from src.flags import Command, Flag
from src.runs import section, stored_settings
from src.tables import Table, texts
from src.task import smoke
from src.task.folder import ClassifierFolder, describe, inspect
from src.task.parity import serving_engine
from src.task.schemas import EXAMPLE, ROUTE
from src.weights import SAVED_MODEL

if TYPE_CHECKING:
    from src.task.api import ClassifierAPI

SERVE = Command("serve", "Serve the fine-tuned classifier over HTTP (POST /predict).", (
    *flags.SERVE_FLAGS,
    Flag("--precision", "serving.precision", "auto, fp32, bf16, fp16 or int8"),
    Flag("--runtime", "serving.runtime", "auto, pytorch or onnxruntime (CPU)"),
))  # fmt: skip
EVALUATE = Command("evaluate", "Evaluate a finished run and write its report.", (
    *flags.EVALUATE_FLAGS,
    Flag("--data", None, "evaluate on this .jsonl/.json/.csv/.parquet file instead", flags.PATH),
    Flag("--text-column", None, "column holding the text in --data (default: the run's data.text_column)"),
    Flag("--label-column", None, "column holding the label in --data (default: the run's data.label_column)"),
    Flag("--precision", None, "fp32 (default: the model as trained), or as served: auto, bf16, fp16, int8",
         {"default": "fp32"}),
    Flag("--runtime", None, "auto (ONNX Runtime for int8 on CPU, as served), pytorch or onnxruntime",
         {"default": "auto"}),
))  # fmt: skip
PREDICT = Command("predict", "Classify the texts in a file.", (
    Flag("input", None, "the file of texts (.jsonl, .json, .csv, .parquet, .txt); - for stdin", {"metavar": "INPUT"}),
    *flags.PREDICT_FLAGS,
    Flag("--text-column", None, "column holding the text (default: the run's data.text_column)"),
    Flag("--precision", "serving.precision", "auto, fp32, bf16, fp16 or int8"),
    Flag("--runtime", "serving.runtime", "auto, pytorch or onnxruntime (CPU)"),
))  # fmt: skip


def load_training() -> contract.TrainingRecipe:
    from src.task import training  # the Trainer's stack: seconds to import, so only when training

    return training


def build_api(
    folder: ClassifierFolder, serving: ServingSettings, engine: contract.Engine, threads: int
) -> ClassifierAPI:
    from src.task.api import ClassifierAPI  # litserve: only for the server

    return ClassifierAPI(folder, serving, engine, threads)


def load_evaluation() -> contract.EvaluationRecipe[ClassifierFolder]:
    from src.task.scoring import evaluate_run

    return evaluate_run


def load_prediction() -> contract.PredictionRecipe[ClassifierFolder]:
    from src.task.labelling import predict_rows

    return predict_rows


def inputs(table: Table, model_dir: Path, args: argparse.Namespace) -> list[str]:
    """The text of each row: --text-column, else the column the run was trained on (plain text: each line)."""
    column = args.text_column or section(stored_settings(model_dir), "data").get("text_column") or "text"
    return texts(table, "text" if table.kind == "text" else column)


def answer_columns(folder: ClassifierFolder) -> list[str]:
    return ["predicted_label", "predicted_score", *(f"probability_{label}" for label in folder.labels)]


TASK = contract.Task[ClassifierFolder](
    name="text-classification",
    settings=Settings,
    model_files=SAVED_MODEL,
    metrics=(
        contract.Metric("accuracy", "accuracy"),
        contract.Metric("f1", "macro F1"),
        contract.Metric("eval_loss", "eval loss", higher_is_better=False),
    ),
    smoke=smoke.write,
    inspect=inspect,
    training=load_training,
    serving=contract.Serving(SERVE, ROUTE, EXAMPLE, serving_engine, build_api, describe),
    evaluation=contract.Evaluation(EVALUATE, load_evaluation),
    prediction=contract.Prediction(PREDICT, "predictions", inputs, answer_columns, load_prediction),
)
