"""ONNX Runtime serving across the process boundary: an export killed with -9 midway, and a real
`serve` on an export that disagrees with PyTorch: refusing it when it was asked for, serving the
next runtime that agrees on auto; and the default CPU start through ONNX Runtime."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from src.config import PROJECT_ROOT
from src.task import onnx_export
from src.task import parity as export_parity
from src.task.classifier import Classifier
from tests.helpers.models import copy_run
from tests.helpers.processes import clean_env, free_port, only_error_line, run_module, started, stop_group
from tests.helpers.server import running_server, start_server, wait_until_healthy

STAMP = "model-int8.onnx" + export_parity.STAMP_SUFFIX


def test_an_export_killed_midway_leaves_nothing_that_is_used(run_copy: Path) -> None:
    """kill -9 while the file is being written: only a temporary file is left; the next start exports anew."""
    folder = run_copy / "onnx"
    target = folder / "model-int8.onnx"
    assert not folder.exists(), "the run was copied with an export"
    arguments = [str(run_copy), "onnxruntime", "int8", "cpu", "1", str(run_copy / "choice.json")]
    command = export_parity.child_command(arguments)
    process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=clean_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 120
    while not (folder.is_dir() and any(path.name.startswith(".tmp-") for path in folder.iterdir())):
        assert process.poll() is None, "the export ended before it was caught writing"
        assert time.monotonic() < deadline
        time.sleep(0.001)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert not target.exists(), "a killed export published a file"
    assert any(path.name.startswith(".tmp-") for path in folder.iterdir())

    assert export_parity.prepare(run_copy, "int8", threads=1).ok  # the next start
    assert target.is_file()
    assert sorted(path.name for path in folder.iterdir()) == [".export.lock", "model-int8.onnx", STAMP]


def test_serve_refuses_an_export_asked_for_that_disagrees_with_pytorch(
    run_copy: Path, smoke_assets: dict[str, Path], tmp_path: Path
) -> None:
    """A cached export of another model (newer than the weights), int8 asked for: the parity check stops the start."""
    onnx_export.export(smoke_assets["model"], "int8", tmp_path / "foreign.onnx")
    target = onnx_export.onnx_file(run_copy, "int8")
    target.parent.mkdir()
    target.write_bytes((tmp_path / "foreign.onnx").read_bytes())

    explicit = ["--runtime", "onnxruntime", "--precision", "int8"]
    for _ in ("checked", "stamped"):  # the second start reads the first one's verdict, and refuses alike
        result = run_module("src", "serve", "--model-dir", str(run_copy), "--port", str(free_port()),
                            *explicit, timeout=120)  # fmt: skip
        assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
        line = only_error_line(result.stderr)
        assert "disagrees with PyTorch fp32" in line
        assert "--runtime pytorch" in line
        assert "Uvicorn running" not in result.stdout + result.stderr, "nothing was served"
    assert "checked at an earlier start" in line


def test_serve_on_auto_answers_through_the_next_runtime_when_int8_disagrees(
    run_copy: Path, smoke_assets: dict[str, Path], tmp_path: Path
) -> None:
    """The default start never refuses a model it can serve: one line says int8 is not used, fp32 answers."""
    onnx_export.export(smoke_assets["model"], "int8", tmp_path / "foreign.onnx")
    target = onnx_export.onnx_file(run_copy, "int8")
    target.parent.mkdir()
    target.write_bytes((tmp_path / "foreign.onnx").read_bytes())
    with running_server(run_copy) as server:
        answer = httpx.post(f"{server.url}/predict", json={"text": "a wonderful film"}, timeout=30)
        output = server.output()
    assert answer.status_code == 200, answer.text
    assert "ONNX Runtime int8 disagrees with PyTorch fp32" in output
    assert "with onnxruntime fp32" in output
    assert "worker ready on cpu: onnxruntime fp32" in output


def test_cpu_serves_through_onnx_runtime_by_default(trained_model: Path, tmp_path: Path) -> None:
    """`uv run serve` with the shipped settings on CPU: exported once into the run, checked, served;
    then Ctrl-C: exit 130, no traceback, nothing left."""
    run = copy_run(trained_model, tmp_path)
    run.chmod(0o755)
    server = start_server(run)
    with started(server.process):
        wait_until_healthy(server)
        text = "great wonderful superb film"
        answer = httpx.post(f"{server.url}/predict", json={"text": text}, timeout=30).json()
        assert stop_group(server.process, signal.SIGINT) == 130
        log = server.output()
        server.log.unlink()
    assert "Traceback" not in log
    assert "agrees with PyTorch fp32" in log
    assert "worker ready on cpu: onnxruntime int8" in log
    assert (run / "onnx" / "model-int8.onnx").is_file()
    expected = Classifier(run, precision="int8", runtime="onnxruntime").predict([text])[0]
    assert answer["label"] == expected.label
    assert answer["score"] == pytest.approx(expected.score, abs=1e-4)
