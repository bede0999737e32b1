"""The processes of one training run: starting their shared state, agreeing on decisions, quiet logs.

Every process runs train(); exactly one (the main process) decides what must be decided once
(the run id, which checkpoint to resume from) and hands the answer, or its error, to the
others. Light on purpose beyond torch and accelerate.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any, TypeVar

import datasets
import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list
from transformers import set_seed

from src.devices import best_device
from src.errors import UserError
from src.models.supervisor import mark_joined

T = TypeVar("T")


def start(seed: int) -> PartialState:
    """Join the run's process group (one gloo group on CPU), seed every process, quiet all but the main one."""
    state = PartialState(cpu=best_device() == "cpu")
    mark_joined(os.environ)  # every process of every node has joined once the state is set up
    if state.device.type == "cpu":
        # accelerate names each CPU process's device "cpu:0"; torch.load cannot map the
        # optimizer state saved under that name back, so resuming a multi-process CPU run
        # would fail. Plain "cpu" is the same device.
        state.device = torch.device("cpu")
    quiet_unless_main(state)
    set_seed(seed)
    return state


def agree(state: PartialState, decide: Callable[[], T]) -> T:
    """Run `decide` on the main process only and hand its result (or its error) to every process."""
    outcome: list[Any] = [None, None]
    if state.is_main_process:
        try:
            outcome = [decide(), None]
        except UserError as error:
            outcome = [None, str(error)]
    broadcast_object_list(outcome)
    if outcome[1] is not None:
        raise UserError(outcome[1])
    result: T = outcome[0]
    return result


def quiet_unless_main(state: PartialState) -> None:
    """Logs and progress bars once, from the main process, not once per process."""
    if not state.is_main_process:
        logging.getLogger("src").setLevel(logging.WARNING)
        logging.getLogger("__main__").setLevel(logging.WARNING)
        logging.getLogger("transformers").setLevel(logging.ERROR)
        datasets.disable_progress_bars()


def stop() -> None:
    """Leave the process group (without it the process aborts at exit)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
