"""Validate the answers before any file is written.

Cookiecutter renders this file with Jinja before running it. The answers arrive
as JSON inside a raw string: Jinja's ``tojson`` escapes every quote character,
so nothing in an answer (quotes, newlines, braces) can end the string or become
code. The file is valid Python before rendering too, so it is linted and tested.
"""

from __future__ import annotations

import json
import re
import sys
import unicodedata

CLOUDS = ("gcp", "aws", "azure")
TASKS = ("text-classification", "text-generation")
YES_NO = ("no", "yes")
SLUG = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")
# A Hub id is "name" or "org/name"; anything else must look like a filesystem path.
HUB_ID = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9._-]{0,95}/)?[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
LOCAL_PATH = re.compile(r"^(?:\.{1,2}/|/|~/).*$")


def problems(answers: dict[str, str]) -> list[str]:
    """Return one message per invalid answer, naming the field and the rule."""
    found = []
    for field in ("project_name", "author_name", "model_checkpoint"):
        value = answers[field]
        if any(unicodedata.category(char).startswith("C") for char in value):
            found.append(
                f"{field} {value!r} contains a control or invisible character (newline, tab...): use plain text"
            )
        elif field == "model_checkpoint":
            continue  # checked below: a Hub id or a path
        elif not value.strip():
            found.append(f"{field} is empty: give a non-empty value")
        elif len(value) > 100:
            found.append(f"{field} is {len(value)} characters long: use at most 100")
    if found:
        return found  # the rules below assume plain one-line text
    slug = answers["project_slug"]
    if not SLUG.fullmatch(slug) or len(slug) > 64:
        found.append(
            f"project_slug {slug!r} is invalid: use 1-64 lowercase letters, digits, '-' or '_',"
            " starting with a letter (e.g. my-ml-project)"
        )
    checkpoint = answers["model_checkpoint"]
    is_hub_id = HUB_ID.fullmatch(checkpoint) is not None and ".." not in checkpoint
    if not (is_hub_id or LOCAL_PATH.fullmatch(checkpoint)):
        found.append(
            f"model_checkpoint {checkpoint!r} is invalid: use a Hub id ('name' or 'org/name')"
            " or a path starting with '/', './', '../' or '~/'"
        )
    if answers.get("task", TASKS[0]) not in TASKS:
        found.append(f"task {answers['task']!r} is invalid: choose one of {', '.join(TASKS)}")
    if answers["default_cloud"] not in CLOUDS:
        found.append(f"default_cloud {answers['default_cloud']!r} is invalid: choose one of {', '.join(CLOUDS)}")
    if answers["install_pre_commit"] not in YES_NO:
        found.append(f"install_pre_commit {answers['install_pre_commit']!r} is invalid: answer no or yes")
    return found


def main() -> int:
    answers = json.loads(r"""{{ cookiecutter | tojson }}""")
    errors = problems(answers)
    for error in errors:
        print(f"ERROR: {error}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
