"""Fail fast when the Hugging Face Hub is needed but unreachable.

Without this, `from_pretrained` and `load_dataset` retry for most of a minute before
failing. The check imports nothing heavy so the launcher can run it in a second.
"""

from __future__ import annotations

import contextlib
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from src.errors import UserError
from src.settings import DataSettings, Settings

PROBE_TIMEOUT_S = 4.0


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def hub_cache() -> Path:
    if "HF_HUB_CACHE" in os.environ:
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "huggingface"
    return Path(home).expanduser() / "hub"


def hub_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}:
        return False
    request = urllib.request.Request(f"{hub_endpoint()}/api/models?limit=1", method="GET")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return bool(200 <= response.status < 300)
    except (OSError, ValueError):
        return False


def hub_downloads(settings: Settings) -> list[tuple[str, str]]:
    """(kind, id) of everything training would fetch from the Hub and has no local copy of."""
    wanted = [("model", settings.model.checkpoint)]
    if settings.data.dataset is not None:
        wanted.append(("dataset", settings.data.dataset))
    return [(kind, name) for kind, name in wanted if not _local_or_cached(kind, name)]


def model_snapshot(name: str) -> Path | None:
    """Where a model's files are on this machine: `name` as a local folder, or its cached Hub snapshot (main)."""
    local = Path(name).expanduser()
    if local.is_dir():
        return local
    cached = hub_cache() / f"models--{name.replace('/', '--')}"
    try:
        revision = (cached / "refs" / "main").read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    snapshot = cached / "snapshots" / revision
    return snapshot if revision and snapshot.is_dir() else None


def _local_or_cached(kind: str, name: str) -> bool:
    return Path(name).expanduser().exists() or (hub_cache() / f"{kind}s--{name.replace('/', '--')}").is_dir()


def offline_message(missing: list[tuple[str, str]]) -> str:
    what = " and ".join(f"{kind} {name!r}" for kind, name in missing)
    return (
        f"cannot reach the Hugging Face Hub ({hub_endpoint()}) to download {what}. "
        "Run `uv run train-local --smoke` for an offline check of the whole pipeline, or point "
        "model.checkpoint and data.train_file/eval_file in configs/settings.yaml at local copies "
        "(with data.dataset: null)."
    )


@contextlib.contextmanager
def reading(data: DataSettings) -> Iterator[None]:
    """Around reading the data: a missing file or an unreachable Hub is one line saying which and what to do."""
    try:
        yield
    except (ConnectionError, OSError) as error:
        if data.dataset is None:
            raise UserError(f"cannot read the data files: {error}") from None
        raise UserError(offline_message([("dataset", data.dataset)])) from None
