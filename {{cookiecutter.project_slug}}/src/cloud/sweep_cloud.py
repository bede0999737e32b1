"""`uv run sweep-cloud`: the sweep of `uv run sweep`, each trial a SkyPilot managed job.

The study stays here, at the driver (the same journal as `uv run sweep`:
`<training.output_dir>/sweeps/<study>/journal.log`, ask/tell from this one process). For each
trial the driver writes a job file, `sweeps/<study>/jobs/trial-<N>.yaml`: the training task of
cloud.task_file with the trial's parameters (and every local SECTION__FIELD setting) as envs,
the run name `<study>-t<N>`, `--infra`/`--gpus`/`--spot` applied, and
`resources.job_recovery: {max_restarts_on_errors: JOB_RESTARTS}`. It launches the job with
`sky jobs launch`, so SkyPilot recovers a trial whose VM is reclaimed or that crashes (the trial
resumes from its checkpoints on the bucket, as `train-cloud --managed` does), and follows its log
to the end: the trial's training process ends with one `sweep-result:` line (its run and
metrics), which is how the driver reads the trial's number back; the run itself is on the bucket
(`/checkpoints/models/<run>`), tagged with the study and trial like a local trial.

`--dry-run` samples the trials' parameters from an in-memory copy of the study (nothing written),
validates each job with SkyPilot's own schema, offline, and prints the command, the resources
and the envs each job would launch with. Otherwise the cloud's credentials are checked first
(one line and nothing written when there are none). Ctrl-C cancels the running trial's job
(`sky jobs cancel`), marks the trial failed and exits 130; a driver killed outright leaves a
job that the next run of the same command cancels before it replaces the trial. Pruning needs
the study beside the training process, so cloud trials are not pruned.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from src import flags
from src.cloud.train_cloud import INSTALL_HINT, SECRETS, CloudError, check_credentials, forwarded_env, validate_task
from src.contract import Task
from src.models import sweep
from src.settings import Settings, load_settings

JOB_RESTARTS = 3  # a trial's job is restarted this many times after an error (preemptions recover apart)
JOBS = "jobs"


def job_name(study: str, number: int) -> str:
    return f"sweep-{study}-t{number}"  # a managed job's name starts with a letter


def job_config(base: Mapping[str, Any], settings: Settings, study: str, number: int, params: Mapping[str, Any],
               environ: Mapping[str, str]) -> dict[str, Any]:  # fmt: skip
    """The task file's job with this trial's settings, resources and recovery."""
    cloud = settings.cloud
    config = copy.deepcopy(dict(base))
    config["name"] = job_name(study, number)
    resources = dict(config.get("resources") or {})
    resources["infra"] = cloud.infra
    if cloud.gpus:
        resources["accelerators"] = cloud.gpus
    resources["use_spot"] = cloud.use_spot
    resources["job_recovery"] = {"max_restarts_on_errors": JOB_RESTARTS}
    config["resources"] = resources
    forwarded, _ = forwarded_env(environ, cloud.task_file, type(settings))
    config["envs"] = {
        **dict(config.get("envs") or {}),
        **dict(forwarded),
        **sweep.trial_settings(study, number, params),
    }
    return config


def validated(config: Mapping[str, Any], where: str) -> None:
    """SkyPilot's own schema check of one job, offline."""
    import sky

    try:
        sky.Task.from_yaml_config(copy.deepcopy(dict(config)))
    except Exception as error:  # SkyPilot raises several types for schema problems
        raise CloudError(f"{where}: invalid SkyPilot job: {error}") from None


def launch_command(path: Path, name: str, environ: Mapping[str, str], passthrough: Sequence[str]) -> list[str]:
    secrets = [part for secret in SECRETS if environ.get(secret) for part in ("--secret", secret)]
    return ["sky", "jobs", "launch", "--name", name, str(path), "--yes", *secrets, *passthrough]


def read_result(lines: Sequence[str], study: str, number: int) -> dict[str, Any] | None:
    """The trial's own `sweep-result:` line in its log (the last one: a recovered job prints it once it ends;
    SkyPilot starts each line of a job's log with the task's name and pid, e.g. `(sweep-t0, pid=1504) `)."""
    for line in reversed(lines):
        _, found, text = line.strip().partition(sweep.RESULT_PREFIX)
        if found:
            with contextlib.suppress(ValueError):
                result = json.loads(text)
                if isinstance(result, dict) and result.get("study") == study and result.get("trial") == number:
                    metrics = result.get("metrics")
                    return metrics if isinstance(metrics, dict) else None
    return None


def cancel(name: str) -> None:
    """Best effort: the job of a trial that this driver no longer follows."""
    sky_cli = shutil.which("sky")
    if sky_cli is not None:  # a hung or failing cancel must not hide why the driver stopped (Ctrl-C: exit 130)
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            subprocess.run([sky_cli, "jobs", "cancel", "--name", name, "--yes"], check=False, timeout=300)


class CloudTrials:
    """Each trial a managed job; its log followed to the end and its metric read from it."""

    def __init__(self, base: Mapping[str, Any], settings: Settings, study: str, key: str,
                 passthrough: Sequence[str]) -> None:  # fmt: skip
        self.base, self.settings, self.study, self.key, self.passthrough = base, settings, study, key, passthrough
        self.jobs = sweep.study_dir(settings, study) / JOBS

    def __call__(self, number: int, params: Mapping[str, Any]) -> sweep.Outcome:
        name = job_name(self.study, number)
        config = job_config(self.base, self.settings, self.study, number, params, os.environ)
        path = self.jobs / f"trial-{number}.yaml"
        self.jobs.mkdir(parents=True, exist_ok=True)
        staging = path.with_suffix(".tmp")
        staging.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        staging.replace(path)
        command = launch_command(path, name, os.environ, self.passthrough)
        print(f"+ {shlex.join(command)}", flush=True)
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines: list[str] = []
        try:
            for line in process.stdout or ():
                sys.stdout.write(line)
                lines.append(line)
                del lines[:-200]  # the result is the job's last line: keep a tail
            code = process.wait()
        except BaseException:
            process.terminate()
            process.wait()
            cancel(name)  # the job would go on training, and paying, with nobody to read it
            raise
        metrics = read_result(lines, self.study, number)
        if metrics is None:
            return sweep.Outcome(None, code=code or 1)
        value = metrics.get(self.key)
        run = metrics.get("run_id")
        return sweep.Outcome(float(value) if isinstance(value, int | float) else None, str(run), code=0)


def dry_run(
    base: Mapping[str, Any], settings: Settings, study: str, maximize: bool, passthrough: Sequence[str]
) -> None:
    """Each trial's job, from an in-memory copy of the study: validated and printed, nothing written."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    memory = optuna.create_study(study_name=study, **sweep.study_options(settings, maximize))
    folder = sweep.study_dir(settings, study) / JOBS
    for _ in range(settings.sweep.trials):
        trial, params = sweep.ask(memory, settings)
        config = job_config(base, settings, study, trial.number, params, os.environ)
        validated(config, f"trial {trial.number}")
        command = launch_command(folder / f"trial-{trial.number}.yaml", str(config["name"]), os.environ, passthrough)
        print(f"trial {trial.number} of {study}: {json.dumps(params)}")
        print(shlex.join(command))
        shown = {"name": config["name"], "resources": config["resources"], "envs": config["envs"]}
        print("  " + yaml.safe_dump(shown, sort_keys=False).rstrip().replace("\n", "\n  "))
        memory.tell(trial, 0.0)  # a placeholder so the next trial is sampled as the real driver would
    print(f"dry run: {settings.sweep.trials} trial job(s) pass SkyPilot's schema; nothing launched, nothing written",
          file=sys.stderr)  # fmt: skip


def main(argv: Sequence[str], task: Task[Any]) -> int:
    args, passthrough = flags.SWEEP_CLOUD.parse_known(argv)
    settings = load_settings(task.settings, flags=flags.SWEEP_CLOUD.settings_flags(args))
    study = sweep.study_name(settings)
    key, maximize, _ = sweep.metric_of(settings, task)
    sweep.check_values(settings, task, [])
    validate_task(settings.cloud.task_file)
    base = yaml.safe_load(settings.cloud.task_file.read_text(encoding="utf-8"))
    if args.dry_run:
        dry_run(base, settings, study, maximize, passthrough)
        return 0
    check_credentials(settings.cloud.infra)
    if shutil.which("sky") is None:
        raise CloudError(INSTALL_HINT)
    with sweep.open_study(settings, study, key, maximize) as opened:
        for number in sweep.cut_short(opened, settings.training.output_dir):
            cancel(job_name(study, number))
        sweep.drive(opened, settings, CloudTrials(base, settings, study, key, passthrough), key)
    from src.evaluation.sweep_report import finish

    finish(opened, settings.training.output_dir, sweep.study_dir(settings, study), key)
    return 0
