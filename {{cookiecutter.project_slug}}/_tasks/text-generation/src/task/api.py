"""The chat model's HTTP API on the shared server (src/deployment/serve.py): OpenAI's chat completions.

POST /v1/chat/completions answers as OpenAI does (the official `openai` client works unchanged):
the whole completion, or with `"stream": true` server-sent events piece by piece as the engine
decodes them, each with the completion's one id; the last says why it ended ("stop", or
"length" when max_tokens ended it) and, with stream_options.include_usage, a chunk with the
usage follows; an error after the first event is an error event, then `[DONE]` like every
stream. GET /v1/models names the model. What the engine cannot honour is a 422 (schemas.py);
a full engine a 503 with Retry-After.

The HTTP process (ChatSpec) checks a request and hands it to the model worker through
LitServe's request queue; the worker's loop (ChatLoop) hands it to the engine (engine.py),
which decodes every conversation in one continuous batch, and sends each piece back as it is
decoded. A client that goes away mid-answer is cancelled in the worker within a step, and its
place in the batch is free for the next. torch, transformers and peft load only in the worker
(ChatAPI.load).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import asdict
from queue import Empty, Queue
from typing import Any

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from litserve.loops.base import _SENTINEL_VALUE, _BaseLoop
from litserve.specs.base import LitSpec
from litserve.utils import LitAPIStatus, LoopResponseType, ResponseBufferItem
from pydantic import ValidationError

from src.config import ServingSettings
from src.contract import Engine as EngineChoice
from src.deployment.worker import WorkerAPI
from src.task.folder import RunFolder
from src.task.schemas import ROUTE, ChatRequest

IDLE_WAIT = 1.0  # seconds the worker's loop waits on an empty queue before it looks again
CANCEL = "cancel"  # a queue item that stops a request whose client left
RETRY_AFTER_S = 1


class ChatSpec(LitSpec):  # type: ignore[misc]
    """The HTTP side: OpenAI's routes, the request checked, the answer formatted from the worker's pieces."""

    def __init__(self, max_tokens: int, model_name: str) -> None:
        super().__init__()
        self.api_path = ROUTE
        self.max_tokens, self.model_name = max_tokens, model_name

    @property
    def stream(self) -> bool:
        return True

    def pre_setup(self, lit_api: Any) -> None:
        self.add_endpoint(ROUTE, self.chat_completion, ["POST"])
        self.add_endpoint("/v1/models", self.models, ["GET"])

    def decode_request(self, request: Any, context_kwargs: Any = None) -> Any:
        return request

    def encode_response(self, output: Any, context_kwargs: Any = None) -> Any:
        return output

    async def models(self) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": self.model_name, "object": "model", "created": 0,
                                            "owned_by": "local"}]}  # fmt: skip

    async def chat_completion(self, http: Request) -> Response:
        try:
            request = ChatRequest.model_validate(await http.json())
        except ValidationError as error:
            return JSONResponse({"detail": json.loads(error.json(include_url=False, include_input=False))}, 422)
        except (ValueError, RecursionError):
            return JSONResponse({"detail": "the body is not a JSON object of OpenAI's chat completion request"}, 422)
        asked = request.asked_tokens()
        if asked is not None and asked > self.max_tokens:
            raise HTTPException(422, f"max_tokens {asked} exceeds this server's limit of {self.max_tokens}")
        uid = uuid.uuid4()
        item = ResponseBufferItem(response_queue=deque(), event=asyncio.Event())
        self.response_buffer[uid] = item
        ask = {"messages": request.turns(), "max_tokens": asked, "temperature": request.temperature,
               "top_p": request.top_p, "stop": request.stops()}  # fmt: skip
        self.request_queue.put((self.response_queue_id, uid, time.monotonic(), ask))
        pieces = self._pieces(uid, item, http)
        try:
            first = await anext(pieces)
        except StopAsyncIteration:
            first = {"error": "the model worker stopped", "status": 503}
        if first.get("error"):  # refused before any text: a plain HTTP error
            await pieces.aclose()
            headers = {"Retry-After": str(RETRY_AFTER_S)} if first.get("status") == 503 else None
            return JSONResponse(
                {"error": {"message": first["error"], "type": "server_error"}}, first["status"], headers
            )
        answer = Answer(f"chatcmpl-{uid.hex}", request.model or self.model_name)
        if request.stream:
            usage = bool(request.stream_options and request.stream_options.include_usage)
            return StreamingResponse(answer.events(first, pieces, usage), media_type="text/event-stream")
        return JSONResponse(await answer.whole(first, pieces))

    async def _pieces(self, uid: uuid.UUID, item: ResponseBufferItem, http: Request
                      ) -> AsyncGenerator[dict[str, Any], None]:  # fmt: skip
        """The worker's pieces for `uid` until the last; if they stop being wanted, the worker is told to stop."""
        finished = False
        try:
            while True:
                while not item.response_queue:
                    item.event.clear()
                    try:
                        await asyncio.wait_for(item.event.wait(), timeout=1.0)
                    except TimeoutError:
                        if await http.is_disconnected():
                            return
                piece, status = item.response_queue.popleft()[:2]
                if status == LitAPIStatus.ERROR:  # the worker's loop failed; its pickled error
                    finished = True
                    yield {"error": "the model worker failed", "status": 500}
                    return
                finished = bool(piece.get("finish_reason") or piece.get("error"))
                yield piece
                if finished:
                    return
        finally:
            self.response_buffer.pop(uid, None)  # LitServe's own spec kept every request's buffer (~2 KB each)
            if not finished:
                self.request_queue.put((self.response_queue_id, uuid.uuid4(), time.monotonic(), {CANCEL: uid}))


class Answer:
    """OpenAI's response shapes for one completion."""

    def __init__(self, completion_id: str, model: str) -> None:
        self.id, self.model, self.created = completion_id, model, int(time.time())

    def chunk(self, delta: dict[str, str], finish_reason: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return self._event({"choices": [choice]})

    def _event(self, body: dict[str, Any]) -> str:
        payload = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model}
        return f"data: {json.dumps({**payload, **body})}\n\n"

    async def events(self, first: dict[str, Any], pieces: AsyncGenerator[dict[str, Any], None], usage: bool
                     ) -> AsyncIterator[str]:  # fmt: skip
        yield self.chunk({"role": "assistant", "content": ""})
        piece: dict[str, Any] | None = first
        try:
            while piece is not None:
                if piece.get("error"):
                    error = {"message": piece["error"], "type": "server_error", "code": piece.get("status")}
                    yield f"data: {json.dumps({'error': error})}\n\n"
                    break
                if piece["text"]:
                    yield self.chunk({"content": piece["text"]})
                if piece.get("finish_reason"):
                    yield self.chunk({}, piece["finish_reason"])
                    if usage:
                        yield self._event({"choices": [], "usage": _usage(piece)})
                    break
                piece = await anext(pieces, None)
            yield "data: [DONE]\n\n"
        finally:
            await pieces.aclose()  # a client that left: the worker stops its request

    async def whole(self, first: dict[str, Any], pieces: AsyncIterator[dict[str, Any]]) -> dict[str, Any]:
        texts, piece = [], first
        async for piece in _chain(first, pieces):
            if piece.get("error"):
                raise HTTPException(piece.get("status", 500), piece["error"])
            texts.append(piece["text"])
        message = {"role": "assistant", "content": "".join(texts)}
        return {"id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "message": message, "logprobs": None,
                             "finish_reason": piece["finish_reason"]}],
                "usage": _usage(piece)}  # fmt: skip


async def _chain(first: dict[str, Any], rest: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    yield first
    async for piece in rest:
        yield piece


def _usage(last: dict[str, Any]) -> dict[str, int]:
    prompt, completion = int(last["prompt_tokens"]), int(last["completion_tokens"])
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class ChatLoop(_BaseLoop):  # type: ignore[misc]
    """The worker's side: each request from the queue into the engine, each piece back as it is decoded."""

    def __call__(self, lit_api: ChatAPI, device: str, worker_id: int, request_queue: Queue[Any], transport: Any,
                 *args: Any) -> None:  # fmt: skip
        while True:
            try:
                item = request_queue.get(timeout=IDLE_WAIT)
            except Empty:
                continue
            if item == _SENTINEL_VALUE:
                return
            response_queue_id, uid, _, ask = item
            if CANCEL in ask:
                lit_api.engine.cancel(str(ask[CANCEL]))
                continue

            def emit(piece: Any, uid: Any = uid, to: int = response_queue_id) -> None:
                answer = (asdict(piece), LitAPIStatus.OK, LoopResponseType.STREAMING, worker_id)
                transport.send((uid, answer), consumer_id=to)

            lit_api.submit(str(uid), ask, emit)


class ChatAPI(WorkerAPI):
    def __init__(self, model: RunFolder, serving: ServingSettings, engine: EngineChoice, threads: int) -> None:
        super().__init__(api_path=ROUTE, spec=ChatSpec(serving.max_tokens, model.path.name), loop=ChatLoop())
        self.model, self.serving, self.precision, self.threads = model, serving, engine.precision, threads

    def load(self, device: str) -> None:
        import torch  # heavy: only in the worker

        from src.task.generator import open_engine

        torch.set_num_threads(self.threads)
        self.engine = open_engine(self.model, self.serving.model_copy(update={"precision": self.precision}), device)
        print(f"worker ready on {device}: {self.engine.model.dtype}, {self.threads} CPU threads, up to "
              f"{self.engine.max_sequences} conversations decoded together, base model {self.model.base_model} with "
              "the run's LoRA adapters merged", flush=True)  # fmt: skip

    def submit(self, key: str, ask: dict[str, Any], emit: Any) -> None:
        """One request into the engine, or an error piece: a conversation the template refuses, a full engine."""
        from src.task.sampling import Ask, Piece

        try:
            ids, room = self.engine.prompt_ids(ask["messages"], ask["max_tokens"] or self.serving.default_max_tokens)
        except Exception as error:
            emit(Piece(error=f"the chat template refuses this conversation: {error}"[:300], status=422))
            return
        temperature = 1.0 if ask["temperature"] is None else ask["temperature"]
        top_p = 1.0 if ask["top_p"] is None else ask["top_p"]
        if not self.engine.submit(key, Ask(ids, room, temperature, top_p, ask["stop"]), emit):
            emit(Piece(error="the server is at capacity (serving.max_sequences and max_queued): retry shortly",
                       status=503))  # fmt: skip
