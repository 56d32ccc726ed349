"""`cc-bench compare --against timm`: parity first, then timings side by side, stored for the docs."""
from __future__ import annotations

import importlib.util
import json
import re
import statistics

import pandas as pd
import pytest
import torch

pytest.importorskip("timm")

from bench import compare
from bench.cli import main


def test_plain_reference_names():
    assert compare.plain_reference("tf_efficientnet_cc_b0_4e") == "tf_efficientnet_b0"
    assert compare.plain_reference("tf_efficientnet_cc_b1_8e") == "tf_efficientnet_b1"
    assert compare.plain_reference("resnet50") is None


def test_rows_give_the_spread_of_their_ratios_round_by_round():
    # ours 1 s every round; plain's time gives ours / plain 0.8, 0.9, 0.9, 1.0, 1.1 by round (shuffled), whose
    # quartiles (the "exclusive" method: positions 1.5 and 4.5 of 5) are 0.85 and 1.05
    times = {"ours": [1.0] * 5, "timm_eager": [2.0] * 5, "plain": [0.9, 1.1, 0.8, 1.0, 0.9]}
    row = compare.Row("tf_efficientnet_cc_b0_4e", 1, "float32", {n: 1 / statistics.median(t) for n, t in times.items()},
                      times, "timm_eager", "tf_efficientnet_b0")
    assert row.ratio_vs_plain == pytest.approx(0.9) and row.ratio_vs_plain_quartiles == pytest.approx((0.85, 1.05))
    assert row.ratio_quartiles == pytest.approx((2.0, 2.0))
    text = compare.format_row(row)
    assert "ours / plain 0.90x [rounds 0.85-1.05]" in text
    assert "ours / best timm (timm_eager) 2.00x [rounds 2.00-2.00]" in text
    one_round = compare.Row("m", 1, "float32", {"ours": 1.0, "timm_eager": 0.5}, {"ours": [1.0], "timm_eager": [2.0]},
                            "timm_eager", None)
    assert one_round.ratio_quartiles is None and "[rounds" not in compare.format_row(one_round)


def _host_row(model_id="m", batch_size=2, fingerprint="f1", threads=2, reference="ref A", measured=100.0,
              timestamp="2026-11-28T10:00:00Z", run_id="r1"):
    """A stored compare row of the host reference, as bench.store.run_rows gives it."""
    return {"run_id": run_id, "timestamp": timestamp, "model_id": model_id, "check": "compare",
            "metric": "images_per_s_host_reference", "measured": measured, "batch_size": batch_size,
            "fingerprint": fingerprint, "dtype": "float32", "threads": threads,
            "extra": json.dumps({"host_reference": {"reference": reference}})}


def test_host_reference_is_judged_against_the_latest_earlier_run_on_the_same_machine():
    """The host reference ran 2 img/s (batch 2, 1 s a round); the latest earlier run with the same fingerprint,
    threads, batch size and reference had it at 2.5 (-20%: contended); runs on another fingerprint, thread count,
    batch size or reference, and later but unparsable rows, are not judged against."""
    history = [_host_row(measured=2.2, timestamp="2026-11-28T09:00:00Z", run_id="older"),
               _host_row(measured=2.5, timestamp="2026-11-28T10:00:00Z", run_id="latest"),
               _host_row(measured=9.0, timestamp="2026-11-28T11:00:00Z", run_id="other-machine", fingerprint="f2"),
               _host_row(measured=9.0, timestamp="2026-11-28T11:00:00Z", run_id="one-thread", threads=1),
               _host_row(measured=9.0, timestamp="2026-11-28T11:00:00Z", run_id="batch-1", batch_size=1),
               _host_row(measured=9.0, timestamp="2026-11-28T11:00:00Z", run_id="other-ref", reference="ref B"),
               {**_host_row(timestamp="2026-11-28T11:00:00Z", run_id="broken"), "measured": "n/a"},
               {**_host_row(timestamp="2026-11-28T11:00:00Z", run_id="no-label"), "extra": '{"host_reference": 3}'}]
    env = {"fingerprint_id": "f1", "threads": 2}
    row = compare.Row("m", 2, "float32", {"ours": 2.0, "timm_eager": 1.0}, {"ours": [1.0] * 4,
                      "timm_eager": [2.0] * 4}, "timm_eager", None)
    row.time_host([0.8, 1.0, 1.0, 1.25], "ref A", history, env)
    assert row.host_images_per_s == pytest.approx(2.0)
    assert row.host_quartiles == pytest.approx((2 / 1.1875, 2 / 0.85))  # round times' quartiles 0.85 and 1.1875
    assert row.host_previous == {"run_id": "latest", "images_per_s": 2.5, "change": pytest.approx(-0.2)}
    assert row.host_slower
    assert "host reference 2.0 img/s" in compare.format_row(row) and "-20% against run latest" in compare.format_row(row)
    assert "host SLOWER" in compare.format_row(row)

    steady = compare.Row("m", 2, "float32", {"ours": 2.0, "timm_eager": 1.0}, {"ours": [1.0], "timm_eager": [2.0]},
                         "timm_eager", None)
    steady.time_host([0.9], "ref A", history[:2], env)  # 2.22 img/s: -11% against 2.5 is slower, against 2.2 not
    assert steady.host_slower and steady.host_quartiles is None
    steady.time_host([0.9], "ref A", history[:1], env)
    assert steady.host_previous["run_id"] == "older" and not steady.host_slower
    assert "SLOWER" not in compare.format_row(steady)
    alone = compare.Row("m", 2, "float32", {"ours": 2.0, "timm_eager": 1.0}, {"ours": [1.0], "timm_eager": [2.0]},
                        "timm_eager", None)
    alone.time_host([1.0], "ref A", history, {"fingerprint_id": "f9", "threads": 2})
    assert alone.host_previous is None and "no earlier compare run on this fingerprint" in compare.format_row(alone)


@pytest.mark.slow
def test_compare_runs_and_stores(tmp_path, capsys):
    argv = ["compare", "tf_efficientnet_cc_b0_4e", "--batch-sizes", "2", "--repeats", "1", "--warmup", "0",
            "--no-memory", "--results", str(tmp_path), "--format", "json"]
    code = main(argv)
    out = capsys.readouterr()
    assert code == 0, out.err
    report = json.loads(out.out)
    (row,) = report["rows"]
    assert row["model_id"] == "tf_efficientnet_cc_b0_4e" and row["batch_size"] == 2
    assert row["ours"] > 0 and row["timm"] > 0 and row["ratio"] == pytest.approx(row["ours"] / row["timm"])
    assert row["plain_id"] == "tf_efficientnet_b0"
    parity = report["parity"]["tf_efficientnet_cc_b0_4e"]
    assert max(parity["unfused"], parity["fused"], parity["fused_channels_last"]) < 1e-4 < parity["logit_scale"]
    table = pd.read_csv(tmp_path / "results.csv")
    rows = table[table["check"] == "compare"]
    assert {"images_per_s_ours", "images_per_s_timm", "ratio"} <= set(rows["metric"])
    if importlib.util.find_spec("onnxruntime") is not None:  # the onnx extra: ONNX Runtime serves our export
        assert row["images_per_s"]["onnxruntime"] > 0 and "images_per_s_onnxruntime" in set(rows["metric"])
    (run,) = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*.json")]
    assert run["command"] == ["cc-bench", *argv]
    assert main(["publish", "--from", str(tmp_path), "--results", str(tmp_path / "published"),
                 "--docs-out", str(tmp_path / "docs")]) == 0
    results_page = (tmp_path / "docs" / "results.md").read_text()
    shown = re.search(r"tf_efficientnet_cc_b0_4e</code> \| 2 \| [\d.,]+ \| [\d.,]+ \| ([\d.]+)x? \|", results_page)
    assert "Ours against timm" in results_page and shown, results_page
    assert float(shown[1]) == pytest.approx(row["ratio"], abs=1e-3)
    # the host reference ran in the same rounds and is stored; no earlier run to judge the host against
    assert row["host_images_per_s"] > 0 and row["host_previous"] is None
    assert row["host_reference"] == compare.throughput.host_reference()[0]
    assert "images_per_s_host_reference" in set(rows["metric"])

    # The first run's host figure made 100x faster: the second run, on the same machine and store, finds its host
    # more than 10% slower, says so, and the published page marks the row contended.
    (run_path,) = (tmp_path / "runs").glob("*.json")
    first = json.loads(run_path.read_text())
    for check in first["checks"]:
        if check["metric"] == "images_per_s_host_reference":
            check["measured"] *= 100
    run_path.write_text(json.dumps(first))
    assert main(["compare", "tf_efficientnet_cc_b0_4e", "--batch-sizes", "2", "--repeats", "1", "--warmup", "0",
                 "--no-memory", "--no-onnxruntime", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"against run {first['run_id']}" in out and "host SLOWER" in out, out
    assert main(["publish", "--from", str(tmp_path), "--results", str(tmp_path / "published2"),
                 "--docs-out", str(tmp_path / "docs2")]) == 0  # published2: the first run's file was edited
    results_page = (tmp_path / "docs2" / "results.md").read_text()
    assert f"slower than in run {first['run_id']}: contended" in results_page, results_page


def test_disagreeing_outputs_stop_the_timing(monkeypatch, tmp_path, capsys):
    """If the two implementations disagree, no timing is reported (exit 1)."""
    real = compare.paired_models

    def broken(*args, **kwargs):
        ours, theirs = real(*args, **kwargs)
        with __import__("torch").no_grad():
            theirs.classifier.bias.add_(1.0)
        return ours, theirs

    monkeypatch.setattr(compare, "paired_models", broken)
    code = main(["compare", "tf_efficientnet_cc_b0_4e", "--batch-sizes", "1", "--repeats", "1", "--no-memory",
                 "--results", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1 and "differ from timm" in err
    assert not (tmp_path / "results.csv").exists()


def test_without_timm_exits_2(monkeypatch, capsys):
    monkeypatch.setattr(compare, "_import_timm", lambda: None)
    assert main(["compare", "--no-store"]) == 2
    assert "timm is not installed" in capsys.readouterr().err


def test_interleaved_timing_goes_on_until_the_minimum_time():
    import time

    from bench.compare import time_interleaved

    calls = {"a": 0, "b": 0}

    def runner(name):
        def run():
            calls[name] += 1
            time.sleep(0.005)
        return run

    times = time_interleaved({n: runner(n) for n in calls}, warmup=1, repeats=3, device="cpu", min_time_s=0.2)
    assert len(times["a"]) == len(times["b"]) >= 15 and sum(map(sum, times.values())) >= 0.2
    assert len(time_interleaved({n: runner(n) for n in calls}, warmup=0, repeats=3, device="cpu")["a"]) == 3


def test_interleaved_timing_varies_what_runs_before_each_contender():
    """A fixed cycle (rotated or not) gives each contender the same predecessor every repeat; the one after
    ONNX Runtime then ran 8-13% slower. Shuffled per repeat, every contender follows every other one."""
    from bench.compare import time_interleaved

    sequence = []
    names = ["ours", "plain", "timm_eager", "timm_channels_last", "timm_traced_frozen", "onnxruntime"]
    times = time_interleaved({n: (lambda n=n: sequence.append(n)) for n in names}, warmup=0, repeats=40,
                             device="cpu")
    assert all(len(times[n]) == 40 for n in names)
    assert all(sorted(sequence[i:i + 6]) == sorted(names) for i in range(0, len(sequence), 6))  # each once a repeat
    predecessors = {n: set() for n in names}
    for before, after in zip(sequence, sequence[1:]):
        predecessors[after].add(before)
    assert all(predecessors[n] >= set(names) - {n} for n in names), predecessors


def test_compiled_forms_time_against_ours_eager():
    """--compile: inductor (with freezing on CPU) for both, timed interleaved with ours' eager form."""
    import argparse

    from bench.compare import compile_and_time

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.SiLU()).eval()
    x = torch.randn(2, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    args = argparse.Namespace(repeats=3, min_time_s=0.0)
    out = compile_and_time(model, model, x, x.contiguous(), args, "cpu", None)
    assert out["form"] == "inductor, freezing, channels_last"
    assert min(out["images_per_s_ours"], out["images_per_s_timm"], out["images_per_s_ours_eager"]) > 0
    assert out["ratio_eager_vs_compiled_timm"] == out["images_per_s_ours_eager"] / out["images_per_s_timm"]
    assert out["compile_s_ours"] > 0 and out["compile_s_timm"] > 0
