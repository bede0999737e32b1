"""The classifier's HTTP API on the shared server (src/deployment/serve.py): POST /predict.

{"text": "..."} -> {"label": "pos", "score": 0.97, "probabilities": {...}}. Concurrent requests
are batched (serving.max_batch_size, serving.batch_timeout: the worker takes what is queued
when it is free, so a lone request never waits); the worker truncates where the run was
trained and runs the engine runtimes.choose picked before the server started: on CPU, ONNX
Runtime int8 when its export agrees with PyTorch (parity.py), else the next that does.
"""

# No `from __future__ import annotations` here: LitServe reads the real type of decode_request's
# argument to validate request bodies (422 instead of a 500).

from typing import Any

from src.config import ServingSettings
from src.contract import Engine
from src.deployment import compat
from src.deployment.worker import WorkerAPI
from src.task.folder import ClassifierFolder
from src.task.runtimes import serving_runtime
from src.task.schemas import ROUTE, Prediction, PredictRequest


class ClassifierAPI(WorkerAPI):
    def __init__(self, model: ClassifierFolder, serving: ServingSettings, engine: Engine, threads: int) -> None:
        batched = serving.max_batch_size > 1
        super().__init__(
            max_batch_size=serving.max_batch_size, batch_timeout=serving.batch_timeout,
            loop=compat.batch_loop(batched), api_path=ROUTE,
        )  # fmt: skip
        self.model_dir = model.path
        self.precision = engine.precision
        self.runtime = engine.runtime
        self.threads = threads

    def load(self, device: str) -> None:
        from src.task.classifier import Classifier

        runtime = serving_runtime(self.runtime, self.precision, device.split(":")[0])
        if runtime == "pytorch":
            import torch  # heavy: only a PyTorch worker (ONNX Runtime's sessions have their own threads)

            torch.set_num_threads(self.threads)
        self.classifier = Classifier(self.model_dir, device, self.precision, runtime, self.threads)
        print(
            f"worker ready on {device}: {runtime} {self.classifier.precision}, {self.threads} CPU threads, "
            f"truncating at {self.classifier.max_length} tokens",
            flush=True,
        )

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
