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


def _stored_run(run_id, timestamp, ratio, ratio_vs_plain, host, *, model_id="m", batch_size=2, fingerprint="f1",
                threads=2, reference="ref A", contended=False):
    """An earlier compare run's rows as bench.store.history gives them (extra as JSON)."""
    extra = json.dumps({"host_reference": {"reference": reference, "slower": contended}})
    common = {"run_id": run_id, "timestamp": timestamp, "model_id": model_id, "check": "compare",
              "batch_size": batch_size, "fingerprint": fingerprint, "dtype": "float32", "threads": threads,
              "extra": extra}
    return [{**common, "metric": "ratio", "measured": ratio},
            {**common, "metric": "ratio_vs_plain", "measured": ratio_vs_plain},
            {**common, "metric": "images_per_s_host_reference", "measured": host}]


def _row(ours_s, timm_s, plain_s, host_times, history, env=None):
    """A compare row of batch 2 whose contenders took these seconds a round, judged against ``history``."""
    times = {"ours": [ours_s] * 4, "timm_eager": [timm_s] * 4, "plain": [plain_s] * 4}
    row = compare.Row("m", 2, "float32", {n: 2 / t[0] for n, t in times.items()}, times, "timm_eager", None)
    row.time_host(host_times, "ref A")
    row.previous = compare.previous_run(history, row, env or {"fingerprint_id": "f1", "threads": 2})
    return row


def test_rows_are_judged_against_the_latest_earlier_run_on_the_same_machine():
    """Ours / timm 2.0 and ours / plain 0.9 now; the latest earlier run on the same fingerprint, threads and batch
    size had 2.5 and 0.92 (runs on another machine, thread count or batch size, and a later run that was itself
    contended, are not it)."""
    history = (_stored_run("older", "2026-11-28T09:00:00Z", 9.0, 9.0, 9.0)
               + _stored_run("latest", "2026-11-28T10:00:00Z", 2.5, 0.92, 2.0)
               + _stored_run("other-machine", "2026-11-28T11:00:00Z", 9.0, 9.0, 9.0, fingerprint="f2")
               + _stored_run("one-thread", "2026-11-28T11:00:00Z", 9.0, 9.0, 9.0, threads=1)
               + _stored_run("batch-1", "2026-11-28T11:00:00Z", 9.0, 9.0, 9.0, batch_size=1)
               + _stored_run("contended", "2026-11-28T11:00:00Z", 1.0, 0.5, 1.0, contended=True))
    # the host reference ran 2.0 img/s as then: ours / timm fell 20% (a regression), ours / plain 2% (not one)
    row = _row(1.0, 2.0, 0.9, [0.8, 1.0, 1.0, 1.25], history)
    assert row.host_images_per_s == pytest.approx(2.0)
    assert row.host_quartiles == pytest.approx((2 / 1.1875, 2 / 0.85))  # round times' quartiles 0.85 and 1.1875
    assert row.previous == {"run_id": "latest", "ratio": 2.5, "ratio_vs_plain": 0.92, "host_images_per_s": 2.0}
    assert row.host_change == pytest.approx(0) and not row.host_slower
    assert row.ratio_changes == pytest.approx({"ratio": -0.2, "ratio_vs_plain": 0.9 / 0.92 - 1})
    assert row.regressions == ["ratio"]
    text = compare.format_row(row)
    assert "against run latest: ours / best timm 2.50x then (-20%), ours / plain 0.92x then (-2%)" in text
    assert "REGRESSION: ours / best timm fell by more than 10% (the host no slower)" in text

    # the same ratios on a host 20% slower: contended, not judged
    slow = _row(1.0, 2.0, 0.9, [1.25] * 4, history)
    assert slow.host_change == pytest.approx(-0.2) and slow.host_slower and slow.regressions == []
    assert "host SLOWER by more than 10%" in compare.format_row(slow) and "REGRESSION" not in compare.format_row(slow)

    # a host reference the earlier run did not time (another label): the ratios are still judged, and say so
    unlabelled = _stored_run("latest", "2026-11-28T10:00:00Z", 2.5, 0.92, 2.0, reference="ref B")
    other = _row(1.0, 2.0, 0.9, [1.0], unlabelled)
    assert other.host_change is None and other.regressions == ["ratio"]
    assert "(the host not timed then)" in compare.format_row(other)

    alone = _row(1.0, 2.0, 0.9, [1.0], history, {"fingerprint_id": "f9", "threads": 2})
    assert alone.previous is None and "no earlier compare run on this fingerprint" in compare.format_row(alone)
    assert _row(1.0, 2.0, 0.9, [1.0], [{**history[3], "measured": "n/a"}]).previous is None  # unreadable rows skipped


def test_a_steadily_slower_host_becomes_the_baseline():
    """Run "fast" is the last unflagged one; three runs since were flagged SLOWER than it. Where their host
    references agree within 5% the host is another host, and the latest of them is the baseline; spread wider, or
    only two of them, they stay contended and "fast" stays the baseline."""
    fast = _stored_run("fast", "2026-11-28T09:00:00Z", 2.5, 0.92, 2.0)

    def slow(run_id, hour, host):
        return _stored_run(run_id, f"2026-11-28T{hour}:00:00Z", 2.0, 0.85, host, contended=True)

    steady = fast + slow("s1", 10, 1.50) + slow("s2", 11, 1.55) + slow("s3", 12, 1.48)
    row = _row(1.0, 2.0, 0.9, [1.0 / 0.76] * 4, steady)  # host reference 1.52 img/s now
    assert row.previous == {"run_id": "s3", "ratio": 2.0, "ratio_vs_plain": 0.85, "host_images_per_s": 1.48,
                            "steady": ["s1", "s2", "s3"], "instead_of": "fast"}
    assert not row.host_slower and row.regressions == []  # ratio 2.0 as then, ours / plain +6%
    text = compare.format_row(row)
    assert "against run s3:" in text and "the 3 runs s1, s2, s3, each flagged SLOWER than run fast" in text
    assert "host SLOWER" not in text

    # on that host a ratio that fell is a regression again (ours / timm 1.6 against s3's 2.0)
    fell = _row(1.0, 1.6, 0.9, [1.0 / 0.76] * 4, steady)
    assert fell.regressions == ["ratio"] and fell.ratio_changes["ratio"] == pytest.approx(-0.2)

    spread = fast + slow("s1", 10, 1.50) + slow("s2", 11, 1.20) + slow("s3", 12, 1.48)  # 1.20: 19% off the median
    assert _row(1.0, 2.0, 0.9, [1.0] * 4, spread).previous["run_id"] == "fast"
    two = fast + slow("s2", 11, 1.55) + slow("s3", 12, 1.48)
    assert _row(1.0, 2.0, 0.9, [1.0] * 4, two).previous["run_id"] == "fast"
    # an unflagged run after them is the baseline again, the flagged runs before it no longer count
    again = steady + _stored_run("later", "2026-11-28T13:00:00Z", 2.2, 0.9, 1.5)
    assert _row(1.0, 2.0, 0.9, [1.0] * 4, again).previous["run_id"] == "later"
    # no unflagged run at all: three steady flagged runs still make one
    assert _row(1.0, 2.0, 0.9, [1.0] * 4, steady[3:]).previous["instead_of"] is None


def test_baseline_names_the_run_to_judge_against(tmp_path, capsys):
    history = (_stored_run("fast", "2026-11-28T09:00:00Z", 2.5, 0.92, 2.0)
               + _stored_run("s1", "2026-11-28T10:00:00Z", 2.0, 0.85, 1.5, contended=True)
               + _stored_run("later", "2026-11-28T11:00:00Z", 2.2, 0.9, 2.0))
    times = {"ours": [1.0] * 4, "timm_eager": [2.0] * 4, "plain": [0.9] * 4}
    row = compare.Row("m", 2, "float32", {n: 2 / t[0] for n, t in times.items()}, times, "timm_eager", None)
    row.time_host([1.0 / 0.75] * 4, "ref A")
    env = {"fingerprint_id": "f1", "threads": 2}
    assert compare.previous_run(history, row, env, baseline="s1")["run_id"] == "s1"  # flagged, named outright
    assert compare.previous_run(history, row, env, baseline="fast")["ratio"] == 2.5
    assert compare.previous_run(history, row, env, baseline="elsewhere") is None
    assert compare.previous_run(history, row, env)["run_id"] == "later"
    # an id that is no compare run in the store: a usage error naming the store, before anything is built
    assert main(["compare", "--baseline", "20260101T000000Z-dead", "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--baseline 20260101T000000Z-dead: no compare run with that id in the results store" in err
    assert "Traceback" not in err


def test_results_page_notes_a_slower_host_or_a_fallen_ratio():
    from types import SimpleNamespace

    from registry.docs.render import _previous_note

    slower = {"previous": {"run_id": "R", "host_change": -0.2, "ratio_changes": {"ratio": -0.3},
                           "regressions": []}, "host_reference": {"slower": True}}
    assert _previous_note(SimpleNamespace(extra=slower)).startswith("host 20% slower than in run R: contended")
    fell = {"previous": {"run_id": "R", "host_change": 0.01, "ratio_changes": {"ratio": -0.3, "ratio_vs_plain": -0.12},
                         "regressions": ["ratio", "ratio_vs_plain"]}, "host_reference": {"slower": False}}
    assert _previous_note(SimpleNamespace(extra=fell)) == "against run R: ratio -30%, ours / plain -12%"
    assert _previous_note(SimpleNamespace(extra={})) == ""
    rebased = {"previous": {"run_id": "S", "steady": ["Q", "R", "S"], "instead_of": "F", "host_change": 0.0,
                            "ratio_changes": {"ratio": 0.01}, "regressions": []}, "host_reference": {"slower": False}}
    assert _previous_note(SimpleNamespace(extra=rebased)) == ("judged against run S: the host ran steadily slower "
                                                             "than in run F")


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
    # the host reference ran in the same rounds and is stored; no earlier run to judge against
    assert row["host_images_per_s"] > 0 and row["previous"] is None
    assert row["host_reference"] == compare.throughput.host_reference()[0]
    assert "images_per_s_host_reference" in set(rows["metric"])

    # The first run's ratio made 10x larger and its host 100x slower (ours / plain 100x smaller, so that a noisy
    # round cannot make it fall): the second run, on the same machine and store, finds the ratio fallen on a host
    # that is not slower, a regression in its output, its record and the page.
    (run_path,) = (tmp_path / "runs").glob("*.json")
    first = json.loads(run_path.read_text())
    for check in first["checks"]:
        check["measured"] *= {"ratio": 10, "ratio_vs_plain": 0.01, "images_per_s_host_reference": 0.01}.get(
            check["metric"], 1)
    run_path.write_text(json.dumps(first))
    assert main(["compare", "tf_efficientnet_cc_b0_4e", "--batch-sizes", "2", "--repeats", "1", "--warmup", "0",
                 "--no-memory", "--no-onnxruntime", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"against run {first['run_id']}" in out and "REGRESSION: ours / best timm fell" in out, out
    table = pd.read_csv(tmp_path / "results.csv")
    second = table[(table["check"] == "compare") & (table["run_id"] != first["run_id"])]
    assert set(second[second["status"] == "regression"]["metric"]) == {"ratio"}
    assert main(["publish", "--from", str(tmp_path), "--results", str(tmp_path / "published2"),
                 "--docs-out", str(tmp_path / "docs2")]) == 0  # published2: the first run's file was edited
    results_page = (tmp_path / "docs2" / "results.md").read_text()
    assert re.search(rf"\(against run {first['run_id']}: ratio -[89]\d%\) \| <span class=\"cc-status cc-regression\">",
                     results_page), results_page


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
    ONNX Runtime then ran 8-13% slower. Shuffled per repeat, every contender's calls follow every other one's; on
    CPU each timed call comes right after an untimed call of the same contender (its own cache state, as in a
    process serving one model)."""
    from bench import rounds
    from bench.compare import time_interleaved

    sequence = []
    names = ["ours", "plain", "timm_eager", "timm_channels_last", "timm_traced_frozen", "onnxruntime"]
    times = time_interleaved({n: (lambda n=n: sequence.append(n)) for n in names}, warmup=0, repeats=40,
                             device="cpu")
    assert rounds.WARM_CALLS == 1 and len(sequence) == 2 * 40 * len(names)
    assert all(len(times[n]) == 40 for n in names)
    assert sequence[0::2] == sequence[1::2]  # untimed, then timed, of the same contender
    timed = sequence[1::2]
    assert all(sorted(timed[i:i + 6]) == sorted(names) for i in range(0, len(timed), 6))  # each once a repeat
    predecessors = {n: set() for n in names}
    for before, after in zip(timed, timed[1:]):
        predecessors[after].add(before)
    assert all(predecessors[n] >= set(names) - {n} for n in names), predecessors


def test_rounds_time_each_call_after_an_untimed_one_of_the_same_contender():
    from bench import rounds

    sequence = []
    medians = rounds.median_seconds({n: (lambda n=n: sequence.append(n)) for n in ("ours", "plain")}, 5)
    assert set(medians) == {"ours", "plain"} and len(sequence) == 2 * 5 * 2
    assert sequence[0::2] == sequence[1::2] and sorted(sequence[1::2]) == ["ours"] * 5 + ["plain"] * 5


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
