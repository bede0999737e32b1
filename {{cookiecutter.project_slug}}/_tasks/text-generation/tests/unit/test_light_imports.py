"""What each entry point imports: the quick commands start in a blink, and serving carries no
training or plotting code (LitServe forks its API servers from the parent: they carry what it imports)."""

from __future__ import annotations

import pytest

from tests.helpers.processes import imported_modules

TRAINING_STACK = ("torch", "transformers", "datasets")
TRAINING_CODE = ("transformers.trainer", "trl", "datasets", "src.models.train_model", "src.data", "src.models.smoke")
PLOTTING = ("matplotlib", "src.evaluation.report")

# (modules imported together in a fresh interpreter, module prefixes that must not appear)
LIGHT = {
    "settings-and-launcher": (("src.config", "src.runs", "src.models.train_local"), TRAINING_STACK),
    "compare": (("src.evaluation.compare",), ("torch", "matplotlib", "transformers")),
    "predict-before-the-model": (("src.evaluation.predict",), ("torch", "matplotlib", "transformers")),
    "serve-parent": (("src.deployment.serve",), ("torch", "transformers", *PLOTTING)),
    "serving-worker": (("src.deployment.serve", "src.deployment.generator"), (*TRAINING_CODE, *PLOTTING)),
    "error-path": (("src.errors",), ("torch", "transformers", "pydantic")),
    "cloud-commands": (("src.cloud.train_cloud", "src.cloud.serve_cloud"), (*TRAINING_STACK, "sky")),
}


@pytest.mark.parametrize(("modules", "forbidden"), LIGHT.values(), ids=LIGHT.keys())
def test_entry_point_stays_light(modules: tuple[str, ...], forbidden: tuple[str, ...]) -> None:
    loaded = imported_modules(*modules)
    heavy = sorted(name for name in loaded if name.startswith(forbidden))
    assert not heavy, f"importing {', '.join(modules)} loads {heavy[:10]}"
