"""`uv run train-local`: check everything, then run the training processes.

The process layout comes from the hardware and the cluster: one process per visible GPU
(data parallel), one on CPU or Apple MPS, `--num-processes N` (training.num_processes)
per machine to choose; inside a multi-node SkyPilot task its variables give the machine
count, this node's rank and the head node's address, so the same command runs on 1 or N
nodes. Several processes run under `accelerate launch`, every flag explicit (no "defaults
were used" warning, all CPU threads). A lone process is started directly, with the
environment accelerate's launcher would give it (`launch_env`): that launcher is one more
Python process importing torch, 3-4 s of every run on a 2-core machine, for nothing to do.

This process then stays as a thin supervisor (supervisor.py): a user error in any training
process becomes one `error:` line and exit 2 here, Ctrl-C 130 and SIGTERM 143.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import socket
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from src import flags, runs, smoke_assets
from src.contract import Task
from src.devices import cpu_cores, visible_gpus
from src.errors import UserError
from src.hub import hub_downloads, hub_reachable, offline_message
from src.models import sweep
from src.models.supervisor import Join, Supervisor
from src.settings import SMOKE_SETTINGS_FILE, Settings, load_settings

RESUME_ENV = "TRAIN_RESUME_RUN_ID"
TRAIN_PROCESS = "train-process"  # `python -m src train-process`: one training process (src/models/train_model.py)
HOST = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


def launcher_settings(
    args: argparse.Namespace, task: Task[Any], overrides: Mapping[str, Any] | None = None
) -> Settings:
    """The settings file, `--smoke` overlay, `overrides`, environment and flags: without overrides, what the
    launcher needs (the output folder, the layout, promotion); a smoke run's set paths come from run_settings."""
    overlays = [SMOKE_SETTINGS_FILE] if args.smoke else []
    return load_settings(
        task.settings, overlays=overlays, overrides=overrides, flags=flags.TRAIN_LOCAL.settings_flags(args)
    )


def run_settings(args: argparse.Namespace, task: Task[Any], build_smoke_assets: bool = False) -> Settings:
    """The settings of this run: file, `--smoke` overlay, environment, flags; one place for all.

    The training processes pass `build_smoke_assets` (after checking the output folder): the first
    to take the set's lock builds it, the others find it in place, and the launcher never imports
    torch or transformers (a smoke run's first start imports them once, not twice).
    """
    settings = launcher_settings(args, task)
    if not args.smoke:
        return settings
    if build_smoke_assets:
        check_output_dir(settings.training.output_dir)
    folder = smoke_assets.assets_dir(settings.training.output_dir, settings.training.seed)
    built = smoke_assets.build(folder, settings.training.seed, task.smoke) if build_smoke_assets else None
    return launcher_settings(args, task, smoke_assets.overrides(built or smoke_assets.files(folder)))


@dataclass(frozen=True)
class Layout:
    """How many training processes, on how many machines, and where they meet."""

    processes_per_machine: int
    num_machines: int = 1
    machine_rank: int = 0
    main_address: str = "127.0.0.1"
    main_port: int = 29500

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
        return Layout(per_machine, nodes, rank, addresses[0], training.distributed_port)
    per_machine = training.num_processes or max(visible_gpus, 1)
    return Layout(per_machine, main_port=free_port() if per_machine > 1 else training.distributed_port)


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def threads_per_process(plan: Layout) -> int:
    return max(1, cpu_cores() // plan.processes_per_machine)


def accelerate_flags(plan: Layout) -> list[str]:
    """`accelerate launch`'s flags for this layout, every one explicit (no "defaults were used" warning)."""
    distributed = ["--multi_gpu"] if plan.world_size > 1 else []
    if plan.num_machines > 1:
        distributed += ["--machine_rank", str(plan.machine_rank), "--main_process_ip", plan.main_address]
    if plan.world_size > 1:
        distributed += ["--main_process_port", str(plan.main_port)]
    return [
        *distributed,
        "--num_processes", str(plan.world_size),
        "--num_machines", str(plan.num_machines),
        "--mixed_precision", "no",  # the Trainer picks precision from training.mixed_precision
        "--dynamo_backend", "no",
        "--num_cpu_threads_per_process", str(threads_per_process(plan)),
        "--quiet",
    ]  # fmt: skip


def command(args: Sequence[str], plan: Layout) -> list[str]:
    """The training processes' command line: the lone process itself, or accelerate launch for several."""
    if plan.world_size == 1:
        return [sys.executable, "-m", "src", TRAIN_PROCESS, *args]
    launcher = [sys.executable, "-m", "accelerate.commands.launch", *accelerate_flags(plan)]
    return [*launcher, "-m", "src", TRAIN_PROCESS, *args]


def launch_env(plan: Layout) -> dict[str, str]:
    """The environment `accelerate launch` would give a lone process with accelerate_flags(plan)
    (tests/integration/test_train.py compares it with accelerate's own launcher); several get theirs from it."""
    if plan.world_size > 1:
        return {}
    return {
        "ACCELERATE_USE_CPU": "False",
        "ACCELERATE_MIXED_PRECISION": "no",
        "ACCELERATE_DYNAMO_BACKEND": "NO",
        "ACCELERATE_DYNAMO_MODE": "default",
        "ACCELERATE_DYNAMO_USE_FULLGRAPH": "False",
        "ACCELERATE_DYNAMO_USE_REGIONAL_COMPILATION": "False",
        "OMP_NUM_THREADS": str(threads_per_process(plan)),
    }


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


def main(argv: Sequence[str], task: Task[Any]) -> int:
    args = flags.TRAIN_LOCAL.parse(argv)
    if args.resume:
        runs.check_run_id(args.resume, "--resume")  # before anything is built or written
    settings = launcher_settings(args, task)
    check_output_dir(settings.training.output_dir)
    env = dict(os.environ)
    if args.resume is not None:
        env[RESUME_ENV] = runs.resume_target(settings.training.output_dir, args.resume)
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
        where = f"(this is node {plan.machine_rank} of {plan.num_machines})"
        join = Join(settings.training.rendezvous_timeout, plan.processes_per_machine, f"{waited} {where}")
    supervisor = Supervisor(command(child_args, plan), env | launch_env(plan), join)
    try:
        code = supervisor.run()
    finally:
        supervisor.cleanup()
    if code == 0 and settings.promotion.after_training and plan.machine_rank == 0 and sweep.STUDY_ENV not in env:
        from src import promotion

        newest = runs.follow_latest(settings.training.output_dir / runs.LATEST)
        return promotion.after_training(settings, task, newest.name)
    return code
