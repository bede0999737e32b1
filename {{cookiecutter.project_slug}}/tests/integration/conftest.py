"""Fixtures that build the tiny offline model and data and train on them.

The tests run the real code paths (Trainer, LitServe, SkyPilot's schema) on a model of
~230k parameters, so the suite needs no network and a few minutes on a laptop CPU. Only
the tests in this folder import the training stack.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from src.config import PROJECT_ROOT, SMOKE_SETTINGS_FILE, Settings, load_settings
from src.models import smoke


@pytest.fixture(scope="session")
def smoke_assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return smoke.build(tmp_path_factory.mktemp("smoke") / "assets")


def make_settings(assets: dict[str, Path], output_dir: Path, **training: Any) -> Settings:
    """Smoke settings (configs/smoke.yaml) writing under output_dir; keywords override training.*."""
    overrides = smoke.overrides(assets)
    overrides["training"] = {"output_dir": str(output_dir), **training}
    return load_settings(
        PROJECT_ROOT / "configs" / "settings.yaml", environ={}, overlays=[SMOKE_SETTINGS_FILE], overrides=overrides
    )


@pytest.fixture(scope="session")
def trained_model(smoke_assets: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A smoke model trained once per session; returns its published folder."""
    from src.models.train_model import train

    output_dir = tmp_path_factory.mktemp("runs")
    metrics = train(make_settings(smoke_assets, output_dir, num_train_epochs=2.0))
    return output_dir / str(metrics["run_id"])
