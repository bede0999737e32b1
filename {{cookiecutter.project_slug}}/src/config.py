"""Settings: `configs/settings.yaml`, validated by one Pydantic model tree.

Layers, lowest first: the settings file (`SETTINGS_FILE` points at another one), overlay
files such as `configs/smoke.yaml`, environment variables named after a field's dotted
path with `__` between the parts (`TRAINING__MAX_STEPS=10`), typed by the field: a text
field takes the text as written (`TRAINING__MIXED_PRECISION=no`, `TRAINING__RUN_NAME=2024`),
other fields read it as YAML (`SERVING__PORT=9000` is an int, `DATA__LABELS=[no, yes]` two
labels) and `null` clears a field that may be empty (`DATA__DATASET=null`); a variable that
names a section but no field of it is an error with a suggestion. Then command-line flags.
Every layer goes through the same validation; an error names the file, the field and the
variable or flag that set it.
"""

from __future__ import annotations

import difflib
import os
import re
import stat
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePath
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from src.cli import UserError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SETTINGS_FILE = PROJECT_ROOT / "configs" / "settings.yaml"
SMOKE_SETTINGS_FILE = PROJECT_ROOT / "configs" / "smoke.yaml"
SETTINGS_FILE_ENV = "SETTINGS_FILE"
# Names the run folder format keeps for itself (see src/runs.py).
RESERVED_RUN_NAMES = {"latest"}
HUB_ID = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9._-]{0,95}/)?[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


def _under_project_root(value: Path) -> Path:
    """Relative paths in settings are relative to the project root, wherever you run from."""
    try:
        value = value.expanduser()
    except RuntimeError:  # `~nouser/x`
        raise ValueError(
            f"{str(value)!r} starts with ~ but names no user on this machine: write the path out"
        ) from None
    return value if value.is_absolute() else PROJECT_ROOT / value


def _not_reserved(name: str) -> str:
    if name.lower() in RESERVED_RUN_NAMES:
        raise ValueError(f"{name!r} is reserved for the run folder format: choose another name")
    return name


def _model_folder_or_hub_id(checkpoint: str) -> str:
    looks_like_path = checkpoint.startswith(("/", "./", "../", "~")) or Path(checkpoint).expanduser().exists()
    if looks_like_path:
        folder = _under_project_root(Path(checkpoint))
        if not folder.is_dir():
            raise ValueError(f"{folder} is not a folder: give a saved model folder or a Hub id such as org/name")
        if not (folder / "config.json").is_file():
            raise ValueError(f"{folder} holds no config.json: it is not a saved model (save_pretrained writes one)")
        return str(folder)
    if not HUB_ID.fullmatch(checkpoint) or ".." in checkpoint:
        raise ValueError("not a Hub id ('name' or 'org/name') nor a path ('/', './', '../', '~/')")
    return checkpoint


def _listen_address(host: object) -> object:
    # LitServe accepts only these literals; "localhost" means the loopback address.
    return "127.0.0.1" if isinstance(host, str) and host.strip().lower() == "localhost" else host


NonEmpty = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
ProjectPath = Annotated[Path, AfterValidator(_under_project_root)]
RunName = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,59}$"),
    AfterValidator(_not_reserved),
]
Checkpoint = Annotated[NonEmpty, AfterValidator(_model_folder_or_hub_id)]
ListenAddress = Annotated[Literal["127.0.0.1", "0.0.0.0", "::"], BeforeValidator(_listen_address)]  # noqa: S104


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProjectSettings(Section):
    name: NonEmpty


class ModelSettings(Section):
    checkpoint: Checkpoint = Field(description="Hub id or local folder with a model and tokenizer")
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
    seed: int = Field(ge=0, lt=2**32)  # numpy's and torch's seeds are 32-bit
    logging_steps: int = Field(ge=1)
    save_steps: int = Field(ge=1)
    save_total_limit: int = Field(ge=1)
    eval_steps: int | None = Field(default=None, ge=1, description="evaluate every N steps; null: only at the end")
    keep_best_model: bool = False
    best_model_metric: Literal["accuracy", "f1"] = "f1"
    dataloader_num_workers: int = Field(ge=0, le=64)
    num_processes: int | None = Field(default=None, ge=1, le=4096, description="null: one per GPU, one on CPU")
    distributed_port: int = Field(default=29500, ge=1024, le=65535)
    rendezvous_timeout: float = Field(
        default=600, gt=0, le=86400, description="seconds to wait for every node to join (SkyPilot starts them)"
    )

    @field_validator("keep_best_model")
    @classmethod
    def _best_model_needs_evaluations(cls, keep: bool, info: ValidationInfo) -> bool:
        # The best model is one of the saved checkpoints, judged by the evaluation at its step.
        eval_steps, save_steps = info.data.get("eval_steps"), info.data.get("save_steps")
        if keep and eval_steps is None and "eval_steps" in info.data:
            raise ValueError("needs evaluations: set training.eval_steps (e.g. to save_steps)")
        if keep and eval_steps and save_steps and save_steps % eval_steps:
            raise ValueError(
                f"needs save_steps ({save_steps}) to be a multiple of eval_steps ({eval_steps}): "
                "each checkpoint must have an evaluation"
            )
        return keep


class ServingSettings(Section):
    model_dir: ProjectPath
    host: ListenAddress
    port: int = Field(ge=1, le=65535)
    accelerator: Literal["auto", "cpu", "cuda", "mps"]
    workers_per_device: int = Field(ge=1, le=64)
    max_batch_size: int = Field(ge=1, le=1024)
    batch_timeout: float = Field(ge=0, le=10)
    max_payload_bytes: int = Field(ge=1024)
    timeout: float = Field(gt=0)
    precision: Literal["auto", "fp32", "bf16", "fp16", "int8"] = Field(
        default="auto", description="auto: bf16/fp16 on CUDA, fp16 on MPS, the measured CPU default (see serving)"
    )
    threads_per_worker: int | None = Field(default=None, ge=1, le=1024, description="null: the cores / workers")
    read_timeout: float = Field(default=10.0, gt=0, le=600, description="seconds to send the headers, then the body")


class CloudSettings(Section):
    infra: Annotated[str, StringConstraints(pattern=r"^(gcp|aws|azure)(/[A-Za-z0-9_-]+){0,2}$")]
    cluster_name: Annotated[str, StringConstraints(pattern=r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")]
    task_file: ProjectPath
    gpus: Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_-]*(:[1-9][0-9]{0,2})?$")] | None = None
    num_nodes: int = Field(default=1, ge=1, le=512)
    use_spot: bool
    managed: bool
    idle_minutes_to_autostop: int | None = Field(ge=1)
    down: bool
    # SkyServe (`uv run serve-cloud`): the replica policy, probe and port live in the service file.
    service_file: ProjectPath = Field(default=Path("sky_serve.yaml"), validate_default=True)
    service_name: Annotated[str, StringConstraints(pattern=r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")] = "model-serve"
    service_use_spot: bool = False


class Settings(Section):
    project: ProjectSettings
    model: ModelSettings
    data: DataSettings
    training: TrainingSettings
    serving: ServingSettings
    cloud: CloudSettings


class SettingsError(UserError):
    """A settings file, variable or flag is unusable; the message says where and why."""


MAX_SETTINGS_BYTES = 1_000_000  # a settings file is a few kB; this is no settings file
MAX_YAML_NODES = 100_000  # after aliases are expanded: a billion-laughs document is refused


def _expanded_nodes(node: yaml.Node, sizes: dict[int, int], budget: int) -> int:
    """How many nodes `node` stands for once every alias is expanded (shared nodes counted each time)."""
    if id(node) in sizes:
        return sizes[id(node)]
    sizes[id(node)] = budget + 1  # a node that contains itself never ends
    children: list[yaml.Node] = []
    if isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    elif isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    total = 1
    for child in children:
        total += _expanded_nodes(child, sizes, budget)
        if total > budget:
            break
    sizes[id(node)] = total
    return total


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML whose keys are names, each once per mapping (PyYAML keeps the last of two silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str):  # `1:` or `[a, b]:` would fail deep inside validation
                shown = repr(key) if isinstance(key_node, yaml.ScalarNode) else "[...]"
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {shown} (line {line}): keys are names: write it in quotes, or fix it"
                )
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r} (line {line})")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def settings_path(environ: Mapping[str, str] | None = None) -> Path:
    value = (os.environ if environ is None else environ).get(SETTINGS_FILE_ENV)
    try:
        return _under_project_root(Path(value)) if value else DEFAULT_SETTINGS_FILE
    except ValueError as error:
        raise SettingsError(f"{SETTINGS_FILE_ENV}: {error}") from None


def _parse_yaml(text: str, loader_class: type[yaml.SafeLoader | yaml.BaseLoader] = _UniqueKeyLoader) -> Any:
    """The document, or yaml.YAMLError; RecursionError when it is nested too deeply to read."""
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_nodes(node, {}, MAX_YAML_NODES) > MAX_YAML_NODES:
            raise yaml.YAMLError(f"more than {MAX_YAML_NODES} values once its aliases are expanded (an alias bomb?)")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _read_yaml(path: Path, overlay: bool = False) -> dict[str, Any]:
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise SettingsError(f"{path}: not a regular file (a device, pipe or socket): point at a .yaml file")
        with path.open("rb") as handle:
            raw = handle.read(MAX_SETTINGS_BYTES + 1)
        if len(raw) > MAX_SETTINGS_BYTES:
            raise SettingsError(f"{path}: over {MAX_SETTINGS_BYTES} bytes: this is not a settings file")
        text = raw.decode("utf-8")
    except ValueError as error:
        if isinstance(error, UnicodeDecodeError):
            raise SettingsError(f"{path}: not UTF-8 text (byte {error.start}): save it as UTF-8") from None
        raise SettingsError(f"{path!r}: not a usable path ({error})") from None  # a NUL byte, say
    except FileNotFoundError:
        raise SettingsError(
            f"{path}: settings file not found (set {SETTINGS_FILE_ENV} or restore configs/settings.yaml)"
        ) from None
    except IsADirectoryError:
        raise SettingsError(f"{path}: is a folder, not a settings file") from None
    except OSError as error:
        raise SettingsError(f"{path}: cannot read settings file ({error.strerror})") from None
    try:
        data = _parse_yaml(text)
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = getattr(error, "problem", None) or str(error)
        raise SettingsError(f"{path}: malformed YAML{line}: {problem}") from None
    except RecursionError:
        raise SettingsError(f"{path}: nested too deeply to be settings (sections hold fields, one level)") from None
    except ValueError as error:  # an integer of thousands of digits, say
        raise SettingsError(f"{path}: a value cannot be read: {str(error)[:200]}") from None
    if data is None and overlay:
        return {}  # an empty overlay changes nothing
    if not isinstance(data, dict):
        raise SettingsError(f"{path}: expected a mapping of sections (project, model, ...) at the top")
    return data


def _members(annotation: Any) -> tuple[Any, ...]:
    """The types a field takes, without None and Annotated's constraints."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _members(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return tuple(m for arg in typing.get_args(annotation) if arg is not type(None) for m in _members(arg))
    return (annotation,)


def _is_text(annotation: Any) -> bool:
    """A field whose every value is a string (or a path): its variable is taken as written."""
    members = _members(annotation)
    for member in members:
        if typing.get_origin(member) is Literal:
            if not all(isinstance(value, str) for value in typing.get_args(member)):
                return False
        elif not (isinstance(member, type) and issubclass(member, (str, PurePath))):
            return False
    return bool(members)


def _env_value(annotation: Any, text: str) -> Any:
    """An environment variable's value, typed by the field it sets (not by YAML's guesses)."""
    if text.strip() in {"null", "~", ""} and type(None) in typing.get_args(annotation):
        return None
    if _is_text(annotation):
        return text
    [member] = _members(annotation)[:1] or [None]
    text_items = typing.get_origin(member) is list and all(_is_text(arg) for arg in typing.get_args(member))
    try:  # BaseLoader keeps every scalar a string: `[no, yes]` are two labels, not two booleans
        return _parse_yaml(text, yaml.BaseLoader if text_items else yaml.SafeLoader)
    except (yaml.YAMLError, RecursionError, ValueError):
        return text  # the field's validation names the variable and what it expects


def _sections() -> dict[str, type[BaseModel]]:
    return {
        name: info.annotation
        for name, info in Settings.model_fields.items()
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)
    }


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """Collect the `SECTION__FIELD` variables; one that names a section but no field of it is an error."""
    found: dict[str, Any] = {}
    known = {f"{section.upper()}__{name.upper()}": (section, name, field)
             for section, model in _sections().items() for name, field in model.model_fields.items()}  # fmt: skip
    prefixes = {f"{section.upper()}__" for section in _sections()}
    for variable, text in environ.items():
        if variable in known:
            section, name, field = known[variable]
            found.setdefault(section, {})[name] = _env_value(field.annotation, text)
        elif any(variable.upper().startswith(prefix) for prefix in prefixes):
            close = difflib.get_close_matches(variable.upper(), known, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise SettingsError(
                f"unknown setting {variable}{hint}: an override is SECTION__FIELD in upper case, named after "
                "a field of configs/settings.yaml; unset it or fix the name"
            )
    return found


def env_override_names(environ: Mapping[str, str]) -> list[str]:
    """The `SECTION__FIELD` variables in `environ` that name a real field."""
    fields = {
        f"{section.upper()}__{name.upper()}" for section, model in _sections().items() for name in model.model_fields
    }
    return sorted(name for name in environ if name in fields)


def _merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _nest(dotted: Mapping[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for path, value in dotted.items():
        section, _, field = path.partition(".")
        nested.setdefault(section, {})[field] = value
    return nested


def _describe(error: ValidationError, path: Path, flag_names: Mapping[str, str]) -> str:
    problems = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"])
        leaf = ".".join(str(part) for part in item["loc"][:2])
        if item["type"] == "extra_forbidden":
            problem = "unknown key (check the spelling or remove it)"
        elif item["type"] == "missing":
            problem = "missing: add it to the file"
        else:
            shown = repr(item.get("input"))
            message = item["msg"].removeprefix("Value error, ")
            problem = f"{message} (got {shown[:80] + '...' if len(shown) > 80 else shown})"
        if leaf in flag_names:
            where = f"  [flag: {flag_names[leaf]}]"
        elif len(item["loc"]) >= 2 and item["type"] != "extra_forbidden":
            where = "  [override: " + "__".join(str(part).upper() for part in item["loc"][:2]) + "]"
        else:
            where = ""  # a whole section: no variable sets it
        problems.append(f"{field}: {problem}{where}")
    if len(problems) == 1:
        return f"{path}: {problems[0]}"
    return "\n".join([f"{path}: {len(problems)} invalid settings", *(f"  {line}" for line in problems)])


def load_settings(
    path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    overlays: Sequence[Path] = (),
    flags: Mapping[str, tuple[str, Any]] | None = None,
) -> Settings:
    """Read the file, then the overlay files, `overrides`, the environment and the flags; validate.

    `flags` maps a dotted field to (flag name, value), e.g. {"serving.port": ("--port", 0)};
    a value of None means the flag was not given. Raises SettingsError naming the file,
    the dotted field and the variable or flag to change.
    """
    environ = os.environ if environ is None else environ
    path = settings_path(environ) if path is None else path
    data = _read_yaml(path)
    for overlay in overlays:
        data = _merge(data, _read_yaml(overlay, overlay=True))
    data = _merge(data, overrides or {})
    data = _merge(data, _env_overrides(environ))
    given = {field: value for field, (_, value) in (flags or {}).items() if value is not None}
    data = _merge(data, _nest(given))
    try:
        return Settings.model_validate(data)
    except ValidationError as error:
        names = {field: name for field, (name, value) in (flags or {}).items() if value is not None}
        raise SettingsError(_describe(error, path, names)) from None
