"""The one error path every command runs through (src/errors.py): one `error:` line and exit 2, Ctrl-C 130,
SIGTERM 143, a full disk named without a traceback, bugs keep their traceback."""

from __future__ import annotations

import os
import signal

import pytest

from src import errors


def test_error_path_prints_one_line_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    def fails() -> int:
        raise errors.UserError("settings.yaml: training.seed is wrong")

    assert errors.exit_code(fails) == 2
    assert capsys.readouterr().err == "error: settings.yaml: training.seed is wrong\n"


def test_ctrl_c_exits_130_and_bugs_keep_their_traceback() -> None:
    def interrupted() -> int:
        raise KeyboardInterrupt

    def buggy() -> int:
        return 1 // 0

    assert errors.exit_code(interrupted) == 130
    with pytest.raises(ZeroDivisionError):
        errors.exit_code(buggy)


def test_disk_full_is_a_user_error(capsys: pytest.CaptureFixture[str]) -> None:
    def disk_full() -> int:
        raise OSError(28, "No space left on device", "/data/models/run/model.safetensors")

    assert errors.exit_code(disk_full) == 2
    assert "No space left on device" in capsys.readouterr().err


def test_sigterm_exits_143(capsys: pytest.CaptureFixture[str]) -> None:
    def stopped_by_the_scheduler() -> int:
        os.kill(os.getpid(), signal.SIGTERM)
        return 0

    assert errors.exit_code(stopped_by_the_scheduler) == 143
    assert capsys.readouterr().err == "terminated\n"
