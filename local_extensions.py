"""Jinja filters for the template (cookiecutter loads this through `_extensions`)."""

from __future__ import annotations

import json

from cookiecutter.utils import simple_filter


@simple_filter  # type: ignore[untyped-decorator]
def quoted(value: object) -> str:
    """`value` as a double-quoted string that TOML, YAML and JSON all read back unchanged.

    JSON escaping covers quotes, backslashes and control characters; characters beyond
    ASCII stay as they are, since `\\uXXXX` surrogate pairs are invalid in TOML and
    mis-read by YAML. The pre-generation hook rejects what YAML cannot hold raw.
    """
    return json.dumps(str(value), ensure_ascii=False)
