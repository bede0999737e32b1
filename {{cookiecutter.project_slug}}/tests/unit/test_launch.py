"""The launcher's process layout and command, and the one error path (no training stack imported)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from src import cli
from src.config import PROJECT_ROOT, SettingsError, load_settings
from src.models.launch import Layout, command, layout, parse_args
from tests.conftest import clean_env, only_error_line, run_module

SKYPILOT_TWO_NODES = {
    "SKYPILOT_NUM_NODES": "2",
    "SKYPILOT_NODE_RANK": "1",
    "SKYPILOT_NODE_IPS": "10.0.0.5\n10.0.0.6\n",
    "SKYPILOT_NUM_GPUS_PER_NODE": "8",
}


def test_one_process_on_a_machine_without_gpus() -> None:
    plan = layout(load_settings(environ={}), {}, visible_gpus=0)
    assert plan.world_size == 1
    argv = command([], plan)
    assert "--multi_gpu" not in argv
    assert argv[argv.index("--num_processes") + 1] == "1"


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
    assert plan == Layout(8, num_machines=2, machine_rank=1, main_address="10.0.0.5", main_port=29500,
                          gpus_per_machine=8)  # fmt: skip
    argv = command(["--smoke"], plan)
    assert argv[argv.index("--num_processes") + 1] == "16", "accelerate counts the processes of all machines"
    assert argv[argv.index("--num_machines") + 1] == "2"
    assert argv[argv.index("--machine_rank") + 1] == "1"
    assert argv[argv.index("--main_process_ip") + 1] == "10.0.0.5"
    assert argv[argv.index("--main_process_port") + 1] == "29500"
    assert argv[-3:] == ["-m", "src.models.train_model", "--smoke"], "arguments pass through"


@pytest.mark.parametrize(
    "broken",
    [{"SKYPILOT_NODE_RANK": "2"}, {"SKYPILOT_NODE_IPS": "10.0.0.5"}, {"SKYPILOT_NUM_NODES": "two"}],
)
def test_inconsistent_skypilot_variables_are_a_user_error(broken: dict[str, str]) -> None:
    with pytest.raises(cli.UserError, match="SKYPILOT_"):
        layout(load_settings(environ={}), {**SKYPILOT_TWO_NODES, **broken}, visible_gpus=8)


def test_every_accelerate_flag_is_explicit() -> None:
    argv = command([], layout(load_settings(environ={}), {}, visible_gpus=0))
    for flag in ("--num_processes", "--num_machines", "--mixed_precision", "--dynamo_backend"):
        assert flag in argv, f"{flag} missing: accelerate would warn about defaults"
    assert int(argv[argv.index("--num_cpu_threads_per_process") + 1]) >= 1


def test_resume_flag_forms() -> None:
    assert parse_args([]).resume is None
    assert parse_args(["--resume"]).resume == ""
    assert parse_args(["--resume", "smoke-20261202-101500"]).resume == "smoke-20261202-101500"


def test_bad_flag_value_is_an_argparse_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--num-processes", "two"])
    assert exit_info.value.code == 2
    assert "--num-processes" in capsys.readouterr().err


def test_error_path_prints_one_line_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    def fails() -> int:
        raise cli.UserError("settings.yaml: training.seed is wrong")

    assert cli.exit_code(fails) == 2
    assert capsys.readouterr().err == "error: settings.yaml: training.seed is wrong\n"


def test_ctrl_c_exits_130_and_bugs_keep_their_traceback() -> None:
    def interrupted() -> int:
        raise KeyboardInterrupt

    def buggy() -> int:
        return 1 // 0

    assert cli.exit_code(interrupted) == 130
    with pytest.raises(ZeroDivisionError):
        cli.exit_code(buggy)


def test_disk_full_is_a_user_error(capsys: pytest.CaptureFixture[str]) -> None:
    def disk_full() -> int:
        raise OSError(28, "No space left on device", "/data/models/run/model.safetensors")

    assert cli.exit_code(disk_full) == 2
    assert "No space left on device" in capsys.readouterr().err


def test_launcher_and_settings_stay_light() -> None:
    code = (
        "import sys, src.config, src.runs, src.models.launch;"
        "print([name for name in ('torch', 'transformers', 'datasets') if name in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", "the launcher starts in a blink: torch loads only in the training processes"


def test_output_dir_that_cannot_be_a_folder_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for output_dir in (blocker, blocker / "runs"):
        result = run_module("src.models.launch", "--smoke", env=clean_env(TRAINING__OUTPUT_DIR=str(output_dir)))
        assert result.returncode == 2
        assert "training.output_dir" in only_error_line(result.stderr)
