"""JSON Schema (draft 2020-12) validation of index documents, with located messages.

The schema is the one definition of an index entry: its fields, allowed values and
defaults (the ``default`` annotations, which ``build.py`` reads). What a model must
have once it has inherited its collection's fields is ``$defs/resolvedModel``.

Two validators from one schema: fastjsonschema compiles it to Python code that says *whether* a
document is valid about 30x faster than jsonschema; only a document it finds invalid is walked
again by jsonschema, whose errors say where and why. The fast path is used only while the schema
keeps to keywords both read alike (``FAST_KEYWORDS``), with the same anchored regular expressions.
"""
from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Iterable

import fastjsonschema
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError

import model_index

from .errors import Problem
from .yaml_io import Document

_TYPE_NAMES = {dict: "a mapping", list: "a list", str: "a string", int: "an integer", float: "a number",
               bool: "a boolean", type(None): "empty (null)"}


@lru_cache(maxsize=4)
def load_schema(path: str | None = None) -> dict:
    return json.loads(Path(path or model_index.SCHEMA_FILE).read_text(encoding="utf-8"))


def definition(name: str) -> dict:
    """``$defs/<name>`` of the packaged schema."""
    return load_schema()["$defs"][name]


@lru_cache(maxsize=None)
def _anchored(pattern: str) -> re.Pattern:
    # In Python's re, a final `$` also matches before a trailing newline ("name\n" would pass
    # `^[a-z]+$`); JSON Schema means the end of the string.
    return re.compile(re.sub(r"(?<!\\)\$$", r"\\Z", pattern))


def _pattern(validator, pattern: str, instance, schema):
    if validator.is_type(instance, "string") and not _anchored(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


_Validator = validators.extend(Draft202012Validator, {"pattern": _pattern})

# Keywords that fastjsonschema (draft-07 semantics) and jsonschema (2020-12) read the same way.
FAST_KEYWORDS = frozenset({
    "$schema", "$id", "$defs", "$ref", "$comment", "title", "description", "examples", "type", "properties",
    "additionalProperties", "required", "minProperties", "maxProperties", "items", "oneOf", "anyOf", "allOf", "not",
    "enum", "const", "pattern", "minLength", "maxLength", "minimum", "maximum", "exclusiveMinimum",
    "exclusiveMaximum", "minItems", "maxItems", "uniqueItems", "default",
})


def schema_keywords(schema) -> set[str]:
    """Every keyword a schema uses (property names and $defs names are not keywords)."""
    found: set[str] = set()

    def walk(node) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            for key, value in node.items():
                found.add(key)
                if key in ("properties", "$defs"):
                    for sub in value.values():
                        walk(sub)
                elif key not in ("enum", "const", "examples", "required"):
                    walk(value)

    walk(schema)
    return found


def _fast_schema(node):
    """The schema for fastjsonschema: same anchored patterns, no $schema (it knows drafts up to 07 by URI)."""
    if isinstance(node, list):
        return [_fast_schema(item) for item in node]
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$schema":
                continue
            if key == "pattern" and isinstance(value, str):
                out[key] = _anchored(value).pattern
            elif key in ("properties", "$defs"):
                out[key] = {name: _fast_schema(sub) for name, sub in value.items()}
            else:
                out[key] = _fast_schema(value)
        return out
    return node


@lru_cache(maxsize=4)
def _validators(path: str | None = None) -> tuple[Draft202012Validator, Draft202012Validator]:
    schema = load_schema(path)
    Draft202012Validator.check_schema(schema)
    # The schema's top level is oneOf(file mapping, bare model list); validating against the branch that
    # fits the document's type gives one error per problem instead of one wrapped oneOf failure.
    base = {"$schema": schema["$schema"], "$defs": schema["$defs"]}
    file_validator = _Validator({**base, "$ref": "#/$defs/indexFile"})
    list_validator = _Validator({**base, "type": "array", "items": {"$ref": "#/$defs/model"}})
    return file_validator, list_validator


@lru_cache(maxsize=4)
def _resolved_validator(path: str | None = None) -> Draft202012Validator:
    schema = load_schema(path)
    return _Validator({"$schema": schema["$schema"], "$defs": schema["$defs"], "$ref": "#/$defs/resolvedModel"})


@lru_cache(maxsize=4)
def _fast_validators(path: str | None = None) -> dict | None:
    """Compiled validity checks by root (file, list, resolved), or None when the schema uses a keyword outside
    FAST_KEYWORDS."""
    schema = load_schema(path)
    if not schema_keywords(schema) <= FAST_KEYWORDS:
        return None
    defs = _fast_schema(schema["$defs"])
    compile_ = lambda root: fastjsonschema.compile({"$defs": defs, **root}, use_default=False)
    return {"file": compile_({"$ref": "#/$defs/indexFile"}),
            "list": compile_({"type": "array", "items": {"$ref": "#/$defs/model"}}),
            "resolved": compile_({"$ref": "#/$defs/resolvedModel"})}


def is_valid(data, schema_path: str | None = None, root: str | None = None) -> bool | None:
    """Whether ``data`` passes the schema by the fast path; None when the fast path is off for this schema.

    ``root``: "file" or "list" (default: by the type of ``data``), or "resolved" for a model after inheritance.
    """
    fast = _fast_validators(schema_path)
    if fast is None or (root is None and not isinstance(data, (dict, list))):
        return None
    try:
        fast[root or ("list" if isinstance(data, list) else "file")](data)
    except fastjsonschema.JsonSchemaException:
        return False
    return True


def _type_name(value) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def _leaf_errors(error: ValidationError, described: str | None = None) -> list[tuple[ValidationError, str | None]]:
    """Replace a oneOf/anyOf failure by the errors of the branch that fits the value's type.

    Each error comes with the description of the innermost oneOf it came from, which says what
    form the value should take better than the branch's bare pattern does.
    """
    if error.validator not in ("oneOf", "anyOf") or not error.context:
        return [(error, described)]
    branches: dict[int, list[ValidationError]] = {}
    for sub in error.context:
        branches.setdefault(sub.relative_schema_path[0], []).append(sub)
    fitting = [
        errs for errs in branches.values()
        if not any(e.validator in ("type", "enum", "const") and not e.relative_path for e in errs)
    ]
    if len(fitting) == 1:
        out: list[tuple[ValidationError, str | None]] = []
        for sub in fitting[0]:
            out.extend(_leaf_errors(sub, error.schema.get("description")))
        return out
    return [(error, described)]


_JSON_TYPES = {"object": "a mapping", "array": "a list", "string": "a string", "integer": "an integer",
               "number": "a number", "boolean": "a boolean", "null": "null"}


def _message(error: ValidationError, described: str | None = None) -> str:
    value = error.instance
    shown = repr(value) if not isinstance(value, (dict, list)) else _type_name(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    v = error.validator
    if v == "additionalProperties":
        extra = sorted(set(value) - set(error.schema.get("properties", {})), key=str)
        known = ", ".join(sorted(error.schema.get("properties", {})))
        return f"unknown field{'s' if len(extra) > 1 else ''} {', '.join(repr(e) for e in extra)} (allowed here: {known})"
    if v == "required":
        return error.message.replace("is a required property", "is required here but missing")
    if v == "type":
        wanted = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
        got = _type_name(value) + ("" if isinstance(value, (dict, list, type(None))) else f" {shown}")
        return f"expected {' or '.join(_JSON_TYPES.get(t, t) for t in wanted)}, got {got}"
    if v == "enum":
        return f"{shown} is not one of {', '.join(repr(x) for x in error.validator_value)}"
    if v in ("oneOf", "anyOf"):
        desc = error.schema.get("description")
        return f"invalid value {shown}" + (f": expected {desc[0].lower() + desc[1:]}" if desc else "")
    if v == "pattern":  # a field's own description says its form; else the oneOf's that it is a branch of
        desc = error.schema.get("description") or described
        return f"{shown} has the wrong form" + (f": expected {desc[0].lower() + desc[1:]}" if desc else f" (must match {error.validator_value})")
    if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        return f"{shown} is out of range ({error.message.split(' is ', 1)[-1]})"
    return error.message


def schema_problems(doc: Document, schema_path: str | None = None) -> list[Problem]:
    """Every schema problem of one document, located in its file."""
    if is_valid(doc.data, schema_path):
        return []
    file_validator, list_validator = _validators(schema_path)
    if isinstance(doc.data, list):
        validator = list_validator
    elif isinstance(doc.data, dict):
        validator = file_validator
    else:
        return [doc.problem((), f"expected a mapping (Import/Models/Collections), got {_type_name(doc.data)}")]
    out: list[Problem] = []
    for top in validator.iter_errors(doc.data):
        for error, described in _leaf_errors(top):
            out.append(doc.problem(_where(error), _message(error, described)))
    return out


def _where(error: ValidationError) -> tuple:
    """The path of the value at fault; an unknown field is located at its own key, not at its parent."""
    path = tuple(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = error.schema.get("properties", {})
        extra = [k for k in error.instance if k not in known]
        return path + tuple(extra[:1])
    return path


def resolved_problems(items: Iterable, schema_path: str | None = None) -> list[Problem]:
    """What each model still lacks after inheritance, located where the incomplete mapping is written.

    ``items`` are resolved models (``inherit.py``); types were checked on the documents already.
    """
    validator = _resolved_validator(schema_path)
    out: list[Problem] = []
    for item in items:
        if isinstance(item.data, dict) and not is_valid(item.data, schema_path, "resolved"):
            for error in validator.iter_errors(item.data):
                out.append(item.problem(_where(error),
                                        f"{_message(error)} (neither the model nor its collection gives it)"))
    return out


def validate_documents(docs: Iterable[Document], schema_path: str | None = None) -> list[Problem]:
    problems: list[Problem] = []
    for doc in docs:
        problems.extend(schema_problems(doc, schema_path))
    return problems
