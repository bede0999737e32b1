"""The run folder format, shared by training, evaluation and serving.

    <output_dir>/
      <run_id>/            a finished run: model, tokenizer, metrics.json, run.json, settings.yaml,
                           trainer_state.json (its log history), report.md and its pictures
      latest               -> the newest finished run (a relative symlink, or a text file naming it)
      .checkpoints/<run_id>/   an unfinished run: Trainer checkpoints and run.json
      .tmp-*               staging folders, renamed into place when complete

A run id is the run name plus the start time (`smoke-20261202-153000`), or plus
SkyPilot's task id on the cloud, which stays the same across a managed job's recoveries,
so a recovered job finds its own checkpoints. A run is published by renaming a complete
staging folder, then `latest` is replaced atomically: a crash at any point leaves `latest`
on the previous good model. Light on imports on purpose: the serving path uses it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from src.errors import UserError, raise_if_signalled

LATEST = "latest"
PRODUCTION = "production"  # the promoted run, what serve and serve-cloud serve (`uv run promote`)
POINTERS = (LATEST, PRODUCTION)
TEMP_PREFIX = ".tmp-"
CHECKPOINTS = ".checkpoints"
RUN_INFO = "run.json"
TRIAL_OF = "trial_of"  # in an unfinished run's run.json: the sweep study whose trial it is (plain --resume skips it)
METRICS = "metrics.json"
RUN_SETTINGS = "settings.yaml"  # the settings the run was trained with
TRAINER_STATE = "trainer_state.json"  # the Trainer's log history (written last into a checkpoint, too)
TIME_FORMAT = "%Y%m%d-%H%M%S"


def check_run_id(name: str, what: str) -> str:
    """A run id names one run folder: never a path (`../other`), `.`, `..` or a hidden folder (`.checkpoints`)."""
    if name.startswith(".") or any(part in name for part in ("/", "\\", "\0")):
        raise UserError(f"{what} {name!r}: a run id is a folder name such as smoke-20261203-101500, not a path")
    return name


class RunLockedError(UserError):
    """Another process is training this run right now."""


def now_utc() -> datetime:
    return datetime.now(UTC)


def run_id_for(run_name: str, started: datetime, environ: Mapping[str, str]) -> str:
    """`<run_name>-<start time>`, or `<run_name>-<SkyPilot task id>` inside a SkyPilot job."""
    task_id = environ.get("SKYPILOT_TASK_ID", "")
    if task_id:
        return f"{run_name}-{re.sub(r'[^A-Za-z0-9._-]+', '-', task_id).strip('-.')[:80]}"
    return f"{run_name}-{started.strftime(TIME_FORMAT)}"


def checkpoint_dir(output_dir: Path, run_id: str) -> Path:
    return output_dir / CHECKPOINTS / run_id


def reserve_run_id(output_dir: Path, wanted: str) -> str:
    """Claim `wanted` (or `wanted-2`, `-3`, ... when taken) by creating its checkpoint folder."""
    (output_dir / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
    for attempt in range(1, 1000):
        run_id = wanted if attempt == 1 else f"{wanted}-{attempt}"
        if (output_dir / run_id).exists():
            continue
        try:
            checkpoint_dir(output_dir, run_id).mkdir()
        except FileExistsError:
            continue
        return run_id
    raise UserError(f"{output_dir}: too many runs named {wanted!r}: delete some or change training.run_name")


def unfinished_runs(output_dir: Path) -> list[Path]:
    """Checkpoint folders of runs that have not been published, oldest first."""
    root = output_dir / CHECKPOINTS
    found = [path for path in root.iterdir() if path.is_dir()] if root.is_dir() else []
    return sorted(found, key=lambda path: (read_info(path).get("started_at", ""), path.stat().st_mtime))


def resume_target(output_dir: Path, requested: str) -> str:
    """The unfinished run `--resume` continues: the newest for "" (not a sweep's trial: its settings are the
    trial's, not the project's), else the one named (checked)."""
    unfinished = unfinished_runs(output_dir)
    if requested == "":
        own = [path for path in unfinished if not read_info(path).get(TRIAL_OF)]
        if not own:
            cut = len(unfinished)
            trials = f" ({cut} cut-short sweep trial(s): `uv run sweep` runs them again)" if cut else ""
            raise UserError(f"--resume: no unfinished run under {output_dir / CHECKPOINTS}{trials}: start a new run")
        return own[-1].name
    if not checkpoint_dir(output_dir, check_run_id(requested, "--resume")).is_dir():
        names = ", ".join(path.name for path in unfinished[-5:]) or "none"
        raise UserError(
            f"--resume {requested}: no unfinished run of that name under {output_dir} (unfinished: {names})"
        )
    return requested


def finished_runs(output_dir: Path) -> list[Path]:
    """Published runs (folders with a model and metrics), newest first."""
    if not output_dir.is_dir():
        return []
    found = [
        path
        for path in output_dir.iterdir()
        if path.is_dir() and not path.is_symlink() and not path.name.startswith(".") and (path / METRICS).is_file()
    ]
    return sorted(found, key=lambda path: (read_info(path).get("finished_at", ""), path.stat().st_mtime), reverse=True)


def read_info(run_dir: Path) -> dict[str, Any]:
    return read_json(run_dir / RUN_INFO)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside `path`, renamed onto it when the block succeeds, removed otherwise.

    A reader never sees half a file, and a command stopped by Ctrl-C or SIGTERM publishes nothing.
    """
    temporary = path.with_name(f"{TEMP_PREFIX}{path.name}-{uuid.uuid4().hex[:8]}")
    try:
        yield temporary
        raise_if_signalled()
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


@contextlib.contextmanager
def run_lock(output_dir: Path, run_id: str) -> Iterator[None]:
    """Hold an exclusive lock on the run for as long as it trains; a second process refuses."""
    lock_path = output_dir / CHECKPOINTS / f"{run_id}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLockedError(
                f"run {run_id!r} is being trained by another process right now ({lock_path} is locked): "
                "wait for it to finish, or start a new run without --resume"
            ) from None
        except OSError:
            pass  # a filesystem without locks (some bucket mounts): run ids are unique anyway
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
            with contextlib.suppress(OSError):
                lock_path.unlink()
                lock_path.parent.rmdir()  # the last run out removes the then empty folder


def new_staging_dir(output_dir: Path, run_id: str) -> Path:
    output_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{run_id}-", dir=output_dir))
    staging.chmod(0o755)  # mkdtemp makes it private; a published model is not
    return staging


def publish(staging_dir: Path, output_dir: Path, run_id: str, move_latest: bool = True) -> Path:
    """Move a complete staging folder to `<output_dir>/<run_id>` and point `latest` at it (unless told not to)."""
    final = output_dir / run_id
    previous = None
    if final.exists():
        previous = output_dir / f"{TEMP_PREFIX}{run_id}-replaced-{uuid.uuid4().hex[:8]}"
        final.rename(previous)
    staging_dir.rename(final)
    if move_latest:
        point_latest(output_dir, run_id)
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)
    return final


def point_latest(output_dir: Path, run_id: str) -> None:
    point(output_dir, LATEST, run_id)


def point(output_dir: Path, pointer: str, run_id: str) -> None:
    """Make `<output_dir>/<pointer>` name the run, atomically (a rename over the old pointer)."""
    link = output_dir / pointer
    temporary = output_dir / f"{TEMP_PREFIX}{pointer}-{uuid.uuid4().hex[:8]}"
    try:
        temporary.symlink_to(run_id, target_is_directory=True)
    except OSError:
        # No symlinks (some bucket mounts, Windows without developer mode): a text file
        # holding the run id does the same job for follow_latest.
        temporary.write_text(run_id + "\n", encoding="utf-8")
    if link.is_dir() and not link.is_symlink():
        shutil.rmtree(link)
    temporary.replace(link)


def remove_stale_staging(output_dir: Path, run_id: str) -> None:
    """Drop what an interrupted publish of the same run left behind."""
    for stale in output_dir.glob(f"{TEMP_PREFIX}{run_id}-*"):
        shutil.rmtree(stale, ignore_errors=True)


def discard_trial(output_dir: Path, study: str, number: int) -> None:
    """Remove what a sweep's trial cut short left here (its checkpoints, a half-done publish): it is never
    resumed, another trial takes its place. Left alone while a process still trains it."""
    root = output_dir / CHECKPOINTS
    for folder in sorted(root.glob(f"{study}-t{number}-*")) if root.is_dir() else []:
        if folder.is_dir() and read_info(folder).get(TRIAL_OF, study) == study:
            with contextlib.suppress(RunLockedError), run_lock(output_dir, folder.name):
                remove_stale_staging(output_dir, folder.name)
                shutil.rmtree(folder, ignore_errors=True)


def follow_latest(path: Path) -> Path:
    """`path` itself, or the run a `latest` or `production` pointer (symlink or text file) names, resolved."""
    if path.is_file() and path.name in POINTERS:
        path = path.parent / path.read_text(encoding="utf-8").strip()
    return path.resolve()


def timestamp(moment: datetime) -> str:
    """How run.json records a moment (started_at, finished_at)."""
    return moment.isoformat(timespec="seconds")


def stored_settings(run_dir: Path) -> dict[str, Any]:
    """The settings a run was trained with ({} for a model folder that is not a run)."""
    path = run_dir / RUN_SETTINGS
    try:
        stored = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise UserError(f"{path}: unreadable ({error})"[:300]) from None
    return stored if isinstance(stored, dict) else {}


def section(stored: dict[str, Any], name: str) -> dict[str, Any]:
    """One section of stored settings ({} when it is missing or not a mapping)."""
    value = stored.get(name)
    return value if isinstance(value, dict) else {}


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`, or {} when it is missing or damaged."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def trial_run(output_dir: Path, study: str, number: int) -> Path | None:
    """The run folder trial `number` of sweep `study` published (run.json's `sweep` tag), if it did."""
    for run in finished_runs(output_dir):
        tag = read_info(run).get("sweep") or {}
        if tag.get("study") == study and tag.get("trial") == number:
            return run
    return None
