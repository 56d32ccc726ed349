"""`cc-bench publish`, and the results store under careless or hostile input: a clear error, no hang, docs kept."""
from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

import registry.cli
from bench import cli, publish as publish_mod, store
from bench.checks import throughput
from bench.checks.base import CheckResult
from registry import results_schema as schema
from registry.docs import read_results, render_docs

MODEL = "tf_efficientnet_cc_b0_4e"


def record(run_id: str, timestamp: str, *, batch_size=1, measured=10.0, fingerprint="f1f1f1f1f1f1") -> dict:
    env = {"device": "cpu", "device_name": "CPU X", "threads": 2, "torch_version": "2.14.1", "allocator": "glibc",
           "fingerprint_id": fingerprint}
    return {"format": schema.FORMAT, "run_id": run_id, "timestamp": timestamp, "finished": timestamp,
            "git_commit": "abc", "environment": env,
            "checks": [{"model_id": MODEL, "check": "throughput", "metric": "images_per_s", "measured": measured,
                        "unit": "img/s", "status": "info", "device": "cpu", "dtype": "float32",
                        "batch_size": batch_size, "extra": {}}]}


def local_store(folder: Path, *records: dict) -> Path:
    for r in records:
        store.RunFile(folder, r)
    return folder


def main(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = cli.main(argv)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def no_hang():
    """A read of a FIFO would block forever: fail the test instead."""
    def expire(*_):
        raise TimeoutError("blocked: the store opened something that never delivers data")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def docs(tmp_path) -> Path:
    """Docs rendered from a good store: what a failing command must leave as it is."""
    good = local_store(tmp_path / "good", record("20260101T000000Z-0001", "2026-01-01T00:00:00Z"))
    store.rebuild_table(good)
    out = tmp_path / "docs"
    render_docs(None, good, out)
    return out


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_publish_copies_runs_rebuilds_the_table_and_renders_the_docs(tmp_path, capsys):
    local = local_store(tmp_path / "local", record("20260101T000000Z-0001", "2026-01-01T00:00:00Z"),
                        record("20260102T000000Z-0002", "2026-01-02T00:00:00Z", measured=12.0))
    argv = ["publish", "--from", str(local), "--results", str(tmp_path / "pub"), "--docs-out", str(tmp_path / "d")]
    code, out, err = main(argv, capsys)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "pub" / "runs").iterdir()) == [
        "20260101T000000Z-0001.json", "20260102T000000Z-0002.json"]
    assert {r["run_id"] for r in schema.read_table(tmp_path / "pub" / "results.csv")} == {
        "20260101T000000Z-0001", "20260102T000000Z-0002"}
    assert "20260102T000000Z-0002" in (tmp_path / "d" / "index.md").read_text()
    assert not (tmp_path / "pub" / ".gitignore").exists()  # the published store is committed
    code, out, _ = main(argv, capsys)
    assert code == 0 and "published 0 new run(s)" in out and "2 already there" in out


def test_publish_refuses_a_different_run_under_a_published_id(tmp_path, capsys):
    local_store(tmp_path / "pub", record("20260101T000000Z-0001", "2026-01-01T00:00:00Z"))
    local = local_store(tmp_path / "local", record("20260101T000000Z-0001", "2026-01-01T00:00:00Z", measured=99.0))
    code, _, err = main(["publish", "--from", str(local), "--results", str(tmp_path / "pub"), "--docs-out",
                         str(tmp_path / "d")], capsys)
    assert code == 2 and "a different run with this id is already published" in err and "Traceback" not in err


def test_publish_an_unknown_run_is_a_usage_error(tmp_path, capsys):
    local = local_store(tmp_path / "local", record("20260101T000000Z-0001", "2026-01-01T00:00:00Z"))
    code, _, err = main(["publish", "nope", "--from", str(local), "--results", str(tmp_path / "pub")], capsys)
    assert code == 2 and "no run nope" in err and not (tmp_path / "pub").exists()


def _table_is_a_folder(store_dir: Path) -> Path:
    (store_dir / "results.csv").mkdir(parents=True)
    return store_dir


def _table_is_a_fifo(store_dir: Path) -> Path:
    store_dir.mkdir()
    os.mkfifo(store_dir / "results.csv")
    return store_dir


def _store_is_a_file(store_dir: Path) -> Path:
    store_dir.write_text("not a store\n")
    return store_dir


def _runs_is_a_file(store_dir: Path) -> Path:
    store_dir.mkdir()
    (store_dir / "runs").write_text("")
    return store_dir


BROKEN_STORES = {"results.csv is a folder": _table_is_a_folder, "results.csv is a FIFO": _table_is_a_fifo,
                 "--results is a file": _store_is_a_file, "runs is a file": _runs_is_a_file}


@pytest.mark.parametrize("make", BROKEN_STORES.values(), ids=list(BROKEN_STORES))
def test_a_store_of_the_wrong_kind_is_an_error_and_the_docs_stay(make, tmp_path, docs, capsys):
    before = snapshot(docs)
    broken = make(tmp_path / "broken")
    local = local_store(tmp_path / "local", record("20260103T000000Z-0003", "2026-01-03T00:00:00Z"))
    code, _, err = main(["publish", "--from", str(local), "--results", str(broken), "--docs-out", str(docs)], capsys)
    assert code == 2 and str(broken) in err and "Traceback" not in err, err
    code, _, err = main(["publish", "--from", str(broken), "--results", str(tmp_path / "pub"), "--docs-out",
                         str(docs)], capsys)
    assert code == 2 and str(broken) in err, err
    code, _, err = main(["run", MODEL, "--checks", "params", "--results", str(broken)], capsys)
    assert code == 2 and str(broken) in err, err
    if make is not _runs_is_a_file:  # the docs read only the table
        code = registry.cli.main(["docs", "--results", str(broken), "--out", str(docs)])
        err = capsys.readouterr().err
        assert code != 0 and "no bench run recorded" not in err and str(broken) in err, err
    assert snapshot(docs) == before


def test_a_run_whose_id_is_not_its_file_name_is_skipped(tmp_path, capsys):
    local = local_store(tmp_path / "local", record("20260101T000000Z-0001", "2026-01-01T00:00:00Z"))
    (tmp_path / "outside.json").write_text(store.dumps(record("20260102T000000Z-0002", "2026-01-02T00:00:00Z")))
    sneaky = store.dumps(record("../outside", "2026-01-03T00:00:00Z"))
    (local / "runs" / "20260103T000000Z-0003.json").write_text(sneaky)
    code, _, err = main(["publish", "--from", str(local), "--results", str(tmp_path / "pub"), "--docs-out",
                         str(tmp_path / "d")], capsys)
    assert code == 0 and "run_id '../outside' differs from the file's name" in err
    assert [p.name for p in (tmp_path / "pub" / "runs").iterdir()] == ["20260101T000000Z-0001.json"]


def test_a_fifo_in_runs_is_skipped_with_a_warning_never_opened(tmp_path, capsys):
    local = local_store(tmp_path / "local", record("20260101T000000Z-0001", "2026-01-01T00:00:00Z"))
    os.mkfifo(local / "runs" / "20260102T000000Z-fifo.json")
    code, out, err = main(["publish", "--from", str(local), "--results", str(tmp_path / "pub"), "--docs-out",
                           str(tmp_path / "d")], capsys)
    assert code == 0, err
    assert "20260102T000000Z-fifo.json" in err and "FIFO" in err and "skipped" in err
    assert [p.name for p in (tmp_path / "pub" / "runs").iterdir()] == ["20260101T000000Z-0001.json"]


def test_a_row_with_a_negative_batch_size_is_a_located_error(tmp_path, docs, capsys):
    before = snapshot(docs)
    bad = tmp_path / "bad"
    bad.mkdir()
    good = store.run_rows(record("20260101T000000Z-0001", "2026-01-01T00:00:00Z"))
    rows = good + [{**good[0], "batch_size": -1}]
    (bad / "results.csv").write_text(schema.write_table(rows))
    code = registry.cli.main(["docs", "--results", str(bad), "--out", str(docs)])
    err = capsys.readouterr().err
    assert code == 1 and f"{bad / 'results.csv'}:3: batch_size: '-1' is not a positive integer" in err, err
    assert "Traceback" not in err and snapshot(docs) == before
    # the same row in a run file: that run is skipped with the reason, the others are published
    local = local_store(tmp_path / "local", record("20260101T000000Z-0001", "2026-01-01T00:00:00Z"),
                        record("20260102T000000Z-0002", "2026-01-02T00:00:00Z", batch_size=-1))
    code, _, err = main(["publish", "--from", str(local), "--results", str(tmp_path / "pub"), "--docs-out",
                         str(tmp_path / "d")], capsys)
    assert code == 0 and "20260102T000000Z-0002.json: checks[0].batch_size: '-1' is not a positive integer" in err


def test_concurrent_publishers_leave_the_docs_of_the_newest_store(tmp_path, monkeypatch):
    """The first publisher is held inside its rendering; the second must wait for it, then render last."""
    target, out = tmp_path / "pub", tmp_path / "d"
    first = local_store(tmp_path / "a", record("20260101T000000Z-000a", "2026-01-01T00:00:00Z"))
    second = local_store(tmp_path / "b", record("20260102T000000Z-000b", "2026-01-02T00:00:00Z"))
    rendering, release = threading.Event(), threading.Event()
    real_render = publish_mod.render_docs

    def slow_render(index, results, out_dir):
        if threading.current_thread().name == "first":
            rendering.set()
            release.wait(60)
        return real_render(index, results, out_dir)

    monkeypatch.setattr(publish_mod, "render_docs", slow_render)
    errors: list[BaseException] = []

    def publish(folder: Path) -> None:
        try:
            publish_mod.publish(None, target, out, sorted((folder / "runs").glob("*.json")))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    a = threading.Thread(target=publish, args=(first,), name="first")
    a.start()
    assert rendering.wait(60)
    b = threading.Thread(target=publish, args=(second,), name="second")
    b.start()
    time.sleep(0.5)  # the second publisher has reached the lock
    release.set()
    a.join(60)
    b.join(60)
    assert not errors
    assert read_results(target).latest_run.run_id == "20260102T000000Z-000b"
    assert "20260102T000000Z-000b" in (out / "index.md").read_text()


def _row(batch_size: int = 1) -> CheckResult:
    return CheckResult(MODEL, "throughput", "images_per_s", batch_size=batch_size, device="cpu", dtype="float32")


def test_regressions_compare_only_runs_with_the_same_fingerprint(tmp_path):
    local_store(tmp_path, record("20260101T000000Z-0001", "2026-01-01T00:00:00Z", measured=10.0),
                record("20260102T000000Z-0002", "2026-01-02T00:00:00Z", measured=20.0, fingerprint="other"),
                record("20260103T000000Z-0003", "2026-01-03T00:00:00Z", measured=30.0, fingerprint=""))
    history = store.history(tmp_path)
    env = {"threads": 2, "fingerprint_id": "f1f1f1f1f1f1"}
    assert throughput.previous(history, _row(), env)["run_id"] == "20260101T000000Z-0001"
    assert throughput.previous(history, _row(), {**env, "fingerprint_id": "other"})["images_per_s"] == 20.0
    assert throughput.previous(history, _row(), {**env, "fingerprint_id": "unseen"}) is None
    assert throughput.previous(history, _row(), {"threads": 2}) is None  # no fingerprint: never compared
    assert throughput.previous(history, _row(32), env) is None


def test_the_fingerprint_names_the_machine(monkeypatch):
    import torch

    from bench import env

    found = env.fingerprint("cpu")
    assert found["torch_build"].endswith(f"CPU capability {torch.backends.cpu.get_cpu_capability()}")
    assert found["cores"] == len(os.sched_getaffinity(0))
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith(("flags", "Features"))).split(":", 1)[1].split()
    except (OSError, StopIteration):
        pytest.skip("no /proc/cpuinfo flags here")
    for flag in ("avx2", "avx512f", "amx_tile", "asimd"):
        assert (flag in found["isa"]) == (flag in flags)
    same = env.fingerprint_id(found)
    assert env.fingerprint_id(dict(found)) == same
    assert env.fingerprint_id({**found, "allocator": "something else"}) != same


def test_throughput_figures_state_their_conditions(tmp_path):
    run = record("20260101T000000Z-0001", "2026-01-01T00:00:00Z", fingerprint="abcdef123456")
    run["environment"]["allocator"] = "glibc mmap/trim 1 GiB"
    local_store(tmp_path / "s", run)
    store.rebuild_table(tmp_path / "s")
    render_docs(None, tmp_path / "s", tmp_path / "d")
    (line,) = [x for x in (tmp_path / "d" / "results.md").read_text().splitlines()
               if x.startswith(f"| <code>{MODEL}</code> | 1 |")]
    assert "float32, 2 threads, allocator glibc mmap/trim 1 GiB, CPU X, fingerprint abcdef12" in line


def test_a_table_from_before_fingerprints_reads_with_them_empty(tmp_path):
    legacy = [c for c in schema.COLUMNS if c not in ("fingerprint", "allocator")]
    with open(tmp_path / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=legacy, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(store.run_rows(record("20260101T000000Z-0001", "2026-01-01T00:00:00Z")))
    (measured,) = read_results(tmp_path).rows
    assert (measured.fingerprint, measured.allocator, measured.batch_size) == ("", "", 1)
    assert "allocator not recorded" in measured.conditions and "fingerprint not recorded" in measured.conditions


@pytest.mark.skipif(shutil.which("git") is None, reason="no git")
def test_a_run_from_uncommitted_code_says_so(tmp_path):
    from bench import env
    from registry.docs.render import short_commit

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "cc_models").mkdir()
    (tmp_path / "results").mkdir()
    (tmp_path / "cc_models" / "layer.py").write_text("x = 1\n")
    (tmp_path / "results" / "results.csv").write_text("run_id\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    clean = env.git_commit(tmp_path)
    assert len(clean) == 40 and not clean.endswith("-dirty")
    (tmp_path / "results" / "results.csv").write_text("run_id\nnew\n")  # publishing rewrites results/: still clean
    assert env.git_commit(tmp_path) == clean
    (tmp_path / "cc_models" / "layer.py").write_text("x = 2\n")
    assert env.git_commit(tmp_path) == f"{clean}-dirty"
    assert short_commit(f"{clean}-dirty") == f"{clean[:12]}-dirty" and short_commit(clean) == clean[:12]
    assert env.git_commit(tmp_path / "cc_models") == "unknown"  # not the top of the work tree
