"""`cc-registry list` and `show` against the index and anchors, in every output format."""
from __future__ import annotations

import io
import json
import shutil

import pandas as pd
import pytest
import yaml

import model_index
import registry
from registry.cli import main


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_list_json_has_one_row_per_model(capsys):
    code, out, _ = run(capsys, "list", "--format", "json")
    rows = json.loads(out)
    index = registry.load()
    assert code == 0 and [r["id"] for r in rows] == list(index.ids)
    b1 = next(r for r in rows if r["id"] == "tf_efficientnet_cc_b1_8e")
    assert (b1["macs"], b1["image_size"], b1["crop_pct"], b1["experts"]) == (745303680, 240, 0.882, 8)


def test_list_csv_parses_back(capsys):
    code, out, _ = run(capsys, "list", "--format", "csv")
    frame = pd.read_csv(io.StringIO(out))
    assert code == 0 and len(frame) == 3
    assert frame.set_index("id").loc["tf_efficientnet_cc_b0_8e", "file_size"] == 96287616


def test_list_table_is_readable(capsys):
    code, out, _ = run(capsys, "list")
    lines = out.strip().splitlines()
    assert code == 0 and lines[0].split()[:2] == ["ID", "Collection"] and len(lines) == 4


def test_show_resolves_everything(capsys):
    code, out, _ = run(capsys, "show", "tf_efficientnet_cc_b0_8e", "--format", "json")
    data = json.loads(out)
    assert code == 0
    assert data["arch"]["experts_multiplier"] == 2 and len(data["arch"]["stages"]) == 7
    # Inherited from the collection page: the base architecture, the recipe, the data config.
    assert (data["arch"]["activation"], data["arch"]["padding"], data["arch"]["stem_size"]) == ("swish", "same", 32)
    assert data["training"]["epochs"] == 350 and data["data"]["mean"] == [0.5, 0.5, 0.5]
    assert data["data"]["input_size"] == [3, 224, 224]
    assert data["hub"]["repo_id"] == "timm/tf_efficientnet_cc_b0_8e.in1k"
    assert data["errata"][0]["field"] == "Metadata.FLOPs"
    assert data["source"].endswith(":4:5")
    code, out, _ = run(capsys, "show", "tf_efficientnet_cc_b0_8e")
    assert yaml.safe_load(out) == data


def test_show_unknown_id_is_a_usage_error_with_suggestions(capsys):
    code, _, err = run(capsys, "show", "tf_efficientnet_cc_b0_9e")
    assert code == 2 and "did you mean" in err and "tf_efficientnet_cc_b0_8e" in err


def test_list_on_invalid_index_exits_1_with_located_errors(capsys, tmp_path):
    root = tmp_path / "index"
    shutil.copytree(model_index.INDEX_DIR, root, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    f = root / "models" / "tf_efficientnet_cc_b0_4e.yml"
    f.write_text(f.read_text().replace("Crop Pct: '0.875'", "Crop Pct: 'x'"))
    code, out, err = run(capsys, "list", "--index", str(root))
    assert code == 1 and "tf_efficientnet_cc_b0_4e.yml:" in err and "Crop Pct" in err and "Traceback" not in err


def test_help_on_every_command(capsys):
    for command in ("validate", "list", "show", "docs", "export"):
        with pytest.raises(SystemExit) as info:
            main([command, "--help"])
        assert info.value.code == 0
        assert "usage: cc-registry " + command in capsys.readouterr().out
