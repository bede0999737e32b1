"""The HTTP hardening in front of every route of the API servers (LitServe's FastAPI app).

- RequestGuard (ASGI middleware): the API key on every route, checked once per request, a body
  size limit that also holds for chunked bodies, a deadline for the body, and JSON whatever
  Content-Type the client sent (`curl -d` sends a form type).
- validation_error: FastAPI's 422 without the echo of the input, which cannot always be
  encoded as JSON (NaN, lone surrogates).
The headers' deadline is read_deadline.py's (a uvicorn protocol: compat.py decides whether it runs).
"""

from __future__ import annotations

import asyncio
import hmac
import json
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

API_KEY_ENV = "LIT_SERVER_API_KEY"  # LitServe's name; serve and serve-cloud read it
API_KEY_HEADER = "X-API-Key"
API_KEY_HEADER_BYTES = API_KEY_HEADER.lower().encode()
BEARER = b"bearer "  # `Authorization: Bearer <key>`: how OpenAI's and most HTTP clients send a key


def _printable(value: object) -> object:
    """Error details any JSON encoder accepts: no lone surrogates, no NaN or infinities."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, int | bool) or value is None:
        return value
    return _printable(str(value))


async def validation_error(request: Request, error: Exception) -> JSONResponse:
    """FastAPI's 422, minus the echo of the input (which cannot always be encoded: NaN, "\\ud800")."""
    problems = error.errors() if isinstance(error, RequestValidationError) else []
    detail = [
        {
            "loc": [_printable(part) for part in problem.get("loc", ())],
            "msg": _printable(problem.get("msg", "invalid")),
            "type": _printable(problem.get("type", "value_error")),
        }
        for problem in problems
    ]
    return JSONResponse({"detail": detail or "invalid request"}, status_code=422)


class RequestGuard:
    """Pure ASGI middleware in front of every route of the API servers.

    - With LIT_SERVER_API_KEY set, every request needs it in `X-API-Key` or as
      `Authorization: Bearer <key>`, on every route (LitServe's own check covers only its API
      routes and /health; this covers /docs, /openapi.json, /info, ...). With `forward_key`
      (LitServe's stock server, which checks X-API-Key again) a Bearer key goes on as that header.
    - A POST body is read as JSON whatever Content-Type the client sent (`curl -d` sends a
      form type), within `body_timeout` seconds (serving.read_timeout): a client that sends
      headers and then stalls gets 408 and is disconnected, so half-open requests cannot
      pile up (ReadDeadlineProtocol does the same for the headers).
    """

    def __init__(
        self, app: Any, *, api_key: str | None, body_timeout: float, max_body_bytes: int, forward_key: bool = False
    ) -> None:
        self.app = app
        self.api_key = api_key.encode("utf-8") if api_key else None
        self.forward_key = forward_key
        self.body_timeout = body_timeout
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if self.api_key is not None:
            if not self._authorized(headers):
                await _respond(send, 401, "missing or wrong X-API-Key header (or Authorization: Bearer key)")
                return
            if self.forward_key:
                kept = [(key, value) for key, value in scope["headers"] if key != API_KEY_HEADER_BYTES]
                scope = {**scope, "headers": [*kept, (API_KEY_HEADER_BYTES, self.api_key)]}
        if scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        declared = headers.get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            await _respond(send, 413, f"Payload too large (over {self.max_body_bytes} bytes)", close=True)
            return
        try:
            body = await asyncio.wait_for(self._read_body(receive), self.body_timeout)
        except TimeoutError:
            await _respond(send, 408, f"request body not received within {self.body_timeout:g} s", close=True)
            return
        if body is None:
            await _respond(send, 413, f"Payload too large (over {self.max_body_bytes} bytes)", close=True)
            return
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if replayed:
                return dict(await receive())  # only a disconnect can follow
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        kept = [(key, value) for key, value in scope["headers"] if key not in (b"content-type", b"content-length")]
        length = str(len(body)).encode()
        scope = {**scope, "headers": [*kept, (b"content-type", b"application/json"), (b"content-length", length)]}
        await self.app(scope, replay, send)

    def _authorized(self, headers: dict[bytes, bytes]) -> bool:
        assert self.api_key is not None  # noqa: S101 - only called with a key set
        authorization = headers.get(b"authorization", b"")
        bearer = authorization[len(BEARER) :] if authorization[: len(BEARER)].lower() == BEARER else b""
        given = headers.get(API_KEY_HEADER_BYTES, b"")
        # Both compared, whichever was sent: the time taken says nothing about the key.
        return hmac.compare_digest(given, self.api_key) | hmac.compare_digest(bearer.strip(), self.api_key)

    async def _read_body(self, receive: Any) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise TimeoutError  # nobody is left to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


async def _respond(send: Any, status: int, detail: str, close: bool = False) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
