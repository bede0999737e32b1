"""`serve`'s start-up checks, in process: a folder, port or flag that cannot serve is refused before
serving. Requests against a real server are tests/e2e/test_requests.py."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from src.deployment import serve
from src.task import TASK
from tests.helpers.models import MODEL_DAMAGES, NEEDS_THE_RECORD, damaged_model
from tests.helpers.processes import call, free_port, only_error_line

ROUTE, EXAMPLE = TASK.serving.route, TASK.serving.example


# --- Start-up, in process: everything checked before serving ---


@pytest.fixture
def never_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    """A check that lets a bad start through would start serving: fail the test instead of hanging."""

    def serving(*args: object) -> None:
        raise AssertionError("the server started serving")

    monkeypatch.setattr(serve, "run_server", serving)


@pytest.mark.parametrize(
    ("damage", "record"),
    [(damage, True) for damage in MODEL_DAMAGES]
    + [(damage, False) for damage in MODEL_DAMAGES if damage not in NEEDS_THE_RECORD],
    ids=lambda value: value if isinstance(value, str) else ("as-published" if value else "no-record-of-its-files"),
)
def test_model_folder_that_cannot_serve_is_refused_before_serving(
    trained_model: Path, tmp_path: Path, damage: str, record: bool, never_serves: None,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """Each damage, in a run as published (its run.json records its files), and in a folder without that
    record (a model from elsewhere, a run published that way): then the folder's own checks must refuse it."""
    model = damaged_model(trained_model, tmp_path, damage, record)
    assert call(serve.main, "--model-dir", str(model), "--port", str(free_port())) == 2
    assert str(model) in only_error_line(capsys.readouterr().err)


def test_no_model_gives_instructions(tmp_path: Path, never_serves: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert call(serve.main, "--model-dir", str(tmp_path / "latest"), "--port", str(free_port())) == 2
    line = only_error_line(capsys.readouterr().err)
    assert "uv run train-local" in line
    assert "--smoke" in line


def test_port_in_use_is_refused_before_any_start_up_work(
    tmp_path: Path, never_serves: None, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # A model folder that does not exist: the port is checked first.
        assert call(serve.main, "--port", str(port), "--model-dir", str(tmp_path / "nothing")) == 2
    line = only_error_line(capsys.readouterr().err)
    assert "--port" in line
    assert "in use" in line


@pytest.mark.parametrize("argv", [["--port", "0"], ["--port", "80"], ["--precision", "int4"]])
def test_bad_flags_exit_2(
    trained_model: Path, argv: list[str], never_serves: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert call(serve.main, "--model-dir", str(trained_model), *argv) == 2
    assert argv[0] in only_error_line(capsys.readouterr().err)
