"""A sweep's report: `<training.output_dir>/sweeps/<study>/report.md`, its trials, best run and pictures.

The pictures are Optuna's own (optuna.visualization.matplotlib, drawn headless): the metric of
each trial with the best so far (titled with the best run), how much each parameter mattered
(from two complete trials on), and the metric against each parameter. Each file is written
atomically; a picture Optuna cannot draw yet (too few trials) is left out with a line saying why.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from src import runs
from src.evaluation.report import cell, number, save

REPORT = "report.md"


def _figure(drawn: Any) -> Any:
    axes = drawn.flat[0] if hasattr(drawn, "flat") else drawn
    return axes.figure


def write_report(study: Any, output_dir: Path, folder: Path, key: str) -> str | None:
    """Write the study's report.md (and its pictures) into `folder`; the best run's name, if there is one."""
    import matplotlib

    matplotlib.use("Agg")
    import optuna
    import optuna.visualization.matplotlib as plots

    trials = study.get_trials(deepcopy=False)
    complete = [trial for trial in trials if trial.state == optuna.trial.TrialState.COMPLETE]
    best = study.best_trial if complete else None
    best_run = run_of(study, best, output_dir) if best else None
    lines = [f"# Sweep {study.study_name}", ""]
    if best is not None:
        local = output_dir / best_run if best_run and (output_dir / best_run).is_dir() else None
        serve = f"uv run serve --model-dir {local}" if local else f"uv run serve-cloud --run {best_run}"
        lines += [f"Best: trial {best.number}, run `{best_run or '?'}`, {key} "
                  f"{number(best.value)} ({study.direction.name.lower()}d), with {json.dumps(best.params)}.",
                  "", f"Serve it: `{serve}`" if best_run else "", ""]  # fmt: skip
    pictures: dict[str, Any] = {
        "history.png": plots.plot_optimization_history,
        "importance.png": plots.plot_param_importances,
        "slice.png": plots.plot_slice,
    }
    for name, draw in pictures.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
                figure = _figure(draw(study))
            if name == "history.png" and best_run is not None:
                figure.suptitle(f"best: {best_run} ({key} {number(best.value) if best else ''})")
            figure.set_size_inches(8, 5)
            save(figure, folder / name)
            lines += [f"![{name[:-4]}]({name})", ""]
        except (ValueError, RuntimeError, ZeroDivisionError, IndexError) as error:
            lines += [f"({name[:-4]}: not drawn yet: {cell(error, 120)})", ""]
    names = sorted({name for trial in trials for name in trial.params})
    lines += ["| trial | state | " + key + " | " + " | ".join(names) + " | run |",
              "|" + " --- |" * (len(names) + 4)]  # fmt: skip
    for trial in trials:
        run = run_of(study, trial, output_dir)
        values = [number(trial.params.get(name, "")) for name in names]
        lines.append(f"| {trial.number} | {trial.state.name.lower()} | {number(trial.value)} | "
                     + " | ".join(values) + f" | {run or ''} |")  # fmt: skip
    runs.write_text(folder / REPORT, "\n".join(lines) + "\n")
    return best_run


def finish(study: Any, output_dir: Path, folder: Path, key: str) -> str | None:
    """Write the report and print the sweep's summary (the study, its best run, the report); the best run."""
    best = write_report(study, output_dir, folder, key)
    print(json.dumps({"study": study.study_name, "best_run": best, "report": str(folder / REPORT)}, indent=2))
    return best


def run_of(study: Any, trial: Any, output_dir: Path) -> str | None:
    """The run a trial published: its folder here, or (a cloud trial) the name its driver recorded."""
    local = runs.trial_run(output_dir, study.study_name, trial.number)
    recorded = trial.user_attrs.get("run")
    return local.name if local else str(recorded) if recorded else None
