"""The HTTP API's contract: OpenAI's chat completions request, with limits (no heavy imports).

LitServe's OpenAISpec takes any ChatCompletionRequest; ChatRequest narrows it to what this
server can honour, so a hostile or mistaken body is a 422 naming the field before anything
is queued: text turns with a known role, one choice, sane sampling values, a few short stop
strings, no tools.
"""

from __future__ import annotations

from typing import Any, Literal

from litserve.specs.openai import ChatCompletionRequest
from pydantic import BaseModel, ConfigDict, Field, field_validator

ROUTE = "/v1/chat/completions"
EXAMPLE = {
    "model": "local",
    "messages": [{"role": "user", "content": "What is the opposite of hot?"}],
    "max_tokens": 16,
}
MAX_TURNS = 512
MAX_STOP = 4  # OpenAI's own limit
MAX_STOP_CHARS = 100


class ChatTurn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]
    content: str = Field(description="the turn's text")
    name: str | None = Field(default=None, max_length=64)

    @field_validator("content")
    @classmethod
    def valid_unicode(cls, content: str) -> str:
        try:
            content.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("content is not valid Unicode (a lone surrogate such as \\ud800)") from None
        return content


class ChatRequest(ChatCompletionRequest):  # type: ignore[misc]
    messages: list[ChatTurn] = Field(min_length=1, max_length=MAX_TURNS)
    temperature: float | None = Field(default=1.0, ge=0, le=2)
    top_p: float | None = Field(default=1.0, gt=0, le=1)
    n: Literal[1] | None = 1
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    presence_penalty: float | None = Field(default=0.0, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=0.0, ge=-2, le=2)
    tools: None = Field(default=None, description="tools are not supported")
    response_format: Any = None

    @field_validator("stop")
    @classmethod
    def few_short_stops(cls, stop: str | list[str] | None) -> str | list[str] | None:
        stops = [stop] if isinstance(stop, str) else stop or []
        if len(stops) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop strings")
        if any(not text or len(text) > MAX_STOP_CHARS for text in stops):
            raise ValueError(f"each stop string must have 1-{MAX_STOP_CHARS} characters")
        return stop

    @field_validator("response_format")
    @classmethod
    def text_only(cls, response_format: Any) -> Any:
        kind = response_format.get("type") if isinstance(response_format, dict) else response_format
        if kind not in (None, "text"):
            raise ValueError("only text responses are supported (response_format type 'text')")
        return response_format

    def asked_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def turns(self) -> list[dict[str, str]]:
        return [{"role": turn.role, "content": turn.content} for turn in self.messages]
