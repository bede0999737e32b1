"""Settings: `configs/settings.yaml`, validated by one Pydantic model tree.

Every field can be overridden by an environment variable named after its dotted path
with `__` between the parts (`TRAINING__MAX_STEPS=10`); values are parsed as YAML, so
`SERVING__PORT=9000` is an int and `DATA__DATASET=null` is None. `SETTINGS_FILE`
points at another settings file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SETTINGS_FILE = PROJECT_ROOT / "configs" / "settings.yaml"
SETTINGS_FILE_ENV = "SETTINGS_FILE"


def _under_project_root(value: Path) -> Path:
    """Relative paths in settings are relative to the project root, wherever you run from."""
    value = value.expanduser()
    return value if value.is_absolute() else PROJECT_ROOT / value


NonEmpty = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
ProjectPath = Annotated[Path, AfterValidator(_under_project_root)]
RunName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProjectSettings(Section):
    name: NonEmpty


class ModelSettings(Section):
    checkpoint: NonEmpty = Field(description="Hub id or local folder with a model and tokenizer")
    max_length: int = Field(ge=8, le=8192)


class DataSettings(Section):
    dataset: NonEmpty | None = Field(description="Hub dataset name; null to use local files")
    train_file: ProjectPath | None = None
    eval_file: ProjectPath | None = None
    train_split: NonEmpty = "train"
    eval_split: NonEmpty = "test"
    text_column: NonEmpty = "text"
    label_column: NonEmpty = "label"
    labels: list[NonEmpty] = Field(min_length=2)
    max_train_samples: int | None = Field(default=None, ge=1)
    max_eval_samples: int | None = Field(default=None, ge=1)


class TrainingSettings(Section):
    output_dir: ProjectPath
    run_name: RunName
    num_train_epochs: float = Field(gt=0)
    max_steps: int = Field(ge=-1)
    per_device_train_batch_size: int = Field(ge=1, le=4096)
    per_device_eval_batch_size: int = Field(ge=1, le=4096)
    learning_rate: float = Field(gt=0, lt=1)
    weight_decay: float = Field(ge=0, lt=1)
    warmup_fraction: float = Field(ge=0, lt=1)
    group_by_length: bool
    mixed_precision: Literal["auto", "bf16", "fp16", "no"]
    seed: int = Field(ge=0)
    logging_steps: int = Field(ge=1)
    save_steps: int = Field(ge=1)
    save_total_limit: int = Field(ge=1)
    dataloader_num_workers: int = Field(ge=0)


class ServingSettings(Section):
    model_dir: ProjectPath
    host: NonEmpty
    port: int = Field(ge=1, le=65535)
    accelerator: Literal["auto", "cpu", "cuda", "mps"]
    workers_per_device: int = Field(ge=1, le=64)
    max_batch_size: int = Field(ge=1, le=1024)
    batch_timeout: float = Field(ge=0, le=10)
    max_payload_bytes: int = Field(ge=1024)
    timeout: float = Field(gt=0)


class CloudSettings(Section):
    infra: Annotated[str, StringConstraints(pattern=r"^(gcp|aws|azure)(/[A-Za-z0-9_-]+){0,2}$")]
    cluster_name: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{0,62}$")]
    task_file: ProjectPath
    gpus: NonEmpty | None = None
    use_spot: bool
    managed: bool
    idle_minutes_to_autostop: int | None = Field(ge=1)
    down: bool


class Settings(Section):
    project: ProjectSettings
    model: ModelSettings
    data: DataSettings
    training: TrainingSettings
    serving: ServingSettings
    cloud: CloudSettings


class SettingsError(Exception):
    """A settings file or override is unusable; the message says where and why."""


def settings_path() -> Path:
    return Path(os.environ.get(SETTINGS_FILE_ENV) or DEFAULT_SETTINGS_FILE)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SettingsError(
            f"{path}: settings file not found (set {SETTINGS_FILE_ENV} or restore configs/settings.yaml)"
        ) from None
    except OSError as error:
        raise SettingsError(f"{path}: cannot read settings file ({error.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = getattr(error, "problem", None) or str(error)
        raise SettingsError(f"{path}: malformed YAML{line}: {problem}") from None
    if not isinstance(data, dict):
        raise SettingsError(f"{path}: expected a mapping of sections (project, model, ...) at the top")
    return data


def _env_overrides(model: type[BaseModel], environ: Mapping[str, str], prefix: str = "") -> dict[str, Any]:
    """Collect `SECTION__FIELD` variables for every field of the model tree."""
    found: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        env_name = f"{prefix}{name.upper()}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            nested = _env_overrides(annotation, environ, f"{env_name}__")
            if nested:
                found[name] = nested
        elif env_name in environ and prefix:
            try:
                found[name] = yaml.safe_load(environ[env_name])
            except yaml.YAMLError:
                found[name] = environ[env_name]
    return found


def _merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _describe(error: ValidationError, path: Path) -> str:
    lines = [f"{path}: {error.error_count()} invalid setting(s)"]
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"])
        env_name = "__".join(str(part).upper() for part in item["loc"])
        if item["type"] == "extra_forbidden":
            problem = "unknown key (check the spelling or remove it)"
        elif item["type"] == "missing":
            problem = "missing: add it to the file"
        else:
            problem = f"{item['msg']} (got {item.get('input')!r})"
        lines.append(f"  {field}: {problem}  [override: {env_name}]")
    return "\n".join(lines)


def load_settings(
    path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Read the file, apply `overrides` then the environment, validate.

    Raises SettingsError naming the file, the dotted field and the problem.
    """
    environ = os.environ if environ is None else environ
    path = settings_path() if path is None else path
    data = _merge(_read_yaml(path), overrides or {})
    data = _merge(data, _env_overrides(Settings, environ))
    try:
        return Settings.model_validate(data)
    except ValidationError as error:
        raise SettingsError(_describe(error, path)) from None
