"""Training throughput of a real-size DistilBERT on imdb-like lengths, three batching modes.

Run with a generated project's interpreter (it needs torch and transformers):
    <project>/.venv/bin/python benchmarks/training_throughput.py
Random initialisation from DistilBertConfig() (66M parameters; nothing downloaded).
Review lengths follow a log-normal fit of imdb (median ~230 tokens, long tail, cut at 512).
Modes: the Trainer with length-grouped sampling (what train_model.py does), random order
(dynamic padding only), and padding every sample to the max length. One full epoch each,
so every mode sees the same samples. Writes benchmarks/results/training_throughput.json.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from tokenizers import Tokenizer, models
from transformers import (
    DataCollatorWithPadding,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    PreTrainedTokenizerFast,
    Trainer,
    TrainingArguments,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table, write

SAMPLES, BATCH, MAX_LENGTH, SEED = 96, 8, 512, 0


def imdb_like_lengths(count: int, rng: np.random.Generator) -> np.ndarray:
    return np.clip(rng.lognormal(mean=np.log(230), sigma=0.65, size=count), 16, MAX_LENGTH).astype(int)


class PadCollator:
    """Pads to MAX_LENGTH (the 'no dynamic padding' baseline)."""

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        ids = torch.zeros(len(features), MAX_LENGTH, dtype=torch.long)
        mask = torch.zeros(len(features), MAX_LENGTH, dtype=torch.long)
        for row, feature in enumerate(features):
            length = len(feature["input_ids"])
            ids[row, :length] = torch.tensor(feature["input_ids"])
            mask[row, :length] = 1
        labels = torch.tensor([feature["labels"] for feature in features])
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def run_mode(mode: str, dataset: Dataset, tokenizer: PreTrainedTokenizerFast) -> float:
    torch.manual_seed(SEED)
    model = DistilBertForSequenceClassification(DistilBertConfig(num_labels=2))
    with tempfile.TemporaryDirectory() as output_dir:
        args = TrainingArguments(
            output_dir=output_dir,
            per_device_train_batch_size=BATCH,
            num_train_epochs=1,
            train_sampling_strategy="group_by_length" if mode == "length-grouped" else "random",
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            logging_strategy="no",
            seed=SEED,
            use_cpu=not torch.cuda.is_available(),
            dataloader_pin_memory=False,
        )
        collator = PadCollator() if mode == "pad to max length" else DataCollatorWithPadding(tokenizer)
        trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator)
        metrics = trainer.train().metrics
    return float(metrics["train_samples_per_second"])


def main() -> None:
    rng = np.random.default_rng(SEED)
    lengths = imdb_like_lengths(SAMPLES, rng)
    rows = [
        {"input_ids": [101, *rng.integers(1000, 30000, size=n - 2).tolist(), 102], "labels": int(n % 2)}
        for n in lengths
    ]
    dataset = Dataset.from_list(rows)
    # The data is already token ids: the tokenizer only supplies padding to the collator.
    backend = Tokenizer(models.WordLevel({"[PAD]": 0, "[UNK]": 1}, unk_token="[UNK]"))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]")
    modes = ("length-grouped", "random order", "pad to max length")
    throughput = {mode: run_mode(mode, dataset, tokenizer) for mode in modes}
    speedups = {
        "length-grouped vs random order": throughput["length-grouped"] / throughput["random order"],
        "length-grouped vs pad to max length": throughput["length-grouped"] / throughput["pad to max length"],
    }
    path = write(
        "training_throughput",
        {
            "model": "DistilBERT, default config, random init",
            "samples": SAMPLES, "batch_size": BATCH, "max_length": MAX_LENGTH,
            "length_median": float(np.median(lengths)), "length_mean": float(np.mean(lengths)),
            "device": "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)",
            "samples_per_second": throughput, "speedup": speedups,
        },
    )  # fmt: skip
    print(table([[mode, value] for mode, value in throughput.items()], ["mode", "samples/s"]))
    print(table([[name, value] for name, value in speedups.items()], ["comparison", "speed-up"]))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
