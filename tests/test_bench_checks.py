"""The checks one by one, in-process: params tolerance, filesize with local files, throughput regressions,
error and skip handling, the report."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

import registry

from bench_support import copy_index, offline_env, release_name, set_field

from bench import report, runner, store
from registry import results_schema as schema
from bench.checks import CHECKS, Context, Settings
from bench.checks.base import CheckResult

MODEL_ID = "tf_efficientnet_cc_b0_4e"
ENV = {"device": "cpu", "device_name": "Test CPU", "threads": 2, "torch_version": torch.__version__,
       "git_commit": "abc", "fingerprint_id": "0123456789ab", "allocator": "test"}


class Tiny(nn.Module):
    def __init__(self, n_params: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=8)
        self.pad = nn.Parameter(torch.zeros(max(0, n_params - 112)))  # conv: 4*3*3*3 + 4 = 112

    def forward(self, x):
        return self.conv(x).mean((2, 3))


@pytest.fixture(scope="module")
def index():
    return registry.load()


def ctx_for(index, build=None, history=None, **settings) -> Context:
    return Context(index=index, settings=Settings(**settings), env=dict(ENV), history=history,
                   build_model=build or (lambda entry, idx: Tiny()))


@pytest.mark.parametrize("claimed, measured, status", [
    (13_310_000, 13_314_116, "pass"),  # published rounding: within 5,000
    (13_310_000, 13_305_000, "pass"),
    (13_310_000, 13_315_001, "fail"),
    (13_314_116, 13_314_116, "pass"),  # a claim that is not a multiple of 10k must be exact
    (13_314_117, 13_314_116, "fail"),
])
def test_params_tolerance_follows_the_published_rounding(index, claimed, measured, status):
    entry = dataclasses.replace(index.get(MODEL_ID), parameters=claimed)
    (row,) = runner.run_check("params", entry, ctx_for(index, build=lambda e, i: Tiny(measured)))
    assert (row.measured, row.status) == (measured, status)
    if status == "fail":
        assert f"claimed {claimed:,}, measured {measured:,}" in row.reason


def test_params_of_the_real_model(index):
    entry = index.get(MODEL_ID)
    (row,) = runner.run_check("params", entry, Context(index=index, settings=Settings(), env=dict(ENV)))
    assert row.measured == 13_314_116 and row.status == "pass" and row.threads == 2


def test_a_check_that_breaks_is_an_error_not_a_pass(index, monkeypatch):
    def broken(entry, ctx, rows):
        raise RuntimeError("kaboom\nsecond line")

    monkeypatch.setattr(CHECKS["flops"], "measure", broken)
    rows = runner.run_check("flops", index.get(MODEL_ID), ctx_for(index))
    assert [r.status for r in rows] == ["error", "error"]
    assert all(r.reason == "RuntimeError: kaboom" for r in rows)
    assert not report.ok(rows) and report.verdict_line(rows).startswith("verdict: FAIL")


def test_missing_fvcore_skips_with_the_reason(index, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_fvcore(name, *args, **kwargs):
        if name == "fvcore.nn" or name.startswith("fvcore"):
            raise ImportError("No module named 'fvcore'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_fvcore)
    macs, fc = runner.run_check("flops", index.get(MODEL_ID), ctx_for(index))
    assert macs.status == "skip" and "fvcore is not installed" in macs.reason
    assert fc.status == "info" and fc.measured > 0 and "2 FLOPs each" in fc.reason


# --------------------------------------------------------------------------------------------------------------
# filesize


@pytest.fixture
def release_index(tmp_path):
    """An index whose b0_4e release file is a local file (sparse, exactly File Size bytes) in a checkpoint dir."""
    entry = registry.load().get(MODEL_ID)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    staged = tmp_path / "file.pth"
    with open(staged, "wb") as f:
        f.truncate(entry.file_size)
    name = release_name(MODEL_ID, staged)
    staged.rename(ckpt / name)
    root = copy_index(tmp_path)
    set_field(root, MODEL_ID, "Weights", f"https://example.invalid/{name}")
    return registry.load(root), ckpt, name


def test_filesize_passes_on_a_local_release_file(release_index, monkeypatch, tmp_path):
    idx, ckpt, name = release_index
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    (row,) = runner.run_check("filesize", idx.get(MODEL_ID), ctx_for(idx, checkpoint_dir=ckpt))
    assert row.status == "pass" and row.measured == row.claimed == 53_490_940
    assert row.extra["path"] == str(ckpt / name)


def test_filesize_fails_when_the_bytes_differ(release_index, monkeypatch, tmp_path):
    idx, ckpt, name = release_index
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    entry = dataclasses.replace(idx.get(MODEL_ID), file_size=53_490_941)
    (row,) = runner.run_check("filesize", entry, ctx_for(idx, checkpoint_dir=ckpt))
    assert row.status == "fail" and "claimed 53,490,941 bytes" in row.reason and "(-1)" in row.reason


def test_filesize_skipped_offline_with_the_reason(index, monkeypatch, tmp_path):
    for key, value in offline_env(tmp_path).items():
        if key.startswith(("HF_", "TORCH_")):
            monkeypatch.setenv(key, value)
    (row,) = runner.run_check("filesize", index.get(MODEL_ID), ctx_for(index))
    assert row.status == "skip" and row.measured is None
    assert "tf_efficientnet_cc_b0_4e-4362b6b2.pth cannot be had" in row.reason and "offline" in row.reason


def test_a_corrupt_local_release_file_is_an_error(release_index, tmp_path, monkeypatch):
    idx, ckpt, name = release_index
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    with open(ckpt / name, "r+b") as f:
        f.write(b"x")
    (row,) = runner.run_check("filesize", idx.get(MODEL_ID), ctx_for(idx, checkpoint_dir=ckpt))
    assert row.status == "error" and "ChecksumMismatchError" in row.reason


# --------------------------------------------------------------------------------------------------------------
# throughput


def _history(measured: float, threads: int = 2, fingerprint: str = ENV["fingerprint_id"], batch_size: int = 1,
             reference: tuple[str, float] | None = None):
    extra = {"reference": reference[0], "reference_images_per_s": reference[1]} if reference else {}
    run = {
        "format": schema.FORMAT, "run_id": "20260101T000000Z-0000", "timestamp": "2026-01-01T00:00:00Z",
        "git_commit": "old", "environment": {},
        "checks": [CheckResult(MODEL_ID, "throughput", "images_per_s", measured=measured, status="info",
                               device="cpu", device_name="Test CPU", fingerprint=fingerprint, dtype="float32",
                               threads=threads, torch_version="2.0.0", batch_size=batch_size,
                               extra=extra).to_dict()],
    }
    return store.run_rows(run)


def test_throughput_records_settings_and_compares_with_the_previous_run(index):
    entry = index.get(MODEL_ID)
    settings = dict(batch_sizes=(1, 2), warmup=1, repeats=3)
    rows = runner.run_check("throughput", entry, ctx_for(index, **settings))
    assert [r.batch_size for r in rows] == [1, 2]
    import torchvision

    from bench import throughput

    label = throughput.host_reference()[0]
    assert label.startswith(f"torchvision {torchvision.__version__} mobilenet_v2")
    for r in rows:
        assert r.status == "info" and r.measured > 0 and "no earlier run" in r.reason
        assert (r.device, r.dtype, r.threads, r.torch_version) == ("cpu", "float32", 2, torch.__version__)
        assert len(r.extra["times_s"]) == 3 and r.extra["warmup"] == 1 and r.extra["timer"] == "time.perf_counter"
        assert r.extra["reference"] == label and r.extra["reference_images_per_s"] > 0
        assert "host reference" in r.reason

    (slow,) = runner.run_check("throughput", entry, ctx_for(index, history=_history(1e9), batch_sizes=(1,)))
    assert slow.status == "regression"
    assert "regression against the previous run 20260101T000000Z-0000" in slow.reason
    assert "torch 2.0.0 then" in slow.reason and "(no host reference then)" in slow.reason

    # against a run that timed the same reference, the ratio to it decides: a previous run whose host ran the
    # reference a billion times faster is no regression whatever our figure, and the reverse is one
    (host_was_fast,) = runner.run_check("throughput", entry, ctx_for(
        index, history=_history(1e9, reference=(label, 1e18)), batch_sizes=(1,)))
    assert host_was_fast.status == "info" and "relative to the host reference" in host_was_fast.reason
    assert host_was_fast.extra["previous"]["host_change"] < -0.99
    (code_was_fast,) = runner.run_check("throughput", entry, ctx_for(
        index, history=_history(1e9, reference=(label, 1e-3)), batch_sizes=(1,)))
    assert code_was_fast.status == "regression" and "relative to the host reference" in code_was_fast.reason
    (other_reference,) = runner.run_check("throughput", entry, ctx_for(
        index, history=_history(1e9, reference=("torchvision 0.1 mobilenet_v2", 1e18)), batch_sizes=(1,)))
    assert other_reference.status == "regression" and "(no host reference then)" in other_reference.reason
    assert report.ok([slow])  # informational: not a failure
    assert "throughput regression" in report.verdict_line([slow])

    (fast,) = runner.run_check("throughput", entry, ctx_for(index, history=_history(1e-3), batch_sizes=(1,)))
    assert fast.status == "info" and "previous run 20260101T000000Z-0000" in fast.reason

    for other in (_history(1e9, threads=8), _history(1e9, fingerprint="another-one"), _history(1e9, fingerprint=""),
                  _history(1e9, batch_size=32)):
        (row,) = runner.run_check("throughput", entry, ctx_for(index, history=other, batch_sizes=(1,)))
        assert row.status == "info" and "no earlier run" in row.reason


@pytest.mark.parametrize("ours, host, regression", [
    (0.75, 0.75, False),  # the host slowed by 25% for a while: ours with it
    (0.85, 1.00, True),   # ours 15% slower on the same host
    (0.94, 1.10, True),   # ours 6% slower on a host 10% faster: 14.5% slower relative to it
    (0.88, 0.80, False),  # ours 12% slower on a host 20% slower
])
def test_a_regression_is_judged_against_the_host_reference(ours, host, regression):
    from bench.checks.throughput import judge

    prev = {"run_id": "r", "images_per_s": 100.0, "reference": "ref", "reference_images_per_s": 200.0}
    slower, changes, how = judge(100.0 * ours, 200.0 * host, "ref", prev)
    assert slower == regression
    assert changes["change"] == pytest.approx(ours - 1) and changes["host_change"] == pytest.approx(host - 1)
    assert changes["relative_change"] == pytest.approx(ours / host - 1)
    assert f"{ours / host - 1:+.1%} relative to the host reference" in how
    # extreme host changes stay finite (a host a billion billion times faster then: 1 + change rounds to 0)
    slower, changes, _ = judge(50.0, 50.0, "ref", {**prev, "images_per_s": 1e9, "reference_images_per_s": 1e18})
    assert not slower and changes["relative_change"] == pytest.approx(1e9 - 1)
    # without the same reference on both sides the figures themselves are compared
    for reference, label, note in ((None, None, "no host reference timed"), (200.0, "other", "no host reference then")):
        slower, changes, how = judge(100.0 * ours, reference, label, prev)
        assert slower == (ours < 0.9) and set(changes) == {"change"} and note in how


def test_the_host_reference_brackets_the_models_runs(monkeypatch):
    from bench import throughput

    monkeypatch.setattr(throughput, "REFERENCE_MIN_S", 0.0)
    calls = []

    class Sleeper(nn.Module):
        def __init__(self, name, seconds):
            super().__init__()
            self.name, self.seconds = name, seconds

        def forward(self, x):
            import time
            calls.append(self.name)
            time.sleep(self.seconds)
            return x

    t = throughput.measure(Sleeper("model", 0.01), (3, 8, 8), 4, warmup=1, repeats=4,
                           reference=("sleeper", Sleeper("reference", 0.03)))
    # the reference's warm-up and a block of its runs, the model's warm-up and runs back to back, a block again
    blocks = ["reference"] * throughput.REFERENCE_RUNS
    assert calls == ["reference", *blocks, "model", *["model"] * 4, *blocks]
    assert t.reference == "sleeper" and len(t.times_s) == 4
    assert t.reference_images_per_s == pytest.approx(4 / 0.03, rel=0.3)
    assert t.images_per_s == pytest.approx(4 / 0.01, rel=0.5)
    with pytest.raises(ValueError, match="CPU workload"):
        throughput.measure(Sleeper("model", 0), (3, 8, 8), 1, device="cuda", reference=("sleeper", Sleeper("r", 0)))


def test_throughput_stops_early_within_the_time_budget():
    from bench import throughput

    class Slow(nn.Module):
        def forward(self, x):
            import time
            time.sleep(0.05)
            return x

    t = throughput.measure(Slow(), (3, 8, 8), 4, warmup=1, repeats=50, budget_s=0.12)
    assert 2 <= len(t.times_s) <= 3 and t.images_per_s == pytest.approx(4 / t.median_s)


def test_report_text_has_table_notes_and_verdict():
    rows = [CheckResult("m", "params", "parameters", claimed=10_000, measured=10_001, unit="parameters",
                        status="pass", reason="ok"),
            CheckResult("m", "accuracy", "top1", claimed=77.324, unit="%", status="skip", reason="no data")]
    text = report.text(rows, "RUN")
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["model", "check", "metric", "batch"]
    assert "10,001" in lines[1] and "77.324" in lines[2]
    assert "skip       m accuracy/top1: no data" in text
    assert lines[-1] == "verdict: PASS: 1 pass, 0 fail, 1 skip [run RUN]"


def test_throughput_keeps_timing_short_runs_for_min_time():
    from bench import throughput

    class Quick(nn.Module):
        def forward(self, x):
            import time
            time.sleep(0.01)
            return x

    t = throughput.measure(Quick(), (3, 8, 8), 1, warmup=0, repeats=3, min_time_s=0.1)
    assert len(t.times_s) >= 8 and sum(t.times_s) >= 0.1
    assert len(throughput.measure(Quick(), (3, 8, 8), 1, warmup=0, repeats=3).times_s) == 3
