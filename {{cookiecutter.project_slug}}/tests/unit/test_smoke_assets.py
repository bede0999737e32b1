"""Building a smoke set once, complete or not at all (src/smoke_assets.py), with a writer of plain files
standing in for the task's (the task's own writer runs in tests/integration and tests/e2e)."""

from __future__ import annotations

from pathlib import Path

import pytest

from src import smoke_assets


def write_files(folder: Path, seed: int) -> None:
    (folder / "model").mkdir()
    for name in ("train.jsonl", "eval.jsonl"):
        (folder / name).write_text(f'{{"seed": {seed}}}\n', encoding="utf-8")


def test_a_set_is_built_once_and_then_read(tmp_path: Path) -> None:
    folder = smoke_assets.assets_dir(tmp_path, 7)
    calls: list[int] = []

    def writer(staging: Path, seed: int) -> None:
        calls.append(seed)
        write_files(staging, seed)

    first = smoke_assets.build(folder, 7, writer)
    again = smoke_assets.build(folder, 7, writer)
    assert first == again == smoke_assets.files(folder)
    assert calls == [7]
    assert first["train"].read_text(encoding="utf-8") == '{"seed": 7}\n'


def test_a_writer_that_fails_leaves_no_set_and_no_staging(tmp_path: Path) -> None:
    folder = smoke_assets.assets_dir(tmp_path, 7)

    def failing(staging: Path, seed: int) -> None:
        write_files(staging, seed)
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        smoke_assets.build(folder, 7, failing)
    assert sorted(path.name for path in folder.parent.iterdir()) == ["seed-7.lock"]


def test_a_builder_killed_midway_leaves_staging_that_the_next_build_removes(tmp_path: Path) -> None:
    folder = smoke_assets.assets_dir(tmp_path, 7)
    folder.parent.mkdir(parents=True)
    killed = folder.parent / f"{smoke_assets.staging_prefix(folder)}abc123"  # as mkdtemp names it
    killed.mkdir()
    write_files(killed, 7)
    other_seed = folder.parent / f"{smoke_assets.staging_prefix(smoke_assets.assets_dir(tmp_path, 8))}def456"
    other_seed.mkdir()
    smoke_assets.build(folder, 7, write_files)
    assert not killed.exists()
    assert other_seed.exists(), "another seed's builder may be writing it under its own lock"
    assert (folder / smoke_assets.COMPLETE_MARKER).read_text(encoding="utf-8") == "seed=7\n"
