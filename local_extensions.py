"""Jinja extensions for the template (cookiecutter loads them through `_extensions`)."""

from __future__ import annotations

import json
from typing import Any

from cookiecutter.utils import simple_filter
from jinja2 import Environment
from jinja2.ext import Extension
from jinja2.sandbox import SandboxedEnvironment, safe_range


class SandboxedAnswers(Extension):
    """Turn cookiecutter's Jinja environment into Jinja's sandbox.

    Cookiecutter renders every answer as a template before any hook runs, in a plain
    environment where `{{ cycler.__init__.__globals__.os.system(...) }}` runs a command.
    It loads the template's extensions into every environment it makes (prompts, file
    names, file contents), so this one swaps the environment's class for a sandboxed
    subclass and sets what `SandboxedEnvironment.__init__` would have: attribute access to
    Python internals then fails and the generation stops before anything is written.
    """

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        base = type(environment)
        if not issubclass(base, SandboxedEnvironment):
            environment.__class__ = type(f"Sandboxed{base.__name__}", (SandboxedEnvironment, base), {})
            sandbox: Any = environment
            sandbox.globals["range"] = safe_range
            sandbox.binop_table = SandboxedEnvironment.default_binop_table.copy()
            sandbox.unop_table = SandboxedEnvironment.default_unop_table.copy()


@simple_filter  # type: ignore[untyped-decorator]
def quoted(value: object) -> str:
    """`value` as a double-quoted string that TOML, YAML and JSON all read back unchanged.

    JSON escaping covers quotes, backslashes and control characters; characters beyond
    ASCII stay as they are, since `\\uXXXX` surrogate pairs are invalid in TOML and
    mis-read by YAML. The pre-generation hook rejects what YAML cannot hold raw.
    """
    return json.dumps(str(value), ensure_ascii=False)
