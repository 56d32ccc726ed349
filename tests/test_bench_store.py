"""The results store: atomic run files, the combined table, corrupt files, concurrent and killed runs."""
from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from bench_support import BIN, offline_env, run_records

from bench import cli, store
from registry import results_schema as schema
from registry.results_schema import TABLE_FILE


def table(folder: Path) -> list[dict[str, str]]:
    return schema.read_table(folder / TABLE_FILE)

REPO = Path(__file__).resolve().parent.parent


def record(run_id: str | None = None, measured: float = 13_314_116, model: str = "m0", checks: int = 1) -> dict:
    run_id = run_id or store.new_run_id()
    return {
        "format": schema.FORMAT, "run_id": run_id, "timestamp": "2026-11-27T19:01:02Z", "finished": None,
        "git_commit": "abc123", "environment": {"device": "cpu", "device_name": "CPU X", "threads": 2,
                                                "torch_version": "2.14.1"},
        "checks": [{"model_id": model, "check": "params", "metric": "parameters", "claimed": 13_310_000,
                    "measured": measured + i, "tolerance": "±5,000", "unit": "parameters", "status": "pass",
                    "reason": "ok", "device": "cpu", "device_name": "", "dtype": "float32", "threads": None,
                    "torch_version": "", "batch_size": None, "extra": {"difference": 4116, "ops": {"aten::mul": 3}}}
                   for i in range(checks)],
    }


def test_run_id_is_utc_time_and_suffix():
    run_id = store.new_run_id()
    stamp, suffix = run_id.split("-")
    assert len(stamp) == 16 and stamp.endswith("Z") and stamp[8] == "T"
    assert len(suffix) == 4 and int(suffix, 16) >= 0


def test_table_columns_values_and_latest(tmp_path):
    first = store.RunFile(tmp_path, record("20261127T190000Z-aaaa", measured=1))
    second = store.RunFile(tmp_path, record("20261127T190500Z-bbbb", measured=2))
    for f in (first, second):
        f.save()
    path = store.rebuild_table(tmp_path)
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == schema.COLUMNS == (
            "run_id", "timestamp", "git_commit", "model_id", "check", "metric", "claimed", "measured", "tolerance",
            "unit", "status", "reason", "device", "device_name", "fingerprint", "dtype", "threads", "allocator",
            "torch_version", "batch_size", "extra")
        rows = list(reader)
    assert [r["run_id"] for r in rows] == ["20261127T190000Z-aaaa", "20261127T190500Z-bbbb"]
    assert rows[0]["claimed"] == "13310000" and rows[0]["measured"] == "1"  # integers stay integers
    # run-level environment fills what a row leaves empty
    assert rows[0]["device_name"] == "CPU X" and rows[0]["threads"] == "2" and rows[0]["torch_version"] == "2.14.1"
    assert json.loads(rows[0]["extra"]) == {"difference": 4116, "ops": {"aten::mul": 3}}
    latest = schema.latest_per_key(table(tmp_path))
    assert len(latest) == 1 and latest[0]["run_id"] == "20261127T190500Z-bbbb"


def test_same_run_id_twice_gets_a_new_file(tmp_path):
    a = store.RunFile(tmp_path, record("20261127T190000Z-aaaa"))
    b = store.RunFile(tmp_path, record("20261127T190000Z-aaaa"))
    assert a.path != b.path and a.path.exists() and b.path.exists()
    assert b.run_id != "20261127T190000Z-aaaa" and b.path.name == f"{b.run_id}.json"


BAD_FILES = {
    "20261127T180000Z-0001.json": lambda good: good[: len(good) // 2],  # truncated
    "20261127T180000Z-0002.json": lambda good: "",  # empty
    "20261127T180000Z-0003.json": lambda good: "[1, 2, 3]",  # not an object
    "20261127T180000Z-0004.json": lambda good: json.dumps({"format": "something-else/9"}),  # foreign
    "20261127T180000Z-0005.json": lambda good: json.dumps({**json.loads(good), "checks": [{"model_id": 3}]}),
}


def _corrupt_store(tmp_path: Path) -> str:
    good = store.RunFile(tmp_path, record("20261127T190000Z-good"))
    good.save()
    text = good.path.read_text()
    for name, make in BAD_FILES.items():
        (tmp_path / "runs" / name).write_text(make(text))
    (tmp_path / "runs" / "20261127T180000Z-0006.json").write_bytes(b"\xff\xfe\x00garbage")
    return good.run_id


def test_corrupt_run_files_are_skipped_with_a_warning(tmp_path):
    good_id = _corrupt_store(tmp_path)
    warned: list[str] = []
    store.rebuild_table(tmp_path, warned.append)
    assert len(warned) == len(BAD_FILES) + 1
    assert all("skipped" in w and "runs/20261127T180000Z-000" in w for w in warned)
    assert [r["run_id"] for r in table(tmp_path)] == [good_id]
    with pytest.warns(store.StoreWarning):
        store.iter_runs(tmp_path)  # without a callback: Python warnings


def test_corrupt_results_csv_is_a_located_error_and_the_next_rebuild_repairs_it(tmp_path):
    store.RunFile(tmp_path, record("20261127T190000Z-aaaa")).save()
    (tmp_path / TABLE_FILE).write_text('run_id,"unterminated\n\x00\x00')
    with pytest.raises(store.ResultsStoreError, match=r"results\.csv:1: header: missing"):
        table(tmp_path)
    store.rebuild_table(tmp_path)
    assert [r["run_id"] for r in table(tmp_path)] == ["20261127T190000Z-aaaa"]


def test_cli_run_over_a_corrupt_store_warns_and_keeps_going(tmp_path, capsys, monkeypatch):
    good_id = _corrupt_store(tmp_path / "results")
    monkeypatch.chdir(tmp_path)
    code = cli.main(["run", "tf_efficientnet_cc_b0_4e", "--checks", "params", "--results", "results"])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert err.count("cc-bench: warning:") == len(BAD_FILES) + 1
    runs = {r["run_id"] for r in table(tmp_path / "results")}
    assert good_id in runs and len(runs) == 2
    assert "Traceback" not in err


def test_a_crash_while_writing_leaves_the_previous_file(tmp_path, monkeypatch):
    run = store.RunFile(tmp_path, record("20261127T190000Z-aaaa"))
    run.save()
    before = run.path.read_bytes()

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store.os, "replace", broken_replace)
    run.record["checks"] = run.record["checks"] * 3
    with pytest.raises(store.ResultsStoreError, match="No space left"):
        run.save()
    assert run.path.read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["20261127T190000Z-aaaa.json"]  # no temp left
    with pytest.raises(store.ResultsStoreError):
        store.rebuild_table(tmp_path)
    assert not (tmp_path / TABLE_FILE).exists()


WRITER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {repo!r})
    from bench import store
    sys.path.insert(0, {tests!r})
    from test_bench_store import record
    results, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    for i in range(n):
        run = store.RunFile(results, record(model=f"{{tag}}-{{i}}", checks=20))
        run.save()
        run.record["finished"] = "2026-11-27T19:01:09Z"
        run.save()
        store.rebuild_table(results)
""")


def test_concurrent_runs_do_not_clobber_each_other(tmp_path):
    script = WRITER.format(repo=str(REPO), tests=str(REPO / "tests"))
    n = 12
    writers = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path), tag, str(n)])
               for tag in ("a", "b", "c")]
    reads = 0
    while any(w.poll() is None for w in writers):
        if (tmp_path / TABLE_FILE).exists():  # a reader never sees a half-written table
            df = pd.read_csv(tmp_path / TABLE_FILE)
            assert list(df.columns) == list(schema.COLUMNS)
            reads += 1
        time.sleep(0.01)
    assert [w.returncode for w in writers] == [0, 0, 0]
    runs = run_records(tmp_path)
    assert len(runs) == 3 * n and all(r["finished"] for r in runs)
    rows = table(tmp_path)
    assert len(rows) == 3 * n * 20
    assert sorted({r["model_id"] for r in rows}) == sorted(f"{t}-{i}" for t in "abc" for i in range(n))
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_a_writer_killed_at_any_moment_leaves_readable_files(tmp_path):
    store.RunFile(tmp_path, record("20261127T170000Z-0000")).save()
    earlier = (tmp_path / "runs" / "20261127T170000Z-0000.json").read_bytes()
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r}); sys.path.insert(0, {str(REPO / 'tests')!r})
        from bench import store
        from test_bench_store import record
        run = store.RunFile(sys.argv[1], record("20261127T180000Z-kill"))
        print("ready", flush=True)
        i = 0
        while True:
            i += 1
            run.record["checks"] = record(checks=1 + i % 200)["checks"]
            run.save()
            store.rebuild_table(sys.argv[1])
    """)
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.7)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (tmp_path / "runs" / "20261127T170000Z-0000.json").read_bytes() == earlier
    killed = store.read_run(tmp_path / "runs" / "20261127T180000Z-kill.json")
    assert killed["finished"] is None and killed["checks"]
    warned: list[str] = []
    rows = store.history(tmp_path, warned.append)
    assert not warned and {"20261127T170000Z-0000", "20261127T180000Z-kill"} == {r["run_id"] for r in rows}
    store.rebuild_table(tmp_path, warned.append)  # the next run cleans up after it
    assert not warned


@pytest.mark.slow
def test_cc_bench_killed_midway_keeps_finished_models(tmp_path):
    results = tmp_path / "results"
    store.RunFile(results, record("20261127T170000Z-0000")).save()
    store.rebuild_table(results)
    earlier = (results / "runs" / "20261127T170000Z-0000.json").read_bytes()
    proc = subprocess.Popen([str(BIN / "cc-bench"), "run", "--all", "--checks", "params,throughput",
                             "--batch-sizes", "1", "--repeats", "3", "--results", "results"],
                            cwd=tmp_path, env=offline_env(tmp_path), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    partial = None
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        for path in (results / "runs").glob("2*.json"):
            if path.name != "20261127T170000Z-0000.json":
                data = json.loads(path.read_text())  # always whole: never half-written
                if data["checks"]:
                    partial = path
        if partial:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    assert partial is not None, "cc-bench never saved a finished model"
    assert (results / "runs" / "20261127T170000Z-0000.json").read_bytes() == earlier
    killed = store.read_run(partial)
    if proc.returncode == -signal.SIGKILL:
        assert killed["finished"] is None
    assert {c["model_id"] for c in killed["checks"]} >= {"tf_efficientnet_cc_b0_4e"}
    assert {c["status"] for c in killed["checks"]} <= {"pass", "info"}
    # the table on disk is still the earlier one, intact; the next rebuild picks the partial run up
    assert {r["run_id"] for r in table(results)} == {"20261127T170000Z-0000"}
    store.rebuild_table(results)
    assert {r["run_id"] for r in table(results)} == {"20261127T170000Z-0000", killed["run_id"]}
