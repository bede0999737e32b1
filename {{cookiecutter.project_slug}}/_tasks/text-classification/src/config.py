"""This project's settings model: `configs/settings.yaml` for a text classifier.

The sections every project shares, and how a file, overlays, `SECTION__FIELD` variables and
flags are layered and validated, live in src/settings.py; this module adds what a classifier
needs: the text and label columns and the label names, keeping the best checkpoint by a
metric, batching and the CPU runtime (ONNX Runtime or PyTorch) of the server.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from src import settings
from src.settings import DEFAULT_SETTINGS_FILE, PROJECT_ROOT, SMOKE_SETTINGS_FILE, NonEmpty
from src.settings import SettingsError as SettingsError  # what load_settings raises

__all__ = ["DEFAULT_SETTINGS_FILE", "PROJECT_ROOT", "SMOKE_SETTINGS_FILE", "Settings", "SettingsError", "load_settings"]

ServingPrecision = Literal["auto", "fp32", "bf16", "fp16", "int8"]
ServingRuntime = Literal["auto", "pytorch", "onnxruntime"]


class ModelSettings(settings.ModelSettings):
    max_length: int = Field(ge=8, le=8192)


class DataSettings(settings.DataSettings):
    text_column: NonEmpty = "text"
    label_column: NonEmpty = "label"
    labels: list[NonEmpty] = Field(min_length=2)


class TrainingSettings(settings.TrainingSettings):
    keep_best_model: bool = False
    best_model_metric: Literal["accuracy", "f1"] = "f1"

    @field_validator("keep_best_model")
    @classmethod
    def _best_model_needs_evaluations(cls, keep: bool, info: ValidationInfo) -> bool:
        # The best model is one of the saved checkpoints, judged by the evaluation at its step.
        eval_steps, save_steps = info.data.get("eval_steps"), info.data.get("save_steps")
        if keep and eval_steps is None and "eval_steps" in info.data:
            raise ValueError("needs evaluations: set training.eval_steps (e.g. to save_steps)")
        if keep and eval_steps and save_steps and save_steps % eval_steps:
            raise ValueError(
                f"needs save_steps ({save_steps}) to be a multiple of eval_steps ({eval_steps}): "
                "each checkpoint must have an evaluation"
            )
        return keep


class ServingSettings(settings.ServingSettings):
    max_batch_size: int = Field(ge=1, le=1024)
    batch_timeout: float = Field(ge=0, le=10)
    precision: ServingPrecision = Field(
        default="auto", description="auto: bf16/fp16 on CUDA, fp16 on MPS, the measured CPU default (see serving)"
    )
    runtime: ServingRuntime = Field(default="auto", description="auto: ONNX Runtime for int8 on CPU, else PyTorch")


class Settings(settings.Settings):
    model: ModelSettings
    data: DataSettings
    training: TrainingSettings
    serving: ServingSettings


# configs/settings.yaml (or another file), its overlays, variables and flags, as this project's Settings.
load_settings = settings.loader(Settings)
