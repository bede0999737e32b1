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

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

NAME = r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$"  # also a run name's prefix and a folder's name


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
        return self


class SweepSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    study: str | None = Field(default=None, pattern=NAME, description="null: <training.run_name>-sweep")
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
