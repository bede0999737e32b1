"""The model worker's side of serving: how every task's LitServe API starts in its worker.

LitServe spawns the model worker and calls the API's `setup(device)` there. `WorkerAPI.setup`
ties the worker to the server first (src/lifeline.py: if serve is killed, the worker ends too),
then runs the task's `load(device)`. A UserError there (a model that loads but cannot answer,
say NaN scores on a probe input) is written to serve's status folder and kept out of LitServe's
log, so `uv run serve` ends with that one `error:` line instead of a worker's traceback.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import litserve as ls

from src import errors, lifeline
from src.errors import UserError

SETUP_LOGGER = "litserve.loops.loops"  # LitServe 0.2.19 logs a failed setup's traceback there


def _not_a_user_error(record: logging.LogRecord) -> bool:
    return not (record.exc_info and isinstance(record.exc_info[1], UserError))


class WorkerAPI(ls.LitAPI):  # type: ignore[misc]
    """A LitAPI whose worker ends with the server and reports a start-up refusal in one line; tasks write `load`."""

    status_dir: Path | None = None  # set by serve before it starts: where a worker that cannot start says why
    server_pid: int | None = None  # set by serve: killed while this worker started, serve is no longer its parent

    def setup(self, device: str) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # serve reports a Ctrl-C and stops this worker
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # blocked as it started (pipes.py)
        lifeline.end_with_parent(parent=self.server_pid)
        try:
            self.load(device)
        except UserError as error:
            if self.status_dir is not None and self.status_dir.is_dir():
                errors.write_status(self.status_dir, errors.EXIT_USER_ERROR, str(error))
                logging.getLogger(SETUP_LOGGER).addFilter(_not_a_user_error)
            raise

    def load(self, device: str) -> None:
        """Load what answers requests on `device` (in the worker process)."""
        raise NotImplementedError
