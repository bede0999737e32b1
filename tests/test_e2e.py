"""Slow end to end: generate, `uv sync`, then the project's own commands, as a user runs them."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
import tomllib
import urllib.request
from pathlib import Path
from xml.etree import ElementTree

import pytest

from tests.conftest import CLOUDS, TASKS, TEMPLATE, Baked, bake, clean_env

pytestmark = pytest.mark.slow


CLASSIFICATION, GENERATION = TASKS


@pytest.fixture(scope="module")
def synced(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Baked]:
    """One locked and synced project per task and cloud (cloud group included), made on first use."""
    return {}


def project_for(
    cloud: str,
    synced: dict[str, Baked],
    tmp_path_factory: pytest.TempPathFactory,
    task: str = CLASSIFICATION,
    compile_bytecode: bool = True,
) -> Baked:
    """The synced project of this task and cloud in this worker; gcp's compiled as the README's set-up (where
    tests run), unless the first test to ask needs no bytecode (the cloud commands)."""
    key = f"{task}-{cloud}"
    if key not in synced:
        project = bake(tmp_path_factory.mktemp(key), lock=True, task=task, default_cloud=cloud,
                       project_name=f"E2E {key}")  # fmt: skip
        assert (project.path / "uv.lock").is_file(), "the post-gen hook locks the dependencies"
        compile_bytecode = compile_bytecode and cloud == "gcp"
        result = project.run("uv", "sync", "--locked", "--all-groups", *["--compile-bytecode"] * compile_bytecode)
        assert result.returncode == 0, result.stderr[-3000:]
        synced[key] = project
    return synced[key]


def test_lint_and_test_pass_in_a_fresh_project(
    synced: dict[str, Baked], tmp_path_factory: pytest.TempPathFactory
) -> None:
    project = project_for("gcp", synced, tmp_path_factory)
    lint = project.run("uv", "run", "lint")
    assert lint.returncode == 0, lint.stdout[-3000:] + lint.stderr[-3000:]
    assert "All checks passed!" in lint.stdout
    assert "Success: no issues found" in lint.stdout
    via_task = project.run("uv", "run", "task", "lint")
    assert via_task.returncode == 0
    assert via_task.stdout == lint.stdout, "`uv run lint` is `uv run task lint`"

    quick = project.run("uv", "run", "test", "--collect-only", "-q", "-p", "no:cacheprovider")
    assert quick.returncode == 0, quick.stdout[-3000:]
    assert "tests/e2e/" not in quick.stdout, "`uv run test` is the quick tier: no end-to-end test"
    assert "tests/integration/" in quick.stdout

    test = project.run("uv", "run", "test-all", "-q", "-p", "no:cacheprovider", "--durations=15", timeout=1800)
    assert test.returncode == 0, test.stdout[-5000:]
    summary = test.stdout.splitlines()[-1]  # "250 passed, 1 skipped in 300.00s"
    counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|skipped)\b", summary)}
    assert counts.get("passed", 0) + counts.get("skipped", 0) >= 240, f"the whole suite runs: {counts}"
    skipped = [line for line in test.stdout.splitlines() if line.startswith("SKIPPED")]
    assert all("needs a CUDA GPU" in line for line in skipped), f"with --all-groups only GPU tests skip: {skipped}"
    pyc = list(project.path.glob("src/__pycache__/*.pyc"))
    assert pyc, "the tasks keep the bytecode cache, whatever the shell says"


def test_smoke_training_through_uv(synced: dict[str, Baked], tmp_path_factory: pytest.TempPathFactory) -> None:
    project = project_for("gcp", synced, tmp_path_factory)
    result = project.run("uv", "run", "train-local", "--smoke")
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = (project.path / "models" / "latest").resolve()
    assert run_dir.name.startswith("smoke-"), "runs are named <run_name>-<start time>"
    files = {path.name for path in run_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "metrics.json"} <= files
    assert 0.0 <= json.loads((run_dir / "metrics.json").read_text())["accuracy"] <= 1.0
    status = project.run("git", "status", "--porcelain")
    assert status.stdout == "", "training outputs are git-ignored"


def test_uv_run_does_not_recompile_bytecode(synced: dict[str, Baked], tmp_path_factory: pytest.TempPathFactory) -> None:
    project = project_for("gcp", synced, tmp_path_factory)
    result = project.run("uv", "run", "true")
    assert result.returncode == 0
    assert "Bytecode compiled" not in result.stderr, "compile-bytecode would re-check the venv on every uv run"


def test_ctrl_c_through_uv_run_exits_130(synced: dict[str, Baked], tmp_path_factory: pytest.TempPathFactory) -> None:
    """taskipy swallows KeyboardInterrupt; `uv run train-local` must still report the interruption."""
    project = project_for("gcp", synced, tmp_path_factory)
    output_dir = tmp_path_factory.mktemp("interrupted")
    env = clean_env(TRAINING__OUTPUT_DIR=str(output_dir), TRAINING__MAX_STEPS="5000", TRAINING__SAVE_STEPS="20")
    process = subprocess.Popen(
        ["uv", "run", "train-local", "--smoke"], cwd=project.path, env=env, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not list(output_dir.glob(".checkpoints/*/checkpoint-*/trainer_state.json")):
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGINT)  # what the terminal sends on Ctrl-C
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr
    assert not (output_dir / "latest").exists()


# Freshly generated projects, each trained and served as a new user does it (the Run N names of the
# quickstart report); two by default, MLCC_FRESH_PROJECTS=10 runs ten.
FRESH_PROJECTS = [f"Run {number}" for number in range(1, int(os.environ.get("MLCC_FRESH_PROJECTS", "2")) + 1)]


@pytest.mark.parametrize("name", FRESH_PROJECTS)
def test_a_fresh_projects_first_smoke_run_serves_and_predicts_by_default(tmp_path: Path, name: str) -> None:
    """Default settings, nothing chosen: `uv run serve` answers /predict and says which runtime and precision
    do; `uv run predict` writes its file. The same project trains the same model every time."""
    project = bake(tmp_path, lock=True, project_name=name)
    assert project.run("uv", "sync", "--locked").returncode == 0
    smoke = project.run("uv", "run", "train-local", "--smoke")
    assert smoke.returncode == 0, smoke.stderr[-3000:]
    assets = project.path / "models" / ".smoke" / "seed-42" / "model"  # training.seed in settings.yaml
    port = free_port()
    serve = subprocess.Popen(
        ["uv", "run", "serve", "--port", str(port)], cwd=project.path, env=clean_env(),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_health(url, serve, {})
        body = json.dumps({"text": "a wonderful film"}).encode()
        with urllib.request.urlopen(f"{url}/predict", data=body, timeout=30) as answer:  # noqa: S310
            assert answer.status == 200
            assert json.loads(answer.read())["label"] in {"neg", "pos"}
    finally:
        os.killpg(serve.pid, signal.SIGINT)
        output, _ = serve.communicate(timeout=60)
    assert re.search(r"/predict with (onnxruntime|pytorch) (int8|fp32)", output), output[-3000:]
    (project.path / "reviews.txt").write_text("a wonderful film\nawful and dull\n")
    predicted = project.run("uv", "run", "predict", "reviews.txt")
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert re.search(r"\((onnxruntime|pytorch) (int8|fp32) on cpu\)", predicted.stderr)
    assert len((project.path / "reviews.predictions.jsonl").read_text().splitlines()) == 2
    tokenizer = (assets / "tokenizer.json").read_bytes()
    rebuilt = project.run("uv", "run", "python", "-c", REBUILD_SMOKE_ASSETS)
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    assert (project.path / "models" / "again" / "model" / "tokenizer.json").read_bytes() == tokenizer, "reproducible"


REBUILD_SMOKE_ASSETS = """
from pathlib import Path
from src import smoke_assets
from src.config import SMOKE_SETTINGS_FILE, load_settings
from src.task import TASK
smoke_assets.build(Path("models/again"), load_settings(overlays=[SMOKE_SETTINGS_FILE]).training.seed, TASK.smoke)
"""


STREAM_CLIENT = """
import sys
from openai import OpenAI

client = OpenAI(base_url=sys.argv[1] + "/v1", api_key=sys.argv[2], max_retries=0, timeout=60)
question = [{"role": "user", "content": "What is the opposite of hot?"}]
stream = client.chat.completions.create(model="local", messages=question, stream=True, temperature=0, max_tokens=30)
pieces = [chunk.choices[0].delta.content for chunk in stream if chunk.choices and chunk.choices[0].delta.content]
print(len(pieces), repr("".join(pieces)))
"""


def test_generation_project_lints_tests_trains_serves_and_evaluates(
    synced: dict[str, Baked], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The text-generation task's project, as its README says: lint, the tests, the smoke run, then the
    official openai client streaming from `uv run serve`, and `uv run evaluate`'s perplexity."""
    project = project_for("gcp", synced, tmp_path_factory, GENERATION)
    lint = project.run("uv", "run", "lint")
    assert lint.returncode == 0, lint.stdout[-3000:] + lint.stderr[-3000:]
    assert "Success: no issues found" in lint.stdout
    test = project.run("uv", "run", "test-all", "-q", "-p", "no:cacheprovider", "--durations=10", timeout=1800)
    assert test.returncode == 0, test.stdout[-5000:]
    counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|skipped)\b", test.stdout.splitlines()[-1])}
    assert counts.get("passed", 0) >= 150, f"the whole suite runs: {counts}"

    smoke = project.run("uv", "run", "train-local", "--smoke")
    assert smoke.returncode == 0, smoke.stderr[-3000:]
    run_dir = (project.path / "models" / "latest").resolve()
    published = {path.name for path in run_dir.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "report.md"} <= published

    port = free_port()
    serve = subprocess.Popen(
        ["uv", "run", "serve", "--port", str(port)], cwd=project.path, env=clean_env(LIT_SERVER_API_KEY="e2e-key"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_health(url, serve, {"X-API-Key": "e2e-key"})
        client = project.run("uv", "run", "python", "-c", STREAM_CLIENT, url, "e2e-key", timeout=120)
        assert client.returncode == 0, client.stderr[-3000:]
        chunks, text = client.stdout.split(" ", 1)
        assert int(chunks) >= 2, f"streamed in pieces: {client.stdout}"
        assert "opposite" in text
    finally:
        os.killpg(serve.pid, signal.SIGINT)
        output, _ = serve.communicate(timeout=60)
    assert serve.returncode == 130, output[-3000:]

    evaluated = project.run("uv", "run", "evaluate")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert json.loads(evaluated.stdout)["perplexity"] > 1.0


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_health(url: str, process: subprocess.Popen[str], headers: dict[str, str]) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[0][-3000:]
        try:
            with urllib.request.urlopen(urllib.request.Request(f"{url}/health", headers=headers), timeout=2) as answer:  # noqa: S310
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise AssertionError("the server was not healthy within 300 s")


def no_credentials_env(home: Path) -> dict[str, str]:
    uv_cache = subprocess.run(["uv", "cache", "dir"], capture_output=True, text=True, check=True).stdout.strip()
    return {
        "HOME": str(home),
        "UV_CACHE_DIR": uv_cache,
        "PYENV_ROOT": os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv")),
        "SKYPILOT_DISABLE_LOCAL_API_SERVER": "1",
        "SKYPILOT_DISABLE_USAGE_COLLECTION": "1",
        "SKYPILOT_API_SERVER_LOCAL_PORT": "46582",
        # Credential lookups must not probe cloud metadata servers from a test machine.
        "NO_GCE_CHECK": "True",
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def sky_servers() -> list[str]:
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "sky.server.server" in cmdline:
            found.append(cmdline)
    return found


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("cloud", CLOUDS)
def test_train_cloud_offline(
    cloud: str, task: str, synced: dict[str, Baked], tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    project = project_for(cloud, synced, tmp_path_factory, task, compile_bytecode=False)
    env = no_credentials_env(tmp_path)

    dry = project.run("uv", "run", "train-cloud", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert dry.stdout.startswith("sky launch ")
    assert f"--infra {cloud}" in dry.stdout

    schema = project.run("uv", "run", "python", "-c", "import sky; sky.Task.from_yaml('sky_task.yaml')", env=env)
    assert schema.returncode == 0, schema.stderr[-3000:]

    launch = project.run("uv", "run", "train-cloud", timeout=120, env=env)  # timeout: a hang guard
    assert launch.returncode != 0
    assert f"{cloud} has no usable credentials" in launch.stderr
    assert "Traceback" not in launch.stderr
    assert not sky_servers(), "no SkyPilot API server left running"


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("cloud", CLOUDS)
def test_serve_cloud_offline(
    cloud: str, task: str, synced: dict[str, Baked], tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    project = project_for(cloud, synced, tmp_path_factory, task, compile_bytecode=False)
    env = no_credentials_env(tmp_path)

    dry = project.run("uv", "run", "serve-cloud", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert dry.stdout.startswith("sky serve up ")
    assert "sky_serve.yaml" in dry.stdout
    assert f"--infra {cloud}" in dry.stdout

    check = "import sky; t = sky.Task.from_yaml('sky_serve.yaml'); print(t.service.readiness_path)"
    schema = project.run("uv", "run", "python", "-c", check, env=env)
    assert schema.returncode == 0, schema.stderr[-3000:]
    assert schema.stdout.strip() == "/health"

    started = time.monotonic()
    launch = project.run("uv", "run", "serve-cloud", timeout=120, env={**env, "LIT_SERVER_API_KEY": "k"})
    assert time.monotonic() - started < 30
    assert launch.returncode != 0
    assert f"{cloud} has no usable credentials" in launch.stderr
    assert "Traceback" not in launch.stderr
    assert not sky_servers(), "no SkyPilot API server left running"


# "✓ tests/unit/test_config.py succeeded in 1.2s (memoized)"; a batch: "✓ tests/integration/test_a.py and 7 other
# files succeeded in 25.3s".
PANTS_RESULT = re.compile(
    r"^[✓✕] (tests/\S+?\.py(?: and \d+ other files?)?) (succeeded|failed)"
    r"(?: in [\d.]+s)?(?: \((memoized|cached[^)]*)\))?",
    re.M,
)


def pants_test_outcomes(output: str) -> dict[str, str]:
    """Per test process (a file, or a batch named by its first file): 'ran', 'memoized' or 'cached'."""
    return {match[1]: match[3].split()[0] if match[3] else "ran" for match in PANTS_RESULT.finditer(output)}


def pants_test(
    project: Baked, *goals: str, reports: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, set[str]]]:
    """`./pants GOALS test ::` with JUnit reports: the run, and per test process the test files it ran."""
    result = project.run("./pants", *goals, "test", "--report", f"--report-dir=dist/{reports}", "::", timeout=3600)
    assert result.returncode == 0, result.stderr[-5000:]
    files = {}
    for report in (project.path / "dist" / reports).glob("*.xml"):
        modules = {case.get("classname", "") for case in ElementTree.parse(report).iter("testcase")}  # noqa: S314 (Pants' own)
        files[report.name] = {module_file(project.path, module) for module in modules}
    by_process = {}
    for name in pants_test_outcomes(result.stderr):
        first = name.split(" and ")[0]
        [ran] = [ran for ran in files.values() if first in ran]
        by_process[name] = ran
    return result, by_process


def module_file(root: Path, classname: str) -> str:
    """JUnit's classname (tests.unit.test_config, or tests.unit.test_config.TestClass) -> tests/unit/test_config.py."""
    parts = classname.split(".")
    while parts and not (root / Path(*parts).with_suffix(".py")).is_file():
        parts.pop()
    assert parts, f"no test file for {classname}"
    return str(Path(*parts).with_suffix(".py"))


def test_template_checkout_passes_pants() -> None:
    template = Baked(TEMPLATE)
    result = template.run("./pants", "tailor", "--check", "lint", "check", "test", "::", timeout=3600)
    assert result.returncode == 0, result.stderr[-5000:]
    outcomes = pants_test_outcomes(result.stderr)
    assert {"tests/test_bake.py", "tests/test_hooks.py"} <= set(outcomes)


@pytest.fixture(scope="module")
def for_pants(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Baked]:
    """One locked project per task for the Pants tests, made on first use. Pants installs from the lock itself
    (no `uv sync`), and a project of their own lets them run beside the synced projects' tests."""
    return {}


def pants_project(task: str, for_pants: dict[str, Baked], tmp_path_factory: pytest.TempPathFactory) -> Baked:
    if task not in for_pants:
        project = bake(tmp_path_factory.mktemp(f"pants-{task}"), lock=True, task=task, project_name=f"E2E {task}-gcp")
        assert (project.path / "uv.lock").is_file(), "the post-gen hook locks the dependencies"
        for_pants[task] = project
    return for_pants[task]


def stop_pantsd(project: Baked) -> None:
    """Pants 2.17 has no goal to stop its daemon: end the project's from its pid file, as `pkill` would."""
    for pid_file in project.path.glob(".pids/*/pantsd/pid"):
        with contextlib.suppress(ValueError, ProcessLookupError):
            os.kill(int(pid_file.read_text()), signal.SIGTERM)


def cold_pants_passes_in(project: Baked) -> dict[str, set[str]]:
    """`./pants tailor --check lint check test ::` on empty project caches: every quick-tier file runs (the
    in-process tier as one batch, one trained model), the linters and mypy pass, and a settings test does not
    depend on the training stack. The test files of each test process."""
    cold, first = pants_test(project, "tailor", "--check", "lint", "check", reports="cold")
    test_files = {path.relative_to(project.path) for path in project.path.glob("tests/**/test_*.py")}
    quick_files = {str(name) for name in test_files if "e2e" not in name.parts}
    assert set().union(*first.values()) == quick_files, "./pants test :: runs the quick tier, every file of it"
    in_process = {name for name in quick_files if "integration" in Path(name).parts}
    assert in_process in first.values(), f"the in-process tier runs as one batch: {first}"
    assert "ruff check succeeded" in cold.stderr
    assert "ruff format succeeded" in cold.stderr
    assert "mypy succeeded" in cold.stderr
    graph = project.run("./pants", "dependencies", "--transitive", "tests/unit/test_config.py")
    assert graph.returncode == 0, graph.stderr[-3000:]
    heavy = [line for line in graph.stdout.splitlines() if re.search(r"#(torch|transformers|datasets)\b", line)]
    assert not heavy, f"a settings test must not depend on the training stack: {heavy}"
    assert "src/config.py" in graph.stdout
    return first


def test_pants_in_generated_project_is_cached_and_incremental(
    for_pants: dict[str, Baked], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Pants' caching and invalidation come from the core's BUILD files and pants.toml, the same in every
    project: checked here in the classification project; the generation project's cold pass is below."""
    project = pants_project(CLASSIFICATION, for_pants, tmp_path_factory)
    try:
        first = cold_pants_passes_in(project)
        again = project.run("./pants", "test", "::")
        assert again.returncode == 0, again.stderr[-3000:]
        assert set(pants_test_outcomes(again.stderr).values()) <= {"memoized", "cached"}

        serve = project.path / "src" / "deployment" / "serve.py"
        serve.write_text(serve.read_text() + "# touched by the template tests\n")
        changed, processes = pants_test(project, reports="changed")
        outcomes = pants_test_outcomes(changed.stderr)
        # Not memoized: run again, or read from Pants' cache where these very inputs ran before (another CI run).
        reran = set().union(*(processes[name] for name, how in outcomes.items() if how != "memoized"))
        assert "tests/integration/test_serve.py" in reran
        kept = set().union(*first.values()) - reran
        assert "tests/unit/test_config.py" in kept, f"only tests depending on serve.py re-run, got {sorted(reran)}"
    finally:
        stop_pantsd(project)


def test_pants_passes_in_a_generated_text_generation_project(
    for_pants: dict[str, Baked], tmp_path_factory: pytest.TempPathFactory
) -> None:
    project = pants_project(GENERATION, for_pants, tmp_path_factory)
    try:
        cold_pants_passes_in(project)
    finally:
        stop_pantsd(project)


def test_pants_and_uv_use_the_same_tool_versions(
    for_pants: dict[str, Baked], tmp_path_factory: pytest.TempPathFactory
) -> None:
    project = pants_project(CLASSIFICATION, for_pants, tmp_path_factory)
    lockfile = project.path / "3rdparty" / "python-default.lock"
    if not lockfile.exists():
        result = project.run("./pants", "generate-lockfiles", timeout=3600)
        assert result.returncode == 0, result.stderr[-3000:]
    uv_lock = tomllib.loads((project.path / "uv.lock").read_text())
    uv_versions = {package["name"]: package["version"] for package in uv_lock["package"]}
    pants_lock = json.loads("".join(line for line in lockfile.read_text().splitlines() if not line.startswith("//")))
    pants_versions = {
        requirement["project_name"]: requirement["version"]
        for resolve in pants_lock["locked_resolves"]
        for requirement in resolve["locked_requirements"]
    }
    for tool in ("ruff", "mypy", "pytest", "torch", "transformers"):
        assert pants_versions[tool] == uv_versions[tool], tool
