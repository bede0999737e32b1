"""ONNX Runtime serving on CPU, in process: the export, its parity check against PyTorch, a stale
export, and runtimes that cannot serve (a killed export and a refused start: tests/e2e/test_onnx.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from src.config import PROJECT_ROOT, load_settings
from src.deployment import serve
from src.errors import UserError
from src.task import model_inputs, onnx_export
from src.task import parity as export_parity
from src.task.classifier import ONNX_GROUP_TOKENS, Classifier, length_groups
from src.task.folder import inspect as inspect_model_folder
from tests.helpers.processes import call, clean_env, free_port, only_error_line

AWKWARD_TEXTS = [
    "", "   ", "Ünïcödé: a café's crème brûlée", "日本語のレビュー、最高", "emoji 🎬🍿 great",
    "[SEP] [CLS] [PAD] in a text", "tabs\tand\nnewlines\r\n", "word " * 600, "x" * 5000, "can't won't it's",
    "\uff26\uff35\uff2c\uff2c width and\u200bzero width",
]  # fmt: skip


def test_int8_export_agrees_with_pytorch_fp32_on_the_eval_split(run_copy: Path) -> None:
    parity = export_parity.prepare(run_copy, "int8", threads=1)
    assert not parity.checked_before
    assert onnx_export.onnx_file(run_copy, "int8") == run_copy / "onnx" / "model-int8.onnx"
    assert (run_copy / "onnx" / "model-int8.onnx").is_file()
    assert parity.ok
    assert parity.texts == export_parity.PARITY_TEXTS
    assert "eval.jsonl" in parity.source, "the run's own eval texts, not the probe texts"
    served = Classifier(run_copy, precision="int8", runtime="onnxruntime")
    assert served.precision == "int8"
    texts = ["great wonderful superb film", "awful boring dull mess, hated it", "tedious"]
    exact = Classifier(run_copy, precision="fp32").predict(texts)
    for answer, torch_fp32 in zip(served.predict(texts), exact, strict=True):
        assert answer.label == torch_fp32.label
        assert answer.score == pytest.approx(torch_fp32.score, abs=export_parity.MAX_PROBABILITY_CHANGE)
        assert sum(answer.probabilities.values()) == pytest.approx(1.0, abs=1e-5)


def test_a_batch_runs_its_texts_side_by_side_and_answers_as_each_alone(run_copy: Path) -> None:
    """A batch on 2 threads (groups of texts of like length, padded) gives each text what it gets alone, in order."""
    export_parity.prepare(run_copy, "fp32", threads=1)
    served = Classifier(run_copy, precision="fp32", runtime="onnxruntime", threads=2)
    assert served.pool is not None
    assert served.text_session is not served.session
    texts = ["great " * 1000, "awful", "superb moving brilliant " * 3, "tedious", "a fine, quiet drama"] * 4
    together = served.predict(texts)
    exact = Classifier(run_copy, precision="fp32").predict(texts)  # PyTorch's padded micro-batches
    for text, batched, reference in zip(texts, together, exact, strict=True):
        alone = served.predict([text])[0]
        assert batched.label == alone.label == reference.label
        for label, probability in batched.probabilities.items():
            assert probability == pytest.approx(alone.probabilities[label], abs=1e-5)
            assert probability == pytest.approx(reference.probabilities[label], abs=1e-4)


def test_a_batch_is_cut_into_groups_of_like_length_within_the_token_budget() -> None:
    short, middling, long = 10, ONNX_GROUP_TOKENS // 4, ONNX_GROUP_TOKENS
    lengths = [long, short, middling, short, long, middling, short, middling, middling, middling]
    groups = length_groups(lengths, most_tokens=ONNX_GROUP_TOKENS)
    assert sorted(index for group in groups for index in group) == list(range(len(lengths)))
    in_order = [lengths[index] for group in groups for index in group]
    assert in_order == sorted(in_order), "shortest first"
    for group in groups:
        assert len(group) == 1 or len(group) * max(lengths[index] for index in group) <= ONNX_GROUP_TOKENS
    # 3 short + 1 middling padded to it (4 x 64 tokens: the budget), 4 middling, then each long one alone
    assert [len(group) for group in groups] == [4, 4, 1, 1]
    assert length_groups([short] * 5, most_texts=2) == [[0, 1], [2, 3], [4]]


def test_int8_keeps_the_classification_head_in_full_precision(run_copy: Path) -> None:
    import onnx

    export_parity.prepare(run_copy, "int8", threads=1)
    graph = onnx.load(str(onnx_export.onnx_file(run_copy, "int8"))).graph
    quantized = [node.name for node in graph.node if node.op_type == "MatMulInteger"]
    assert any(name.startswith("/distilbert/transformer/") for name in quantized), "the transformer layers are int8"
    assert not [name for name in quantized if "classifier" in name], "the head is not"


def test_a_second_start_reads_the_verdict_stamped_beside_the_export(run_copy: Path) -> None:
    first = export_parity.prepare(run_copy, "int8", threads=1)
    stamp = export_parity.stamp_file(onnx_export.onnx_file(run_copy, "int8"))
    written = stamp.stat().st_mtime_ns
    again = export_parity.prepare(run_copy, "int8", threads=1)
    assert again.checked_before
    assert again.max_probability_change == first.max_probability_change
    assert stamp.stat().st_mtime_ns == written, "nothing checked or written again"
    choice = export_parity.stamped_choice(run_copy)
    assert choice is not None, "int8 passed: auto needs no other check"
    assert (choice.runtime, choice.precision) == ("onnxruntime", "int8")
    assert choice == export_parity.choose(run_copy, "auto", "auto", threads=1)


@pytest.mark.parametrize("changed", ["weights", "export", "criteria"])
def test_a_stamp_no_longer_counts_once_what_it_checked_changes(
    run_copy: Path, changed: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    export_parity.prepare(run_copy, "int8", threads=1)
    if changed == "weights":
        config = run_copy / "config.json"
        config.write_text(config.read_text() + "\n")
    elif changed == "export":
        export = onnx_export.onnx_file(run_copy, "int8")
        export.write_bytes(export.read_bytes() + b"\0")
    else:
        monkeypatch.setattr(export_parity, "CRITERIA", {**export_parity.CRITERIA, "max_mean_change": 0.005})
    assert export_parity.stamped(run_copy, "int8") is None
    again = export_parity.prepare(run_copy, "int8", threads=1)
    assert again.ok
    # A damaged export is made again, byte for byte the one checked before: its verdict stands.
    assert again.checked_before == (changed == "export")


def test_auto_chooses_the_first_runtime_whose_export_agrees(run_copy: Path, smoke_assets: dict[str, Path]) -> None:
    foreign = run_copy.parent / "foreign"
    onnx_export.export(smoke_assets["model"], "int8", foreign)
    target = onnx_export.onnx_file(run_copy, "int8")
    target.parent.mkdir()
    target.write_bytes(foreign.read_bytes())  # another model's export, newer than the weights
    choice = export_parity.choose(run_copy, "auto", "auto", threads=1)
    assert (choice.runtime, choice.precision) == ("onnxruntime", "fp32")
    assert len(choice.notes) == 2
    assert "int8 disagrees" in choice.notes[0]
    assert "not serving it" in choice.notes[0]
    assert "fp32 agrees" in choice.notes[1]
    again = export_parity.stamped_choice(run_copy)
    assert again is not None, "the next start chooses from the stamps"
    assert (again.runtime, again.precision) == ("onnxruntime", "fp32")
    with pytest.raises(UserError, match="int8 disagrees"):
        export_parity.choose(run_copy, "onnxruntime", "int8", threads=1)  # asked for: refused


def test_serve_chooses_from_the_stamps_without_starting_the_check(
    run_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second start of the same run: no child process exports or checks anything."""
    export_parity.choose(run_copy, "auto", "auto", threads=1)  # the first start
    serving = load_settings(environ={"SERVING__ACCELERATOR": "cpu"}).serving

    def no_child(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a second start ran {args}")

    monkeypatch.setattr(subprocess, "run", no_child)
    engine = export_parity.serving_engine(serving, inspect_model_folder(run_copy))
    assert (engine.runtime, engine.precision) == ("onnxruntime", "int8")
    assert "checked at an earlier start" in engine.notes[0]


def test_parity_ignores_label_flips_of_texts_pytorch_is_undecided_about() -> None:
    undecided = {"neg": 0.51, "pos": 0.49}
    flipped = {"neg": 0.49, "pos": 0.51}
    decided = {"neg": 0.1, "pos": 0.9}
    parity = export_parity.compare([undecided, *[decided] * 4], [flipped, *[decided] * 4], "five texts")
    assert parity.label_agreement == 1.0
    assert parity.max_probability_change == pytest.approx(0.02)
    assert parity.ok
    wrong = export_parity.compare([decided] * 99 + [undecided], [{"neg": 0.6, "pos": 0.4}] + [decided] * 99, "100")
    assert wrong.label_agreement == pytest.approx(98 / 99)
    assert not wrong.ok, "a decided text changed its label, and by 0.5"
    drifting = export_parity.compare([decided] * 10, [{"neg": 0.12, "pos": 0.88}] * 10, "ten")
    assert drifting.max_probability_change < export_parity.MAX_PROBABILITY_CHANGE
    assert not drifting.ok, "every text moved by 0.02: above the average change allowed"


def test_fp32_export_matches_pytorch_exactly(run_copy: Path) -> None:
    parity = export_parity.prepare(run_copy, "fp32", threads=1)
    assert parity.label_agreement == 1.0
    assert parity.max_probability_change < 1e-4


def test_a_model_folder_that_cannot_hold_onnx_exports_into_the_cache(
    run_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only folder, or (what even root cannot write through) a file named onnx in the way."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (run_copy / "onnx").write_text("not a folder", encoding="utf-8")
    run_copy.chmod(0o555)
    try:
        assert export_parity.prepare(run_copy, "int8", threads=1).ok
    finally:
        run_copy.chmod(0o755)
    exported = onnx_export.onnx_file(run_copy, "int8")
    assert exported.is_file()
    assert tmp_path / "cache" in exported.parents
    assert (run_copy / "onnx").read_text(encoding="utf-8") == "not a folder"


def test_an_export_older_than_the_weights_is_made_again(run_copy: Path) -> None:
    target = onnx_export.onnx_file(run_copy, "int8")
    export_parity.prepare(run_copy, "int8", threads=1)
    os.utime(target, ns=(1, 1))  # as if exported before the weights were last written
    export_parity.prepare(run_copy, "int8", threads=1)
    assert target.stat().st_mtime_ns > 1


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--runtime", "tensorrt"], "serving.runtime"),
        (["--runtime", "onnxruntime", "--precision", "fp16"], "onnxruntime serves fp32 or int8"),
    ],
    ids=["unknown", "half-precision"],
)
def test_runtime_that_cannot_serve_is_refused(
    trained_model: Path, argv: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert call(serve.main, "--model-dir", str(trained_model), "--port", str(free_port()), *argv) == 2
    assert words in only_error_line(capsys.readouterr().err)


def exported(run_dir: Path, precision: str) -> Path:
    """The run's export for `precision`, made as serve makes it, without the parity check."""
    target = onnx_export.onnx_file(run_dir, precision)
    target.parent.mkdir(exist_ok=True)
    onnx_export.export(run_dir, precision, target)
    return target


def test_the_export_tokenizes_as_transformers_does_and_its_worker_imports_no_torch(run_copy: Path) -> None:
    """The ONNX export carries the run's tokenizer (model_inputs.py): the same ids, labels and truncation as
    transformers, and an ONNX Runtime classifier that never imports torch or transformers. A damaged copy
    makes the export stale (made again at the next start)."""
    target = exported(run_copy, "int8")
    served = Classifier(run_copy, precision="int8", runtime="onnxruntime")
    assert onnx_export.carried_inputs(served.session), "the export carries its inputs"
    reference = Classifier(run_copy, precision="fp32")
    assert served.labels == reference.labels
    assert (served.max_length, served.pad_id) == (reference.max_length, reference.pad_id)
    assert served.encode(AWKWARD_TEXTS) == reference.encode(AWKWARD_TEXTS)
    assert max(len(ids) for ids in served.encode(AWKWARD_TEXTS)) == served.max_length, "long texts are cut"
    probe = (
        "import sys; from pathlib import Path; from src.task.classifier import Classifier; "
        f"c = Classifier(Path({str(run_copy)!r}), precision='int8', runtime='onnxruntime'); "
        "print(c.predict(['a wonderful film'])[0].label, 'torch' in sys.modules, 'transformers' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=PROJECT_ROOT, env=clean_env(), capture_output=True,
                            text=True, timeout=120, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == [served.predict(["a wonderful film"])[0].label, "False", "False"]

    assert onnx_export.is_current(target, run_copy)
    model = onnx.load(str(target))
    carried = next(entry for entry in model.metadata_props if entry.key == model_inputs.METADATA_KEY)
    carried.value = carried.value[: len(carried.value) // 2]  # cut short, as a damaged copy would be
    onnx.save(model, str(target))
    assert not onnx_export.is_current(target, run_copy)


def test_an_export_without_its_inputs_tokenizes_through_transformers(
    run_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tokenizer without a tokenizers pipeline (model_inputs.describe gives None) leaves the export without
    inputs: its classifier loads the run's tokenizer through transformers and answers the same."""
    monkeypatch.setattr(model_inputs, "describe", lambda model_dir: None)
    exported(run_copy, "fp32")
    served = Classifier(run_copy, precision="fp32", runtime="onnxruntime")
    assert onnx_export.carried_inputs(served.session) is None
    reference = Classifier(run_copy, precision="fp32")
    assert served.encode(AWKWARD_TEXTS) == reference.encode(AWKWARD_TEXTS)
    assert [p.label for p in served.predict(AWKWARD_TEXTS)] == [p.label for p in reference.predict(AWKWARD_TEXTS)]
