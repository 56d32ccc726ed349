"""Checks the schema cannot express: cross-file references, ranges of string-form numbers, consistency."""
from __future__ import annotations

import math
import re
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit

from .build import to_int, to_number
from .entries import RELEASE_NAME_RE
from .errors import Problem
from .schema import definition
from .sources import RawItem

FLOAT32_BYTES = 4
# A float32 checkpoint is parameters x 4 bytes plus BatchNorm buffers and container overhead.
FILE_SIZE_TOLERANCE = 0.03
EXPERTS_IN_NAME = re.compile(r"_(\d+)e$")


def _get(mapping: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(mapping, dict) or key not in mapping:
            return None
        mapping = mapping[key]
    return mapping


def _items(value: Any) -> list:
    """A list as it is, anything else as no items: the schema reports the wrong type, these checks skip it."""
    return value if isinstance(value, list) else []


def _number(value: Any, convert: Callable = to_number):
    """The value as a number, or None (the schema already reported a malformed one)."""
    if value is None:
        return None
    try:
        number = convert(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None  # the schema's forms are finite; belt and braces


def _check_range(item, where, value, problems, *, low=None, high=None, low_open=False, what="value", unit=""):
    number = _number(value)
    if number is None:
        return
    bad_low = low is not None and (number <= low if low_open else number < low)
    bad_high = high is not None and number > high
    if bad_low or bad_high:
        lo = "(" if low_open else "["
        rng = f"{lo}{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
        problems.append(item.problem(where, f"{what} {value!r} is out of range {rng}{unit}"))


_SPACE_RE = re.compile(r"\s")


def url_problem(url: str) -> str | None:
    """Why ``url`` is not an https URL to a named host, or None. Parsed, not prefix-matched."""
    shown = ascii(url if len(url) <= 80 else url[:77] + "...")
    if _SPACE_RE.search(url):
        return f"URL {shown} contains white space"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as exc:
        return f"URL {shown} cannot be parsed: {exc}"
    if parts.scheme != "https":
        return f"URL must use https, got {shown}"
    if not parts.hostname:
        return f"URL {shown} names no host"
    if parts.username is not None or parts.password is not None:
        return f"URL {shown} carries a user name or password; links in the index may not"
    return None


def _check_https(item: RawItem, where: tuple, url: Any, problems: list[Problem]) -> None:
    if isinstance(url, str):
        message = url_problem(url)
        if message:
            problems.append(item.problem(where, message))


def _check_paper(item: RawItem, problems: list[Problem]) -> None:
    paper = _get(item.data, "Paper")
    if isinstance(paper, str):  # the string form is the paper's URL (build.collection_entry links it)
        _check_https(item, ("Paper",), paper, problems)
    else:
        _check_https(item, ("Paper", "URL"), _get(paper, "URL"), problems)


def check_model(item: RawItem) -> list[Problem]:
    raw, problems = item.data, []
    if not isinstance(raw, dict):
        return problems
    name = raw.get("Name")
    for where in (("ID",), ("Metadata", "ID")):
        model_id = _get(raw, *where)
        if model_id is not None and model_id != name:
            problems.append(item.problem(where, f"ID {model_id!r} must equal Name {name!r}"))

    meta = raw.get("Metadata") if isinstance(raw.get("Metadata"), dict) else {}
    _check_range(item, ("Metadata", "Crop Pct"), meta.get("Crop Pct"), problems, low=0, high=1, low_open=True, what="Crop Pct")
    for key in ("Image Size", "FLOPs", "Parameters", "File Size", "Epochs", "Batch Size"):
        _check_range(item, ("Metadata", key), meta.get(key), problems, low=0, low_open=True, what=key)
    for key in ("Momentum", "RMSProp Decay", "Label Smoothing", "BatchNorm Momentum"):
        _check_range(item, ("Metadata", key), meta.get(key), problems, low=0, high=1, what=key)
    for key in ("LR", "Weight Decay"):
        _check_range(item, ("Metadata", key), meta.get(key), problems, low=0, what=key)

    for i, result in enumerate(_items(raw.get("Results"))):
        metrics = _get(result, "Metrics") or {}
        if isinstance(metrics, dict):
            for metric, value in metrics.items():
                if "accuracy" in str(metric).lower():
                    _check_range(item, ("Results", i, "Metrics", metric), value, problems, low=0, high=100,
                                 what=str(metric), unit=" (percent)")

    for where in (("Code",), ("Weights",)):
        _check_https(item, where, _get(raw, *where), problems)
    _check_paper(item, problems)
    for i, erratum in enumerate(_items(raw.get("Errata"))):
        _check_https(item, ("Errata", i, "Source"), _get(erratum, "Source"), problems)
        field = _get(erratum, "Field")
        if isinstance(field, str) and _get(raw, *field.split(".")) is None:
            problems.append(item.problem(("Errata", i, "Field"), f"erratum names field {field!r}, which this model does not have"))

    weights = raw.get("Weights")
    if isinstance(weights, str):
        filename = weights.rsplit("/", 1)[-1]
        if not RELEASE_NAME_RE.match(filename):
            problems.append(item.problem(("Weights",), f"release file name {filename!r} must carry the first 8 hex "
                                         "digits of its SHA-256, as in 'name-4362b6b2.pth'"))

    params = _number(meta.get("Parameters"), to_int)
    size = _number(meta.get("File Size"), to_int)
    if params and size and params > 0:
        expected = params * FLOAT32_BYTES
        if abs(size - expected) / expected > FILE_SIZE_TOLERANCE:
            problems.append(item.problem(
                ("Metadata", "File Size"),
                f"File Size {size:,} bytes disagrees with Parameters {params:,}: a float32 checkpoint holds about "
                f"{expected:,} bytes (allowed {FILE_SIZE_TOLERANCE:.0%} apart, found {abs(size - expected) / expected:.1%})"))

    data = raw.get("Data Config") if isinstance(raw.get("Data Config"), dict) else {}
    for i, value in enumerate(_items(data.get("Std"))):
        _check_range(item, ("Data Config", "Std", i), value, problems, low=0, low_open=True, what="Std")
    for i, value in enumerate(_items(data.get("Mean"))):
        _check_range(item, ("Data Config", "Mean", i), value, problems, low=0, high=1, what="Mean")
    _check_range(item, ("Data Config", "Num Classes"), data.get("Num Classes"), problems, low=0, low_open=True, what="Num Classes")

    arch = raw.get("Architecture Config") if isinstance(raw.get("Architecture Config"), dict) else {}
    stages = arch.get("Stages") if isinstance(arch.get("Stages"), list) else []
    for i, stage in enumerate(stages):
        kernel = _number(_get(stage, "Kernel"), to_int)  # 3.0 is a whole number too: checked, not skipped
        if kernel is not None and kernel % 2 == 0:
            problems.append(item.problem(("Architecture Config", "Stages", i, "Kernel"), f"kernel size {kernel} must be odd"))
    match = EXPERTS_IN_NAME.search(str(name or ""))
    if match and stages:
        # Whole numbers written as floats (8.0) are checked too, not skipped; defaults come from the schema.
        multiplier = _number(arch.get("Experts Multiplier",
                                      definition("architectureConfig")["properties"]["Experts Multiplier"]["default"]), to_int)
        no_experts = definition("stage")["properties"]["Experts"]["default"]
        experts = [_number(s.get("Experts", no_experts), to_int) for s in stages if isinstance(s, dict)]
        base = max(experts, default=no_experts) if None not in experts else None  # the schema reports other types
        if multiplier is not None and base is not None and base * multiplier != int(match[1]):
            problems.append(item.problem(
                ("Architecture Config", "Experts Multiplier"),
                f"name {name!r} says {match[1]} experts, but the config gives {base} base experts x "
                f"Experts Multiplier {multiplier} = {base * multiplier}"))
    return problems


def check_collection(item: RawItem) -> list[Problem]:
    problems: list[Problem] = []
    if isinstance(item.data, dict):
        _check_paper(item, problems)
    return problems


def _case_note(name: str, first: RawItem) -> str:
    other = _get(first.data, "Name")
    return f" (as {other!r}, which differs only in case)" if other != name else ""


def check_index(models: Iterable[RawItem], collections: Iterable[RawItem]) -> list[Problem]:
    """Cross-item checks: unique names, collections that exist; plus each item's own checks."""
    models, collections = list(models), list(collections)
    problems: list[Problem] = []
    # Names are compared case-insensitively: ids become file and page names, and a case-insensitive
    # file system (or a user typing the id) cannot tell tf_x from TF_X apart.
    seen: dict[str, RawItem] = {}
    collection_names: set[str] = set()
    for item in collections:
        problems.extend(check_collection(item))
        name = _get(item.data, "Name")
        if isinstance(name, str):
            collection_names.add(name)
            if name.casefold() in seen:
                first = seen[name.casefold()]
                line, _ = first.doc.locate(first.path)
                problems.append(item.problem(("Name",), f"collection {name!r} is defined twice"
                                             f"{_case_note(name, first)} (also at {first.doc.file}:{line})"))
            else:
                seen[name.casefold()] = item
    seen_models: dict[str, RawItem] = {}
    for item in models:
        problems.extend(check_model(item))
        name = _get(item.data, "Name")
        if not isinstance(name, str):
            continue
        if name.casefold() in seen_models:
            first = seen_models[name.casefold()]
            line, _ = first.doc.locate(first.path + ("Name",))
            problems.append(item.problem(("Name",), f"model {name!r} is defined twice{_case_note(name, first)} "
                                                    f"(first at {first.doc.file}:{line}); names must be unique "
                                                    "across all files, ignoring case"))
        else:
            seen_models[name.casefold()] = item
        collection = _get(item.data, "In Collection")
        if isinstance(collection, str) and collection not in collection_names:
            known = ", ".join(repr(c) for c in sorted(collection_names)) or "none defined"
            problems.append(item.problem(("In Collection",), f"unknown collection {collection!r} (collections: {known})"))
    return problems
