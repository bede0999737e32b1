"""`uv run evaluate [RUN] [--model-dir DIR] [--data FILE]`: eval loss and perplexity of a run.

Loads a finished run (default: `latest`): the base model with the run's LoRA adapters, and
measures the loss on the assistant turns of its evaluation split (the one in the run's
settings.yaml, same subset as training used) or of `--data FILE` (.jsonl/.json/.parquet with
a messages column), through the same SFTTrainer evaluation as training, so the numbers
compare with metrics.json. Perplexity is exp(eval loss): the number of equally likely next
tokens the model hesitates between, on average. It writes evaluation.json, the pictures
(training curves, learning rate) and report.md embedding them; `--data FILE` writes into
`<run>/eval-<file name>/` instead, so the run's own report stays. Training calls
`write_run_report` on every run it publishes (with the final evaluation it just made).
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from src import errors, flags, runs
from src.config import DataSettings, load_settings
from src.errors import UserError
from src.evaluation import report
from src.model_folder import ModelFolder, inspect_model_folder
from src.runs import RUN_SETTINGS, read_json, section, stored_settings

EVALUATION = "evaluation.json"


def perplexity(loss: float) -> float:
    """exp(mean cross-entropy per token); inf when that overflows (a loss above ~709)."""
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf


def run_data_settings(run_dir: Path, data_file: Path | None) -> DataSettings:
    """The run's data settings; with --data, that file as the evaluation split."""
    stored = section(stored_settings(run_dir), "data")
    if not stored and data_file is None:
        raise UserError(f"{run_dir} holds no {RUN_SETTINGS} with a data section (not a training run): pass --data FILE")
    if data_file is not None:
        stored = {**stored, "dataset": None, "train_file": str(data_file), "eval_file": str(data_file),
                  "max_eval_samples": None}  # fmt: skip
    try:
        return DataSettings.model_validate(stored)
    except ValidationError as error:
        raise UserError(f"{run_dir / RUN_SETTINGS}: data section is invalid: {error}"[:500]) from None


def measure(folder: ModelFolder, data: DataSettings, batch_size: int) -> dict[str, Any]:
    """Eval loss (assistant tokens), token accuracy and perplexity of the adapters on data's eval split."""
    from trl.trainer.sft_config import SFTConfig
    from trl.trainer.sft_trainer import SFTTrainer

    from src.data import load_splits
    from src.deployment.generator import load_model

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
    training, lora = section(stored, "training"), section(stored, "lora")
    return {
        "base model": runs.read_info(run_dir).get("base_model"),
        "LoRA": f"r={lora.get('r')}, alpha={lora.get('alpha')}, modules {lora.get('target_modules')}" if lora else None,
        "trainable parameters": trained.get("trainable_parameters"),
        "steps": trained.get("global_step"),
        "training conversations": trained.get("train_samples"),
        "training tokens": trained.get("train_tokens"),
        "final training loss": trained.get("train_loss"),
        "learning rate": training.get("learning_rate"),
        "evaluated every": f"{training['eval_steps']} steps" if training.get("eval_steps") else None,
        "training time (s)": trained.get("train_runtime_s"),
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
    ]
    if training:
        lines += ["", "## Training", ""]
        lines += [f"- {name}: {report._number(value)}" for name, value in training.items() if value is not None]
    if pictures:
        lines += [""] + [f"![{alt}]({name})" for alt, name in pictures.items()]
    elif training is not None:
        lines += ["", f"No training curves: the run has no log history ({runs.TRAINER_STATE})."]
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
    pictures = {}
    if report.plot_curves(history, "perplexity", target / report.CURVES):
        pictures["Training curves"] = report.CURVES
    if report.plot_learning_rate(history, target / report.LEARNING_RATE):
        pictures["Learning rate"] = report.LEARNING_RATE
    runs.write_json(target / EVALUATION, evaluation)
    title = f"Evaluation of {(published_as or run_dir).name}"
    runs.write_text(target / report.REPORT, markdown(title, evaluation, pictures, training_summary(run_dir)))
    return evaluation


def write_run_report(run_dir: Path, measured: Mapping[str, Any], published_as: Path) -> dict[str, Any]:
    """The report of a run on its own evaluation split, into its (staging) folder: training calls this."""
    return write_report(run_dir, measured, run_dir, "the run's evaluation split", published_as)


def _target_for(run_dir: Path, data_file: Path) -> Path:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", data_file.name).strip("-.") or "data"
    return run_dir / f"eval-{name}"


def main(argv: Sequence[str] | None = None) -> int:
    args = flags.EVALUATE.parse(sys.argv[1:] if argv is None else argv)
    if args.run and args.model_dir:
        raise UserError("give a RUN or --model-dir, not both")
    if args.model_dir:
        model_dir = runs.resolve_model_dir(args.model_dir)
    else:
        output_dir = load_settings(flags=flags.EVALUATE.settings_flags(args)).training.output_dir
        model_dir = runs.find_run(output_dir, args.run)
    folder = inspect_model_folder(model_dir)  # before anything is read or written: a damaged run keeps its report
    if args.data is not None and not args.data.is_file():
        raise UserError(f"--data {args.data}: no such file")
    data = run_data_settings(model_dir, args.data)
    if data.dataset is not None and "HF_HUB_OFFLINE" not in os.environ:
        from src.hub import hub_reachable

        if not hub_reachable():
            os.environ["HF_HUB_OFFLINE"] = "1"  # use the cached copy at once, not after a minute of retries
    batch_size = int(section(stored_settings(model_dir), "training").get("per_device_eval_batch_size", 8))
    measured = measure(folder, data, batch_size)
    target = model_dir if args.data is None else _target_for(model_dir, args.data)
    described = "the run's evaluation split" if args.data is None else str(args.data)
    evaluation = write_report(model_dir, measured, target, described)
    shown = {key: evaluation[key] for key in ("eval_loss", "perplexity", "eval_samples")}
    print(json.dumps({"run": model_dir.name, **shown, "report": str(target / report.REPORT)}, indent=2))
    return 0


if __name__ == "__main__":
    errors.run(main)
