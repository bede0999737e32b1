"""A model card in every run folder: `README.md` with the Hugging Face model-card metadata.

The metadata (YAML between `---` lines, as `huggingface_hub.ModelCard` reads it): license
(project.license), base model and dataset where they are on the Hub, pipeline tag, and the
run's metrics as `model-index` results on its evaluation split. The text says what was trained
and how, shows the evaluation table and the report's pictures, and the intended use and limits,
so the folder can be pushed to the Hub as it is (`huggingface-cli upload <repo> <run folder>`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from src import runs
from src.contract import Metric
from src.settings import HUB_ID, Settings

CARD = "README.md"


def on_hub(name: str | None) -> bool:
    return bool(name) and HUB_ID.match(str(name)) is not None and not Path(str(name)).exists()


def write(folder: Path, settings: Settings, metrics: Mapping[str, Any], task_name: str,
          measures: Sequence[Metric], run_id: str) -> Path:  # fmt: skip
    """Write the card into `folder` (a run being published) and return its path."""
    from huggingface_hub import EvalResult, ModelCardData

    data, model = settings.data, settings.model
    dataset = data.dataset if on_hub(data.dataset) else None
    results = [
        EvalResult(
            task_type=task_name,
            dataset_type=dataset or "local",
            dataset_name=dataset or "local files",
            dataset_split=data.eval_split,
            metric_type=measure.key,
            metric_name=measure.title,
            metric_value=float(metrics[measure.key]),
        )
        for measure in measures
        if isinstance(metrics.get(measure.key), int | float)
    ]
    card = ModelCardData(
        model_name=run_id, license=settings.project.license, library_name="transformers", pipeline_tag=task_name,
        base_model=model.checkpoint if on_hub(model.checkpoint) else None, datasets=[dataset] if dataset else None,
        tags=[task_name, settings.project.name.lower().replace(" ", "-")], eval_results=results or None,
    )  # fmt: skip
    training = settings.training
    rows = [f"| {measure.title} | {format(metrics[measure.key], measure.spec)} |" for measure in measures
            if isinstance(metrics.get(measure.key), int | float)]  # fmt: skip
    pictures = [f"![{path.stem}]({path.name})" for path in sorted(folder.glob("*.png"))]
    lines = [
        "---", card.to_yaml(), "---", "",
        f"# {run_id}", "",
        f"{task_name} model of the project *{settings.project.name}*, fine-tuned from `{model.checkpoint}` on "
        f"{f'the Hub dataset `{dataset}`' if dataset else 'local data files'} (evaluation split "
        f"`{data.eval_split}`).", "",
        "## Training", "",
        f"{metrics.get('global_step', '?')} steps, learning rate {training.learning_rate:g}, "
        f"{metrics.get('effective_batch_size', '?')} examples per step, on {metrics.get('world_size', 1)} "
        f"process(es); {metrics.get('train_samples', '?')} training examples, {metrics.get('eval_samples', '?')} for "
        f"evaluation; seed {training.seed}. The settings are in `{runs.RUN_SETTINGS}`, the record in "
        f"`{runs.RUN_INFO}`.", "",
        "## Evaluation", "",
        "| metric | value |", "| --- | --- |", *rows, "",
        *(line for picture in pictures for line in (picture, "")),
        "More in `report.md`.", "",
        "## Intended use and limits", "",
        f"Made for the task above on data like its training data. It has not been checked for uses beyond that "
        f"evaluation, nor for bias in the data: measure it on your own data (`uv run evaluate --data FILE`) before "
        f"relying on it. License: {settings.project.license}.", "",
    ]  # fmt: skip
    path = folder / CARD
    runs.write_text(path, "\n".join(lines))
    return path
