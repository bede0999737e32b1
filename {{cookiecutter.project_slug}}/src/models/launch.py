"""`uv run train-local`: check everything, then run train_model.py under `accelerate launch`.

The process layout comes from the hardware and the cluster: one process per visible GPU
(data parallel), one on CPU or Apple MPS, `--num-processes N` (training.num_processes)
per machine to choose; inside a multi-node SkyPilot task its variables give the machine
count, this node's rank and the head node's address, so the same command runs on 1 or N
nodes. Every accelerate flag is explicit (no "defaults were used" warning, all CPU threads).

This process stays as a thin supervisor: the training processes report how they ended
through a status folder, so a user error in any of them becomes one `error:` line and exit
2 here, Ctrl-C 130 and SIGTERM 143, without the launchers' own tracebacks.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any, cast

from src import cli, runs
from src.cli import UserError
from src.config import SMOKE_SETTINGS_FILE, Settings, load_settings
from src.models import smoke
from src.models.hub import hub_downloads, hub_reachable, offline_message

STATUS_DIR_ENV = cli.STATUS_DIR_ENV
RESUME_ENV = "TRAIN_RESUME_RUN_ID"
LAUNCHER_PID_ENV = "TRAIN_LAUNCHER_PID"
JOINED_PREFIX = "joined-"  # a training process's mark in the status folder, once every process has joined
HOST = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="train-local", description="Fine-tune the model in configs/settings.yaml.")
    parser.add_argument("--smoke", action="store_true", help="offline: tiny model and data (configs/smoke.yaml)")
    parser.add_argument(
        "--num-processes", type=int, metavar="N", help="processes per machine (default: one per GPU, one on CPU)"
    )
    parser.add_argument(
        "--resume", nargs="?", const="", metavar="RUN", help="continue the newest unfinished run, or the run RUN"
    )
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def flags(args: argparse.Namespace) -> dict[str, tuple[str, Any]]:
    return {"training.num_processes": ("--num-processes", args.num_processes)}


def run_settings(args: argparse.Namespace, build_smoke_assets: bool = False) -> Settings:
    """The settings of this run: file, `--smoke` overlay, environment, flags; one place for all.

    The launcher passes `build_smoke_assets` (it also checks the output folder first); the
    training processes then find the assets in place.
    """
    overlays = [SMOKE_SETTINGS_FILE] if args.smoke else []
    settings = load_settings(overlays=overlays, flags=flags(args))
    if build_smoke_assets:
        check_output_dir(settings.training.output_dir)
    if not args.smoke:
        return settings
    target = smoke.assets_dir(settings.training.output_dir)
    assets = smoke.build(target, seed=settings.training.seed) if build_smoke_assets else smoke.files(target)
    return load_settings(overlays=overlays, overrides=smoke.overrides(assets), flags=flags(args))


@dataclass(frozen=True)
class Layout:
    """How many training processes, on how many machines, and where they meet."""

    processes_per_machine: int
    num_machines: int = 1
    machine_rank: int = 0
    main_address: str = "127.0.0.1"
    main_port: int = 29500
    gpus_per_machine: int = 0

    @property
    def world_size(self) -> int:
        return self.processes_per_machine * self.num_machines


def _env_int(environ: Mapping[str, str], name: str, minimum: int) -> int:
    value = environ.get(name, "")
    try:
        number = int(value)
    except ValueError:
        raise UserError(
            f"{name}={value!r} is not a whole number (SkyPilot sets it; unset it outside SkyPilot)"
        ) from None
    if number < minimum:
        raise UserError(f"{name}={number} must be at least {minimum}")
    return number


def layout(settings: Settings, environ: Mapping[str, str], visible_gpus: int) -> Layout:
    """One process per GPU (or training.num_processes); SkyPilot's variables for several nodes."""
    training = settings.training
    if "SKYPILOT_NUM_NODES" in environ and _env_int(environ, "SKYPILOT_NUM_NODES", 1) > 1:
        nodes = _env_int(environ, "SKYPILOT_NUM_NODES", 1)
        rank = _env_int(environ, "SKYPILOT_NODE_RANK", 0)
        addresses = environ.get("SKYPILOT_NODE_IPS", "").split()
        if rank >= nodes or len(addresses) < nodes:
            raise UserError(
                f"SkyPilot variables disagree: SKYPILOT_NUM_NODES={nodes}, SKYPILOT_NODE_RANK={rank}, "
                f"{len(addresses)} address(es) in SKYPILOT_NODE_IPS (one per node expected, head node first)"
            )
        for address in addresses[:nodes]:
            if not _is_address(address):
                raise UserError(
                    f"SKYPILOT_NODE_IPS holds {address!r}: not an IP address or host name (one per line, head first)"
                )
        gpus = _env_int(environ, "SKYPILOT_NUM_GPUS_PER_NODE", 0) if "SKYPILOT_NUM_GPUS_PER_NODE" in environ else 0
        gpus = min(gpus, visible_gpus) if visible_gpus else 0
        per_machine = training.num_processes or max(gpus, 1)
        return Layout(per_machine, nodes, rank, addresses[0], training.distributed_port, gpus)
    per_machine = training.num_processes or max(visible_gpus, 1)
    return Layout(per_machine, main_port=free_port() if per_machine > 1 else training.distributed_port,
                  gpus_per_machine=visible_gpus)  # fmt: skip


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return bool(HOST.match(text))
    return True


def check_head_port(plan: Layout) -> None:
    """On the head node, the port the other nodes connect to must be free (before anything starts)."""
    if plan.num_machines == 1 or plan.machine_rank != 0:
        return
    with socket.socket() as sock:
        try:
            sock.bind(("", plan.main_port))
        except OSError:
            raise UserError(
                f"port {plan.main_port} (training.distributed_port) is in use on this head node: stop what holds "
                "it, or choose another port (TRAINING__DISTRIBUTED_PORT) for every node"
            ) from None


def mark_joined(environ: Mapping[str, str]) -> None:
    """Tell this node's launcher that every process of the run has joined (see Supervisor)."""
    status_dir = Path(environ.get(STATUS_DIR_ENV) or "/nonexistent")
    if status_dir.is_dir():
        (status_dir / f"{JOINED_PREFIX}{os.getpid()}").touch()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_threads() -> int:
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, available or 1)


def command(args: Sequence[str], plan: Layout) -> list[str]:
    distributed = ["--multi_gpu"] if plan.world_size > 1 else []
    if plan.num_machines > 1:
        distributed += ["--machine_rank", str(plan.machine_rank), "--main_process_ip", plan.main_address]
    if plan.world_size > 1:
        distributed += ["--main_process_port", str(plan.main_port)]
    threads = max(1, cpu_threads() // plan.processes_per_machine)
    return [
        sys.executable, "-m", "accelerate.commands.launch",
        *distributed,
        "--num_processes", str(plan.world_size),
        "--num_machines", str(plan.num_machines),
        "--mixed_precision", "no",  # the Trainer picks precision from training.mixed_precision
        "--dynamo_backend", "no",
        "--num_cpu_threads_per_process", str(threads),
        "--quiet",
        "-m", "src.models.train_model", *args,
    ]  # fmt: skip


def resume_target(settings: Settings, args: argparse.Namespace) -> str | None:
    """The run id `--resume` continues, checked before anything starts."""
    if args.resume is None:
        return None
    output_dir = settings.training.output_dir
    unfinished = runs.unfinished_runs(output_dir)
    names = ", ".join(path.name for path in unfinished[-5:]) or "none"
    if args.resume == "":
        if not unfinished:
            raise UserError(f"--resume: no unfinished run under {output_dir / runs.CHECKPOINTS}: start a new run")
        return unfinished[-1].name
    if not runs.checkpoint_dir(output_dir, args.resume).is_dir():
        raise UserError(f"--resume {args.resume}: no unfinished run of that name (unfinished: {names})")
    return str(args.resume)


def check_output_dir(output_dir: Path) -> None:
    if output_dir.exists() and not output_dir.is_dir():
        raise UserError(f"training.output_dir {output_dir} is a file: point it at a folder")
    if any(parent.is_file() for parent in output_dir.parents):
        raise UserError(f"training.output_dir {output_dir} is inside a file, not a folder: fix the path")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=output_dir):
            pass
    except OSError as error:
        raise UserError(f"training.output_dir {output_dir} is not writable: {error.strerror}") from None


def visible_gpus(environ: Mapping[str, str]) -> int:
    """CUDA devices, counted without importing torch here (that costs seconds)."""
    if "CUDA_VISIBLE_DEVICES" in environ:
        return len(
            [device for device in environ["CUDA_VISIBLE_DEVICES"].split(",") if device.strip() not in {"", "-1"}]
        )
    if shutil.which("nvidia-smi") is None:
        return 0
    result = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False, timeout=30)
    return sum(line.startswith("GPU ") for line in result.stdout.splitlines()) if result.returncode == 0 else 0


def exit_with_the_launcher(environ: Mapping[str, str], interval: float = 1.0) -> None:
    """A training process ends, within `interval`, once its launcher or its own parent is gone.

    Under torchrun every rank runs in a session of its own, so a `kill -9` of the launcher (or of
    its process group) reaches no rank: without this watch they would train on, orphaned.
    """
    launcher = environ.get(LAUNCHER_PID_ENV)
    if not launcher:
        return
    pid, parent = int(launcher), os.getppid()

    def gone() -> bool:
        if os.getppid() != parent:  # orphaned: accelerate's process died
            return True
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass  # alive, under another user
        return False

    def watch() -> None:
        while not gone():
            time.sleep(interval)
        os._exit(cli.EXIT_TERMINATED)  # nobody is left to read a report

    threading.Thread(target=watch, name="launcher-watch", daemon=True).start()


class Supervisor:
    """Run the launcher, pass its output through, and turn how the processes ended into one exit code."""

    def __init__(self, argv: list[str], env: dict[str, str], join: tuple[float, int, str] | None = None) -> None:
        """`join`: (seconds, processes on this node, who is waited for) when other nodes must join."""
        self.status_dir = Path(tempfile.mkdtemp(prefix="train-status-"))
        self.argv, self.env = argv, {**env, STATUS_DIR_ENV: str(self.status_dir), LAUNCHER_PID_ENV: str(os.getpid())}
        self.signalled: int | None = None
        self.join = join
        self.join_failed = False

    def _watch_join(self, seconds: float, processes: int) -> None:
        deadline = time.monotonic() + seconds
        while self.process.poll() is None:
            if len(list(self.status_dir.glob(f"{JOINED_PREFIX}*"))) >= processes:
                return
            if time.monotonic() > deadline:
                self.join_failed = True
                self.process.terminate()  # accelerate's agent stops waiting; no rank has started
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout=15)
                self.process.kill()
                return
            time.sleep(0.5)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signalled = signum
        if signum == signal.SIGTERM:
            self.process.send_signal(signal.SIGTERM)  # Ctrl-C reaches the whole group by itself

    def statuses(self) -> list[dict[str, Any]]:
        found = []
        for path in sorted(self.status_dir.glob("*.json")):
            try:
                found.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                continue
        return found

    def run(self) -> int:
        self.process = subprocess.Popen(self.argv, env=self.env, stderr=subprocess.PIPE)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        if self.join is not None:
            threading.Thread(target=self._watch_join, args=self.join[:2], daemon=True).start()
        try:
            stderr = cast(IO[bytes], self.process.stderr)
            passing = True
            while chunk := stderr.read1(65536):  # type: ignore[attr-defined]
                # Once a process has reported (or a signal came), the rest is launcher noise.
                reported = any(self.status_dir.glob("*.json"))
                passing = passing and self.signalled is None and not reported and not self.join_failed
                if passing:
                    sys.stderr.buffer.write(chunk)
                    sys.stderr.flush()
            returncode = self.process.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return self.outcome(returncode)

    def outcome(self, returncode: int) -> int:
        if self.join_failed and self.join is not None and self.signalled is None:
            seconds, _, waited_for = self.join
            advice = "start train-local on every node, and check that they reach the head node's port"
            print(f"error: {waited_for} did not join within {seconds:g} s (training.rendezvous_timeout): {advice}",
                  file=sys.stderr)  # fmt: skip
            return cli.EXIT_USER_ERROR
        statuses = self.statuses()
        codes = {int(status.get("code", 1)) for status in statuses}
        messages = list(dict.fromkeys(str(status["message"]) for status in statuses if status.get("message")))
        for message in messages:
            print(f"error: {message}", file=sys.stderr, flush=True)
        if self.signalled == signal.SIGINT or cli.EXIT_INTERRUPTED in codes:
            print("interrupted", file=sys.stderr, flush=True)
            return cli.EXIT_INTERRUPTED
        if self.signalled == signal.SIGTERM or cli.EXIT_TERMINATED in codes:
            print("terminated", file=sys.stderr, flush=True)
            return cli.EXIT_TERMINATED
        if cli.EXIT_USER_ERROR in codes:
            return cli.EXIT_USER_ERROR
        return returncode if returncode >= 0 else 128 - returncode

    def cleanup(self) -> None:
        for path in self.status_dir.glob("*"):
            path.unlink(missing_ok=True)
        self.status_dir.rmdir()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.resume:
        runs.check_run_id(args.resume, "--resume")  # before anything is built or written
    settings = run_settings(args, build_smoke_assets=True)
    env = dict(os.environ)
    resume = resume_target(settings, args)
    if resume:
        env[RESUME_ENV] = resume
    if args.smoke:
        env["HF_HUB_OFFLINE"] = "1"  # the smoke run needs nothing from the network
    else:
        missing = hub_downloads(settings)
        if missing and not hub_reachable():
            raise UserError(offline_message(missing))
        if not missing:
            env["HF_HUB_OFFLINE"] = "1"  # everything is local or cached: no minute of retries
    plan = layout(settings, os.environ, visible_gpus(os.environ))
    child_args = ["--smoke"] if args.smoke else []
    if args.num_processes is not None:
        child_args += ["--num-processes", str(args.num_processes)]
    check_head_port(plan)
    join = None
    if plan.num_machines > 1:
        head = f"{plan.main_address}:{plan.main_port}"
        waited = f"the other {plan.num_machines - 1} node(s)" if plan.machine_rank == 0 else f"the head node {head}"
        join = (settings.training.rendezvous_timeout, plan.processes_per_machine, f"{waited} (this is node "
                f"{plan.machine_rank} of {plan.num_machines})")  # fmt: skip
    supervisor = Supervisor(command(child_args, plan), env, join)
    try:
        return supervisor.run()
    finally:
        supervisor.cleanup()


if __name__ == "__main__":
    cli.run(main)
