"""What every test shares: a user's clean shell, and, built once per test run, the tiny offline
model and data, one trained run and one real server.

The tests run the real code paths (the Trainer, LitServe) on the task's tiny smoke model, so the
suite needs no network. This file stays light: the training code is imported only when a
fixture that trains runs (tests/unit never does), by name so that Pants does not make every
test depend on the training stack (tests/integration/BUILD and tests/e2e/BUILD declare it).
The trained run is read-only: a test that writes into a run works on its own copy (`run_copy`).
The core's tests (tests/unit, tests/integration, tests/e2e) run in every project, whatever its
task; tests/task/ holds the task's own, in the same tiers.
"""

from __future__ import annotations

import fcntl
import gc
import importlib
import os
import signal
import stat
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from src import runs
from src.settings import PROJECT_ROOT
from tests.helpers.bytecode import compile_ahead, runtime_packages
from tests.helpers.processes import inherited, start_import_probe
from tests.helpers.server import Server, start_server, stop_server, wait_until_healthy


def by_name(module: str) -> Any:
    """The task, its samples or the model helpers, imported when a fixture needs them: by name, so that Pants
    does not make every test (a settings test too) depend on the task's training and serving stack; the
    integration and e2e BUILD files declare them."""
    return importlib.import_module(module)


API_KEY = "test-key-123"
READ_TIMEOUT = "1"  # seconds, for the slow-client tests (the default is 10)


HANDLERS: dict[int, object] = {}  # SIGINT's and SIGTERM's handlers as pytest started
HELPERS: list[subprocess.Popen[bytes]] = []  # tests/helpers/bytecode.py, on a first run


def xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")  # pytest-xdist gives its workers their input there


def pytest_configure(config: pytest.Config) -> None:
    """Ctrl-C reaches the commands the tests start, as it does from a terminal.

    A shell that starts pytest in the background (`pytest &`, some CI runners) ignores SIGINT,
    and its children would inherit that; a Python handler here is reset to the default on exec.
    """
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    HANDLERS.update({sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)})
    if xdist_worker(config):
        own_cores(config.workerinput)  # type: ignore[attr-defined]
    one_process = not getattr(config.option, "numprocesses", None) and not xdist_worker(config)
    if one_process and Path(sys.prefix).is_relative_to(PROJECT_ROOT):  # the project's venv (not Pants' sandboxes)
        site = Path(sysconfig.get_paths()["purelib"])
        helper = compile_ahead(site, lambda: runtime_packages(PROJECT_ROOT / "pyproject.toml"))
        HELPERS.extend([helper] if helper else [])


def own_cores(workerinput: dict[str, Any]) -> None:
    """Under pytest-xdist (`uv run test-all`), each worker and what it starts runs on its own share of the
    cores, as on a smaller machine: the commands size their threads from the cores they may use
    (src/devices.py), so two workers' trainings no longer each start a thread per core of the machine and
    spin-wait for each other (measured: the first e2e training 73 s -> 24 s, test-all 4:56 -> 4:10)."""
    if not hasattr(os, "sched_setaffinity"):  # macOS: no affinity; the threads share as before
        return
    index, count = int(str(workerinput["workerid"]).removeprefix("gw")), int(workerinput["workercount"])
    cores = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, cores[index::count] or [cores[index % len(cores)]])


@pytest.hookimpl(tryfirst=True)  # before `-m 'not e2e'` deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "e2e" in item.path.relative_to(Path(__file__).parent).parts:
            item.add_marker(pytest.mark.e2e)


def pytest_collection_finish(session: pytest.Session) -> None:
    freeze_what_is_imported()
    for item in session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if item.path.name == "test_light_imports.py" and "modules" in params:
            start_import_probe(*params["modules"])


def freeze_what_is_imported() -> None:
    """Keep the garbage collector off the millions of objects torch and transformers create at
    import: they live until exit, and every full collection walked them all (~6 s of the quick
    tier). `gc.freeze()` moves what exists now out of its reach; pytest_unconfigure hands it back."""
    gc.freeze()


def pytest_unconfigure() -> None:
    for helper in HELPERS:  # what it compiled stays; the rest compiles on import, as without it
        helper.terminate()
        helper.wait()
    gc.unfreeze()  # collected at exit as usual: extension modules check that their objects were freed


@pytest.fixture(autouse=True)
def signal_handlers() -> Iterator[None]:
    """Commands run in process take SIGTERM and, once interrupted, ignore Ctrl-C (their last act);
    put both back, or every process a later test starts would inherit an ignored Ctrl-C."""
    yield
    for sig, handler in HANDLERS.items():
        signal.signal(sig, handler)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def users_shell(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Commands called in process see no settings override, settings file or API key from this shell, and
    a cache folder of the test run's own (what a command caches of the read-only trained run: never ~/.cache)."""
    for name in list(os.environ):
        if not inherited(name):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(autouse=True)
def one_torch_thread(request: pytest.FixtureRequest) -> None:
    """The in-process tier (an `integration` folder) runs torch on one thread: the tiny model gains nothing
    from a second, and torch's threads spin-wait badly when another program holds a core (training steps
    then run 5-15x slower). The commands and the server set their own thread counts; e2e runs them as they are."""
    if "integration" in request.node.path.parts:
        by_name("torch").set_num_threads(1)  # the quick tier's unit tests never import it


@pytest.fixture(scope="session")
def run_folder(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This test run's own folder. Under pytest-xdist (`uv run test-all`) each worker's folder is inside the
    run's, so what is built there is built once for every worker: the first builds it under a lock, the others
    wait for it and read it, as several training processes share one smoke set."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if xdist_worker(pytestconfig) else base


@pytest.fixture(scope="session")
def smoke_assets(run_folder: Path) -> dict[str, Path]:
    models = by_name("tests.helpers.models")
    assets: dict[str, Path] = models.build_smoke_assets(run_folder / "smoke" / "assets", seed=0)
    return assets


def set_writable(path: Path, writable: bool) -> None:
    for item in [path, *path.rglob("*")]:
        mode = item.stat().st_mode
        item.chmod(mode | stat.S_IWUSR if writable else mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


@pytest.fixture(scope="session")
def trained_model(smoke_assets: dict[str, Path], run_folder: Path, pytestconfig: pytest.Config) -> Iterator[Path]:
    """The smoke run, trained once per test run (once for all of test-all's workers): its published folder,
    read-only."""
    train = importlib.import_module("src.models.train_model").train
    freeze_what_is_imported()  # the Trainer's stack
    output_dir = run_folder / "runs"
    output_dir.mkdir(exist_ok=True)
    with (output_dir.parent / "runs.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or by the kernel when a worker dies
        trained = output_dir / "trained.txt"  # written last: a worker that died training left none
        if not trained.is_file():
            settings = by_name("tests.helpers.models").smoke_settings(smoke_assets, output_dir)
            run_id = str(train(settings, by_name("src.task").TASK)["run_id"])
            set_writable(output_dir / run_id, False)
            trained.write_text(run_id, encoding="utf-8")
        run_dir = output_dir / trained.read_text(encoding="utf-8")
    try:
        yield run_dir
    finally:
        for server in _servers:
            stop_server(server, sig=signal.SIGKILL)  # its own shutdown is tested in tests/e2e
        if not xdist_worker(pytestconfig):  # a worker leaves it to the others (pytest's cleanup
            set_writable(run_dir, True)  # makes read-only folders writable before it removes them)


_servers: list[Server] = []


@pytest.fixture(scope="session")
def server(trained_model: Path) -> Server:
    """One real LitServe server for every request test: the task's exact engine (samples.EXACT_SERVING:
    answers equal the in-process ones exactly), API key on, short read timeout. Started by the first test
    that asks for it (under test-all, only a worker that runs such a test pays for one); stopped with
    the trained run."""
    exact = by_name("tests.task.samples").EXACT_SERVING
    _servers.append(start_server(trained_model, *exact, api_key=API_KEY, SERVING__READ_TIMEOUT=READ_TIMEOUT))
    return wait_until_healthy(_servers[0])


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client(timeout=60) as session:
        yield session


@pytest.fixture
def run_copy(trained_model: Path, tmp_path: Path) -> Path:
    """This test's own copy of the trained run, in a runs folder of its own with `latest` on it."""
    copied: Path = by_name("tests.helpers.models").copy_run(trained_model, tmp_path / "runs")
    set_writable(copied, True)
    runs.point_latest(copied.parent, copied.name)
    return copied
