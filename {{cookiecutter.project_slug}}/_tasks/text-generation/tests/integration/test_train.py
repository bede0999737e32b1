"""LoRA training on the tiny offline model, in process: the loss, publishing, resuming, damaged checkpoints, locks."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from src import runs
from src.data import DataError
from src.deployment.generator import Generator
from src.evaluation import report
from src.model_folder import inspect_model_folder
from src.models.checkpoints import DAMAGED_PREFIX, last_checkpoint
from src.models.smoke import END
from src.models.train_model import TrainingError, train
from src.weights import ADAPTER_WEIGHTS
from tests.helpers.models import CHECKPOINT_DAMAGES, smoke_file_settings, smoke_settings

INTERRUPTED: dict[str, Any] = {"run_name": "damaged", "max_steps": 14, "save_steps": 5, "save_total_limit": 3}
STOP_AT = 10  # the interrupted run's newest checkpoint; the one before it is at 5


class PreemptedError(Exception):
    """Stands in for a Ctrl-C or a spot preemption right after a checkpoint."""


class StopAtCheckpoint(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if state.global_step >= self.step:
            raise PreemptedError(f"stopped at step {state.global_step}")


def interrupt(smoke_assets: dict[str, Path], output_dir: Path, stop_at: int, **training: Any) -> str:
    """Train until the checkpoint at `stop_at`, then fail as a preemption would; return the run id."""
    settings = smoke_settings(smoke_assets, output_dir, **training)
    with pytest.raises(PreemptedError, match=f"step {stop_at}"):
        train(settings, callbacks=[StopAtCheckpoint(stop_at)])
    return runs.unfinished_runs(output_dir)[-1].name


@pytest.fixture(scope="session")
def interrupted_runs(smoke_assets: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A runs folder whose one unfinished run stopped at step 10 (checkpoints at 5 and 10); copy before use."""
    output_dir = tmp_path_factory.mktemp("interrupted")
    interrupt(smoke_assets, output_dir, STOP_AT, **INTERRUPTED)
    return output_dir


@pytest.fixture
def interrupted(interrupted_runs: Path, tmp_path: Path) -> tuple[Path, str]:
    """This test's copy of the interrupted runs folder, and the run id."""
    output_dir = tmp_path / "runs"
    shutil.copytree(interrupted_runs, output_dir, symlinks=True)
    return output_dir, runs.unfinished_runs(output_dir)[-1].name


def eval_rows(smoke_assets: dict[str, Path]) -> int:
    return len(smoke_assets["eval"].read_text(encoding="utf-8").splitlines())


def test_smoke_run_publishes_adapters_that_learned(trained_model: Path, smoke_assets: dict[str, Path]) -> None:
    files = {path.name for path in trained_model.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "metrics.json", "settings.yaml",
            "run.json", "report.md"} <= files  # fmt: skip
    assert "model.safetensors" not in files, "the adapters only: the base model is not copied"
    metrics = json.loads((trained_model / "metrics.json").read_text())
    assert metrics["trainable_parameters"] < metrics["total_parameters"] / 2, "LoRA: most weights stay frozen"
    assert metrics["world_size"] == 1
    assert metrics["eval_samples"] == eval_rows(smoke_assets), "evaluated on the whole split"
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["eval_loss"]))
    info = runs.read_info(trained_model)
    assert info["run_id"] == trained_model.name
    assert info["max_length"] == smoke_file_settings().model.max_length
    assert info["base_model"] == str(smoke_assets["model"])
    assert runs.resolve_model_dir(trained_model.parent / "latest") == trained_model.resolve()
    assert not (trained_model.parent / runs.CHECKPOINTS).exists(), "a finished run keeps no checkpoints"

    history = report.log_history(trained_model)
    _, losses = report.series(history, "loss")
    assert losses[-1] < losses[0] / 2, f"the training loss falls: {losses}"
    _, eval_losses = report.series(history, "eval_loss")
    assert eval_losses[-1] < eval_losses[0], f"and the evaluation loss with it: {eval_losses}"

    generator = Generator(inspect_model_folder(trained_model))
    answer, stream = generator.complete([{"role": "user", "content": "What is the opposite of early?"}], 20)
    assert answer.startswith("The opposite of early is"), answer
    assert stream.finish_reason == "stop", "it learned to end its turn"
    assert END not in answer


def test_the_loss_counts_the_assistant_turns_only(trained_model: Path) -> None:
    """The masks TRL builds from the smoke chat template: the user's words are not trained on."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(trained_model)
    chat = [
        {"role": "user", "content": "Opposite of hot?"},
        {"role": "assistant", "content": "The opposite of hot is cold."},
    ]
    encoded: Any = tokenizer.apply_chat_template(
        chat, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    trained = [token for token, mask in zip(encoded["input_ids"], encoded["assistant_masks"], strict=True) if mask]
    assert tokenizer.decode(trained) == "The opposite of hot is cold." + END


def test_interrupted_run_resumes_and_never_moves_latest(smoke_assets: dict[str, Path], tmp_path: Path) -> None:
    good = train(smoke_settings(smoke_assets, tmp_path, run_name="good", max_steps=3, save_steps=100))["run_id"]
    run_id = interrupt(smoke_assets, tmp_path, 5, run_name="resumable", max_steps=12, save_steps=5)
    assert (tmp_path / "latest").resolve() == (tmp_path / good).resolve()
    assert not (tmp_path / run_id).exists(), "no half model where the server looks"

    half_written = runs.checkpoint_dir(tmp_path, run_id) / "checkpoint-9"  # killed while saving
    half_written.mkdir()
    (half_written / ADAPTER_WEIGHTS).write_bytes(b"truncated")

    settings = smoke_settings(smoke_assets, tmp_path, run_name="resumable", max_steps=12, save_steps=5)
    metrics = train(settings, resume=run_id)
    assert metrics["resumed_from_step"] == 5
    assert metrics["global_step"] == 12
    assert (tmp_path / "latest").resolve() == (tmp_path / run_id).resolve()
    assert (tmp_path / good).is_dir(), "older runs stay"
    assert not list(tmp_path.glob(".tmp-*")), "no staging folder left behind"


@pytest.mark.parametrize("damage", CHECKPOINT_DAMAGES.values(), ids=CHECKPOINT_DAMAGES.keys())
def test_damaged_newest_checkpoint_is_set_aside_for_the_previous_one(
    interrupted: tuple[Path, str], damage: Any
) -> None:
    output_dir, run_id = interrupted
    checkpoints = runs.checkpoint_dir(output_dir, run_id)
    damage(checkpoints / f"checkpoint-{STOP_AT}")
    chosen = last_checkpoint(checkpoints)
    assert chosen is not None
    assert chosen.name == "checkpoint-5"
    assert (checkpoints / f"{DAMAGED_PREFIX}checkpoint-{STOP_AT}").is_dir(), "set aside, not deleted"


def test_resume_after_damage_finishes_from_the_previous_checkpoint(
    interrupted: tuple[Path, str], smoke_assets: dict[str, Path]
) -> None:
    output_dir, run_id = interrupted
    CHECKPOINT_DAMAGES["truncated-adapter"](runs.checkpoint_dir(output_dir, run_id) / f"checkpoint-{STOP_AT}")
    metrics = train(smoke_settings(smoke_assets, output_dir, **INTERRUPTED), resume=run_id)
    assert metrics["resumed_from_step"] == 5
    assert metrics["global_step"] == INTERRUPTED["max_steps"]
    assert (output_dir / "latest").resolve() == (output_dir / run_id).resolve()


def test_an_intact_checkpoint_is_resumed_from(interrupted: tuple[Path, str]) -> None:
    output_dir, run_id = interrupted
    chosen = last_checkpoint(runs.checkpoint_dir(output_dir, run_id))
    assert chosen is not None
    assert chosen.name == f"checkpoint-{STOP_AT}"


def test_two_runs_leave_two_folders_and_latest_on_the_second(smoke_assets: dict[str, Path], tmp_path: Path) -> None:
    first = train(smoke_settings(smoke_assets, tmp_path, max_steps=2))["run_id"]
    second = train(smoke_settings(smoke_assets, tmp_path, max_steps=2))["run_id"]
    assert first != second
    assert [path.name for path in runs.finished_runs(tmp_path)] == [second, first]
    assert (tmp_path / "latest").resolve() == (tmp_path / second).resolve()


def test_a_run_being_trained_cannot_be_resumed_twice(
    interrupted: tuple[Path, str], smoke_assets: dict[str, Path]
) -> None:
    output_dir, run_id = interrupted
    with runs.run_lock(output_dir, run_id), pytest.raises(runs.RunLockedError, match="another process"):
        train(smoke_settings(smoke_assets, output_dir, **INTERRUPTED), resume=run_id)


def test_messages_column_names_what_the_data_has(smoke_assets: dict[str, Path], tmp_path: Path) -> None:
    settings = smoke_settings(smoke_assets, tmp_path)
    broken = settings.model_copy(update={"data": settings.data.model_copy(update={"messages_column": "chat"})})
    with pytest.raises(DataError, match=r"lacks column 'chat' \(has \['messages'\]\)"):
        train(broken)


def test_malformed_conversations_are_named_before_training(smoke_assets: dict[str, Path], tmp_path: Path) -> None:
    rows = [json.loads(line) for line in smoke_assets["train"].read_text().splitlines()]
    rows[3]["messages"][-1]["role"] = "robot"
    rows[7]["messages"] = rows[7]["messages"][:-1]  # ends with the user's turn
    train_file = tmp_path / "train.jsonl"
    train_file.write_text("".join(json.dumps(row) + "\n" for row in rows))
    settings = smoke_settings(smoke_assets, tmp_path / "runs")
    broken = settings.model_copy(update={"data": settings.data.model_copy(update={"train_file": train_file})})
    with pytest.raises(DataError, match=r"train split: 2 of \d+ conversations are malformed: row \d+: .*robot"):
        train(broken)
    assert not list((tmp_path / "runs").glob("smoke-*")), "nothing published"


def test_a_model_without_a_chat_template_is_refused(smoke_assets: dict[str, Path], tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(smoke_assets["model"], model)
    (model / "chat_template.jinja").unlink()
    config = json.loads((model / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    settings = smoke_settings(smoke_assets, tmp_path / "runs")
    broken = settings.model_copy(update={"model": settings.model.model_copy(update={"checkpoint": str(model)})})
    with pytest.raises(TrainingError, match="no chat template: choose an instruct or chat model"):
        train(broken)
