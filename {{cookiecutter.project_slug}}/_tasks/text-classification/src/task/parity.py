"""Is a classifier's ONNX export fit to serve? Its parity with PyTorch fp32, and what `auto` serves on CPU.

`uv run serve` runs `serving_engine()` before the server starts: from the stamps, or with
`choose()` in a child process (the server's parent never imports torch); predict and evaluate
call `choose()` in process. The check compares the export (onnx_export.py) with PyTorch fp32 on
the run's eval texts (or review-like probe texts): labels agree on at least 99% of the texts
PyTorch is decided about (top two probabilities more than UNDECIDED_MARGIN apart), probabilities
move by at most MAX_MEAN_CHANGE on average and MAX_PROBABILITY_CHANGE on any text (the
template's docs/design_decisions.md says why). The verdict is stamped beside the export
(`<export>.parity.json`) with the hashes of the export, the weights and the texts: a later start
of the same run reads the stamp instead of checking again (`stamped()`, no torch).

Both `auto`, an int8 export that fails parity is not served: the next candidate that passes
answers (ONNX Runtime fp32, then PyTorch fp32), with one line saying so. A runtime or precision
asked for explicitly is served as asked or refused with one `error:` line.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import cast

from src import errors, lifeline, runs
from src.config import ServingSettings
from src.contract import Engine
from src.devices import surely_cpu_only
from src.errors import UserError
from src.fingerprints import sha256
from src.task import onnx_export
from src.task.folder import ClassifierFolder
from src.task.runtimes import (
    CPU_SERVING_PRECISION,
    check_serving_precision,
    check_serving_runtime,
    serving_precision,
    serving_runtime,
)

PARITY_TEXTS = 64
MIN_LABEL_AGREEMENT = 0.99
UNDECIDED_MARGIN = 0.1  # a text whose two likeliest labels are this close may go either way
MAX_MEAN_CHANGE = 0.01
MAX_PROBABILITY_CHANGE = 0.1
CRITERIA = {"min_label_agreement": MIN_LABEL_AGREEMENT, "undecided_margin": UNDECIDED_MARGIN,
            "max_mean_change": MAX_MEAN_CHANGE, "max_probability_change": MAX_PROBABILITY_CHANGE}  # fmt: skip
STAMP_SUFFIX = ".parity.json"
# What `auto` tries on CPU, best first; PyTorch fp32 is the reference itself (nothing to check).
CANDIDATES = (("onnxruntime", "int8"), ("onnxruntime", "fp32"), ("pytorch", "fp32"))
# When the run's eval texts are not at hand: 8 x 8 short reviews, from glowing to scathing.
PROBE_OPENINGS = (
    "I watched this film last night.", "The cast is famous and the budget was huge.", "My friends recommended it.",
    "It runs for over two hours.", "The trailer promised a thriller.", "I had read the book first.",
    "A quiet drama about a family.", "The sequel nobody asked for.",
)  # fmt: skip
PROBE_VERDICTS = (
    "A wonderful, moving story with brilliant acting.", "Great fun from start to finish, I loved it.",
    "Good, though the ending felt rushed.", "Some fine scenes, some dull ones.", "Forgettable and a bit slow.",
    "The plot made no sense and the dialogue was weak.", "Boring, tedious and far too long.",
    "An awful mess: the worst film I have seen this year.",
)  # fmt: skip
USE_PYTORCH = "serve with PyTorch instead: --runtime pytorch (serving.runtime: pytorch)"


@dataclass(frozen=True)
class Parity:
    texts: int
    source: str
    label_agreement: float  # on the texts PyTorch fp32 is decided about
    mean_probability_change: float
    max_probability_change: float
    checked_before: bool = False  # read from the stamp: nothing it depends on changed since

    @property
    def ok(self) -> bool:
        return (
            self.label_agreement >= MIN_LABEL_AGREEMENT
            and self.mean_probability_change <= MAX_MEAN_CHANGE
            and self.max_probability_change <= MAX_PROBABILITY_CHANGE
        )

    def describe(self, precision: str) -> str:
        verdict = "agrees" if self.ok else "disagrees"
        when = " (checked at an earlier start; nothing changed since)" if self.checked_before else ""
        return (
            f"ONNX Runtime {precision} {verdict} with PyTorch fp32 on {self.source}: labels {self.label_agreement:.1%}"
            f" (need {MIN_LABEL_AGREEMENT:.0%}), probability change {self.mean_probability_change:.4f} on average"
            f" (at most {MAX_MEAN_CHANGE}) and {self.max_probability_change:.4f} at most"
            f" (at most {MAX_PROBABILITY_CHANGE}){when}"
        )


def _fingerprint(model_dir: Path, export: Path, texts: Sequence[str]) -> dict[str, object]:
    """What a parity verdict depends on: the export, the weights it was made from, the texts, the criteria."""
    weights = {name: sha256(model_dir / name) for name in onnx_export.WEIGHT_FILES if (model_dir / name).is_file()}
    return {"export": sha256(export), "weights": weights, "criteria": CRITERIA,
            "texts": hashlib.sha256("\0".join(texts).encode("utf-8", "surrogatepass")).hexdigest()}  # fmt: skip


def stamp_file(export: Path) -> Path:
    return export.with_name(export.name + STAMP_SUFFIX)


def stamped(model_dir: Path, precision: str) -> Parity | None:
    """The verdict stamped beside the run's export for `precision`, if nothing it depends on has changed."""
    export = onnx_export.onnx_file(model_dir, precision)
    stamp = runs.read_json(stamp_file(export))
    if not export.is_file() or not stamp:
        return None
    try:
        current = _fingerprint(model_dir, export, parity_texts(model_dir)[0])
        return Parity(**{**stamp["parity"], "checked_before": True}) if stamp.get("fingerprint") == current else None
    except (OSError, KeyError, TypeError):
        return None


def _first_passing(verdict: Callable[[str], Parity | None]) -> Engine | None:
    """`auto`'s choice on CPU: the first candidate whose verdict passes (None: a verdict is not known)."""
    notes: list[str] = []
    for runtime, precision in CANDIDATES[:-1]:
        parity = verdict(precision)
        if parity is None:
            return None
        if parity.ok:
            return Engine(runtime, precision, (*notes, parity.describe(precision)))
        notes.append(f"{parity.describe(precision)}: not serving it")
    return Engine(*CANDIDATES[-1], tuple(notes))


def stamped_choice(model_dir: Path) -> Engine | None:
    """`auto`'s choice from the stamps alone (no torch, no export), or None when a check must run."""
    return _first_passing(lambda precision: stamped(model_dir, precision))


def stamped_explicit(model_dir: Path, precision: str) -> Engine | None:
    """ONNX Runtime in `precision`, asked for explicitly, from its stamp (no torch): served, refused, or None."""
    parity = stamped(model_dir, precision)
    if parity is None:
        return None
    if not parity.ok:
        raise refusal(model_dir, precision, parity)
    return Engine("onnxruntime", precision, (parity.describe(precision),))


def refusal(model_dir: Path, precision: str, parity: Parity) -> UserError:
    return UserError(f"{onnx_export.onnx_file(model_dir, precision)}: {parity.describe(precision)}: {USE_PYTORCH}")


def parity_texts(model_dir: Path) -> tuple[list[str], str]:
    """Up to PARITY_TEXTS of the run's eval texts when they are a local .jsonl, else review-like probe texts."""
    data = runs.section(runs.stored_settings(model_dir), "data")
    eval_file, column = data.get("eval_file"), str(data.get("text_column") or "text")
    found: list[str] = []
    if isinstance(eval_file, str) and eval_file.endswith(".jsonl") and Path(eval_file).is_file():
        with contextlib.suppress(OSError, ValueError), Path(eval_file).open(encoding="utf-8") as lines:
            for line in itertools.islice(lines, 10 * PARITY_TEXTS):
                row = json.loads(line) if line.strip() else None
                if isinstance(row, dict) and isinstance(row.get(column), str) and row[column].strip():
                    found.append(row[column])
                if len(found) == PARITY_TEXTS:
                    break
    if found:
        return found, f"{len(found)} texts of {eval_file}"
    probes = [f"{opening} {verdict}" for opening, verdict in itertools.product(PROBE_OPENINGS, PROBE_VERDICTS)]
    return probes[:PARITY_TEXTS], f"{min(len(probes), PARITY_TEXTS)} review-like probe texts"


def check_parity(model_dir: Path, precision: str, threads: int, texts: Sequence[str], source: str) -> Parity:
    from src.task.classifier import Classifier

    reference = Classifier(model_dir, "cpu", precision="fp32").predict(texts)
    served = Classifier(model_dir, "cpu", precision=precision, runtime="onnxruntime", threads=threads).predict(texts)
    return compare([p.probabilities for p in reference], [p.probabilities for p in served], source)


def compare(reference: Sequence[Mapping[str, float]], served: Sequence[Mapping[str, float]], source: str) -> Parity:
    """How far `served` (each text's probability per label) is from `reference`, PyTorch fp32's."""
    changes, agreed, decided = [], 0, 0
    for exact, other in zip(reference, served, strict=True):
        changes.append(max(abs(value - other[label]) for label, value in exact.items()))
        first, second = sorted(exact.values(), reverse=True)[:2]
        if first - second > UNDECIDED_MARGIN:
            decided += 1
            agreed += max(exact, key=exact.__getitem__) == max(other, key=other.__getitem__)
    agreement = agreed / decided if decided else 1.0
    return Parity(len(changes), source, agreement, sum(changes) / len(changes), max(changes))


def prepare(model_dir: Path, precision: str, threads: int) -> Parity:
    """Export when needed (missing, unloadable or older than the weights), then check parity (or read its stamp)."""
    path = onnx_export.onnx_file(model_dir, precision)
    with onnx_export.export_lock(path.parent):
        if not onnx_export.is_current(path, model_dir):
            print(f"exporting {model_dir} to ONNX ({precision}): {path}", flush=True)
            onnx_export.export(model_dir, precision, path)
        known = stamped(model_dir, precision)
        if known is not None:
            return known
        texts, source = parity_texts(model_dir)
        parity = check_parity(model_dir, precision, threads, texts, source)
        stamp = {"fingerprint": _fingerprint(model_dir, path, texts), "parity": asdict(parity),
                 "checked_at": runs.timestamp(runs.now_utc())}  # fmt: skip
        runs.write_json(stamp_file(path), stamp)
    return parity


def require(model_dir: Path, precision: str, threads: int) -> Parity:
    """The export for `precision`, which must pass parity: asked for explicitly, it serves or is refused."""
    parity = prepare(model_dir, precision, threads)
    if not parity.ok:
        raise refusal(model_dir, precision, parity)
    return parity


def choose(model_dir: Path, runtime: str, precision: str, threads: int) -> Engine:
    """What serves on CPU: serving.runtime and serving.precision as asked (ONNX Runtime's export checked),
    or, both `auto`, the first candidate that passes parity."""
    if runtime != "auto" or precision != "auto":
        resolved = serving_precision(precision, "cpu")
        if serving_runtime(runtime, precision, "cpu") == "pytorch":
            return Engine("pytorch", resolved)
        return Engine("onnxruntime", resolved, (require(model_dir, resolved, threads).describe(resolved),))
    return cast(Engine, _first_passing(lambda candidate: prepare(model_dir, candidate, threads)))  # never None


def serving_engine(serving: ServingSettings, folder: ClassifierFolder) -> Engine:
    """The runtime and precision the workers run: on CPU, ONNX Runtime's export checked against PyTorch first.

    The check imports torch, which serve's parent must not (LitServe forks it): a child process
    (this module's main) makes it and writes its choice to a file, unless the stamps of an earlier start
    already tell (same export, same weights). On a GPU the worker resolves `auto` itself.
    """
    runtime, precision = serving.runtime, serving.precision
    check_serving_precision(precision, serving.accelerator)  # impossible ones: refused before any start-up work
    check_serving_runtime(runtime, precision, serving.accelerator)
    on_cpu = serving.accelerator == "cpu" or (serving.accelerator == "auto" and surely_cpu_only(os.environ))
    if on_cpu:
        if serving_runtime(runtime, precision, "cpu") == "pytorch":
            return Engine("pytorch", serving_precision(precision, "cpu"))
        if runtime == precision == "auto":
            known = stamped_choice(folder.path)
        else:
            known = stamped_explicit(folder.path, serving_precision(precision, "cpu"))
        if known is not None:
            return known
    elif serving.accelerator != "auto" or runtime == "pytorch" or precision not in ("auto", CPU_SERVING_PRECISION):
        return Engine(runtime, precision)  # not ONNX Runtime: the worker resolves auto for its device
    threads = serving.worker_threads
    with tempfile.TemporaryDirectory(prefix="serve-engine-") as scratch:
        answer = Path(scratch) / "choice.json"
        arguments = [str(folder.path), runtime, precision, serving.accelerator, str(threads), str(answer)]
        # A session of its own: Ctrl-C reaches serve only, which reports it and kills the child.
        command = child_command(arguments)
        env = {**os.environ, errors.STATUS_DIR_ENV: scratch}  # it reports its error here; serve prints it
        # It ends with serve from its first instruction (it imports torch before its own lifeline).
        code = subprocess.run(
            command, check=False, start_new_session=True, env=env, preexec_fn=lifeline.ending_with_this_process
        ).returncode
        if code:
            raise errors.reported(Path(scratch), code, "the ONNX export and its check")
        return Engine(**runs.read_json(answer))


def child_command(arguments: Sequence[str]) -> list[str]:
    """The command line of serving_engine's child (`main`). Not `-m src.task.parity`: src.task imports
    this module, which `-m` would then run as a second copy (and Python warns about it)."""
    return [sys.executable, "-c", "from src import errors; from src.task import parity; errors.run(parity.main)",
            *arguments]  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """serving_engine's child process: MODEL_DIR RUNTIME PRECISION ACCELERATOR THREADS CHOICE_FILE.

    serve runs it before it starts: it writes what the workers run (an Engine, as JSON) to CHOICE_FILE.
    """
    from transformers.utils import logging as transformers_logging

    from src.devices import best_device

    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # weights load twice
    model_dir, runtime, precision, accelerator, threads, choice_file = sys.argv[1:] if argv is None else argv
    device = best_device() if accelerator == "auto" else accelerator  # as LitServe picks it
    if device == "cpu":
        choice = choose(Path(model_dir), runtime, precision, int(threads))
    else:
        choice = Engine(serving_runtime(runtime, precision, device), serving_precision(precision, device))
    runs.write_json(Path(choice_file), asdict(choice))
    return 0
