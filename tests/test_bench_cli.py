"""``cc-bench run`` end to end: the packaged index on this machine, the seed page's FLOPs, usage errors."""
from __future__ import annotations

import csv
import json

import pytest

import registry

from bench_support import MODEL_IDS, cc_bench, copy_index, offline_env, run_records, set_field

from bench import cli
from registry.results_schema import COLUMNS


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """`cc-bench run --all` on the packaged index, offline, no ImageNet: run once, asserted on by several tests."""
    tmp = tmp_path_factory.mktemp("full-run")
    proc = cc_bench(["run", "--all"], cwd=tmp, env=offline_env(tmp))
    return tmp, proc


@pytest.mark.slow
def test_run_all_passes_offline_without_imagenet(full_run):
    tmp, proc = full_run
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (record,) = run_records(tmp / ".cc-bench")
    assert record["finished"] and record["git_commit"] and record["environment"]["torch_version"]
    for model_id in MODEL_IDS:
        mine = [c for c in record["checks"] if c["model_id"] == model_id]
        status = {(c["check"], c["metric"], c["batch_size"]): c["status"] for c in mine}
        assert status[("params", "parameters", None)] == "pass"
        assert status[("flops", "macs", None)] == "pass"
        assert status[("flops", "flop_counter_flops", None)] == "info"
        for c in mine:
            if c["check"] in ("filesize", "data-config", "accuracy"):
                assert c["status"] == "skip" and c["reason"], c
        filesize = [c for c in mine if c["check"] == "filesize"][0]
        assert "cannot be had" in filesize["reason"] and "HF_HUB_OFFLINE" in filesize["reason"]
        accuracy = [c for c in mine if c["check"] == "accuracy"]
        assert {c["metric"] for c in accuracy} == {"top1", "top5"}
        assert all("--imagenet" in c["reason"] for c in accuracy)
        throughput = [c for c in mine if c["check"] == "throughput"]
        assert sorted(c["batch_size"] for c in throughput) == [1, 32]
        for c in throughput:
            assert c["status"] == "info" and c["measured"] > 0
            assert c["device"] == "cpu" and c["dtype"] == "float32" and c["threads"] >= 1 and c["torch_version"]
            assert len(c["extra"]["times_s"]) >= 2 and c["extra"]["warmup"] >= 1
    # the printed table and the one-line verdict
    out = proc.stdout
    assert out.splitlines()[-1].startswith("verdict: PASS: 6 pass, 0 fail")
    header = out.splitlines()[0].split()
    assert header[:4] == ["model", "check", "metric", "batch"] and "status" in header


@pytest.mark.slow
def test_run_all_keeps_its_table_in_the_local_store_only(full_run):
    tmp, proc = full_run
    with open(tmp / ".cc-bench" / "results.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == COLUMNS
        table = list(reader)
    assert len(table) == 3 * (1 + 2 + 1 + 5 + 2 + 2)  # params, flops, filesize, data-config, accuracy, throughput
    flops = [r for r in table if r["check"] == "flops" and r["metric"] == "macs"]
    for r in flops:
        extra = json.loads(r["extra"])
        assert extra["fvcore_skipped_ops"], "fvcore's skipped ops must be listed"
        assert extra["erratum"]["published"] == registry.load().get(r["model_id"]).erratum("Metadata.FLOPs").published
    # nothing outside the local store (and the test's own caches), which git ignores
    assert {p.name for p in tmp.iterdir()} <= {".cc-bench", "hf-home", "torch-home"}
    assert (tmp / ".cc-bench" / ".gitignore").read_text().splitlines()[-1] == "*"


@pytest.mark.slow
def test_seed_page_flops_fail_for_every_model(tmp_path):
    root = copy_index(tmp_path)
    index = registry.load()
    published = {m: index.get(m).erratum("Metadata.FLOPs").published for m in MODEL_IDS}
    for model_id, value in published.items():
        set_field(root, model_id, "FLOPs", value)
    proc = cc_bench(["run", "--all", "--checks", "flops", "--index", str(root), "--format", "json"],
                    cwd=tmp_path, env=offline_env(tmp_path))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] is False and report["exit_code"] == 1
    macs = [r for r in report["results"] if r["metric"] == "macs"]
    assert [r["model_id"] for r in macs] == list(MODEL_IDS)
    for r in macs:
        assert r["status"] == "fail"
        assert r["claimed"] == published[r["model_id"]]
        assert r["measured"] == index.get(r["model_id"]).flops
        ratio = r["measured"] / r["claimed"]
        assert 1.8 < ratio < 2.1
        assert f"claimed {r['claimed']:,}" in r["reason"] and f"measured {r['measured']:,}" in r["reason"]
        assert f"ratio {ratio:.4f}" in r["reason"]
    assert report["verdict"].startswith("verdict: FAIL")


def _main(argv, capsys):
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv, message", [
    (["run"], "give model ids, or --all"),
    (["run", "--all", "tf_efficientnet_cc_b0_4e"], "not both"),
    (["run", "--all", "--checks", "speed"], "unknown check 'speed'"),
    (["run", "tf_efficientnet_cc_b0_4x"], "did you mean"),
    (["run", "--all", "--batch-sizes", "0"], "not a positive integer"),
    (["run", "--all", "--batch-sizes", "²"], "'²' is not a positive integer"),
    (["run", "--all", "--batch-sizes", ","], "give at least one positive integer"),
    (["run", "--all", "--checks", ","], "give at least one check"),
    (["run", "--all", "--checks", "params", "--checks", " , "], "give at least one check"),
    (["run", "--all", "--time-budget", "nan"], "not a positive finite number"),
    (["run", "--all", "--time-budget", "inf"], "not a positive finite number"),
    (["run", "--all", "--time-budget", "0"], "not a positive finite number"),
    (["compare", "--batch-sizes", "²"], "not a positive integer"),
    (["compare", "--repeats", "0"], "not a positive integer"),
    (["run", "--all", "--checks", "accuracy", "--imagenet", "/nonexistent/imagenet"], "no such folder"),
    (["run", "--all", "--checkpoint-dir", "/nonexistent/ckpt"], "no such folder"),
])
def test_usage_errors_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = _main(argv, capsys)
    assert code == 2
    assert message in err
    assert "Traceback" not in err
    assert not list(tmp_path.iterdir())  # no store created, nothing stored


def test_unrecognised_imagenet_layout_is_an_environment_error(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "imagenet").mkdir()
    code, _, err = _main(["run", "--all", "--checks", "accuracy", "--imagenet", str(tmp_path / "imagenet")], capsys)
    assert code == 2 and "neither class folders" in err


def test_torchrun_runs_only_the_accuracy_check(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WORLD_SIZE", "2")
    code, _, err = _main(["run", "--all", "--checks", "params"], capsys)
    assert code == 2 and "--checks accuracy" in err


def test_invalid_index_exits_1_with_located_problems(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = copy_index(tmp_path)
    set_field(root, "tf_efficientnet_cc_b0_4e", "Crop Pct", "'1.5'")
    code, _, err = _main(["run", "--all", "--index", str(root)], capsys)
    assert code == 1
    assert "tf_efficientnet_cc_b0_4e.yml:" in err and "Crop Pct" in err


def test_cuda_requested_without_gpu_skips_device_checks(tmp_path, capsys, monkeypatch):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    monkeypatch.chdir(tmp_path)
    code, out, _ = _main(["run", "tf_efficientnet_cc_b0_4e", "--checks", "accuracy,throughput", "--device", "cuda",
                          "--format", "json"], capsys)
    assert code == 0
    report = json.loads(out)
    assert {r["check"] for r in report["results"]} == {"accuracy", "throughput"}
    for r in report["results"]:
        assert r["status"] == "skip" and "CUDA" in r["reason"], r
    assert [(r["dtype"], r["batch_size"]) for r in report["results"] if r["check"] == "throughput"] == [
        ("bfloat16-amp", 1), ("bfloat16-amp", 256), ("float16-amp", 1), ("float16-amp", 256)]
