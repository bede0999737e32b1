"""Every command's flags come from one declaration (src/flags.py, and the task's for serve, evaluate and
predict): each command's parser is built from its table, and every flag that sets a setting names a
real field and lands in it."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest
from pydantic import BaseModel

from src import flags
from src.__main__ import run
from src.config import PROJECT_ROOT, Settings, load_settings
from src.flags import Command, Flag
from src.task import TASK

COMMANDS: dict[str, Command] = {
    **flags.COMMANDS,
    **{command.prog: command for command in (TASK.serving.command, TASK.evaluation.command, TASK.prediction.command)},
}


def command_names() -> dict[str, str]:
    """The taskipy tasks that run a command of this project (`python -m src COMMAND`): {task: command}."""
    tasks = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["taskipy"]["tasks"]
    commands = {name: str(task["cmd"]).split() for name, task in tasks.items()}
    return {name: argv[3] for name, argv in commands.items() if argv[:3] == ["python", "-m", "src"]}


def test_every_command_has_a_declaration() -> None:
    assert set(COMMANDS) == set(command_names().values())
    assert all(name == command for name, command in command_names().items()), "each task is named after its command"


def setting_flags() -> list[tuple[str, Flag]]:
    return [(name, flag) for name, command in COMMANDS.items() for flag in command.flags if flag.setting]


# Values for the fields that configs/settings.yaml leaves null (the others get their own value).
FOR_NULL_FIELDS: dict[str, tuple[str, Any]] = {
    "training.num_processes": ("2", 2), "cloud.gpus": ("T4:1", "T4:1"), "sweep.study": ("lr-search", "lr-search"),
}  # fmt: skip
IDS = [f"{name}{flag.name}" for name, flag in setting_flags()]


@pytest.mark.parametrize(("name", "flag"), setting_flags(), ids=IDS)
def test_a_flag_sets_the_field_it_names(name: str, flag: Flag) -> None:
    assert flag.setting is not None
    section, field = flag.setting.split(".")
    model = Settings.model_fields[section].annotation
    assert isinstance(model, type)
    assert issubclass(model, BaseModel)
    assert field in model.model_fields, f"{name} {flag.name}: no settings field {flag.setting}"
    current: Any = getattr(getattr(load_settings(environ={}), section), field)
    if flag.options.get("action") == "store_true":
        argv, expected = [flag.name], True
    elif current is None:
        text, expected = FOR_NULL_FIELDS[flag.setting]
        argv = [flag.name, text]
    else:
        argv, expected = [flag.name, str(current)], current
    command = COMMANDS[name]
    positionals = ["x" for other in command.flags if not other.name.startswith("-") and "nargs" not in other.options]
    args, _ = command.parse_known([*positionals, *argv])
    settings = load_settings(environ={}, flags=command.settings_flags(args))
    assert getattr(getattr(settings, section), field) == expected


@pytest.mark.parametrize("name", sorted(command_names().values()))
def test_the_command_parses_with_its_declaration(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run(name, ["--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == COMMANDS[name].parser().format_help()


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_flag_names_are_unique(name: str) -> None:
    names = [flag.name for flag in COMMANDS[name].flags] + [flag.short for flag in COMMANDS[name].flags if flag.short]
    assert len(names) == len(set(names))
