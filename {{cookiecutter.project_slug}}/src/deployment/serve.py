"""`uv run serve`: the fine-tuned classifier as a LitServe REST API.

POST /predict {"text": "..."} -> {"label": "pos", "score": 0.97, "probabilities": {...}}.
Concurrent requests are batched (serving.max_batch_size, serving.batch_timeout); each
batch is sorted by length and run in micro-batches so short texts are not padded to the
longest one. This module stays light (LitServe's API-server processes import it):
torch and transformers load only in the inference worker, and no training code at all.
Set LIT_SERVER_API_KEY to require an `X-API-Key` header on every route, /health too.
"""

# No `from __future__ import annotations` here: LitServe reads the real type of
# decode_request's argument to validate request bodies (422 instead of a 500).

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import litserve as ls
from pydantic import BaseModel, ConfigDict, Field, field_validator

from src import cli
from src.config import ServingSettings, load_settings
from src.deployment.schemas import Prediction
from src.runs import resolve_model_dir


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, description="the text to classify")

    @field_validator("text")
    @classmethod
    def not_blank(cls, text: str) -> str:
        if not text.strip():
            raise ValueError("text is blank: send some words to classify")
        return text


class JSONBodyMiddleware:
    """Read every request body as JSON, whatever Content-Type the client sent.

    `curl -d '{"text": "..."}'` sends a form content type; without this the body would
    not be parsed and the request would fail with 422 although it is valid JSON.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            headers = [(key, value) for key, value in scope["headers"] if key != b"content-type"]
            scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}
        await self.app(scope, receive, send)


class ClassifierAPI(ls.LitAPI):  # type: ignore[misc]
    def __init__(self, model_dir: Path, max_batch_size: int, batch_timeout: float) -> None:
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout)
        self.model_dir = model_dir

    def setup(self, device: str) -> None:
        from src.deployment.classifier import Classifier  # heavy: only in the worker

        self.classifier = Classifier(self.model_dir, device)

    def decode_request(self, request: PredictRequest) -> str:
        return request.text

    def batch(self, inputs: list[str]) -> list[str]:
        return list(inputs)

    def predict(self, texts: str | list[str]) -> Prediction | list[Prediction]:
        if isinstance(texts, str):  # batching off: one request at a time
            return self.classifier.predict([texts])[0]
        return self.classifier.predict(texts)

    def unbatch(self, output: list[Prediction]) -> list[Prediction]:
        return output

    def encode_response(self, output: Prediction) -> dict[str, Any]:
        return output.model_dump()


def build_server(serving: ServingSettings, model_dir: Path) -> ls.LitServer:
    api = ClassifierAPI(model_dir, serving.max_batch_size, serving.batch_timeout)
    return ls.LitServer(
        api,
        accelerator=serving.accelerator,
        devices=1,
        workers_per_device=serving.workers_per_device,
        timeout=serving.timeout,
        healthcheck_path="/health",
        max_payload_size=serving.max_payload_bytes,
        middlewares=[JSONBodyMiddleware],
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="serve", description="Serve the fine-tuned model over HTTP.")
    parser.add_argument("--host", help="interface to listen on: 127.0.0.1, 0.0.0.0 or :: (default: serving.host)")
    parser.add_argument("--port", type=int, help="port to listen on, 1-65535 (default: serving.port)")
    parser.add_argument("--model-dir", type=Path, help="saved model folder (default: serving.model_dir)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    flags = {
        "serving.host": ("--host", args.host),
        "serving.port": ("--port", args.port),
        "serving.model_dir": ("--model-dir", args.model_dir),
    }
    serving = load_settings(flags=flags).serving
    model_dir = resolve_model_dir(serving.model_dir)
    print(f"Serving {model_dir} on http://{serving.host}:{serving.port}/predict", flush=True)
    build_server(serving, model_dir).run(
        host=serving.host, port=serving.port, generate_client_file=False, pretty_logs=False
    )
    return 0


if __name__ == "__main__":
    cli.run(main)
