"""Bad input is rejected with exit 1 and a located message (file:line:column: path: message), never a traceback."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import model_index
from registry.cli import main

SEED = Path(__file__).resolve().parent / "fixtures" / "reference" / "tf-efficientnet-condconv.scraped.md"
B0 = "models/tf_efficientnet_cc_b0_4e.yml"
PAGE = "collections/tf-efficientnet-condconv.md"


@pytest.fixture
def index_copy(tmp_path):
    root = tmp_path / "index"
    shutil.copytree(model_index.INDEX_DIR, root, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    return root


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"fixture text {old!r} not in {path.name}"
    path.write_text(text.replace(old, new, 1))


def line_of(path: Path, needle: str) -> int:
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in {path}")


def validate(capsys, *paths) -> tuple[int, str]:
    code = main(["validate", *map(str, paths)])
    out = capsys.readouterr()
    text = out.out + out.err
    assert "Traceback" not in text
    return code, text


def assert_located(text: str, file: Path, line: int, *phrases: str) -> None:
    pattern = re.compile(rf"{re.escape(file.name)}:{line}:\d+: \$[^:]*: ")
    matching = [ln for ln in text.splitlines() if pattern.search(ln)]
    assert matching, f"no problem located at {file.name}:{line} in:\n{text}"
    for phrase in phrases:
        assert any(phrase in ln for ln in matching), f"{phrase!r} not in {matching}"


def test_packaged_index_is_valid(capsys):
    code, text = validate(capsys)
    assert code == 0 and "OK" in text and "3 models" in text


def test_seed_page_as_scraped(capsys):
    code, text = validate(capsys, SEED)
    assert code == 1
    assert_located(text, SEED, line_of(SEED, "Metadata:"), "lost its indentation", "Indent")


def test_duplicate_key(capsys, index_copy):
    f = index_copy / B0
    edit(f, "      FLOPs: 410171168\n", "      FLOPs: 410171168\n      FLOPs: 1\n")
    code, text = validate(capsys, index_copy)
    assert code == 1
    assert_located(text, f, line_of(f, "FLOPs: 1"), "duplicate key 'FLOPs'", f"line {line_of(f, 'FLOPs: 410171168')}")


def test_yaml_syntax_error(capsys, index_copy):
    f = index_copy / B0
    edit(f, "      FLOPs: 410171168", "      FLOPs: [410171168")
    code, text = validate(capsys, index_copy)
    assert code == 1
    assert_located(text, f, line_of(f, "FLOPs: [410171168") + 1, "YAML syntax error")


def test_tab_indentation(capsys, index_copy):
    f = index_copy / B0
    edit(f, "      Parameters: 13310000", "\tParameters: 13310000")
    code, text = validate(capsys, index_copy)
    assert code == 1
    assert_located(text, f, line_of(f, "\tParameters"), "tab character")


def test_wrong_types(capsys, index_copy):
    f, page = index_copy / B0, index_copy / PAGE
    edit(f, "FLOPs: 410171168", "FLOPs: lots")
    edit(page, "Repeats: 2, Kernel: 3", "Repeats: two, Kernel: 3")  # inherited values: located where written
    edit(page, "Training Data:\n        - ImageNet", "Training Data: {a: 1}")
    code, text = validate(capsys, index_copy)
    assert code == 1
    assert_located(text, f, line_of(f, "FLOPs: lots"), "'lots' has the wrong form", "whole number")
    assert_located(text, page, line_of(page, "Repeats: two"), "expected an integer, got a string 'two'")
    assert_located(text, page, line_of(page, "Training Data"), "Training Data")


def test_out_of_range_values(capsys, index_copy):
    f = index_copy / B0
    edit(f, "Crop Pct: '0.875'", "Crop Pct: '1.5'")
    edit(f, "Top 1 Accuracy: 77.324%", "Top 1 Accuracy: 177.3%")
    edit(f, "Image Size: '224'", "Image Size: '-224'")
    code, text = validate(capsys, index_copy)
    assert code == 1
    assert_located(text, f, line_of(f, "Crop Pct"), "out of range (0, 1]")
    assert_located(text, f, line_of(f, "Top 1 Accuracy"), "out of range [0, 100]")
    assert_located(text, f, line_of(f, "Image Size"), "Image Size '-224' is out of range")


def test_problems_in_inherited_values_are_located_where_the_value_is_written(capsys, index_copy):
    page, b1 = index_copy / PAGE, index_copy / "models" / "tf_efficientnet_cc_b1_8e.yml"
    edit(page, "Kernel: 5, Stride: 1", "Kernel: 4, Stride: 1")
    edit(page, "      Momentum: 0.9\n", "      Momentum: 1.5\n")
    edit(page, "      Stem Size: 32\n", "")
    edit(b1, "      Depth Multiplier: 1.1\n", "      Depth Multiplier: 1.1\n      Stem Size: 32\n")
    code, text = validate(capsys, index_copy)
    assert code == 1
    # Once for the three models that inherit it, at the collection page's line.
    assert_located(text, page, line_of(page, "Kernel: 4"), "kernel size 4 must be odd")
    assert_located(text, page, line_of(page, "Momentum: 1.5"), "Momentum 1.5 is out of range [0, 1]")
    assert text.count("must be odd") == 1 and text.count("Momentum 1.5") == 1
    # A field missing from the merged mapping: at each model that lacks it, not at the one that gives it.
    for model in (index_copy / B0, index_copy / "models" / "tf_efficientnet_cc_b0_8e.yml"):
        assert_located(text, model, line_of(model, "Architecture Config:"), "'Stem Size' is required here but missing",
                       "neither the model nor its collection")
    assert b1.name not in text


def test_unknown_collection(capsys, index_copy):
    f = index_copy / B0
    edit(f, "In Collection: TF EfficientNet CondConv", "In Collection: TF EfficientNet CondKonv")
    code, text = validate(capsys, index_copy)
    assert code == 1
    assert_located(text, f, line_of(f, "In Collection"), "unknown collection 'TF EfficientNet CondKonv'")


def test_same_model_in_two_files(capsys, index_copy):
    first = index_copy / B0
    second = index_copy / "models" / "copy.yml"
    shutil.copy(first, second)
    edit(index_copy / "model-index.yml", "  - models/tf_efficientnet_cc_b1_8e.yml", "  - models/tf_efficientnet_cc_b1_8e.yml\n  - models/copy.yml")
    code, text = validate(capsys, index_copy)
    assert code == 1
    assert_located(text, second, line_of(second, "- Name:"), "defined twice", f"{first.name}:{line_of(first, '- Name:')}")


@pytest.mark.parametrize("spec, phrase", [
    ("../outside.yml", "'..'"),
    ("/etc/passwd.yml", "absolute path"),
    ("escape.yml", "leads out of the index folder"),
])
def test_import_escaping_the_root(capsys, index_copy, spec, phrase):
    outside = index_copy.parent / "outside.yml"
    outside.write_text("Models: []\n")
    (index_copy / "escape.yml").symlink_to(outside)
    root = index_copy / "model-index.yml"
    edit(root, "Import:\n", f"Import:\n  - {spec}\n")
    code, text = validate(capsys, index_copy)
    assert code == 1
    assert_located(text, root, line_of(root, spec), phrase)


def test_missing_import(capsys, index_copy):
    root = index_copy / "model-index.yml"
    edit(root, "Import:\n", "Import:\n  - models/nowhere.yml\n")
    code, text = validate(capsys, index_copy)
    assert code == 1
    assert_located(text, root, line_of(root, "nowhere"), "does not exist")


def test_alias_bomb(capsys, tmp_path):
    f = tmp_path / "bomb.yml"
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]")
    lines.append("Models: [*i]")
    f.write_text("\n".join(lines) + "\n")
    code, text = validate(capsys, f)
    assert code == 1
    assert "alias bomb" in text and re.search(r"bomb\.yml:\d+:\d+: ", text)


def test_non_utf8_bytes(capsys, index_copy):
    f = index_copy / B0
    f.write_bytes(f.read_bytes().replace(b"FLOPs: 410171168", b"FLOPs: 4101\xff71168"))
    code, text = validate(capsys, index_copy)
    assert code == 1
    assert_located(text, f, line_of(f, "FLOPs: 4101"), "not valid UTF-8", "0xff")


@pytest.mark.parametrize("content", ["", "\n\n# only a comment\n"])
def test_empty_file(capsys, index_copy, content):
    f = index_copy / B0
    f.write_text(content)
    code, text = validate(capsys, index_copy)
    assert code == 1
    assert_located(text, f, 1, "file is empty")


def test_non_https_url(capsys, index_copy):
    f = index_copy / B0
    edit(f, "Code: https://", "Code: http://")
    code, text = validate(capsys, index_copy)
    assert code == 1
    assert_located(text, f, line_of(f, "Code: http://"), "must use https")


def test_id_must_equal_name(capsys, index_copy):
    f = index_copy / B0
    edit(f, "    ID: tf_efficientnet_cc_b0_4e", "    ID: tf_efficientnet_cc_b0_5e")
    code, text = validate(capsys, index_copy)
    assert code == 1
    assert_located(text, f, line_of(f, "ID: tf_efficientnet_cc_b0_5e"), "must equal Name")


def test_experts_inconsistent_with_name(capsys, index_copy):
    f = index_copy / "models" / "tf_efficientnet_cc_b0_8e.yml"
    edit(f, "Experts Multiplier: 2", "Experts Multiplier: 1")
    code, text = validate(capsys, index_copy)
    assert code == 1
    assert_located(text, f, line_of(f, "Experts Multiplier"), "says 8 experts", "= 4")


def test_file_size_disagrees_with_parameters(capsys, index_copy):
    f = index_copy / B0
    edit(f, "File Size: 53490940", "File Size: 96287616")
    code, text = validate(capsys, index_copy)
    assert code == 1
    assert_located(text, f, line_of(f, "File Size"), "float32 checkpoint")


def test_release_file_without_hash_prefix(capsys, index_copy):
    f = index_copy / B0
    edit(f, "tf_efficientnet_cc_b0_4e-4362b6b2.pth", "tf_efficientnet_cc_b0_4e.pth")
    code, text = validate(capsys, index_copy)
    assert code == 1
    assert_located(text, f, line_of(f, "Weights:"), "8 hex digits")


def test_unknown_field_is_a_typo(capsys, index_copy):
    f = index_copy / B0
    edit(f, "      File Size: 53490940", "      File Sise: 53490940")
    code, text = validate(capsys, index_copy)
    assert code == 1
    assert_located(text, f, line_of(f, "File Sise"), "unknown field 'File Sise'")


def test_oversized_file(capsys, index_copy):
    f = index_copy / B0
    f.write_text(f.read_text() + "# padding\n" * 120_000)
    code, text = validate(capsys, index_copy)
    assert code == 1 and "limited to" in text and f.name in text


def test_several_errors_reported_at_once_as_json(capsys, index_copy):
    f = index_copy / B0
    edit(f, "Crop Pct: '0.875'", "Crop Pct: '1.5'")
    edit(f, "Code: https://", "Code: http://")
    g = index_copy / "models" / "tf_efficientnet_cc_b1_8e.yml"
    edit(g, "In Collection: TF EfficientNet CondConv", "In Collection: Nope")
    code = main(["validate", str(index_copy), "--format", "json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1 and report["valid"] is False
    problems = report["reports"][0]["problems"]
    assert len(problems) == 3
    assert {p["file"].rsplit("/", 1)[-1] for p in problems} == {f.name, g.name}
    assert all(set(p) == {"file", "line", "column", "path", "message"} and p["line"] > 0 for p in problems)
    assert any(p["path"] == "$.Models[0]['Metadata']['Crop Pct']".replace("['Metadata']", ".Metadata") for p in problems)


def test_imported_file_validates_in_its_roots_context(capsys, index_copy):
    code, text = validate(capsys, index_copy / B0)
    assert code == 0, text
    f = index_copy / B0
    edit(f, "Code: https://", "Code: http://")
    code, text = validate(capsys, index_copy / B0)
    assert code == 1 and "must use https" in text
    page = index_copy / PAGE  # a problem in what the model inherits is one of its own
    edit(page, "Kernel: 5, Stride: 1", "Kernel: 4, Stride: 1")
    code, text = validate(capsys, index_copy / B0)
    assert_located(text, page, line_of(page, "Kernel: 4"), "must be odd")


def test_usage_error_exits_2():
    result = subprocess.run([sys.executable, "-m", "registry.cli", "validate", "--format", "xml"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "invalid choice" in result.stderr


def test_cli_process_has_no_traceback_on_bad_input(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_bytes(b"Models:\n  - Name: \xff\n")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run([sys.executable, "-m", "registry.cli", "validate", str(bad)],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    assert "bad.yml:2:" in result.stdout
