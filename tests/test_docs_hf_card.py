"""`cc-registry export --format hf-card`: a model card the Hub's own parser reads back."""
from __future__ import annotations

import pytest

import registry
from registry.cli import main

from docs_support import IDS, fixture_rows, row, write_results

huggingface_hub = pytest.importorskip("huggingface_hub")


def load_card(path):
    return huggingface_hub.ModelCard.load(path / "README.md")


def test_card_round_trips_through_huggingface_hub(tmp_path, capsys):
    out = tmp_path / "card"
    assert main(["export", IDS[2], "--format", "hf-card", "--out", str(out)]) == 0
    assert f"wrote {out / 'README.md'}" in capsys.readouterr().out
    card = load_card(out)
    entry = registry.load().get(IDS[2])
    data = card.data
    assert data.library_name == "timm" and data.license == "apache-2.0" and data.datasets == ["imagenet-1k"]
    assert {"image-classification", "condconv", "efficientnet"} <= set(data.tags)
    results = {r.metric_name: r for r in data.eval_results}
    assert set(results) == {"Top 1 Accuracy", "Top 5 Accuracy"}
    for name, result in results.items():
        assert result.metric_value == entry.result().metric(name)
        assert (result.task_type, result.dataset_type, result.metric_type) == ("image-classification", "imagenet-1k", "accuracy")
        assert result.verified is False  # no bench results given
    assert data.eval_results[0].metric_value == 79.318 and data.eval_results[1].metric_value == 94.384
    assert "not verified: no bench run recorded" in card.text
    # Round trip: the card written back out is the card read in.
    again = huggingface_hub.ModelCard(str(card))
    assert again.data.to_dict() == data.to_dict()


def test_card_marks_bench_verified_results(tmp_path):
    rows = fixture_rows() + [
        row("run-3", "2025-03-01T00:00:00Z", IDS[0], "accuracy", "top1", 77.31, "pass", claimed=77.324, tolerance="0.1"),
        row("run-3", "2025-03-01T00:00:00Z", IDS[0], "accuracy", "top5", 93.0, "fail", claimed=93.334, tolerance="0.1"),
    ]
    results = write_results(tmp_path / "results", rows)
    out = tmp_path / "card"
    assert main(["export", IDS[0], "--out", str(out), "--results", str(results)]) == 0
    card = load_card(out)
    verified = {r.metric_name: r.verified for r in card.data.eval_results}
    assert verified == {"Top 1 Accuracy": True, "Top 5 Accuracy": False}
    assert "mismatch" in card.text and "measured" not in card.data.to_dict().get("model-index", "")


def test_export_unknown_model_is_a_usage_error(tmp_path, capsys):
    assert main(["export", "tf_efficientnet_cc_b0_5e", "--out", str(tmp_path)]) == 2
    assert "did you mean" in capsys.readouterr().err
