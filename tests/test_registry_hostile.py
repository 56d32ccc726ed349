"""Hostile and careless index input (issue 13): each case ends in exit 1 and a located message naming the real
problem, never a traceback, a hang or a value silently accepted.

The oracle for "accepted" is the YAML and URL specifications themselves: PyYAML's own safe loader and
``urllib.parse`` are asked what the text means, and the index must refuse what they say is not a plain value.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from registry.cli import main
from test_registry_validation import B0, assert_located, edit, index_copy, line_of, validate  # noqa: F401

B0_8E = "models/tf_efficientnet_cc_b0_8e.yml"
COLLECTION = "collections/tf-efficientnet-condconv.md"
NAME_LINES = "  - Name: tf_efficientnet_cc_b0_4e\n    ID: tf_efficientnet_cc_b0_4e\n"


def _names(new: str) -> str:
    return f"  - Name: {new}\n    ID: {new}\n"


# (file, text in it, replacement, text of the reported line, phrases of the message)
CASES = {
    "C0 control in a scalar": (B0, "Revision: main", "Revision: ma\x01in", "Revision", ["U+0001"]),
    "NUL in a scalar": (B0, "Revision: main", "Revision: ma\x00in", "Revision", ["U+0000"]),
    "C1 control in a scalar": (COLLECTION, "        - Swish", "        - Sw\u0080ish", "Sw", ["U+0080"]),
    "control in a markdown block": (COLLECTION, "Name: TF EfficientNet CondConv", "Name: TF EfficientNet\x01 CondConv",
                                    "Name: TF EfficientNet", ["U+0001"]),
    "control written as an escape": (B0, "Revision: main", 'Revision: "ma\\x01in"', "Revision", ["U+0001", "escape"]),
    "http URL deep in a markdown block": (COLLECTION, "URL: https://arxiv.org", "URL: http://arxiv.org",
                                          "URL: http://arxiv", ["must use https"]),
    "tag on a key": (B0, "      File Size: 53490940", "      !evil File Size: 53490940", "!evil", ["'!evil'", "key"]),
    "tag on a key in flow": (COLLECTION, "- {Block: ds", "- {!evil Block: ds", "!evil Block", ["'!evil'"]),
    "explicit int tag on text": (B0, "File Size: 53490940", "File Size: !!int abc", "File Size: !!int", ["'abc'", "!!int"]),
    "merge key with a scalar": (B0, "      File Size: 53490940", "      <<: 5\n      File Size: 53490940", "<<: 5",
                                ["merge key"]),
    "merge key with scalars": (B0, "      File Size: 53490940", "      <<: [1, 2]\n      File Size: 53490940", "<<: [1",
                               ["merge key"]),
    "1,000 nested flow lists": (B0, "File Size: 53490940", "File Size: " + "[" * 1000 + "]" * 1000, "File Size: [[",
                                ["nesting"]),
    "integer of 400 digits": (B0, "FLOPs: 410171168", "FLOPs: " + "9" * 400, "FLOPs", ["400 characters"]),
    "integer of 5,000 digits": (B0, "File Size: 53490940", "File Size: " + "9" * 5000, "File Size", ["5,000 characters"]),
    "integer past 64 bits": (B0, "File Size: 53490940", "File Size: 99999999999999999999", "File Size", ["64 bits"]),
    "integer string of 5,000 digits": (B0, "FLOPs: 410171168", f"FLOPs: '{'9' * 5000}'", "FLOPs", ["wrong form"]),
    "NaN": (B0, "Crop Pct: '0.875'", "Crop Pct: .nan", "Crop Pct", ["NaN"]),
    "infinity": (B0, "Image Size: '224'", "Image Size: '224'\n      LR: .inf", "LR:", ["infinity"]),
    "float overflowing to infinity": (B0, "Image Size: '224'", "Image Size: '224'\n      LR: 1.0e+309", "LR:", ["finite"]),
    "string float overflowing to infinity": (B0, "Image Size: '224'", "Image Size: '224'\n      LR: '1.0e+309'", "LR:",
                                             ["finite number"]),
    "python tag on a mapping": (B0, "    Hub:\n", "    Hub: !!python/object/new:os.system\n", "Hub:",
                                ["!!python/object/new:os.system", "not allowed"]),
    "python tag on a sequence": (B0, "    Results:\n", "    Results: !!python/tuple\n", "Results:", ["!!python/tuple"]),
    "Name ending in a newline": (B0, "  - Name: tf_efficientnet_cc_b0_4e\n", '  - Name: "tf_efficientnet_cc_b0_4e\\n"\n',
                                 "- Name:", ["wrong form", "plain ASCII name"]),
    "SHA256 ending in a newline": (B0, "      Revision: main\n", f'      Revision: main\n      SHA256: "{"a" * 64}\\n"\n',
                                   "SHA256", ["wrong form", "64 hex"]),
    "whole number written as a float": (B0_8E, "Experts Multiplier: 2", "Experts Multiplier: 1.0", "Experts Multiplier",
                                        ["says 8 experts"]),
    "even kernel written as a float": (COLLECTION, "Kernel: 3, Stride: 1, Expansion: 1", "Kernel: 4.0, Stride: 1, Expansion: 1",
                                       "Kernel: 4.0", ["must be odd"]),
    "javascript: as a collection's Paper": (
        COLLECTION, "    Paper:\n      Title: 'CondConv: Conditionally Parameterized Convolutions for Efficient Inference'\n"
                    "      URL: https://arxiv.org/abs/1904.04971\n",
        "    Paper: javascript:alert(1)\n", "Paper: javascript", ["https"]),
    "https with no host": (B0, "Code: https://github.com/", "Code: https:///", "Code:", ["names no host"]),
    "https with a user name": (B0, "Code: https://github.com/", "Code: https://me:pw@github.com/", "Code:", ["user name"]),
    "Hub file name leaving the folder": (B0, "Filename: model.safetensors", "Filename: ../../../../etc/model.safetensors",
                                         "Filename", ["plain file name"]),
    "Hub repo with ..": (B0, "Repo: timm/tf_efficientnet_cc_b0_4e.in1k", "Repo: timm/..", "Repo:", ["wrong form"]),
    "Name with a path separator": (B0, NAME_LINES, _names("../evil"), "- Name:", ["plain ASCII name", "path separators"]),
    "Name with HTML": (B0, NAME_LINES, _names("<b>x</b>"), "- Name:", ["plain ASCII name"]),
    "Name with a confusable": (B0, NAME_LINES, _names("tf_efficientnet_cc_b0_4\u0435"), "- Name:", ["look-alike"]),
    "ids differing only in case": (B0_8E, _names("tf_efficientnet_cc_b0_8e"), _names("TF_EFFICIENTNET_CC_B0_4E"),
                                   "- Name:", ["differs only in case", "ignoring case"]),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_hostile_value_is_located(capsys, index_copy, case):
    rel, old, new, needle, phrases = CASES[case]
    f = index_copy / rel
    edit(f, old, new)
    code, text = validate(capsys, index_copy)
    assert code == 1, text
    assert_located(text, f, line_of(f, needle), *phrases)


def test_what_pyyaml_refuses_or_misreads_is_refused():
    """The oracle: PyYAML's safe loader itself raises on or turns these into non-plain values."""
    for text in ("a: !!python/object/new:os.system [x]", "a: !!int abc", "a: {<<: 5}"):
        with pytest.raises((yaml.YAMLError, ValueError)):
            yaml.safe_load(text)
    assert yaml.safe_load("a: .nan")["a"] != yaml.safe_load("a: .nan")["a"]  # NaN: not a JSON number
    assert yaml.safe_load("a: 1.0e+309")["a"] == float("inf")


def test_show_json_is_rfc8259_or_refused(capsys, index_copy):
    f = index_copy / B0
    edit(f, "Crop Pct: '0.875'", "Crop Pct: .nan")
    code = main(["show", "tf_efficientnet_cc_b0_4e", "--format", "json", "--index", str(index_copy)])
    out = capsys.readouterr()
    assert code == 1 and "NaN" not in out.out and "Crop Pct" in out.err
    edit(f, "Crop Pct: .nan", "Crop Pct: '0.875'")
    assert main(["show", "tf_efficientnet_cc_b0_4e", "--format", "json", "--index", str(index_copy)]) == 0
    json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"{c} in show's JSON"))


def test_merge_keys_still_work_and_explicit_keys_win(tmp_path):
    from registry.yaml_io import parse_yaml

    text = "base: &b {x: 1, y: 2}\nother: &o {y: 3, z: 4}\nm:\n  <<: [*b, *o]\n  x: 9\n"
    assert parse_yaml(text, "t.yml").data["m"] == yaml.safe_load(text)["m"] == {"x": 9, "y": 2, "z": 4}


def test_merge_bomb_is_bounded():
    from registry.yaml_io import YamlProblems, parse_yaml

    lines = ["a0: &a0 {k: v}"] + [f"a{i}: &a{i} {{<<: [*a{i - 1}, *a{i - 1}], k{i}: v}}" for i in range(1, 40)]
    with pytest.raises(YamlProblems) as info:
        parse_yaml("\n".join(lines) + "\n", "bomb.yml")
    assert "more than" in str(info.value)


def test_surrogate_escape_is_refused_by_both_loaders(capsys, index_copy, monkeypatch):
    from registry import yaml_io

    f = index_copy / B0
    edit(f, "Revision: main\n", 'Revision: "ma\\ud800in"\n')
    code, text = validate(capsys, index_copy)
    assert code == 1 and f.name in text
    assert main(["docs", "--index", str(index_copy), "--out", str(index_copy / "out"), "--results",
                 str(index_copy / "none")]) == 1
    assert not (index_copy / "out").exists()
    # PyYAML's pure-Python loader (used where PyYAML lacks libyaml) accepts the escape: the built value is checked.
    monkeypatch.setattr(yaml_io, "_Loader", yaml.SafeLoader)
    with pytest.raises(yaml_io.YamlProblems) as info:
        yaml_io.parse_yaml('a: "x\\ud800"\n', "t.yml")
    assert "U+D800" in str(info.value)


# ---------------------------------------------------------------------------
# Files that are not what they claim: each read bounded, non-regular files refused
# ---------------------------------------------------------------------------

def _validate_process(*paths, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "registry.cli", "validate", *map(str, paths)],
                          capture_output=True, text=True, timeout=timeout)


def test_fifo_on_the_command_line_does_not_hang(tmp_path):
    fifo = tmp_path / "index.yml"
    os.mkfifo(fifo)
    result = _validate_process(fifo)  # a hang fails by TimeoutExpired
    assert result.returncode == 1 and "not a regular file" in result.stdout and "Traceback" not in result.stderr


def test_symlink_to_dev_zero_is_refused(capsys, index_copy):
    (index_copy / "zero.yml").symlink_to("/dev/zero")
    edit(index_copy / "model-index.yml", "Import:\n", "Import:\n  - zero.yml\n")
    code, text = validate(capsys, index_copy)
    assert code == 1 and "zero.yml" in text
    code, text = validate(capsys, index_copy / "zero.yml")
    assert code == 1 and "not a regular file" in text


def test_symlink_loop(capsys, index_copy):
    loop = index_copy / "loop.yml"
    loop.symlink_to(loop)
    code, text = validate(capsys, loop)
    assert code == 1 and "symlink loop" in text
    root = index_copy / "model-index.yml"
    edit(root, "Import:\n", "Import:\n  - loop.yml\n")
    code, text = validate(capsys, index_copy)
    assert code == 1
    assert_located(text, root, line_of(root, "loop.yml"), "loop.yml")


def test_nul_in_an_import_path(capsys, index_copy):
    root = index_copy / "model-index.yml"
    edit(root, "Import:\n", 'Import:\n  - "models/x\\0.yml"\n')
    code, text = validate(capsys, index_copy)
    assert code == 1
    assert_located(text, root, line_of(root, "models/x"), "U+0000")


def test_folder_named_like_an_index_file(capsys, index_copy):
    (index_copy / "dir.yml").mkdir()
    root = index_copy / "model-index.yml"
    edit(root, "Import:\n", "Import:\n  - dir.yml\n")
    code, text = validate(capsys, index_copy)
    assert code == 1
    assert_located(text, root, line_of(root, "dir.yml"), "not a file")


def test_cc_bench_reads_the_index_to_the_same_contract(capsys, index_copy):
    from bench.cli import main as bench_main

    f = index_copy / B0
    edit(f, "FLOPs: 410171168", "FLOPs: " + "9" * 5000)
    code = bench_main(["run", "tf_efficientnet_cc_b0_4e", "--checks", "params", "--index", str(index_copy),
                       "--results", str(index_copy / "results")])
    out = capsys.readouterr()
    assert code == 1 and "Traceback" not in out.err and f"{f.name}:{line_of(f, 'FLOPs')}:" in out.err


def test_pathological_markdown_pages_do_not_hang(tmp_path):
    """Regular expressions that are quadratic on 1 MiB of `<!--` or of blank lines would hang for hours."""
    unclosed = tmp_path / "unclosed.md"
    unclosed.write_text("# page\n" + "<!--" * 200_000)
    blank = tmp_path / "blank.md"
    blank.write_text("<!--\n" + "\n" * 300_000 + " " * 300_000 + "-->\n")
    many = tmp_path / "many.md"
    many.write_text("".join("<!--\nType: model-index\nModels: []\n-->\n" for _ in range(10_000)))
    result = _validate_process(unclosed, blank, many, timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stdout.count("has no '<!-- Type: model-index ... -->' block") == 2
