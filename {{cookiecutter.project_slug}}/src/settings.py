"""The settings machinery: the sections and field types every task shares, and `load_settings`.

A project's own settings model (src/config.py) is these sections plus its task's fields and
sections; `load_settings(schema)` reads `configs/settings.yaml` into it. Layers, lowest first: the
settings file (`SETTINGS_FILE` points at another one), overlay files such as
`configs/smoke.yaml`, environment variables named after a field's dotted
path with `__` between the parts (`TRAINING__MAX_STEPS=10`), typed by the field: a text
field takes the text as written (`TRAINING__MIXED_PRECISION=no`, `TRAINING__RUN_NAME=2024`),
other fields read it as YAML (`SERVING__PORT=9000` is an int, `DATA__LABELS=[no, yes]` two
labels) and `null` clears a field that may be empty (`DATA__DATASET=null`); a variable that
names a section but no field of it is an error with a suggestion. Then command-line flags.
Every layer goes through the same validation; an error names the file, the field and the
variable or flag that set it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, cast

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from src.devices import TrainingPrecision, cpu_cores
from src.promotion_settings import PromotionSettings
from src.settings_sources import PATTERN_WORDS, SETTINGS_FILE_ENV, env_overrides, matching, merge, nest, read_yaml
from src.settings_sources import SettingsError as SettingsError  # what load_settings raises: importable here
from src.sweep_settings import SweepSettings, check_space

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SETTINGS_FILE = PROJECT_ROOT / "configs" / "settings.yaml"
SMOKE_SETTINGS_FILE = PROJECT_ROOT / "configs" / "smoke.yaml"
# Names the run folder format keeps for itself (see src/runs.py).
RESERVED_RUN_NAMES = {"latest", "production", "sweeps"}
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
    matching(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,59}$", "1-60 letters, digits, '.', '_' or '-', first a letter or digit"),
    AfterValidator(_not_reserved),
]
Checkpoint = Annotated[NonEmpty, AfterValidator(_model_folder_or_hub_id)]
ListenAddress = Annotated[Literal["127.0.0.1", "0.0.0.0", "::"], BeforeValidator(_listen_address)]  # noqa: S104


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProjectSettings(Section):
    name: NonEmpty
    license: NonEmpty = Field(default="apache-2.0", description="the model card's license (a Hub license id)")


class ModelSettings(Section):
    checkpoint: Checkpoint = Field(description="Hub id or local folder with a model and tokenizer")
    max_length: int = Field(ge=8, le=131072)


class DataSettings(Section):
    """Where the examples come from; a task adds the columns it reads."""

    dataset: NonEmpty | None = Field(description="Hub dataset name; null to use local files")
    train_file: ProjectPath | None = None
    eval_file: ProjectPath | None = None
    train_split: NonEmpty = "train"
    eval_split: NonEmpty = "test"
    max_train_samples: int | None = Field(default=None, ge=1)
    max_eval_samples: int | None = Field(default=None, ge=1)


class TrainingSettings(Section):
    output_dir: ProjectPath
    run_name: RunName
    num_train_epochs: float = Field(gt=0)
    max_steps: int = Field(ge=-1)
    per_device_train_batch_size: int = Field(ge=1, le=4096)
    per_device_eval_batch_size: int = Field(ge=1, le=4096)
    gradient_accumulation_steps: int = Field(default=1, ge=1, le=4096)
    learning_rate: float = Field(gt=0, lt=1)
    weight_decay: float = Field(ge=0, lt=1)
    warmup_fraction: float = Field(ge=0, lt=1)
    group_by_length: bool
    gradient_checkpointing: bool = False
    mixed_precision: TrainingPrecision
    seed: int = Field(ge=0, lt=2**32)  # numpy's and torch's seeds are 32-bit
    logging_steps: int = Field(ge=1)
    save_steps: int = Field(ge=1)
    save_total_limit: int = Field(ge=1)
    eval_steps: int | None = Field(default=None, ge=1, description="evaluate every N steps; null: only at the end")
    dataloader_num_workers: int = Field(ge=0, le=64)
    num_processes: int | None = Field(default=None, ge=1, le=4096, description="null: one per GPU, one on CPU")
    distributed_port: int = Field(default=29500, ge=1024, le=65535)
    rendezvous_timeout: float = Field(
        default=600, gt=0, le=86400, description="seconds to wait for every node to join (SkyPilot starts them)"
    )


class ServingSettings(Section):
    """The server process; a task adds its engine's settings (precision, limits)."""

    model_dir: ProjectPath
    host: ListenAddress
    port: int = Field(ge=1, le=65535)
    accelerator: Literal["auto", "cpu", "cuda", "mps"]
    workers_per_device: int = Field(ge=1, le=64)
    max_payload_bytes: int = Field(ge=1024)
    timeout: float = Field(gt=0)
    threads_per_worker: int | None = Field(default=None, ge=1, le=1024, description="null: the cores / workers")
    read_timeout: float = Field(default=10.0, gt=0, le=600, description="seconds to send the headers, then the body")

    @property
    def worker_threads(self) -> int:
        """CPU threads each inference worker runs with: threads_per_worker, else the cores shared out."""
        if self.threads_per_worker is not None:
            return self.threads_per_worker
        return max(1, cpu_cores() // self.workers_per_device)


DNS_NAME = r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$"
DNS_WORDS = "1-63 lowercase letters, digits or '-', first a letter, last not '-' (e.g. my-model-serve)"
INFRA_WORDS = "gcp, aws or azure, optionally with a region and zone (e.g. aws/us-east-1, gcp/us-central1/us-central1-a)"
GPU_WORDS = "an accelerator with an optional count (e.g. L4, A100:8)"


class CloudSettings(Section):
    infra: Annotated[str, matching(r"^(gcp|aws|azure)(/[A-Za-z0-9_-]+){0,2}$", INFRA_WORDS)]
    cluster_name: Annotated[str, matching(DNS_NAME, DNS_WORDS)]
    task_file: ProjectPath
    gpus: Annotated[str, matching(r"^[A-Za-z][A-Za-z0-9_-]*(:[1-9][0-9]{0,2})?$", GPU_WORDS)] | None = None
    num_nodes: int = Field(default=1, ge=1, le=512)
    use_spot: bool
    managed: bool
    idle_minutes_to_autostop: int | None = Field(ge=1)
    down: bool
    # SkyServe (`uv run serve-cloud`): the replica policy, probe and port live in the service file.
    service_file: ProjectPath = Field(default=Path("sky_serve.yaml"), validate_default=True)
    service_name: Annotated[str, matching(DNS_NAME, DNS_WORDS)] = "model-serve"
    service_use_spot: bool = False


class Settings(Section):
    """The sections every project has; src/config.py's model narrows them to its task's."""

    project: ProjectSettings
    model: ModelSettings
    data: DataSettings
    training: TrainingSettings
    serving: ServingSettings
    cloud: CloudSettings
    sweep: SweepSettings = Field(default_factory=SweepSettings)  # `uv run sweep` (src/sweep_settings.py)
    promotion: PromotionSettings = Field(default_factory=PromotionSettings)  # `uv run promote` (src/promotion.py)

    @model_validator(mode="after")
    def _sweep_names_fields(self) -> Settings:
        check_space(self)
        return self


AnySettings = TypeVar("AnySettings", bound=Settings)


def loader(schema: type[AnySettings]) -> Callable[..., AnySettings]:
    """`load_settings` for one settings model: what a project's src/config.py exports as its own."""

    def load(
        path: Path | None = None,
        environ: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
        overlays: Sequence[Path] = (),
        flags: Mapping[str, tuple[str, Any]] | None = None,
    ) -> AnySettings:
        # mypy does not carry the outer function's type variable into this one: cast, once.
        return cast(AnySettings, load_settings(schema, path, environ, overrides, overlays, flags))

    return load


def settings_path(environ: Mapping[str, str] | None = None) -> Path:
    """The settings file: SETTINGS_FILE when set, else configs/settings.yaml."""
    value = (os.environ if environ is None else environ).get(SETTINGS_FILE_ENV)
    try:
        return _under_project_root(Path(value)) if value else DEFAULT_SETTINGS_FILE
    except ValueError as error:
        raise SettingsError(f"{SETTINGS_FILE_ENV}: {error}") from None


def _describe(error: ValidationError, path: Path, flag_names: Mapping[str, str]) -> str:
    problems = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"])
        leaf = ".".join(str(part) for part in item["loc"][:2])
        if item["type"] == "extra_forbidden":
            problem = "unknown key (check the spelling or remove it)"
        elif item["type"] == "missing":
            problem = "missing: add it to the file"
        elif not item["loc"]:  # a check across sections: the input is all of them, the message starts with the field
            problem = item["msg"].removeprefix("Value error, ")
            leaf = named.group(1) if (named := re.match(r"([a-z_]+\.[a-z_]+): ", problem)) else ""
        else:
            shown = repr(item.get("input"))
            message = item["msg"].removeprefix("Value error, ")
            if words := PATTERN_WORDS.get(str((item.get("ctx") or {}).get("pattern"))):
                message = f"should be {words}"
            problem = f"{message} (got {shown[:80] + '...' if len(shown) > 80 else shown})"
        if leaf in flag_names:
            where = f"  [flag: {flag_names[leaf]}]"
        elif leaf.count(".") == 1 and item["type"] != "extra_forbidden":
            where = "  [override: " + leaf.upper().replace(".", "__") + "]"
        else:
            where = ""  # a whole section: no variable sets it
        problems.append(f"{field}: {problem}{where}" if field else f"{problem}{where}")
    if len(problems) == 1:
        return f"{path}: {problems[0]}"
    return "\n".join([f"{path}: {len(problems)} invalid settings", *(f"  {line}" for line in problems)])


def load_settings(
    schema: type[AnySettings],
    path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    overlays: Sequence[Path] = (),
    flags: Mapping[str, tuple[str, Any]] | None = None,
) -> Settings:
    """Read the file, then the overlay files, `overrides`, the environment and the flags; validate as `schema`.

    `flags` maps a dotted field to (flag name, value), e.g. {"serving.port": ("--port", 0)};
    a value of None means the flag was not given. Raises SettingsError naming the file,
    the dotted field and the variable or flag to change.
    """
    environ = os.environ if environ is None else environ
    path = settings_path(environ) if path is None else path
    data = read_yaml(path)
    for overlay in overlays:
        data = merge(data, read_yaml(overlay, overlay=True))
    data = merge(data, overrides or {})
    data = merge(data, env_overrides(environ, schema))
    given = {field: value for field, (_, value) in (flags or {}).items() if value is not None}
    data = merge(data, nest(given))
    try:
        return schema.model_validate(data)
    except ValidationError as error:
        names = {field: name for field, (name, value) in (flags or {}).items() if value is not None}
        raise SettingsError(_describe(error, path, names)) from None
