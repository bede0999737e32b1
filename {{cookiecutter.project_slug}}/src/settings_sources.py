"""The settings' sources before validation: YAML files, read defensively, and `SECTION__FIELD` variables.

A settings file is read as one mapping of sections with unique names for keys, within size
and alias limits (a billion-laughs document is refused). An environment variable is typed
by the field it sets, not by YAML's guesses (see src/config.py for the rules). Every problem
is a SettingsError naming the file or the variable.
"""

from __future__ import annotations

import difflib
import stat
import types
import typing
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, StringConstraints

from src.errors import UserError

SETTINGS_FILE_ENV = "SETTINGS_FILE"


class SettingsError(UserError):
    """A settings file, variable or flag is unusable; the message says where and why."""


PATTERN_WORDS: dict[str, str] = {}  # a pattern's meaning in words, for the error line (a regex says little)


def matching(pattern: str, words: str) -> StringConstraints:
    """A string field's pattern, with what it means in words for the error line."""
    PATTERN_WORDS[pattern] = words
    return StringConstraints(pattern=pattern)


MAX_SETTINGS_BYTES = 1_000_000  # a settings file is a few kB; this is no settings file
MAX_YAML_NODES = 100_000  # after aliases are expanded: a billion-laughs document is refused


def _expanded_nodes(node: yaml.Node, sizes: dict[int, int], budget: int) -> int:
    """How many nodes `node` stands for once every alias is expanded (shared nodes counted each time)."""
    if id(node) in sizes:
        return sizes[id(node)]
    sizes[id(node)] = budget + 1  # a node that contains itself never ends
    children: list[yaml.Node] = []
    if isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    elif isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    total = 1
    for child in children:
        total += _expanded_nodes(child, sizes, budget)
        if total > budget:
            break
    sizes[id(node)] = total
    return total


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML whose keys are names, each once per mapping (PyYAML keeps the last of two silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str):  # `1:` or `[a, b]:` would fail deep inside validation
                shown = repr(key) if isinstance(key_node, yaml.ScalarNode) else "[...]"
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {shown} (line {line}): keys are names: write it in quotes, or fix it"
                )
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r} (line {line})")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _parse_yaml(text: str, loader_class: type[yaml.SafeLoader | yaml.BaseLoader] = _UniqueKeyLoader) -> Any:
    """The document, or yaml.YAMLError; RecursionError when it is nested too deeply to read."""
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_nodes(node, {}, MAX_YAML_NODES) > MAX_YAML_NODES:
            raise yaml.YAMLError(f"more than {MAX_YAML_NODES} values once its aliases are expanded (an alias bomb?)")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def read_yaml(path: Path, overlay: bool = False) -> dict[str, Any]:
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise SettingsError(f"{path}: not a regular file (a device, pipe or socket): point at a .yaml file")
        with path.open("rb") as handle:
            raw = handle.read(MAX_SETTINGS_BYTES + 1)
        if len(raw) > MAX_SETTINGS_BYTES:
            raise SettingsError(f"{path}: over {MAX_SETTINGS_BYTES} bytes: this is not a settings file")
        text = raw.decode("utf-8")
    except ValueError as error:
        if isinstance(error, UnicodeDecodeError):
            raise SettingsError(f"{path}: not UTF-8 text (byte {error.start}): save it as UTF-8") from None
        raise SettingsError(f"{path!r}: not a usable path ({error})") from None  # a NUL byte, say
    except FileNotFoundError:
        raise SettingsError(
            f"{path}: settings file not found (set {SETTINGS_FILE_ENV} or restore configs/settings.yaml)"
        ) from None
    except IsADirectoryError:
        raise SettingsError(f"{path}: is a folder, not a settings file") from None
    except OSError as error:
        raise SettingsError(f"{path}: cannot read settings file ({error.strerror})") from None
    try:
        data = _parse_yaml(text)
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = getattr(error, "problem", None) or str(error)
        raise SettingsError(f"{path}: malformed YAML{line}: {problem}") from None
    except RecursionError:
        raise SettingsError(f"{path}: nested too deeply to be settings (sections hold fields, one level)") from None
    except ValueError as error:  # an integer of thousands of digits, say
        raise SettingsError(f"{path}: a value cannot be read: {str(error)[:200]}") from None
    if data is None and overlay:
        return {}  # an empty overlay changes nothing
    if not isinstance(data, dict):
        raise SettingsError(f"{path}: expected a mapping of sections (project, model, ...) at the top")
    return data


def _members(annotation: Any) -> tuple[Any, ...]:
    """The types a field takes, without None and Annotated's constraints."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _members(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return tuple(m for arg in typing.get_args(annotation) if arg is not type(None) for m in _members(arg))
    return (annotation,)


def _is_text(annotation: Any) -> bool:
    """A field whose every value is a string (or a path): its variable is taken as written."""
    members = _members(annotation)
    for member in members:
        if typing.get_origin(member) is Literal:
            if not all(isinstance(value, str) for value in typing.get_args(member)):
                return False
        elif not (isinstance(member, type) and issubclass(member, (str, PurePath))):
            return False
    return bool(members)


def _env_value(annotation: Any, text: str) -> Any:
    """An environment variable's value, typed by the field it sets (not by YAML's guesses)."""
    if text.strip() in {"null", "~", ""} and type(None) in typing.get_args(annotation):
        return None
    if _is_text(annotation):
        return text
    [member] = _members(annotation)[:1] or [None]
    text_items = typing.get_origin(member) is list and all(_is_text(arg) for arg in typing.get_args(member))
    try:  # BaseLoader keeps every scalar a string: `[no, yes]` are two labels, not two booleans
        return _parse_yaml(text, yaml.BaseLoader if text_items else yaml.SafeLoader)
    except (yaml.YAMLError, RecursionError, ValueError):
        return text  # the field's validation names the variable and what it expects


def env_overrides(environ: Mapping[str, str], model: type[BaseModel]) -> dict[str, Any]:
    """Collect the `SECTION__FIELD` variables; one that names a section but no field of it is an error."""
    found: dict[str, Any] = {}
    known = {f"{section.upper()}__{name.upper()}": (section, name, field)
             for section, part in sections(model).items() for name, field in part.model_fields.items()}  # fmt: skip
    prefixes = {f"{section.upper()}__" for section in sections(model)}
    for variable, text in environ.items():
        if variable in known:
            section, name, field = known[variable]
            found.setdefault(section, {})[name] = _env_value(field.annotation, text)
        elif any(variable.upper().startswith(prefix) for prefix in prefixes):
            close = difflib.get_close_matches(variable.upper(), known, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise SettingsError(
                f"unknown setting {variable}{hint}: an override is SECTION__FIELD in upper case, named after "
                "a field of configs/settings.yaml; unset it or fix the name"
            )
    return found


def env_override_names(environ: Mapping[str, str], model: type[BaseModel]) -> list[str]:
    """The `SECTION__FIELD` variables in `environ` that name a real field."""
    known = {
        f"{section.upper()}__{name.upper()}" for section, part in sections(model).items() for name in part.model_fields
    }
    return sorted(name for name in environ if name in known)


def sections(model: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """The sections of the settings model: its fields that are models themselves."""
    return {
        name: info.annotation
        for name, info in model.model_fields.items()
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)
    }


def merge(base: dict[str, Any], overrides: Mapping[str, Any], depth: int = 2) -> dict[str, Any]:
    """Sections merge field by field; a field's value is replaced whole (`SWEEP__SPACE='{}'` empties the space)."""
    merged = dict(base)
    for key, value in overrides.items():
        if depth > 1 and isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value, depth - 1)
        else:
            merged[key] = value
    return merged


def nest(dotted: Mapping[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for path, value in dotted.items():
        section, _, field = path.partition(".")
        nested.setdefault(section, {})[field] = value
    return nested
