"""Every command's flags, declared once: (flag, the settings field it sets, help).

A flag that sets a field goes through the same validation as the settings file and the
`SECTION__FIELD` variables (src/config.py), and an error names the flag. `Command.parse`
builds the argparse parser from the table and `Command.settings_flags` hands the given
values to `load_settings`; no command maps flags to fields by hand. Light: argparse only.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SWITCH: Mapping[str, Any] = {"action": "store_true"}
# A switch that sets a boolean setting: None when not given, so the settings' value stands.
SETTING_SWITCH: Mapping[str, Any] = {"action": "store_true", "default": None}


@dataclass(frozen=True)
class Flag:
    name: str  # "--port"; a positional argument is named without dashes ("run")
    setting: str | None  # the dotted settings field it sets ("serving.port"), or None
    help: str
    options: Mapping[str, Any] = field(default_factory=dict)  # argparse's type, action, nargs, metavar...
    short: str | None = None  # "-o"
    exclusive_group: str | None = None  # flags with the same group exclude each other

    @property
    def dest(self) -> str:
        return self.name.lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class Command:
    prog: str
    description: str
    flags: tuple[Flag, ...]

    def parser(self) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(prog=self.prog, description=self.description)
        groups: dict[str, argparse._MutuallyExclusiveGroup] = {}
        for flag in self.flags:
            target: Any = parser
            if flag.exclusive_group is not None:
                if flag.exclusive_group not in groups:
                    groups[flag.exclusive_group] = parser.add_mutually_exclusive_group()
                target = groups[flag.exclusive_group]
            names = [flag.short, flag.name] if flag.short else [flag.name]
            text = f"{flag.help} (default: {flag.setting})" if flag.setting else flag.help
            target.add_argument(*names, help=text, **flag.options)
        return parser

    def parse(self, argv: Sequence[str]) -> argparse.Namespace:
        return self.parser().parse_args(list(argv))

    def parse_known(self, argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
        """The command's own flags, and the rest (passed on to the tool it wraps)."""
        return self.parser().parse_known_args(list(argv))

    def settings_flags(self, args: argparse.Namespace) -> dict[str, tuple[str, Any]]:
        """{settings field: (flag, value or None when not given)}: what `load_settings(flags=...)` takes."""
        return {flag.setting: (flag.name, getattr(args, flag.dest)) for flag in self.flags if flag.setting}


PATH: Mapping[str, Any] = {"type": Path}
NUMBER: Mapping[str, Any] = {"type": int}

TRAIN_LOCAL = Command("train-local", "Fine-tune the model in configs/settings.yaml.", (
    Flag("--smoke", None, "offline: tiny model and data (configs/smoke.yaml)", SWITCH),
    Flag("--num-processes", "training.num_processes", "processes per machine (null: one per GPU, one on CPU)",
         {"type": int, "metavar": "N"}),
    Flag("--resume", None, "continue the newest unfinished run, or the run RUN",
         {"nargs": "?", "const": "", "metavar": "RUN"}),
    Flag("--promote", "promotion.after_training", "then promote the new run if it passes the gate (uv run promote)",
         SETTING_SWITCH),
))  # fmt: skip

PROMOTE = Command("promote", "Make a run the served one (models/production) if it passes the gate.", (
    Flag("run", None, "a run under training.output_dir (default: latest)", {"nargs": "?", "metavar": "RUN"}),
    Flag("--force", None, "promote even if the gate fails, recording REASON", {"metavar": "REASON"}),
    Flag("--rollback", None, "go back to the run promoted before", SWITCH),
    Flag("--runs-dir", "training.output_dir", "where the runs are", PATH),
))  # fmt: skip

SWEEP = Command("sweep", "Search hyperparameters: each trial a training run (the sweep section of settings).", (
    Flag("--smoke", None, "offline: tiny model and data (configs/smoke.yaml)", SWITCH),
    Flag("--study", "sweep.study", "the study's name (null: <training.run_name>-sweep)"),
    Flag("--trials", "sweep.trials", "complete trials the study ends with", NUMBER),
    Flag("--promote", "promotion.after_training", "then promote the best run if it passes the gate (uv run promote)",
         SETTING_SWITCH),
))  # fmt: skip

SWEEP_CLOUD = Command("sweep-cloud", "Search hyperparameters on the cloud: each trial a SkyPilot managed job.", (
    Flag("--dry-run", None, "validate and print each trial's job only", SWITCH),
    Flag("--study", "sweep.study", "the study's name (null: <training.run_name>-sweep)"),
    Flag("--trials", "sweep.trials", "complete trials the study ends with", NUMBER),
    Flag("--infra", "cloud.infra", "cloud[/region], e.g. aws or gcp/us-central1"),
    Flag("--gpus", "cloud.gpus", "accelerators per trial, e.g. L4:1 (null: the choices in the task file)"),
    Flag("--spot", "cloud.use_spot", "use spot/preemptible capacity (recovered by SkyPilot)", SETTING_SWITCH),
))  # fmt: skip

TRAIN_CLOUD = Command("train-cloud", "Fine-tune on the cloud with SkyPilot.", (
    Flag("--dry-run", None, "validate and print the command only", SWITCH),
    Flag("--managed", "cloud.managed", "managed job (spot recovery)", SETTING_SWITCH),
    Flag("--infra", "cloud.infra", "cloud[/region], e.g. aws or gcp/us-central1"),
    Flag("--gpus", "cloud.gpus", "accelerators, e.g. L4:1 (null: the choices in the task file)"),
    Flag("--num-nodes", "cloud.num_nodes", "machines to train on together", NUMBER),
    Flag("--spot", "cloud.use_spot", "use spot/preemptible capacity", SETTING_SWITCH),
    Flag("--cluster", "cloud.cluster_name", "cluster or managed-job name"),
    Flag("--promote", "promotion.after_training", "promote the run on the bucket if it passes the gate",
         SETTING_SWITCH),
))  # fmt: skip

SERVE_CLOUD = Command("serve-cloud", "Serve the model on the cloud with SkyServe.", (
    Flag("--dry-run", None, "validate and print the command only", SWITCH),
    Flag("--infra", "cloud.infra", "cloud[/region], e.g. aws or gcp/us-central1"),
    Flag("--gpus", "cloud.gpus", "a GPU per replica, e.g. T4:1 (null: CPU replicas)"),
    Flag("--spot", "cloud.service_use_spot", "spot replicas", SETTING_SWITCH),
    Flag("--service", "cloud.service_name", "service name"),
    Flag("--run", None, "a finished run id on the bucket (default: the promoted run)", exclusive_group="model"),
    Flag("--model-dir", None, "a model folder on this machine, uploaded to the replicas", PATH,
         exclusive_group="model"),
    Flag("--update", None, "update the running service in place (a rolling update)", SWITCH, exclusive_group="how"),
    Flag("--up", None, "start the service anew, even where one was started from here", SWITCH,
         exclusive_group="how"),
))  # fmt: skip

# The flags every task's serve, evaluate and predict take; each task adds its own (src/task/).
SERVE_FLAGS = (
    Flag("--host", "serving.host", "interface to listen on: 127.0.0.1, 0.0.0.0 or ::"),
    Flag("--port", "serving.port", "port to listen on, 1024-65535", NUMBER),
    Flag("--model-dir", "serving.model_dir", "a trained run's folder, or a runs folder's latest", PATH),
)
EVALUATE_FLAGS = (
    Flag("run", None, "a run under training.output_dir (default: latest)", {"nargs": "?", "metavar": "RUN"}),
    Flag("--model-dir", None, "a run or saved model folder instead of RUN", PATH),
    Flag("--runs-dir", "training.output_dir", "where the runs are", PATH),
)
PREDICT_FLAGS = (
    Flag("--output", None, "where to write (default: beside INPUT; - stdout)", {"metavar": "OUTPUT"}, short="-o"),
    Flag("--model-dir", "serving.model_dir", "a trained run's folder", PATH),
    Flag("--force", None, "replace OUTPUT if it exists", SWITCH),
)

COMPARE = Command("compare", "The finished training runs side by side.", (
    Flag("--runs-dir", "training.output_dir", "where the runs are", PATH),
    Flag("--markdown", None, "print a Markdown table", SWITCH),
))  # fmt: skip

COMMANDS = {
    command.prog: command for command in (TRAIN_LOCAL, SWEEP, SWEEP_CLOUD, TRAIN_CLOUD, SERVE_CLOUD, COMPARE, PROMOTE)
}
