"""A chat run's evaluation: eval loss and perplexity (`uv run evaluate`, and every run's report).

Loads a finished run, the base model with its LoRA adapters, and measures the loss on the
assistant turns of its evaluation split (the one in the run's settings.yaml, same subset as
training used) or of `--data FILE` (.jsonl/.json/.parquet with a messages column), through the
same SFTTrainer evaluation as training, so the numbers compare with metrics.json. Perplexity is
exp(eval loss): the number of equally likely next tokens the model hesitates between, on
average. It writes evaluation.json, the pictures (training curves, learning rate) and report.md
embedding them. Training calls `write_run_report` on every run it publishes (with the final
evaluation it just made).
"""

from __future__ import annotations

import argparse
import math
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from src import runs
from src.config import DataSettings
from src.evaluation import report
from src.evaluation.evaluate import offline_unless_reachable, run_data
from src.evaluation.report import EVALUATION
from src.runs import read_json, section, stored_settings
from src.task.folder import RunFolder


def perplexity(loss: float) -> float:
    """exp(mean cross-entropy per token); inf when that overflows (a loss above ~709)."""
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf


def measure(folder: RunFolder, data: DataSettings, batch_size: int) -> dict[str, Any]:
    """Eval loss (assistant tokens), token accuracy and perplexity of the adapters on data's eval split."""
    from trl.trainer.sft_config import SFTConfig
    from trl.trainer.sft_trainer import SFTTrainer

    from src.task.data import load_splits
    from src.task.generator import load_model

    eval_split = load_splits(data)["eval"]
    tokenizer, model = load_model(folder, "cpu" if _no_gpu() else "cuda", "fp32", merge=False)
    with tempfile.TemporaryDirectory(prefix="evaluate-") as scratch:
        config = SFTConfig(
            output_dir=scratch, per_device_eval_batch_size=batch_size, report_to="none", use_cpu=_no_gpu(),
            max_length=folder.max_length, assistant_only_loss=True,
            bf16=False, fp16=False,  # fp32, as loaded (TRL would pick bf16 where the CPU has it)
        )  # fmt: skip
        # SFTTrainer insists on a train_dataset; nothing is trained, the eval split stands in.
        trainer = SFTTrainer(model=model, args=config, train_dataset=eval_split, eval_dataset=eval_split,
                             processing_class=tokenizer)  # fmt: skip
        result = trainer.evaluate()
    return {
        "eval_loss": result["eval_loss"],
        "perplexity": perplexity(result["eval_loss"]),
        "eval_token_accuracy": result.get("eval_mean_token_accuracy"),
        "eval_samples": len(eval_split),
    }


def _no_gpu() -> bool:
    import torch

    return not torch.cuda.is_available()


def training_summary(run_dir: Path) -> dict[str, Any] | None:
    """A few facts about how the run was trained, for report.md (None for a folder that is not a run)."""
    trained = read_json(run_dir / runs.METRICS)
    if not trained:
        return None
    stored = stored_settings(run_dir)
    lora = section(stored, "lora")
    adapters = f"r={lora.get('r')}, alpha={lora.get('alpha')}, modules {lora.get('target_modules')}" if lora else None
    return {
        **report.training_facts(run_dir, trained, section(stored, "training")),
        "LoRA": adapters,
        "trainable parameters": trained.get("trainable_parameters"),
        "training conversations": trained.get("train_samples"),
        "training tokens": trained.get("train_tokens"),
    }


def markdown(title: str, evaluation: Mapping[str, Any], pictures: Mapping[str, str],
             training: Mapping[str, Any] | None) -> str:  # fmt: skip
    lines = [
        f"# {title}",
        "",
        f"Evaluated on {evaluation['data']} ({evaluation['eval_samples']} conversations; the loss counts the "
        f"assistant turns) at {evaluation['evaluated_at']}.",
        "",
        "| eval loss | perplexity |",
        "| ---: | ---: |",
        f"| {evaluation['eval_loss']:.4f} | {evaluation['perplexity']:.4g} |",
        *report.facts(training, pictures),
    ]
    return "\n".join(lines) + "\n"


def write_report(run_dir: Path, measured: Mapping[str, Any], target: Path, data: str,
                 published_as: Path | None = None) -> dict[str, Any]:  # fmt: skip
    """evaluation.json, the curves and report.md into target."""
    evaluation = {**measured, "data": data, "evaluated_at": runs.timestamp(runs.now_utc())}
    target.mkdir(parents=True, exist_ok=True)
    history = [
        {**entry, "eval_perplexity": perplexity(entry["eval_loss"])} if isinstance(entry.get("eval_loss"), float)
        else entry
        for entry in report.log_history(run_dir)
    ]  # fmt: skip
    pictures = report.plot_training(history, target, "perplexity")
    runs.write_json(target / EVALUATION, evaluation)
    title = f"Evaluation of {(published_as or run_dir).name}"
    runs.write_text(target / report.REPORT, markdown(title, evaluation, pictures, training_summary(run_dir)))
    return evaluation


def write_run_report(run_dir: Path, measured: Mapping[str, Any], published_as: Path) -> dict[str, Any]:
    """The report of a run on its own evaluation split, into its (staging) folder: training calls this."""
    return write_report(run_dir, measured, run_dir, "the run's evaluation split", published_as)


def evaluate_run(folder: RunFolder, args: argparse.Namespace, target: Path) -> dict[str, Any]:
    """`uv run evaluate`: the run's split (its own report) or --data FILE (a report in `target`); the summary."""
    data = run_data(folder.path, DataSettings, args.data)
    offline_unless_reachable(data.dataset)
    batch_size = int(section(stored_settings(folder.path), "training").get("per_device_eval_batch_size", 8))
    measured = measure(folder, data, batch_size)
    described = "the run's evaluation split" if args.data is None else str(args.data)
    evaluation = write_report(folder.path, measured, target, described)
    return {key: evaluation[key] for key in ("eval_loss", "perplexity", "eval_samples")}
