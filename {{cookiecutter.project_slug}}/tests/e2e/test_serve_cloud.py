"""serve-cloud, offline: the SkyServe spec through SkyPilot's own schema, the command, the preflight.

SkyPilot runs in subprocesses with its API server disabled and a private port (sky_env),
and each test that touches sky asserts that no API server is left running.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from src.cloud import serve_cloud
from src.config import load_settings
from src.task import TASK
from tests.helpers.models import WEIGHTS
from tests.helpers.processes import only_error_line, run_module, sky_api_servers
from tests.helpers.sky import needs_sky, sky_env

CLOUDS = ("gcp", "aws", "azure")
CHECK_SPEC = """
import sys, yaml, sky
task = sky.Task.from_yaml(sys.argv[1])
service = task.service
print(task.name, service.readiness_path, service.min_replicas, service.max_replicas, service.target_qps_per_replica)
print(sorted(next(iter(task.resources)).ports or []))
# The key given at launch (--secret LIT_SERVER_API_KEY) reaches the readiness probe's headers.
config = yaml.safe_load(open(sys.argv[1]))
launched = sky.Task.from_yaml_config(config, secrets_overrides={"LIT_SERVER_API_KEY": "key-from-launch"})
print(launched.service.to_yaml_config()["readiness_probe"].get("headers"))
"""


def spec_for(cloud: str, target: Path) -> Path:
    """This project's service spec rendered for `cloud` (the spec names its cloud once, under resources)."""
    spec = load_settings(environ={}).cloud.service_file
    infra = load_settings(environ={}).cloud.infra
    text = spec.read_text(encoding="utf-8")
    assert text.count(f"infra: {infra}") + text.count(f'infra: "{infra}"') == 1
    rendered = target / f"sky_serve.{cloud}.yaml"
    rendered.write_text(
        text.replace(f'infra: "{infra}"', f"infra: {infra}").replace(f"infra: {infra}", f"infra: {cloud}")
    )
    return rendered


@needs_sky
@pytest.mark.parametrize("cloud", CLOUDS)
def test_service_spec_passes_skypilot_schema_for_every_cloud(tmp_path: Path, cloud: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", CHECK_SPEC, str(spec_for(cloud, tmp_path))], env=sky_env(tmp_path),
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    name_probe_replicas, ports, probe_headers = result.stdout.strip().splitlines()
    _, probe, low, high, qps = name_probe_replicas.split()
    assert probe == "/health"
    assert 1 <= int(low) <= int(high)
    assert float(qps) > 0
    assert ports == "['8000']"
    assert probe_headers == "{'X-API-Key': 'key-from-launch'}"
    assert not sky_api_servers()


@needs_sky
def test_dry_run_prints_sky_serve_up(tmp_path: Path) -> None:
    result = run_module("src", "serve-cloud", "--dry-run", env=sky_env(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    command = shlex.split(result.stdout)
    cloud = load_settings(environ={}).cloud
    assert command[:3] == ["sky", "serve", "up"]
    assert command[command.index("--infra") + 1] == cloud.infra
    assert command[command.index("--service-name") + 1] == cloud.service_name
    assert "SERVING__MODEL_DIR=/checkpoints/models/production" in command, "the promoted run on the bucket"
    assert command[command.index("--secret") + 1] == "LIT_SERVER_API_KEY"
    assert "LIT_SERVER_API_KEY" in result.stderr, "a note: set the key before the real launch"
    assert not sky_api_servers()


@needs_sky
@pytest.mark.parametrize("cloud", CLOUDS)
def test_a_service_started_from_here_gets_a_rolling_update(tmp_path: Path, cloud: str) -> None:
    """serve-cloud records the services it starts; the next one updates in place (`sky serve update --mode
    rolling`: replicas replaced one at a time), its spec validated by SkyPilot's schema; --up starts anew."""
    output_dir = tmp_path / "models"
    output_dir.mkdir()
    name = load_settings(environ={}).cloud.service_name
    (output_dir / serve_cloud.SERVICES).write_text(json.dumps({name: {"infra": cloud}}))
    env = sky_env(tmp_path, TRAINING__OUTPUT_DIR=str(output_dir), CLOUD__SERVICE_FILE=str(spec_for(cloud, tmp_path)))
    result = run_module("src", "serve-cloud", "--dry-run", "--infra", cloud, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    command = shlex.split(result.stdout)
    assert command[:4] == ["sky", "serve", "update", name]
    assert command[command.index("--mode") + 1] == "rolling"
    assert command[command.index("--infra") + 1] == cloud
    assert "SERVING__MODEL_DIR=/checkpoints/models/production" in command
    assert "rolling update" in result.stderr
    assert f"passes SkyPilot's schema; this would be a rolling update of service {name}" in result.stderr
    anew = run_module("src", "serve-cloud", "--dry-run", "--up", env=env)
    assert shlex.split(anew.stdout)[:3] == ["sky", "serve", "up"]
    assert f"this would be a new service {name}" in anew.stderr
    assert not sky_api_servers()


@needs_sky
def test_dry_run_with_a_run_spot_gpus_and_overrides(tmp_path: Path) -> None:
    env = sky_env(tmp_path, SERVING__PRECISION="fp32", LIT_SERVER_API_KEY="secret-value")
    argv = ["--dry-run", "--run", "smoke-20261202-153000", "--spot", "--gpus", "T4:1", "--infra", "aws"]
    result = run_module("src", "serve-cloud", *argv, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    command = shlex.split(result.stdout)
    assert "SERVING__MODEL_DIR=/checkpoints/models/smoke-20261202-153000" in command
    assert "--use-spot" in command
    assert command[command.index("--gpus") + 1] == "T4:1"
    assert command[command.index("--infra") + 1] == "aws"
    assert "SERVING__PRECISION=fp32" in command
    assert "secret-value" not in result.stdout, "secrets go by name"


@needs_sky
def test_dry_run_uploads_a_local_model_folder(tmp_path: Path, trained_model: Path) -> None:
    result = run_module("src", "serve-cloud", "--dry-run", "--model-dir", str(trained_model), env=sky_env(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    command = shlex.split(result.stdout)
    assert "SERVING__MODEL_DIR=/model" in command
    mounts = yaml.safe_load(Path(command[3]).read_text(encoding="utf-8"))["file_mounts"]
    base = TASK.serving.local_base(TASK.inspect(trained_model))
    if base is None:  # the model is the run folder alone
        assert mounts == {"/model": str(trained_model)}
    else:  # a LoRA run on a local base model: the replicas get both, and the run names the base where it will be
        assert mounts["/base-model"] == str(base)
        uploaded = Path(mounts["/model"])
        assert (uploaded / WEIGHTS).read_bytes() == (trained_model / WEIGHTS).read_bytes()
        info = json.loads((uploaded / "run.json").read_text())
        assert info["base_model"] == info["inputs"]["model.checkpoint"]["path"] == "/base-model"


@needs_sky
@pytest.mark.parametrize(
    "argv", [["--infra", "oracle"], ["--gpus", "T4:x"], ["--service", "Bad Name!"], ["--run", "../etc"]]
)
def test_bad_flags_exit_2_before_anything_runs(tmp_path: Path, argv: list[str]) -> None:
    result = run_module("src", "serve-cloud", "--dry-run", *argv, env=sky_env(tmp_path))
    assert result.returncode == 2
    assert argv[0] in only_error_line(result.stderr)
    assert result.stdout == "", "no command printed"


@needs_sky
def test_local_model_folder_that_cannot_serve_is_refused(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / TASK.model_files.config).write_text("{}", encoding="utf-8")
    result = run_module(
        "src", "serve-cloud", "--dry-run", "--model-dir", str(tmp_path / "model"), env=sky_env(tmp_path)
    )
    assert result.returncode == 2
    assert TASK.model_files.config in only_error_line(result.stderr)


@needs_sky
def test_launch_without_credentials_fails_fast_and_clearly(tmp_path: Path) -> None:
    infra = load_settings(environ={}).cloud.infra
    started = time.monotonic()
    env = sky_env(tmp_path, LIT_SERVER_API_KEY="k", TRAINING__OUTPUT_DIR=str(tmp_path / "models"))
    result = run_module("src", "serve-cloud", env=env, timeout=60)
    assert time.monotonic() - started < 30
    assert result.returncode == 2
    assert f"{infra.split('/')[0]} has no usable credentials" in only_error_line(result.stderr)
    assert not (tmp_path / "models").exists(), "nothing launched: no record of a service"
    assert not sky_api_servers()


@needs_sky
def test_launch_without_an_api_key_is_refused(tmp_path: Path) -> None:
    result = run_module("src", "serve-cloud", env=sky_env(tmp_path))
    assert result.returncode == 2
    assert "LIT_SERVER_API_KEY is not set" in only_error_line(result.stderr)
