"""The request schema, the 422 body and the model-folder check, without torch or a server."""

from __future__ import annotations

import asyncio
import json
import struct
from pathlib import Path

import pytest
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from src.deployment.http_guard import validation_error
from src.model_folder import BadModelFolderError
from src.task.folder import inspect as inspect_model_folder
from src.task.schemas import PredictRequest


@pytest.mark.parametrize(
    "body",
    [{}, {"text": 5}, {"text": ""}, {"text": " \n "}, {"text": "x", "extra": 1}, {"text": "\ud800"},
     {"text": float("nan")}, {"text": float("inf")}],
)  # fmt: skip
def test_request_schema_rejects(body: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        PredictRequest.model_validate(body)


@pytest.mark.parametrize(
    "body",
    [{"text": float("nan")}, {"text": float("-inf")}, {"text": "\ud800"}, {"\udfff": 1}, {"text": "a", "x": 1e999}],
)
def test_422_body_is_encodable_whatever_the_input(body: dict[str, object]) -> None:
    with pytest.raises(ValidationError) as caught:
        PredictRequest.model_validate(body)
    error = RequestValidationError(caught.value.errors())
    response = asyncio.run(validation_error(None, error))  # type: ignore[arg-type]
    assert response.status_code == 422
    text = bytes(response.body).decode("utf-8")  # valid UTF-8: no lone surrogate reached the body
    detail = json.loads(text)["detail"]
    assert detail
    assert all(set(item) == {"loc", "msg", "type"} for item in detail), "the input is not echoed"


def safetensors_bytes(tensors: dict[str, tuple[list[int], int]]) -> bytes:
    """A float32 safetensors file: name -> (shape, number of values)."""
    header, offset = {}, 0
    for name, (shape, count) in tensors.items():
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + 4 * count]}
        offset += 4 * count
    encoded = json.dumps(header).encode()
    return struct.pack("<Q", len(encoded)) + encoded + b"\0" * offset


def model_folder(path: Path) -> Path:
    from tokenizers import Tokenizer, models

    path.mkdir()
    config = {"model_type": "distilbert", "architectures": ["DistilBertForSequenceClassification"],
              "id2label": {"0": "neg", "1": "pos"}, "max_position_embeddings": 512}  # fmt: skip
    (path / "config.json").write_text(json.dumps(config))
    vocab = models.WordPiece({"[UNK]": 0, "a": 1}, unk_token="[UNK]")  # noqa: S106 - a token, not a password
    Tokenizer(vocab).save(str(path / "tokenizer.json"))
    (path / "model.safetensors").write_bytes(safetensors_bytes({"w": ([2, 3], 6), "b": ([2], 2)}))
    (path / "run.json").write_text(json.dumps({"max_length": 64, "labels": ["neg", "pos"]}))
    return path


def test_complete_folder_passes_and_reports_the_trained_length(tmp_path: Path) -> None:
    found = inspect_model_folder(model_folder(tmp_path / "model"))
    assert found.labels == ["neg", "pos"]
    assert found.max_length == 64


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        (lambda m: (m / "tokenizer.json").unlink(), "no tokenizer files"),
        (lambda m: (m / "tokenizer.json").write_text("{}"), "tokenizer.json"),
        (lambda m: (m / "model.safetensors").write_bytes(b"\x01" * 64), "model.safetensors"),
        (lambda m: (m / "model.safetensors").write_bytes((m / "model.safetensors").read_bytes()[:-4]), "truncated"),
        (lambda m: (m / "model.safetensors").unlink(), "no weights"),
        (lambda m: (m / "config.json").write_text("[1, 2"), "config.json"),
        (lambda m: (m / "config.json").write_text('{"model_type": "bert", "architectures": ["BertModel"]}'),
         "not a sequence classifier"),
        (lambda m: (m / "run.json").write_text('{"labels": ["a", "b"]}'), "differ from config.json"),
        (lambda m: (m / "run.json").write_text('{"max_length": 4096}'), "exceeds"),
    ],
    ids=["no-tokenizer", "bad-tokenizer", "garbage-weights", "truncated-weights", "no-weights", "bad-config",
         "base-model", "labels-disagree", "too-long"],
)  # fmt: skip
def test_damaged_folder_is_refused_naming_the_problem(tmp_path: Path, damage: object, named: str) -> None:
    folder = model_folder(tmp_path / "model")
    damage(folder)  # type: ignore[operator]
    with pytest.raises(BadModelFolderError, match=named):
        inspect_model_folder(folder)
