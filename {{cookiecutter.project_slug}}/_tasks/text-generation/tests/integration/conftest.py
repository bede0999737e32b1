"""The in-process tier that trains and serves: one torch thread in this process."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> None:
    """The tiny model gains nothing from a second thread, and torch's threads spin-wait badly
    when another program holds a core (training steps then run 5-15x slower). The commands and
    the server set their own thread counts; tests/e2e runs them as they are."""
    torch.set_num_threads(1)
