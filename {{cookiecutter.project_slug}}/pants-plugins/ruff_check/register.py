"""Ruff >= 0.5 under Pants 2.17: `ruff check` for lint and fix, `ruff format` for fmt.

Pants 2.17's bundled ruff backend calls `ruff <files>` (no subcommand), which ruff 0.5
removed, and it has no formatter. This plugin keeps its `[ruff]` options (version from
`install_from_resolve`, `args`, `config`, `skip_ruff`) and runs the subcommands the
`uv run lint` task runs, so the two paths agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pants.backend.python.lint.ruff import skip_field, subsystem
from pants.backend.python.lint.ruff.subsystem import Ruff, RuffFieldSet
from pants.backend.python.util_rules import pex
from pants.backend.python.util_rules.pex import PexRequest, VenvPex, VenvPexProcess
from pants.core.goals.fix import FixResult, FixTargetsRequest
from pants.core.goals.fmt import FmtResult, FmtTargetsRequest
from pants.core.goals.lint import LintResult, LintTargetsRequest
from pants.core.util_rules.config_files import ConfigFiles, ConfigFilesRequest
from pants.core.util_rules.partitions import PartitionerType
from pants.core.util_rules.source_files import SourceFiles, SourceFilesRequest
from pants.engine.fs import Digest, MergeDigests
from pants.engine.internals.native_engine import Snapshot
from pants.engine.process import FallibleProcessResult
from pants.engine.rules import Get, MultiGet, collect_rules, rule
from pants.util.logging import LogLevel
from pants.util.meta import classproperty


class RuffCheckRequest(LintTargetsRequest):
    field_set_type = RuffFieldSet
    tool_subsystem = Ruff
    partitioner_type = PartitionerType.DEFAULT_SINGLE_PARTITION

    @classproperty
    def tool_name(cls) -> str:
        return "ruff check"


class RuffFixRequest(FixTargetsRequest):
    field_set_type = RuffFieldSet
    tool_subsystem = Ruff
    partitioner_type = PartitionerType.DEFAULT_SINGLE_PARTITION

    @classproperty
    def tool_name(cls) -> str:
        return "ruff check --fix"


class RuffFormatRequest(FmtTargetsRequest):
    field_set_type = RuffFieldSet
    tool_subsystem = Ruff
    partitioner_type = PartitionerType.DEFAULT_SINGLE_PARTITION

    @classproperty
    def tool_name(cls) -> str:
        return "ruff format"


@dataclass(frozen=True)
class RuffRun:
    snapshot: Snapshot
    subcommand: tuple[str, ...]


@rule(level=LogLevel.DEBUG)
async def run_ruff(request: RuffRun, ruff: Ruff) -> FallibleProcessResult:
    ruff_pex, config_files = await MultiGet(
        Get(VenvPex, PexRequest, ruff.to_pex_request()),
        Get(ConfigFiles, ConfigFilesRequest, ruff.config_request(request.snapshot.dirs)),
    )
    input_digest = await Get(Digest, MergeDigests((request.snapshot.digest, config_files.snapshot.digest)))
    config = (f"--config={ruff.config}",) if ruff.config else ()
    return await Get(
        FallibleProcessResult,
        VenvPexProcess(
            ruff_pex,
            argv=(*request.subcommand, *config, *ruff.args, *request.snapshot.files),
            input_digest=input_digest,
            output_files=request.snapshot.files,
            description=f"Run ruff {' '.join(request.subcommand)} on {len(request.snapshot.files)} files.",
            level=LogLevel.DEBUG,
        ),
    )


@rule(desc="Lint with ruff check", level=LogLevel.DEBUG)
async def ruff_check(request: RuffCheckRequest.Batch[RuffFieldSet, Any]) -> LintResult:
    sources = await Get(SourceFiles, SourceFilesRequest(element.source for element in request.elements))
    result = await Get(FallibleProcessResult, RuffRun(sources.snapshot, ("check",)))
    return LintResult.create(request, result, strip_chroot_path=True)


@rule(desc="Fix with ruff check --fix", level=LogLevel.DEBUG)
async def ruff_fix(request: RuffFixRequest.Batch) -> FixResult:
    # --exit-zero: what cannot be fixed is reported by `lint`, not treated as a crash here.
    result = await Get(FallibleProcessResult, RuffRun(request.snapshot, ("check", "--fix", "--exit-zero")))
    return await FixResult.create(request, result, strip_chroot_path=True)


@rule(desc="Format with ruff format", level=LogLevel.DEBUG)
async def ruff_format(request: RuffFormatRequest.Batch) -> FmtResult:
    result = await Get(FallibleProcessResult, RuffRun(request.snapshot, ("format",)))
    return await FmtResult.create(request, result, strip_chroot_path=True)


def rules() -> list[Any]:
    return [
        *collect_rules(),
        *RuffCheckRequest.rules(),
        *RuffFixRequest.rules(),
        *RuffFormatRequest.rules(),
        *pex.rules(),
        *skip_field.rules(),
        *subsystem.rules(),
    ]
