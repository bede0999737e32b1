"""The `promotion` section of configs/settings.yaml: `uv run promote`'s gate (src/promotion.py); no heavy imports."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class PromotionSettings(BaseModel):
    """`uv run promote`'s gate: the candidate's metric against the promoted run's, on the same evaluation data."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: str | None = Field(default=None, description="null: the task's first metric")
    max_regression: float = Field(default=0.0, ge=0, description="how much worse than the promoted run is allowed")
    min_value: float | None = Field(default=None, description="a floor (a ceiling for lower-is-better metrics)")
    after_training: bool = Field(default=False, description="train-local/train-cloud --promote: gate the new run")
