"""The launcher's process layout and command, and the one error path (no training stack imported)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from src import errors
from src.config import SettingsError, load_settings
from src.devices import cpu_cores
from src.flags import TRAIN_LOCAL
from src.models import train_local
from src.models.train_local import Layout, accelerate_flags, command, launch_env, layout
from tests.helpers.processes import call, only_error_line

SKYPILOT_TWO_NODES = {
    "SKYPILOT_NUM_NODES": "2",
    "SKYPILOT_NODE_RANK": "1",
    "SKYPILOT_NODE_IPS": "10.0.0.5\n10.0.0.6\n",
    "SKYPILOT_NUM_GPUS_PER_NODE": "8",
}


def test_one_process_on_a_machine_without_gpus() -> None:
    plan = layout(load_settings(environ={}), {}, visible_gpus=0)
    assert plan.world_size == 1
    assert command(["--smoke"], plan)[1:] == ["-m", "src", "train-process", "--smoke"], "no accelerate launcher"
    assert launch_env(plan)["OMP_NUM_THREADS"] == str(cpu_cores()), "one process has every CPU thread"
    assert "--multi_gpu" not in accelerate_flags(plan)


def test_one_process_per_gpu_by_default() -> None:
    plan = layout(load_settings(environ={}), {}, visible_gpus=8)
    assert (plan.processes_per_machine, plan.num_machines) == (8, 1)
    argv = command([], plan)
    assert "--multi_gpu" in argv
    assert argv[argv.index("--num_processes") + 1] == "8"


def test_num_processes_setting_or_flag_overrides_the_hardware() -> None:
    settings = load_settings(environ={}, flags={"training.num_processes": ("--num-processes", 2)})
    assert layout(settings, {}, visible_gpus=0).world_size == 2
    with pytest.raises(SettingsError, match=r"training\.num_processes.*\[flag: --num-processes\]"):
        load_settings(environ={}, flags={"training.num_processes": ("--num-processes", 0)})


def test_skypilot_variables_make_a_multi_node_launch() -> None:
    plan = layout(load_settings(environ={}), SKYPILOT_TWO_NODES, visible_gpus=8)
    assert plan == Layout(8, num_machines=2, machine_rank=1, main_address="10.0.0.5", main_port=29500)
    argv = command(["--smoke"], plan)
    assert argv[argv.index("--num_processes") + 1] == "16", "accelerate counts the processes of all machines"
    assert argv[argv.index("--num_machines") + 1] == "2"
    assert argv[argv.index("--machine_rank") + 1] == "1"
    assert argv[argv.index("--main_process_ip") + 1] == "10.0.0.5"
    assert argv[argv.index("--main_process_port") + 1] == "29500"
    assert argv[-4:] == ["-m", "src", "train-process", "--smoke"], "arguments pass through"


@pytest.mark.parametrize(
    "broken",
    [
        {"SKYPILOT_NODE_RANK": "2"},
        {"SKYPILOT_NODE_IPS": "10.0.0.5"},
        {"SKYPILOT_NUM_NODES": "two"},
        {"SKYPILOT_NODE_IPS": "--evil\n10.0.0.6"},
        {"SKYPILOT_NODE_IPS": "10.0.0.5\nnot_a_host!"},
    ],
)
def test_inconsistent_skypilot_variables_are_a_user_error(broken: dict[str, str]) -> None:
    with pytest.raises(errors.UserError, match="SKYPILOT_"):
        layout(load_settings(environ={}), {**SKYPILOT_TWO_NODES, **broken}, visible_gpus=8)


def test_every_accelerate_flag_is_explicit() -> None:
    argv = command([], layout(load_settings(environ={}), {}, visible_gpus=2))
    assert argv[1:3] == ["-m", "accelerate.commands.launch"], "several processes start under accelerate launch"
    assert launch_env(layout(load_settings(environ={}), {}, visible_gpus=2)) == {}, "accelerate sets theirs"
    for flag in ("--num_processes", "--num_machines", "--mixed_precision", "--dynamo_backend"):
        assert flag in argv, f"{flag} missing: accelerate would warn about defaults"
    assert int(argv[argv.index("--num_cpu_threads_per_process") + 1]) >= 1


def test_resume_flag_forms() -> None:
    assert TRAIN_LOCAL.parse([]).resume is None
    assert TRAIN_LOCAL.parse(["--resume"]).resume == ""
    assert TRAIN_LOCAL.parse(["--resume", "smoke-20261202-101500"]).resume == "smoke-20261202-101500"


@pytest.mark.parametrize("run", ["..", ".", "../smoke-20261202-101500", "/tmp", ".checkpoints", "a\\b"])
def test_resume_takes_a_run_id_not_a_path(
    tmp_path: Path, run: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TRAINING__OUTPUT_DIR", str(tmp_path / "runs"))
    assert call(train_local.main, "--smoke", "--resume", run) == 2
    assert "a run id is a folder name" in only_error_line(capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == [], "nothing built, nothing written"


def test_bad_flag_value_is_an_argparse_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        TRAIN_LOCAL.parse(["--num-processes", "two"])
    assert exit_info.value.code == 2
    assert "--num-processes" in capsys.readouterr().err


def test_output_dir_that_cannot_be_a_folder_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for output_dir in (blocker, blocker / "runs"):
        monkeypatch.setenv("TRAINING__OUTPUT_DIR", str(output_dir))
        assert call(train_local.main, "--smoke") == 2
        assert "training.output_dir" in only_error_line(capsys.readouterr().err)


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [("TRAINING__RUN_NAME", "latest", "training.run_name"), ("TRAINING__MAX_STEPS", "abc", "TRAINING__MAX_STEPS")],
    ids=["reserved-run-name", "bad-override"],
)
def test_bad_settings_exit_2_with_one_line_and_touch_nothing(
    tmp_path: Path, variable: str, value: str, named: str,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.setenv("TRAINING__OUTPUT_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv(variable, value)
    assert call(train_local.main, "--smoke") == 2
    assert named in only_error_line(capsys.readouterr().err)
    assert not (tmp_path / "runs").exists()


def test_the_head_nodes_port_must_be_free() -> None:
    with socket.socket() as taken:
        taken.bind(("", 0))
        taken.listen()
        plan = Layout(1, num_machines=2, machine_rank=0, main_port=taken.getsockname()[1])
        with pytest.raises(errors.UserError, match=r"training\.distributed_port\) is in use"):
            train_local.check_head_port(plan)
        train_local.check_head_port(Layout(1, num_machines=2, machine_rank=1, main_port=plan.main_port))  # not the head
