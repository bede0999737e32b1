"""What each entry point imports: the quick commands start in a blink, and serving carries no
training or plotting code (LitServe forks its API servers from the parent: they carry what it imports)."""

from __future__ import annotations

import pytest

from tests.helpers.processes import imported_modules
from tests.task import samples

TRAINING_STACK = ("torch", "transformers", "datasets")
TRAINING_CODE = ("transformers.trainer", "datasets", "src.models.train_model", "src.task.training")
PLOTTING = ("matplotlib", "src.evaluation.report")
TASK = "src.task"  # every command imports it (src/__main__.py hands it over)

# (modules imported together in a fresh interpreter, module prefixes that must not appear)
LIGHT = {
    "settings-and-launcher": (("src.config", "src.runs", "src.models.train_local", TASK), TRAINING_STACK),
    "compare": (("src.evaluation.compare", TASK), ("torch", "matplotlib", "transformers", "litserve")),
    "predict-before-the-model": (("src.evaluation.predict", TASK), ("torch", "matplotlib", "transformers")),
    "serve-parent": (("src.deployment.serve", TASK, samples.SERVER_MODULE), ("torch", "transformers", *PLOTTING)),
    "serving-worker": (("src.deployment.serve", TASK, *samples.WORKER_MODULES), (*TRAINING_CODE, *PLOTTING)),
    "error-path": (("src.errors",), ("torch", "transformers", "pydantic")),
    "cloud-commands": (("src.cloud.train_cloud", "src.cloud.serve_cloud", TASK), (*TRAINING_STACK, "sky")),
}


@pytest.mark.parametrize(("modules", "forbidden"), LIGHT.values(), ids=LIGHT.keys())
def test_entry_point_stays_light(modules: tuple[str, ...], forbidden: tuple[str, ...]) -> None:
    loaded = imported_modules(*modules)
    heavy = sorted(name for name in loaded if name.startswith(forbidden))
    assert not heavy, f"importing {', '.join(modules)} loads {heavy[:10]}"
