"""sweep-cloud, offline: each trial's job validated by SkyPilot's own schema with job recovery set, and a
launch without credentials stopped before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from src.config import load_settings
from tests.helpers.processes import only_error_line, run_module, sky_api_servers
from tests.helpers.sky import needs_sky, sky_env


def jobs_printed(stdout: str) -> list[dict[str, object]]:
    """The job each trial would launch, as --dry-run prints it (an indented YAML block after its command)."""
    blocks = stdout.split("\nsky jobs launch ")[1:]
    return [yaml.safe_load("\n".join(line[2:] for line in block.splitlines()[1:] if line.startswith("  ")))
            for block in blocks]  # fmt: skip


@needs_sky
@pytest.mark.parametrize("cloud", ["gcp", "aws", "azure"])
def test_dry_run_validates_each_trials_job_for_every_cloud(tmp_path: Path, cloud: str) -> None:
    output_dir = tmp_path / "models"
    env = sky_env(tmp_path, TRAINING__OUTPUT_DIR=str(output_dir))
    result = run_module("src", "sweep-cloud", "--dry-run", "--infra", cloud, "--trials", "2", "--study", "lr", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = jobs_printed(result.stdout)
    assert [job["name"] for job in jobs] == ["sweep-lr-t0", "sweep-lr-t1"]
    space = load_settings(environ={}).sweep.space
    for number, job in enumerate(jobs):
        resources, envs = job["resources"], job["envs"]
        assert isinstance(resources, dict)
        assert isinstance(envs, dict)
        assert resources["infra"] == cloud
        assert resources["job_recovery"] == {"max_restarts_on_errors": 3}
        assert envs["SWEEP_TRIAL"] == str(number)
        assert all(name.upper().replace(".", "__") in envs for name in space)
    assert not output_dir.exists(), "a dry run writes nothing"
    assert "2 trial job(s) pass SkyPilot's schema" in result.stderr
    assert not sky_api_servers()


@needs_sky
def test_a_job_skypilot_refuses_is_one_line(tmp_path: Path) -> None:
    task_file = load_settings(environ={}).cloud.task_file
    broken = tmp_path / "sky_task.yaml"
    broken.write_text(task_file.read_text(encoding="utf-8").replace("disk_size:", "disk_sise:"), encoding="utf-8")
    env = sky_env(tmp_path, CLOUD__TASK_FILE=str(broken), TRAINING__OUTPUT_DIR=str(tmp_path / "models"))
    result = run_module("src", "sweep-cloud", "--dry-run", env=env)
    assert result.returncode == 2
    assert "disk_sise" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


@needs_sky
def test_launch_without_credentials_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    output_dir = tmp_path / "models"
    infra = load_settings(environ={}).cloud.infra
    result = run_module("src", "sweep-cloud", "--trials", "2",
                        env=sky_env(tmp_path, TRAINING__OUTPUT_DIR=str(output_dir)))  # fmt: skip
    assert result.returncode == 2
    assert f"{infra.split('/')[0]} has no usable credentials" in only_error_line(result.stderr)
    assert not output_dir.exists()
    assert not sky_api_servers()
