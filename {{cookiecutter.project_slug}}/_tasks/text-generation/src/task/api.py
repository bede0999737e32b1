"""The chat model's HTTP API on the shared server (src/deployment/serve.py): OpenAI's chat completions.

POST /v1/chat/completions takes OpenAI's chat request (messages, max_tokens or
max_completion_tokens, temperature, top_p, stop, stream) and answers as OpenAI does, with
usage counts; with `"stream": true` the completion arrives as server-sent events, piece by
piece as it is generated, so the official `openai` client works unchanged. Requests run one
at a time per worker (serving.workers_per_device workers). torch, transformers and peft load
only in the inference worker (`setup`).
"""

# No `from __future__ import annotations` here: FastAPI reads the real type of
# chat_completion's argument to validate request bodies (422 instead of a 500).

from collections.abc import Iterator
from typing import Any

import litserve as ls
from fastapi import BackgroundTasks, HTTPException

from src.config import ServingSettings
from src.contract import Engine
from src.deployment.worker import WorkerAPI
from src.task.folder import RunFolder
from src.task.schemas import ChatRequest


class ChatSpec(ls.OpenAISpec):  # type: ignore[misc]
    """OpenAI's chat completions route, validating requests as ChatRequest (limits, one choice, no tools)."""

    def __init__(self, max_tokens: int) -> None:
        super().__init__()
        self.max_tokens = max_tokens

    async def chat_completion(self, request: ChatRequest, background_tasks: BackgroundTasks) -> Any:
        asked = request.asked_tokens()
        if asked is not None and asked > self.max_tokens:
            raise HTTPException(422, f"max_tokens {asked} exceeds this server's limit of {self.max_tokens}")
        return await super().chat_completion(request, background_tasks)


class ChatAPI(WorkerAPI):
    def __init__(self, model: RunFolder, serving: ServingSettings, engine: Engine, threads: int) -> None:
        super().__init__(spec=ChatSpec(serving.max_tokens))
        self.model = model
        self.precision = engine.precision
        self.default_max_tokens = serving.default_max_tokens
        self.threads = threads

    def load(self, device: str) -> None:
        import torch  # heavy: only in the worker

        from src.task.generator import Generator

        torch.set_num_threads(self.threads)
        self.generator = Generator(self.model, device, self.precision)
        print(
            f"worker ready on {device}: {self.generator.precision}, {self.threads} CPU threads, "
            f"base model {self.model.base_model} with the run's LoRA adapters merged",
            flush=True,
        )

    def predict(self, request: ChatRequest, context: dict[str, Any]) -> Iterator[dict[str, Any]]:
        stream = self.generator.stream(
            request.turns(),
            max_tokens=request.asked_tokens() or self.default_max_tokens,
            temperature=request.temperature if request.temperature is not None else 1.0,
            top_p=request.top_p if request.top_p is not None else 1.0,
            stop=request.stops(),
        )
        previous: str | None = None
        for piece in stream:  # one piece behind: the last one carries the usage counts
            if previous is not None:
                yield {"role": "assistant", "content": previous}
            previous = piece
        usage = {"prompt_tokens": stream.prompt_tokens, "completion_tokens": stream.completion_tokens,
                 "total_tokens": stream.prompt_tokens + stream.completion_tokens}  # fmt: skip
        yield {"role": "assistant", "content": previous or "", **usage}
