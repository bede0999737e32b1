from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from src.config import DEFAULT_SETTINGS_FILE, PROJECT_ROOT, SettingsError, load_settings


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
    assert settings.data.dataset == "imdb"
    assert settings.serving.model_dir == PROJECT_ROOT / "models" / "latest"
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


def test_bad_env_override_names_variable() -> None:
    with pytest.raises(SettingsError, match=r"training\.max_steps: .*TRAINING__MAX_STEPS"):
        load_settings(environ={"TRAINING__MAX_STEPS": "many"})


@given(port=st.integers(min_value=-(10**6), max_value=10**6))
def test_port_override_validated(port: int) -> None:
    if 1 <= port <= 65535:
        assert load_settings(environ={"SERVING__PORT": str(port)}).serving.port == port
    else:
        with pytest.raises(SettingsError, match=r"serving\.port"):
            load_settings(environ={"SERVING__PORT": str(port)})
