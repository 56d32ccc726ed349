"""Validating a large generated index (issue 13.5): correct results and locations on the fast path.

Time and memory are measured by ``tests/tools/scale_validate.py``, not here (no timed unit tests).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from registry import index as index_mod
from registry.cli import main

_spec = importlib.util.spec_from_file_location("scale_validate", Path(__file__).parent / "tools" / "scale_validate.py")
scale_validate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(scale_validate)


@pytest.fixture(scope="module")
def big_index(tmp_path_factory):
    return scale_validate.generate(tmp_path_factory.mktemp("scale"), models=60, files=4)


def test_generated_index_is_valid(capsys, big_index):
    assert main(["validate", str(big_index)]) == 0
    assert "60 models" in capsys.readouterr().out


def test_deep_problem_is_located_in_a_large_file(capsys, big_index, tmp_path):
    part = big_index.parent / "models" / "part002.yml"
    original = part.read_text()
    try:
        # The 7th model's Top 1 Accuracy: a path past the depth whose positions are kept while reading.
        lines = original.splitlines(keepends=True)
        starts = [i for i, ln in enumerate(lines) if ln.startswith("  - Name:")]
        target = next(i for i in range(starts[6], starts[7]) if "Top 1 Accuracy:" in lines[i])
        lines[target] = lines[target].split(":")[0] + ": 177.3%\n"
        lines[starts[8] + 1] = lines[starts[8] + 1].replace("ID: v", "ID: w")
        part.write_text("".join(lines))
        assert main(["validate", str(big_index)]) == 1
        out = capsys.readouterr().out
        assert f"part002.yml:{target + 1}:" in out and "out of range [0, 100]" in out
        assert f"part002.yml:{starts[8] + 2}:" in out and "must equal Name" in out
        assert "$.Models[6].Results[0].Metrics['Top 1 Accuracy']" in out
    finally:
        part.write_text(original)


def test_validating_an_imported_file_reads_each_file_once(monkeypatch, big_index):
    from registry import sources

    reads: list[str] = []
    real = sources.read_text
    monkeypatch.setattr(sources, "read_text", lambda path, display: reads.append(str(Path(path).resolve())) or real(path, display))
    part = big_index.parent / "models" / "part001.yml"
    found, problems = index_mod.check(part)
    assert not problems and len(found.models) == 15
    assert len(reads) == len(set(reads)) == 6  # root, collection page, 4 parts


def test_fast_schema_path_is_on_for_the_packaged_schema():
    """fastjsonschema answers only while the schema keeps to keywords it reads as jsonschema does; a new keyword
    silently sends every document through jsonschema (correct, ~30x slower at scale). Extend FAST_KEYWORDS only
    after checking fastjsonschema's reading of it (tests/test_registry_fuzz.py compares the two)."""
    from registry import schema

    extra = schema.schema_keywords(schema.load_schema()) - schema.FAST_KEYWORDS
    assert not extra, f"schema keywords outside FAST_KEYWORDS: {sorted(extra)}"
    assert schema.is_valid({"Models": []}) is True and schema.is_valid({"Models": 5}) is False
