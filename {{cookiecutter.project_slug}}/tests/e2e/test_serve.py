"""`serve` across the process boundary: Ctrl-C and SIGTERM, each kind of start-up refusal once, and kill -9
of each of its processes: the model worker, the HTTP process, serve itself."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from src.task import TASK
from tests.helpers.models import LOAD_DAMAGES, copy_run, damaged_model
from tests.helpers.processes import (
    command_lines,
    free_port,
    only_error_line,
    processes_with,
    run_module,
    started,
    stop_group,
    wait_until_none_with,
    wait_until_some_with,
)
from tests.helpers.server import Server, http_process, start_server, wait_until_healthy
from tests.task import samples

MARK = "SERVE_TEST_RUN"  # in the environment of the server and of every process it starts


def assert_nothing_left(port: int, run: Path) -> None:
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0, "something still listens on the port"
    left = wait_until_none_with(MARK, str(run), 20)
    assert not left, f"a process of the server outlived it: {command_lines(left)}"


def test_ctrl_c_while_starting_exits_130_leaving_nothing_behind(trained_model: Path, tmp_path: Path) -> None:
    """With the shipped settings, while serve starts (before the server answers: on a CPU classifier, its
    ONNX export; on a generation model, its worker loading)."""
    run = copy_run(trained_model, tmp_path)  # a start may write into the run (the ONNX export of a classifier)
    run.chmod(0o755)
    server = start_server(run, **{MARK: str(run)})
    with started(server.process):
        assert len(wait_until_some_with(MARK, str(run), 2, 120)) >= 2  # serve and the first process it started
        assert stop_group(server.process, signal.SIGINT) == 130
        log = server.output()
        server.log.unlink()
    assert "Traceback" not in log
    assert_nothing_left(server.port, run)


@pytest.mark.parametrize(
    ("first", "again", "codes"),
    [(signal.SIGTERM, signal.SIGINT, {143}), (signal.SIGINT, signal.SIGTERM, {130, -signal.SIGTERM})],
    ids=["sigterm-then-ctrl-c", "ctrl-c-then-sigterm"],
)
def test_signals_while_serving_stop_it_once_leaving_nothing_behind(
    trained_model: Path, tmp_path: Path, first: int, again: int, codes: set[int]
) -> None:
    """SIGTERM exits 143, Ctrl-C 130, and the signals that follow (`uv run serve` gets Ctrl-C twice, the
    terminal's and uv's; an impatient user sends more) let LitServe's shutdown run to its end: nothing is left
    waiting, no traceback. A SIGTERM after the report ends serve at once (a shell says 143 either way)."""
    run = copy_run(trained_model, tmp_path)
    server = start_server(run, *samples.EXACT_SERVING, **{MARK: str(run)})
    with started(server.process):
        wait_until_healthy(server)
        os.killpg(server.process.pid, first)  # serve and its processes, as a terminal's Ctrl-C
        deadline = time.monotonic() + 3
        while server.process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.04)
            with contextlib.suppress(ProcessLookupError):
                os.kill(server.process.pid, again)  # serve alone, as uv forwards it
        assert server.process.wait(timeout=30) in codes
        log = server.output()
        server.log.unlink()
    assert "Traceback" not in log
    assert_nothing_left(server.port, run)


@pytest.mark.parametrize("refusal", ["damaged-folder", "port-in-use", "bad-flag"])
def test_start_up_refusal_is_one_line_and_exit_2(trained_model: Path, tmp_path: Path, refusal: str) -> None:
    model, port = trained_model, free_port()
    with socket.socket() as taken:
        if refusal == "damaged-folder":
            model = damaged_model(trained_model, tmp_path, "truncated-weights")
        elif refusal == "port-in-use":
            taken.bind(("127.0.0.1", port))
            taken.listen()
        else:
            port = 80
        started_at = time.monotonic()
        result = run_module("src", "serve", "--model-dir", str(model), "--port", str(port), timeout=120)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    line = only_error_line(result.stderr)
    assert str(model) in line if refusal == "damaged-folder" else "--port" in line
    assert "Uvicorn running" not in result.stdout + result.stderr, "nothing was served"
    assert time.monotonic() - started_at < 60


@pytest.mark.parametrize("damage", LOAD_DAMAGES)
def test_a_model_that_loads_but_cannot_answer_is_refused_in_one_line(
    trained_model: Path, tmp_path: Path, damage: str
) -> None:
    """It passes every check of the folder in serve's parent; the worker's probe refuses it as it loads:
    exit 2, its one line, no traceback, nothing left behind."""
    model = damaged_model(trained_model, tmp_path, damage)
    server = start_server(model, *samples.EXACT_SERVING, **{MARK: str(model)})
    with started(server.process):
        assert server.process.wait(timeout=120) == 2
        log = server.output()
        server.log.unlink()
    assert "Traceback" not in log
    assert "NaN or infinite scores on a probe" in only_error_line(log)
    assert not wait_until_none_with(MARK, str(model), 20)


def requests_until_one_fails(server: Server) -> None:
    with server.client(timeout=60) as client:
        while True:
            try:
                client.post(TASK.serving.route, json=dict(TASK.serving.example)).raise_for_status()
            except httpx.HTTPError:
                return


def test_a_worker_killed_while_serving_stops_the_server_with_one_line(trained_model: Path, tmp_path: Path) -> None:
    """kill -9 of the model worker (what the kernel's out-of-memory killer does): exit 2, one line
    naming the worker and what to try, nothing left behind."""
    run = copy_run(trained_model, tmp_path)
    server = start_server(run, *samples.EXACT_SERVING, **{MARK: str(run)})
    with started(server.process), ThreadPoolExecutor(1) as pool:
        wait_until_healthy(server)
        (worker,) = [
            pid for pid in processes_with(MARK, str(run)) if b"spawn" in Path(f"/proc/{pid}/cmdline").read_bytes()
        ]
        load = pool.submit(requests_until_one_fails, server)  # requests in flight when the worker dies
        time.sleep(1)
        os.kill(worker, signal.SIGKILL)
        killed = time.monotonic()
        load.result(timeout=60)
        assert time.monotonic() - killed < 10, "a request in flight waited for an answer that could not come"
        assert server.process.wait(timeout=60) == 2
        log = server.output()
        server.log.unlink()
    assert "Traceback" not in log
    line = only_error_line(log)
    assert f"model worker (pid {worker}) was killed by SIGKILL" in line
    assert "workers_per_device" in line
    assert_nothing_left(server.port, run)


def test_the_http_process_killed_stops_the_server_with_one_line(trained_model: Path, tmp_path: Path) -> None:
    """kill -9 of LitServe's API server (the process that answers HTTP): a server that can no longer
    answer ends with exit 2 and one line, not a silent port."""
    run = copy_run(trained_model, tmp_path)
    server = start_server(run, *samples.EXACT_SERVING, **{MARK: str(run)})
    with started(server.process):
        wait_until_healthy(server)
        http = http_process(server)
        assert http != server.process.pid
        os.kill(http, signal.SIGKILL)
        assert server.process.wait(timeout=60) == 2
        log = server.output()
        server.log.unlink()
    assert "Traceback" not in log
    assert f"the HTTP process (pid {http}) was killed by SIGKILL" in only_error_line(log)
    assert_nothing_left(server.port, run)


@pytest.mark.parametrize("when", ["starting", "serving"])
def test_kill_9_of_serve_leaves_no_process_behind(trained_model: Path, tmp_path: Path, when: str) -> None:
    """SIGKILL reaches serve alone (nothing can forward it): its workers, its HTTP process, and while
    starting what it started (a classifier's ONNX export), end within 10 s."""
    run = copy_run(trained_model, tmp_path)
    run.chmod(0o755)
    server = start_server(run, *(samples.EXACT_SERVING if when == "serving" else ()), **{MARK: str(run)})
    with started(server.process):
        if when == "starting":  # the export child (a CPU classifier) or a worker has started, however slowly
            assert len(wait_until_some_with(MARK, str(run), 2, 120)) >= 2
        else:
            wait_until_healthy(server)
            assert len(processes_with(MARK, str(run))) >= 2
        server.process.kill()
        server.process.wait()
        left = wait_until_none_with(MARK, str(run), 10)
        assert not left, f"a process of the server outlived it: {command_lines(left)}"
    server.log.unlink()
