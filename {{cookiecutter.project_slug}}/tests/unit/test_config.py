from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from src.config import DEFAULT_SETTINGS_FILE, PROJECT_ROOT, SettingsError, load_settings

# The core's settings, loaded through this project's model (src/config.py): tests/task/ checks the task's fields.


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "settings.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def defaults() -> dict[str, dict[str, object]]:
    data = yaml.safe_load(DEFAULT_SETTINGS_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def test_default_settings_load() -> None:
    settings = load_settings(environ={})
    assert settings.data.dataset, "the real default trains on a Hub dataset"
    assert settings.serving.model_dir == PROJECT_ROOT / "models" / "production", "the promoted run (latest: none)"
    assert settings.training.output_dir.is_absolute()


def test_unknown_key_is_named(tmp_path: Path) -> None:
    data = defaults()
    data["training"]["max_stepz"] = 10
    with pytest.raises(SettingsError, match=r"training\.max_stepz: unknown key") as error:
        load_settings(write(tmp_path, data), environ={})
    assert str(tmp_path / "settings.yaml") in str(error.value)


def test_wrong_type_names_field_and_value(tmp_path: Path) -> None:
    data = defaults()
    data["serving"]["port"] = "eighty"
    with pytest.raises(SettingsError, match=r"serving\.port: .*'eighty'"):
        load_settings(write(tmp_path, data), environ={})


def test_out_of_bounds_value(tmp_path: Path) -> None:
    data = defaults()
    data["training"]["learning_rate"] = 5
    with pytest.raises(SettingsError, match=r"training\.learning_rate"):
        load_settings(write(tmp_path, data), environ={})


def test_missing_section(tmp_path: Path) -> None:
    data = defaults()
    del data["cloud"]
    with pytest.raises(SettingsError, match=r"cloud: missing"):
        load_settings(write(tmp_path, data), environ={})


def test_malformed_yaml_names_line(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text("model:\n  checkpoint: [unclosed\n", encoding="utf-8")
    with pytest.raises(SettingsError, match=r"malformed YAML at line \d+"):
        load_settings(path, environ={})


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="settings file not found"):
        load_settings(tmp_path / "nope.yaml", environ={})


def test_settings_file_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = defaults()
    data["project"]["name"] = "Elsewhere"
    monkeypatch.setenv("SETTINGS_FILE", str(write(tmp_path, data)))
    assert load_settings().project.name == "Elsewhere"


def test_env_overrides_nested_fields() -> None:
    environ = {"TRAINING__MAX_STEPS": "7", "DATA__DATASET": "null", "SERVING__HOST": "0.0.0.0"}
    settings = load_settings(environ=environ)
    assert settings.training.max_steps == 7
    assert settings.data.dataset is None
    assert settings.serving.host == "0.0.0.0"


@pytest.mark.parametrize(
    ("variable", "text", "field", "expected"),
    [
        ("TRAINING__MIXED_PRECISION", "no", "training.mixed_precision", "no"),  # YAML would read False
        ("TRAINING__RUN_NAME", "2024", "training.run_name", "2024"),
        ("TRAINING__RUN_NAME", "on", "training.run_name", "on"),
        ("PROJECT__NAME", "123", "project.name", "123"),
        ("DATA__DATASET", "", "data.dataset", None),
        ("SERVING__PORT", "9000", "serving.port", 9000),
        ("TRAINING__GRADIENT_CHECKPOINTING", "true", "training.gradient_checkpointing", True),
        ("CLOUD__USE_SPOT", "on", "cloud.use_spot", True),
    ],
)
def test_env_values_are_typed_by_their_field(variable: str, text: str, field: str, expected: object) -> None:
    settings = load_settings(environ={variable: text})
    section, name = field.split(".")
    assert getattr(getattr(settings, section), name) == expected


@pytest.mark.parametrize(
    ("variable", "suggested"),
    [("TRAINING__MAX_STEP", "TRAINING__MAX_STEPS"), ("training__max_steps", "TRAINING__MAX_STEPS"),
     ("SERVING__PROT", "SERVING__PORT")],
)  # fmt: skip
def test_an_override_that_names_no_field_is_refused_with_a_suggestion(variable: str, suggested: str) -> None:
    with pytest.raises(SettingsError, match=rf"unknown setting {variable} \(did you mean {suggested}\?\)"):
        load_settings(environ={variable: "10"})


def test_variables_of_other_tools_are_not_overrides() -> None:
    assert load_settings(environ={"PIP__INDEX": "x", "__CF_USER_TEXT_ENCODING": "0x0"}).training.max_steps == -1


def test_bad_env_override_names_variable() -> None:
    with pytest.raises(SettingsError, match=r"training\.max_steps: .*TRAINING__MAX_STEPS"):
        load_settings(environ={"TRAINING__MAX_STEPS": "many"})


@hypothesis_settings(deadline=None)  # what is checked is the answer, not how fast it came: a busy machine is slow
@given(port=st.integers(min_value=-(10**6), max_value=10**6))
def test_port_override_validated(port: int) -> None:
    if 1 <= port <= 65535:
        assert load_settings(environ={"SERVING__PORT": str(port)}).serving.port == port
    else:
        with pytest.raises(SettingsError, match=r"serving\.port"):
            load_settings(environ={"SERVING__PORT": str(port)})


def test_duplicate_key_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    text = DEFAULT_SETTINGS_FILE.read_text(encoding="utf-8").replace("  port: 8000", "  port: 8000\n  port: 9000")
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SettingsError, match=r"duplicate key 'port'"):
        load_settings(path, environ={})


def test_settings_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_bytes(DEFAULT_SETTINGS_FILE.read_bytes().replace(b"# The one place", b"# The \xff place"))
    with pytest.raises(SettingsError, match="not UTF-8"):
        load_settings(path, environ={})


@pytest.mark.parametrize("name", ["latest", "LATEST", ".checkpoints", ".tmp-x", "a" * 61, "bad name"])
def test_run_name_cannot_collide_with_the_run_folder_format(name: str) -> None:
    with pytest.raises(SettingsError, match=r"training\.run_name.*TRAINING__RUN_NAME"):
        load_settings(environ={"TRAINING__RUN_NAME": name})


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [("TRAINING__RUN_NAME", "bad name", "1-60 letters, digits, '.', '_' or '-'"),
     ("CLOUD__INFRA", "mars", "gcp, aws or azure, optionally with a region and zone"),
     ("CLOUD__SERVICE_NAME", "My_Service", "1-63 lowercase letters, digits or '-'"),
     ("CLOUD__GPUS", "L4:0", "an accelerator with an optional count (e.g. L4, A100:8)"),
     ("SWEEP__STUDY", "../x", "1-64 lowercase letters, digits or '-'")],
    ids=["run-name", "infra", "service-name", "gpus", "study"],
)  # fmt: skip
def test_a_value_that_does_not_match_its_pattern_is_told_in_words(variable: str, value: str, says: str) -> None:
    """A user reads what the value should be, not a regular expression."""
    with pytest.raises(SettingsError) as refused:
        load_settings(environ={variable: value})
    line = str(refused.value)
    assert f"should be {says}" in line
    assert f"(got {value!r})  [override: {variable}]" in line
    assert "pattern" not in line


@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_seed_within_what_numpy_accepts(seed: str) -> None:
    with pytest.raises(SettingsError, match=r"training\.seed"):
        load_settings(environ={"TRAINING__SEED": seed})


def test_localhost_means_loopback_and_other_hosts_are_refused() -> None:
    assert load_settings(environ={"SERVING__HOST": "localhost"}).serving.host == "127.0.0.1"
    with pytest.raises(SettingsError, match=r"serving\.host"):
        load_settings(environ={"SERVING__HOST": "example.com"})


def test_checkpoint_must_be_a_model_folder_or_a_hub_id(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"model\.checkpoint: .*holds no config.json"):
        load_settings(environ={"MODEL__CHECKPOINT": str(tmp_path)})
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(SettingsError, match=r"model\.checkpoint: .*not a folder"):
        load_settings(environ={"MODEL__CHECKPOINT": str(tmp_path / "weights.bin")})
    with pytest.raises(SettingsError, match=r"model\.checkpoint: .*not a Hub id"):
        load_settings(environ={"MODEL__CHECKPOINT": "not a/valid/id"})
    (tmp_path / "config.json").write_text("{}")
    assert load_settings(environ={"MODEL__CHECKPOINT": str(tmp_path)}).model.checkpoint == str(tmp_path)


def test_section_errors_suggest_no_override_that_cannot_work(tmp_path: Path) -> None:
    data: dict[str, object] = {**defaults(), "cloud": "gcp"}
    with pytest.raises(SettingsError) as error:
        load_settings(write(tmp_path, data), environ={})
    assert "cloud:" in str(error.value)
    assert "[override: CLOUD]" not in str(error.value), "CLOUD is no variable the loader reads"


def test_flags_override_the_environment_and_are_named_in_errors() -> None:
    environ = {"SERVING__PORT": "9000"}
    assert load_settings(environ=environ, flags={"serving.port": ("--port", 9100)}).serving.port == 9100
    assert load_settings(environ=environ, flags={"serving.port": ("--port", None)}).serving.port == 9000
    with pytest.raises(SettingsError, match=r"serving\.port: .*\[flag: --port\]"):
        load_settings(environ={}, flags={"serving.port": ("--port", 0)})


def test_smoke_overlay_layers_under_the_environment() -> None:
    from src.config import SMOKE_SETTINGS_FILE

    smoke = load_settings(environ={}, overlays=[SMOKE_SETTINGS_FILE])
    assert smoke.training.run_name == "smoke"
    assert smoke.data.dataset is None
    overridden = load_settings(environ={"TRAINING__RUN_NAME": "mine"}, overlays=[SMOKE_SETTINGS_FILE])
    assert overridden.training.run_name == "mine"


def _bomb() -> str:
    levels = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    levels += [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]" for i in range(8)]
    return "\n".join(levels) + "\n"


HOSTILE_FILES: dict[str, tuple[Callable[[Path], object], str]] = {
    "alias-bomb": (lambda path: path.write_text(_bomb() + "project:\n  name: *i\n"), "alias bomb"),
    "nested-2000-deep": (
        lambda path: path.write_text("project: " + "[" * 2000 + "]" * 2000 + "\n"),
        "nested too deeply",
    ),
    "number-key": (lambda path: path.write_text("project:\n  name: x\n1: y\n"), r"key 1 \(line 3\): keys are names"),
    "list-key": (
        lambda path: path.write_text("project:\n  ? [a, b]\n  : x\n"),
        r"key \[\.\.\.\] \(line 2\): keys are names",
    ),
    "5000-digits": (lambda path: path.write_text("training:\n  seed: " + "9" * 5000 + "\n"), "a value cannot be read"),
    "too-big": (lambda path: path.write_text("# " + "x" * 1_100_000 + "\n"), "this is not a settings file"),
    "a-fifo": (lambda path: os.mkfifo(path), "not a regular file"),
}


@pytest.mark.parametrize("kind", HOSTILE_FILES)
def test_a_hostile_settings_file_is_one_clear_error(tmp_path: Path, kind: str) -> None:
    make, problem = HOSTILE_FILES[kind]
    path = tmp_path / "settings.yaml"
    make(path)
    with pytest.raises(SettingsError, match=problem):
        load_settings(path, environ={})


@pytest.mark.parametrize("value", ["[" * 2000 + "]" * 2000, _bomb().replace("\n", ", ").join("{}")])
def test_a_hostile_override_is_a_validation_error(value: str) -> None:
    with pytest.raises(SettingsError, match="SERVING__PORT"):
        load_settings(environ={"SERVING__PORT": value})


def test_special_files_and_bad_paths_are_refused() -> None:
    with pytest.raises(SettingsError, match="not a regular file"):
        load_settings(Path("/dev/zero"), environ={})
    with pytest.raises(SettingsError, match="not a usable path"):
        load_settings(environ={"SETTINGS_FILE": "configs/set\0tings.yaml"})


def test_a_home_folder_of_nobody_is_named() -> None:
    with pytest.raises(SettingsError, match="names no user"):
        load_settings(environ={"DATA__TRAIN_FILE": "~no-such-user-here/train.jsonl"})
    with pytest.raises(SettingsError, match=r"SETTINGS_FILE: .*names no user"):
        load_settings(environ={"SETTINGS_FILE": "~no-such-user-here/settings.yaml"})
