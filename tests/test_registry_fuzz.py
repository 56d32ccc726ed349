"""Property-based fuzzing of the index reader (issue 13.2): mutate the packaged index (bytes, YAML tokens,
values, types, tags, unicode) and hold every command to the contract.

- ``validate``, ``show --format json``, ``list --format json`` and ``docs`` end with exit 0, 1 or 2,
  never an exception or a traceback;
- on exit 1, validate's problems are located (file, line, column, a ``$`` path, a message);
- ``show --format json`` prints RFC 8259 JSON (``json.loads`` with NaN/Infinity refused);
- the fast schema check agrees with jsonschema, the reference implementation, on mutated documents.

CI runs a short, derandomised budget. For a long random run: ``CC_FUZZ_EXAMPLES=2000 pytest tests/test_registry_fuzz.py``.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import model_index
from registry.cli import main

pytestmark = pytest.mark.slow  # ~15 s on 2 idle cores in all

LONG_RUN = "CC_FUZZ_EXAMPLES" in os.environ
EXAMPLES = int(os.environ.get("CC_FUZZ_EXAMPLES", "40"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=not LONG_RUN, database=None,
                suppress_health_check=list(HealthCheck))

FILES = ["model-index.yml", "collections/tf-efficientnet-condconv.md", "models/tf_efficientnet_cc_b0_4e.yml",
         "models/tf_efficientnet_cc_b0_8e.yml", "models/tf_efficientnet_cc_b1_8e.yml"]
MODEL_IDS = ["tf_efficientnet_cc_b0_4e", "tf_efficientnet_cc_b0_8e", "tf_efficientnet_cc_b1_8e", "TF_EFFICIENTNET_CC_B0_4E"]
ORIGINAL = {rel: (model_index.INDEX_DIR / rel).read_bytes() for rel in FILES}

YAML_TOKENS = ["[", "]", "{", "}", ",", ": ", "- ", "? ", "&a ", "*a", "*zz", "<<: ", "<<: *a", "!!python/object/new:os.system ",
               "!!python/tuple ", "!evil ", "!!int ", "!!float ", "!!binary ", "!!set ", "!!omap ", "!!timestamp ", "|\n",
               ">-\n", '"', "'", "#", "\t", "%YAML 1.1\n", "---\n", "...\n", "\n", "\n  ", "~", "@", "`", "\\", "\x00",
               "\x01", "\x85", "\u2028", "\ufeff", "\u0435", "<!--", "-->", "{{ ", " }}", "{% ", " %}"]
HOSTILE_VALUES = [".nan", ".NaN", ".inf", "-.inf", "1.0e+309", "'1.0e+309'", "1e-400", "9" * 30, "'" + "9" * 30 + "'",
                  "9" * 5000, "0x7fffffffffffffff", "0b101", "0o17", "017", "1_000", "1:30", "8.0", "-1", "0", "''", "~",
                  "[]", "{}", "yes", "no", "2020-01-01", '"\\ud800"', '"\\x01"', '"\\0"', '"a\\n"', "javascript:alert(1)",
                  "https://", "https://u:p@host/x", "http://x", "https://x/../..", "../../../../etc/model.safetensors",
                  "<b>x</b>", "tf_efficientnet_cc_b0_4\u0435", "TF_EFFICIENTNET_CC_B0_4E", "{a: [1, {b: 2}]}",
                  "!!python/object/new:os.system [echo]", "*undefined", "&x [*x]", "'{{ 7 * 7 }}'", "'{% for %}'"]
VALUE_LINE = re.compile(rb"^(\s*(?:- )?[A-Za-z][A-Za-z0-9 ]*: )(\S.*)$", re.M)


@st.composite
def mutations(draw) -> tuple[str, bytes]:
    """One file of the index and its mutated bytes."""
    rel = draw(st.sampled_from(FILES))
    data = ORIGINAL[rel]
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["bytes", "token", "value", "value", "unicode", "delete"]))
        at = draw(st.integers(0, len(data)))
        if kind == "bytes":
            data = data[:at] + draw(st.binary(min_size=1, max_size=4)) + data[at:]
        elif kind == "token":
            data = data[:at] + draw(st.sampled_from(YAML_TOKENS)).encode("utf-8", "surrogatepass") + data[at:]
        elif kind == "delete":
            data = data[:at] + data[at + draw(st.integers(1, 40)):]
        elif kind == "unicode":
            text = draw(st.text(st.characters(codec="utf-8", exclude_categories=()), min_size=1, max_size=6))
            data = data[:at] + text.encode("utf-8", "surrogatepass") + data[at:]
        else:  # a value (scalar after "Key: ") replaced by a hostile or arbitrary one
            lines = list(VALUE_LINE.finditer(data))
            if lines:
                line = lines[draw(st.integers(0, len(lines) - 1))]
                value = draw(st.one_of(st.sampled_from(HOSTILE_VALUES),
                                       st.text(min_size=0, max_size=12).map(lambda t: json.dumps(t))))
                data = data[:line.start(2)] + value.encode("utf-8", "surrogatepass") + data[line.end(2):]
    return rel, data


@pytest.fixture(scope="module")
def index_dir():
    with tempfile.TemporaryDirectory(prefix="cc-fuzz-") as tmp:
        root = Path(tmp) / "index"
        shutil.copytree(model_index.INDEX_DIR, root, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
        yield root


@contextlib.contextmanager
def mutated(root: Path, rel: str, data: bytes):
    path = root / rel
    path.write_bytes(data)
    try:
        yield
    finally:
        path.write_bytes(ORIGINAL[rel])


def run(*argv: str) -> tuple[int, str, str]:
    """The CLI in this process; any escaping exception fails the property with the arguments shown."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse
            code = exc.code
    text = out.getvalue() + err.getvalue()
    assert code in (0, 1, 2), f"{argv}: exit {code}\n{text}"
    assert "Traceback" not in text, f"{argv}: traceback\n{text}"
    return code, out.getvalue(), err.getvalue()


def refuse_constant(name: str):
    raise AssertionError(f"{name} in JSON output: not RFC 8259")


def assert_validate_contract(root: Path) -> int:
    code, out, _ = run("validate", str(root), "--format", "json")
    report = json.loads(out, parse_constant=refuse_constant)
    problems = [p for r in report["reports"] for p in r["problems"]]
    assert (code == 0) == report["valid"] == (not problems)
    for p in problems:
        assert p["file"] and p["path"].startswith("$") and p["message"].strip(), p
        assert p["line"] >= 1 or "file" in p["message"] or "read" in p["message"] or p["line"] == 0, p
        assert p["column"] >= 0 and (p["line"] == 0) == (p["column"] == 0), p
    return code


@FUZZ
@given(mutation=mutations())
def test_validate_show_list_keep_the_contract(index_dir, mutation):
    rel, data = mutation
    with mutated(index_dir, rel, data):
        valid = assert_validate_contract(index_dir) == 0
        for model_id in MODEL_IDS[:2]:
            code, out, _ = run("show", model_id, "--format", "json", "--index", str(index_dir))
            if code == 0:
                assert valid and json.loads(out, parse_constant=refuse_constant)["id"] == model_id
            else:
                assert code == (2 if valid else 1)
        code, out, _ = run("list", "--format", "json", "--index", str(index_dir))
        assert code == (0 if valid else 1)
        if code == 0:
            assert isinstance(json.loads(out, parse_constant=refuse_constant), list)


@settings(FUZZ, max_examples=max(4, EXAMPLES // 8))
@given(mutation=mutations())
def test_docs_keeps_the_contract(index_dir, mutation):
    rel, data = mutation
    out = index_dir.parent / "docs"
    with mutated(index_dir, rel, data):
        code, _, err = run("docs", "--index", str(index_dir), "--out", str(out), "--results", str(index_dir / "none"))
        if code == 1:
            assert err.strip()
    shutil.rmtree(out, ignore_errors=True)


@settings(FUZZ, max_examples=3)
@given(mutation=mutations())
def test_cli_process_keeps_the_contract(index_dir, mutation):
    rel, data = mutation
    with mutated(index_dir, rel, data):
        result = subprocess.run([sys.executable, "-m", "registry.cli", "validate", str(index_dir)],
                                capture_output=True, timeout=300)
    assert result.returncode in (0, 1, 2) and b"Traceback" not in result.stderr + result.stdout


# ---------------------------------------------------------------------------
# The fast schema check against jsonschema (the reference) on mutated documents
# ---------------------------------------------------------------------------

JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-(2 ** 70), 2 ** 70) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10) | st.sampled_from(["240", " 0.875 ", "77.3%", "1e5", "a\n", "https://x", "bicubic", "ir", "8"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=6,
)


def _paths(value, path=()):
    yield path
    if isinstance(value, dict):
        for key, sub in value.items():
            yield from _paths(sub, path + (key,))
    elif isinstance(value, list):
        for i, sub in enumerate(value):
            yield from _paths(sub, path + (i,))


def _replace(value, path, new):
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _replace(value[head], rest, new)}
    return [_replace(v, rest, new) if i == head else v for i, v in enumerate(value)]


def _documents():
    from registry import sources

    return [d.data for d in sources.collect(model_index.root()).documents]


DOCUMENTS = _documents()


@settings(FUZZ, max_examples=EXAMPLES * 5)
@given(data=st.data())
def test_fast_schema_check_agrees_with_jsonschema(data):
    from registry import schema

    document = data.draw(st.sampled_from(DOCUMENTS))
    for _ in range(data.draw(st.integers(1, 3))):
        paths = list(_paths(document))
        path = data.draw(st.sampled_from(paths))
        if data.draw(st.booleans()) and isinstance(document, dict) and not path:
            continue
        document = _replace(document, path, data.draw(JSONISH))
    if schema._fast_validators() is None:
        pytest.skip("the schema uses a keyword outside FAST_KEYWORDS: the fast path is off")
    assume(isinstance(document, (dict, list)))
    fast = schema.is_valid(document)
    file_validator, list_validator = schema._validators()
    validator = list_validator if isinstance(document, list) else file_validator
    reference = not any(True for _ in validator.iter_errors(document))
    assert fast == reference, document
    models = document.get("Models") if isinstance(document, dict) else document
    for model in models if isinstance(models, list) else ():
        if isinstance(model, dict):  # the check of a model after inheritance
            resolved = not any(True for _ in schema._resolved_validator().iter_errors(model))
            assert schema.is_valid(model, root="resolved") == resolved, model
