"""The data-config check on the loopback Hub: timm's own pretrained_cfg is the oracle of what the Hub publishes."""
from __future__ import annotations

import json

import pytest
import torch

import registry
from bench import runner
from bench.checks import Context, Settings

from hub_server import fake_hub, hub_env  # noqa: F401  (fixtures)

MODEL_ID = "tf_efficientnet_cc_b0_4e"
ENV = {"device": "cpu", "device_name": "Test CPU", "threads": 2, "torch_version": torch.__version__,
       "git_commit": "abc"}


def timm_config(model_id: str, **changes) -> bytes:
    """config.json as timm publishes it on the Hub (``timm.models.push_to_hf_hub``), from timm's own cfg."""
    import timm

    cfg = dict(timm.models.get_pretrained_cfg(model_id).to_dict(), **changes)
    return json.dumps({"architecture": model_id, "num_classes": cfg["num_classes"], "num_features": 1280,
                       "pretrained_cfg": cfg}).encode()


def run(entry) -> dict[str, object]:
    index = registry.load()
    rows = runner.run_check("data-config", entry, Context(index=index, settings=Settings(), env=dict(ENV)))
    return {row.metric: row for row in rows}


@pytest.fixture(scope="module")
def entry():
    return registry.load().get(MODEL_ID)


@pytest.mark.parametrize("model_id", registry.load().ids)
def test_index_agrees_with_timms_published_config(fake_hub, model_id):
    entry = registry.load().get(model_id)
    fake_hub.add_file(entry.hub.repo_id, "config.json", timm_config(model_id), lfs=False)
    rows = run(entry)
    assert list(rows) == ["input_size", "crop_pct", "interpolation", "mean", "std"]
    assert {m: r.status for m, r in rows.items()} == dict.fromkeys(rows, "pass"), {m: r.reason for m, r in rows.items()}
    assert rows["input_size"].measured == entry.image_size and rows["interpolation"].measured == "bicubic"


def test_a_differing_field_is_a_mismatch_and_a_missing_one_a_skip(fake_hub, entry):
    cfg = json.loads(timm_config(MODEL_ID, crop_pct=0.9, mean=[0.485, 0.456, 0.406]))
    del cfg["pretrained_cfg"]["interpolation"]
    fake_hub.add_file(entry.hub.repo_id, "config.json", json.dumps(cfg).encode(), lfs=False)
    rows = run(entry)
    assert rows["crop_pct"].status == "fail" and "0.875" in rows["crop_pct"].reason and "0.9" in rows["crop_pct"].reason
    assert rows["mean"].status == "fail" and rows["mean"].measured == "0.485, 0.456, 0.406"
    assert rows["interpolation"].status == "skip" and "interpolation" in rows["interpolation"].reason
    assert rows["input_size"].status == rows["std"].status == "pass"


def test_offline_or_absent_is_a_skip_with_the_reason(fake_hub, entry, monkeypatch):
    fake_hub.add_file(entry.hub.repo_id, "model.safetensors", b"weights only")
    rows = run(entry)  # the repo has no config.json
    assert all(r.status == "skip" and "config.json" in r.reason for r in rows.values()), [(r.status, r.reason) for r in rows.values()]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    rows = run(entry)
    assert all(r.status == "skip" and r.reason for r in rows.values()), [r.reason for r in rows.values()]


def test_an_unreachable_hub_is_asked_once_per_run(entry, monkeypatch):
    import cc_models.hub_config as hub_config
    from cc_models.errors import OfflineError

    calls = []

    def unreachable(repo_id, revision=None):
        calls.append(repo_id)
        raise OfflineError("cannot reach the Hub API at https://hub.invalid")

    monkeypatch.setattr(hub_config, "fetch_hub_config", unreachable)
    index = registry.load()
    ctx = Context(index=index, settings=Settings(), env=dict(ENV))
    first, second = (runner.run_check("data-config", index.get(i), ctx) for i in index.ids[:2])
    assert len(calls) == 1  # the second model does not pay huggingface_hub's retries again
    assert all(r.status == "skip" and "hub.invalid" in r.reason for r in first + second)
    assert all("not tried again" in r.reason for r in second)


def test_a_config_that_is_not_timms_is_an_error(fake_hub, entry):
    fake_hub.add_file(entry.hub.repo_id, "config.json", b"not json", lfs=False)
    rows = run(entry)
    assert all(r.status == "error" and "not valid JSON" in r.reason for r in rows.values())


def test_pages_show_the_checks_verdict_in_the_preprocessing_cells(fake_hub, entry, tmp_path):
    """What the check records is what the summary's preprocessing cells read: verified or mismatch."""
    from docs_support import row as store_row, write_results
    from registry.docs import read_results, render_docs

    cfg = json.loads(timm_config(MODEL_ID, interpolation="bilinear"))
    fake_hub.add_file(entry.hub.repo_id, "config.json", json.dumps(cfg).encode(), lfs=False)
    rows = run(entry)
    stored = [store_row("run-1", "2026-01-01T00:00:00Z", MODEL_ID, r.check, r.metric, r.measured, r.status,
                        claimed=r.claimed, tolerance=r.tolerance, reason=r.reason) for r in rows.values()]
    render_docs(None, read_results(write_results(tmp_path / "results", stored)), tmp_path / "docs")
    page = (tmp_path / "docs/collections/tf-efficientnet-condconv.md").read_text()
    line = next(line for line in page.splitlines() if line.startswith(f"| <code>{MODEL_ID}</code>"))
    preprocessing = line.split(" | ")[3]
    assert preprocessing.count("cc-verified") == 2 and preprocessing.count("cc-mismatch") == 1
    assert "measured bilinear" in preprocessing
    assert "how-we-verify" not in preprocessing
    how = (tmp_path / "docs/how-we-verify.md").read_text()
    assert "(`data-config`)" in how and "(`config`)" not in how


def test_every_check_how_we_verify_names_exists_in_the_bench(tmp_path):
    import re

    from bench.checks import CHECKS
    from registry.docs import read_results, render_docs

    render_docs(None, read_results(None), tmp_path)
    names = re.findall(r"^\*\*[^*]+\*\* \(`([\w-]+)`\)", (tmp_path / "how-we-verify.md").read_text(), re.M)
    assert "data-config" in names
    assert set(names) - {"compare"} <= set(CHECKS), names  # compare is `cc-bench compare`, not a run check
