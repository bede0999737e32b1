"""Response schema shared by the server and the in-process classifier (no heavy imports)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Prediction(BaseModel):
    label: str
    score: float = Field(ge=0, le=1, description="probability of the predicted label")
    probabilities: dict[str, float]
