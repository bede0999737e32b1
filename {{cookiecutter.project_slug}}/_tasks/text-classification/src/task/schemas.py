"""The HTTP API's contract: what a client sends, what it gets back (no heavy imports).

The server (api.py) validates requests with PredictRequest; the server and the in-process
classifier both answer with Prediction.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

ROUTE = "/predict"
EXAMPLE = {"text": "A wonderful, moving film."}


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, description="the text to classify")

    @field_validator("text")
    @classmethod
    def not_blank(cls, text: str) -> str:
        if not text.strip():
            raise ValueError("text is blank: send some words to classify")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("text is not valid Unicode (a lone surrogate such as \\ud800)") from None
        return text


class Prediction(BaseModel):
    label: str
    score: float = Field(ge=0, le=1, description="probability of the predicted label")
    probabilities: dict[str, float]
