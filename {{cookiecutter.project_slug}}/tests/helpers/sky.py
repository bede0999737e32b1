"""SkyPilot in a subprocess: no cloud credentials, no local API server left running."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.helpers.processes import clean_env

needs_sky = pytest.mark.skipif(
    importlib.util.find_spec("sky") is None, reason="SkyPilot not installed (uv sync --group cloud)"
)


def sky_env(home: Path, **extra: str) -> dict[str, str]:
    return clean_env(
        HOME=str(home),  # no cloud credentials, no ~/.sky state
        SKYPILOT_DISABLE_LOCAL_API_SERVER="1",
        SKYPILOT_DISABLE_USAGE_COLLECTION="1",
        SKYPILOT_API_SERVER_LOCAL_PORT="46581",
        # Credential lookups must not probe cloud metadata servers from a test machine.
        NO_GCE_CHECK="True",
        AWS_EC2_METADATA_DISABLED="true",
        **extra,
    )
