"""`python -m src COMMAND [ARGS]`: every command of the project, handed this project's task.

The one place where the task-neutral core (the commands' modules) meets the task (src/task/):
each command's `main(argv, task)` runs with `src.task.TASK`, through the one error path
(src/errors.py: `error: ...` and exit 2, Ctrl-C 130, SIGTERM 143). The taskipy tasks in
pyproject.toml run these (`uv run serve` is `python -m src serve`). A command imports its own
module only when it runs, so each starts as light as it is.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from src import errors, lifeline

# command -> the core module whose main(argv, task) runs it
COMMANDS = {
    "train-local": "src.models.train_local",
    "train-process": "src.models.train_model",  # one training process of train-local
    "train-cloud": "src.cloud.train_cloud",
    "sweep": "src.models.sweep",
    "sweep-cloud": "src.cloud.sweep_cloud",
    "serve": "src.deployment.serve",
    "serve-cloud": "src.cloud.serve_cloud",
    "evaluate": "src.evaluation.evaluate",
    "predict": "src.evaluation.predict",
    "compare": "src.evaluation.compare",
    "promote": "src.promotion",
}


def run(command: str, argv: Sequence[str]) -> int:
    from src.task import TASK

    main = importlib.import_module(COMMANDS[command]).main
    code: int = main(list(argv), TASK)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m src {{{','.join(COMMANDS)}}} [ARGS]", file=sys.stderr)
        return errors.EXIT_USER_ERROR
    return errors.exit_code(lambda: run(argv[0], argv[1:]))


if __name__ == "__main__":
    lifeline.end_with_parent()  # killed, uv (or whoever started this) takes this process along
    sys.exit(main())
