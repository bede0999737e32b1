"""The `sweep` section of configs/settings.yaml: what `uv run sweep` searches and how (no heavy imports).

`space` maps a settings field, by its dotted name (`training.learning_rate`, `model.max_length`), to the
values a trial may give it: a range (`low`, `high`, optionally `log` or `step`; whole numbers for
a whole-number field) or `choices`. Every name must be a field of this project's settings, and
every value one that field accepts (src/models/sweep.py checks them against the settings model
before a trial starts). `metric` is a number of a run's metrics.json (default: the task's first,
e.g. accuracy or perplexity), maximized or minimized as the task says; `pruner: median` stops a
trial whose evaluation during training is worse than the median of the earlier trials at the same
step.
"""

from __future__ import annotations

from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, model_validator

from src.settings_sources import matching

NAME = r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$"  # also a run name's prefix and a folder's name
NAME_WORDS = "1-64 lowercase letters, digits or '-', first and last not '-' (e.g. lr-search)"


class Parameter(BaseModel):
    """The values one settings field may take in a trial: a range, or a list of choices."""

    model_config = ConfigDict(extra="forbid")
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = Field(default=None, gt=0)
    choices: list[str | int | float | bool] | None = None

    @model_validator(mode="after")
    def one_kind(self) -> Parameter:
        ranged = self.low is not None or self.high is not None or self.log or self.step is not None
        if self.choices is not None:
            if ranged:
                raise ValueError("give low and high, or choices, not both")
            if not self.choices:
                raise ValueError("choices is empty: give at least one value")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give low and high (a range), or choices")
        if not self.low < self.high:
            raise ValueError(f"low ({self.low:g}) must be below high ({self.high:g})")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low above 0")
        if self.log and self.step is not None:
            raise ValueError("give log or step, not both (a log range has no fixed step)")
        return self


class SweepSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    study: Annotated[str, matching(NAME, NAME_WORDS)] | None = Field(default=None, description="null: <run_name>-sweep")
    trials: int = Field(default=8, ge=1, le=10_000, description="complete trials the study ends with")
    metric: str | None = Field(default=None, description="null: the task's first metric")
    sampler: Literal["tpe", "random"] = "tpe"
    pruner: Literal["median", "none"] = "median"
    space: dict[str, Parameter] = Field(default_factory=dict)


def check_space(settings: Any) -> None:
    """Every name in sweep.space is a field of these settings (a value, not a whole section)."""
    for name in settings.sweep.space:
        section, _, field = name.partition(".")
        sections = {key for key in type(settings).model_fields if key not in ("sweep", "project")}
        if section not in sections:
            raise ValueError(f"sweep.space: {name!r} names no section (sections: {', '.join(sorted(sections))})")
        model = type(getattr(settings, section))
        if field not in model.model_fields or isinstance(getattr(getattr(settings, section), field), BaseModel):
            known = ", ".join(key for key in model.model_fields)
            raise ValueError(f"sweep.space: {name!r} is not a field of {section} (its fields: {known})")
        parameter = settings.sweep.space[name]
        if parameter.choices is None and whole_number_field(settings, name):
            bounds = {"low": parameter.low, "high": parameter.high, "step": parameter.step}
            fractional = [f"{key} {value:g}" for key, value in bounds.items() if value is not None and value % 1]
            if fractional:
                raise ValueError(f"sweep.space: {name!r} takes whole numbers ({', '.join(fractional)} is not one)")


def whole_number_field(settings: Any, name: str) -> bool:
    """Whether a field takes whole numbers, from its type (`int`, `int | None`), not from its current value."""
    section, field = name.split(".", 1)
    annotation = type(getattr(settings, section)).model_fields[field].annotation
    kinds = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else (annotation,)
    return {get_args(kind)[0] if get_origin(kind) is Annotated else kind for kind in kinds} - {type(None)} == {int}


def suggest(trial: Any, name: str, parameter: Parameter, whole: bool) -> Any:
    """The value an Optuna trial suggests for one parameter (whole numbers for a whole-number field)."""
    if parameter.choices is not None:
        return trial.suggest_categorical(name, parameter.choices)
    low, high = float(parameter.low or 0), float(parameter.high or 0)
    if whole:
        return trial.suggest_int(name, int(low), int(high), step=int(parameter.step or 1), log=parameter.log)
    return trial.suggest_float(name, low, high, log=parameter.log, step=parameter.step)
