"""The HTTP API's contract: OpenAI's chat completions request, field by field (no heavy imports).

What the engine honours is taken (messages with text content, max_tokens or
max_completion_tokens, temperature, top_p, stop, stream and stream_options.include_usage; n,
model and the like as OpenAI's client sends them); what it cannot honour is refused with a 422
naming the field (n above 1, tools, logprobs, logit_bias, penalties, seed, response formats
other than text), never silently ignored; an unknown field is refused too. A content given as
a list of text parts is joined; the `developer` role is the system's; a temperature under
1e-5 is greedy decoding.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ROUTE = "/v1/chat/completions"
EXAMPLE = {
    "model": "local",
    "messages": [{"role": "user", "content": "What is the opposite of hot?"}],
    "max_tokens": 16,
}
MAX_TURNS = 512
MAX_STOP = 4  # OpenAI's own limit
MAX_STOP_CHARS = 100
# Fields OpenAI defines that this server cannot honour, with the values that ask for nothing.
UNSUPPORTED: dict[str, tuple[Any, ...]] = {
    "tools": (None, []), "tool_choice": (None, "none"), "functions": (None, []), "function_call": (None, "none"),
    "parallel_tool_calls": (None, False, True), "logprobs": (None, False), "top_logprobs": (None, 0),
    "logit_bias": (None, {}), "presence_penalty": (None, 0, 0.0), "frequency_penalty": (None, 0, 0.0),
    "seed": (None,), "audio": (None,), "prediction": (None,), "modalities": (None, ["text"]),
    "reasoning_effort": (None,), "web_search_options": (None,),
}  # fmt: skip


def _valid_unicode(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("content is not valid Unicode (a lone surrogate such as \\ud800)") from None
    return text


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class ChatTurn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] = Field(description="the turn's text, or a list of text parts")
    name: str | None = Field(default=None, max_length=64)

    @field_validator("content")
    @classmethod
    def text(cls, content: str | list[TextPart]) -> str:
        return _valid_unicode(content if isinstance(content, str) else "".join(part.text for part in content))


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str | None = None
    messages: list[ChatTurn] = Field(min_length=1, max_length=MAX_TURNS)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2, allow_inf_nan=False)
    top_p: float | None = Field(default=None, gt=0, le=1, allow_inf_nan=False)
    stop: str | list[str] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    n: Literal[1] | None = None
    response_format: dict[str, Any] | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    # Defined by OpenAI, not honoured here: refused unless they ask for nothing (UNSUPPORTED).
    tools: Any = None
    tool_choice: Any = None
    functions: Any = None
    function_call: Any = None
    parallel_tool_calls: Any = None
    logprobs: Any = None
    top_logprobs: Any = None
    logit_bias: Any = None
    presence_penalty: Any = None
    frequency_penalty: Any = None
    seed: Any = None
    audio: Any = None
    prediction: Any = None
    modalities: Any = None
    reasoning_effort: Any = None
    web_search_options: Any = None

    @model_validator(mode="after")
    def nothing_it_cannot_honour(self) -> ChatRequest:
        for name, harmless in UNSUPPORTED.items():
            if getattr(self, name) not in harmless:
                raise ValueError(f"{name} is not supported by this server (it generates plain text, one choice)")
        kind = self.response_format.get("type") if self.response_format else "text"
        if kind != "text":
            raise ValueError("response_format: only {'type': 'text'} is supported")
        return self

    @field_validator("stop")
    @classmethod
    def few_short_stops(cls, stop: str | list[str] | None) -> str | list[str] | None:
        stops = [stop] if isinstance(stop, str) else stop or []
        if len(stops) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop strings")
        if any(not text or len(text) > MAX_STOP_CHARS for text in stops):
            raise ValueError(f"each stop string must have 1-{MAX_STOP_CHARS} characters")
        return stop

    def asked_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def stops(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())

    def turns(self) -> list[dict[str, str]]:
        """The conversation as the chat template takes it (a developer turn is the system's)."""
        return [{"role": "system" if turn.role == "developer" else turn.role, "content": str(turn.content)}
                for turn in self.messages]  # fmt: skip
