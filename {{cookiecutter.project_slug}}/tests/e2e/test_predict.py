"""`predict` across the process boundary: Ctrl-C and SIGTERM in the middle leave no file."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers.processes import clean_env, start_module, started
from tests.task import samples


@pytest.mark.parametrize(("sent", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_predict_leaves_no_file(
    trained_model: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, sent: int, code: int
) -> None:
    source = samples.write_a_minute_of_work(tmp_path / "many.jsonl")
    cache = clean_env(XDG_CACHE_HOME=str(tmp_path_factory.mktemp("cache")))  # the read-only run's ONNX export
    process = start_module("src", "predict", str(source), "--model-dir", str(trained_model), env=cache,
                           stderr=subprocess.PIPE)  # fmt: skip
    with started(process):
        stderr = interrupt_while_classifying(process, sent)
    assert process.returncode == code, stderr[-3000:]
    assert "Traceback" not in stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["many.jsonl"], "no output, no temporary file"


def interrupt_while_classifying(process: subprocess.Popen[str], sent: int) -> str:
    """Send `sent` to predict's group a second into its batches; what it printed after."""
    assert process.stderr is not None
    begun = time.monotonic()
    while samples.PREDICT_STARTED not in process.stderr.readline():
        assert process.poll() is None, "predict stopped before classifying"
        assert time.monotonic() - begun < 120, "predict did not start"
    time.sleep(1.0)  # in the middle of the batches
    assert process.poll() is None, "finished before it could be interrupted: make the input bigger"
    os.killpg(process.pid, sent)
    return process.communicate(timeout=60)[1]
