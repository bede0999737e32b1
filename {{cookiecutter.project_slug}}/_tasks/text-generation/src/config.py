"""This project's settings model: `configs/settings.yaml` for LoRA chat fine-tuning.

The sections every project shares, and how a file, overlays, `SECTION__FIELD` variables and
flags are layered and validated, live in src/settings.py; this module adds what a chat model
needs: the LoRA adapters (`lora`), the column of chat turns, packing, and the server's
generation limits (`LORA__TARGET_MODULES=[q_proj, v_proj]` sets two modules).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from src import settings
from src.settings import DEFAULT_SETTINGS_FILE, PROJECT_ROOT, SMOKE_SETTINGS_FILE, NonEmpty, Section
from src.settings import SettingsError as SettingsError  # what load_settings raises
from src.settings_sources import matching

__all__ = ["DEFAULT_SETTINGS_FILE", "PROJECT_ROOT", "SMOKE_SETTINGS_FILE", "Settings", "SettingsError", "load_settings"]

ModuleName = Annotated[
    str, matching(r"^[A-Za-z_][A-Za-z0-9_.]*$", "a module name of the model (e.g. q_proj, mlp.down_proj)")
]


class ModelSettings(settings.ModelSettings):
    max_length: int = Field(ge=16, le=131072)


class LoraSettings(Section):
    r: int = Field(ge=1, le=1024, description="the adapters' rank")
    alpha: int = Field(ge=1, le=4096, description="scaling: the update is multiplied by alpha / r")
    dropout: float = Field(ge=0, lt=1)
    target_modules: Literal["all-linear"] | Annotated[list[ModuleName], Field(min_length=1)] = Field(
        description="all-linear, or the names of the modules to adapt (q_proj, v_proj...)"
    )


class DataSettings(settings.DataSettings):
    messages_column: NonEmpty = Field(default="messages", description="the column of chat turns")


class TrainingSettings(settings.TrainingSettings):
    packing: bool = False


class ServingSettings(settings.ServingSettings):
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        default="auto", description="auto: bf16/fp16 on CUDA, fp16 on MPS, fp32 on CPU"
    )
    max_tokens: int = Field(default=512, ge=1, le=131072, description="the most new tokens a request may ask for")
    default_max_tokens: int = Field(default=256, ge=1, description="a request's max_tokens when it gives none")
    max_sequences: int | Literal["auto"] = Field(
        default="auto", description="conversations decoded together (auto: 32 on a CPU, 128 on a GPU); 1: one at a time"
    )
    cache_tokens: int | Literal["auto"] = Field(
        default="auto",
        description="the running batch's key-value cache, in tokens (auto: 16384 on a CPU, 65536 "
        "on a GPU): conversations x the longest of them",
    )
    max_queued: int = Field(default=64, ge=0, le=100_000, description="requests that may wait; past it: 503")

    @field_validator("max_sequences", "cache_tokens")
    @classmethod
    def _positive(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("use a number of at least 1, or auto")
        return value

    def sequences(self, gpu: bool) -> int:
        return self.max_sequences if isinstance(self.max_sequences, int) else 128 if gpu else 32

    def cache(self, gpu: bool) -> int:
        return self.cache_tokens if isinstance(self.cache_tokens, int) else 65536 if gpu else 16384

    @model_validator(mode="after")
    def _default_within_the_limit(self) -> ServingSettings:
        if self.default_max_tokens > self.max_tokens:
            raise ValueError(
                f"default_max_tokens ({self.default_max_tokens}) exceeds max_tokens ({self.max_tokens}): lower it"
            )
        return self


class Settings(settings.Settings):
    model: ModelSettings
    data: DataSettings
    training: TrainingSettings
    serving: ServingSettings
    lora: LoraSettings


# configs/settings.yaml (or another file), its overlays, variables and flags, as this project's Settings.
load_settings = settings.loader(Settings)
