"""``cc_models.runtime.tune_cpu``: the allocator state it sets, judged by the kernel's page-fault counter,
and the label every run record carries. Each case runs in a fresh process (the state is per process)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench_support import cc_bench, offline_env, run_records
from cc_models import hugepages
from cc_models.runtime import THP_ENV

TUNED = "glibc-tuned(mmap_threshold=1GiB,trim_threshold=1GiB)"
THP = "+thp" if hugepages.available() else ""  # tune_cpu's huge pages for torch, where the system has them
needs_thp = pytest.mark.skipif(not hugepages.available(), reason="no transparent huge pages on this system")
TCMALLOC = Path("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4")
glibc_only = pytest.mark.skipif(not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None,
                                reason="glibc malloc tuning is Linux/glibc only")

# Allocates and frees a 64 MiB tensor repeatedly; prints the minor page faults per allocation and the state.
PROBE = """
import json, resource, sys, torch
import cc_models.runtime as rt
before = rt.allocator_setting()
state = rt.tune_cpu(threads=1).to_dict() if sys.argv[1] == "tune" else rt.cpu_state().to_dict()
again = rt.tune_cpu(threads=1).to_dict() if sys.argv[1] == "tune" else state
torch.empty(16 << 20).fill_(1.0)  # first touch of the heap: not counted
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    torch.empty(16 << 20).fill_(1.0)
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / 10
print(json.dumps({"before": before, "state": state, "again": again, "faults": faults}))
"""


def _probe(mode: str, probe: str = PROBE, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if k != THP_ENV}  # set here if this process ran tune_cpu
    proc = subprocess.run([sys.executable, "-c", probe, mode], capture_output=True, text=True, timeout=120,
                          env={**clean, **env})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@glibc_only
def test_tuned_glibc_stops_the_page_faults_per_allocation():
    default, tuned = _probe("none"), _probe("tune")
    # 64 MiB = 16384 pages of 4 KiB: glibc's default maps fresh pages (faulting each) on every allocation.
    # Tuned, the block is reused; the bound leaves room for the host reclaiming idle pages now and then.
    assert default["state"]["allocator"] == "glibc-default" and default["faults"] > 12000
    assert tuned["before"] == "glibc-default"
    assert tuned["state"] == tuned["again"], "tune_cpu is idempotent"
    assert tuned["state"]["allocator"] == TUNED + THP and tuned["faults"] < 4000
    assert tuned["state"]["threads"] == 1 and tuned["state"]["flush_denormals"] is True
    assert tuned["state"]["notes"] == []


@glibc_only
def test_allocator_set_from_the_environment_is_reported():
    tunables = "glibc.malloc.mmap_threshold=1073741824:glibc.malloc.trim_threshold=1073741824"
    probe = _probe("none", GLIBC_TUNABLES=tunables)
    assert probe["state"]["allocator"] == "glibc-tunables(mmap_threshold=1GiB,trim_threshold=1GiB)"
    assert probe["faults"] < 4000


# tune_cpu, then a 64 MiB activation-sized tensor: does torch's allocator advise huge pages for it, and does the
# kernel back it with them? "late": a tensor exists before tune_cpu; "off": huge_pages=False.
HUGE_PROBE = """
import json, os, sys, torch
import cc_models.runtime as rt
from cc_models import hugepages
if sys.argv[1] == "late":
    torch.ones(8)
state = rt.tune_cpu(threads=1, huge_pages=sys.argv[1] != "off").to_dict()
x = torch.empty(16 << 20).fill_(1.0)
print(json.dumps({"state": state, "advised": hugepages.advised(x), "huge": hugepages.huge_bytes(x),
                  "env": os.environ.get("THP_MEM_ALLOC_ENABLE")}))
"""


@needs_thp
def test_tune_cpu_puts_torchs_large_blocks_in_huge_pages():
    probe = _probe("first", HUGE_PROBE)
    assert probe["state"]["allocator"].endswith("+thp") and probe["state"]["notes"] == []
    assert probe["advised"] and probe["huge"] >= 16 * hugepages.HUGE_PAGE  # of the tensor's 32 huge pages


@needs_thp
def test_huge_pages_too_late_say_so_and_stay_off():
    probe = _probe("late", HUGE_PROBE)
    assert not probe["state"]["allocator"].endswith("+thp") and not probe["advised"]
    assert any("torch allocated before tune_cpu" in note for note in probe["state"]["notes"])


@needs_thp
def test_huge_pages_opt_out():
    probe = _probe("off", HUGE_PROBE)
    assert not probe["state"]["allocator"].endswith("+thp") and not probe["advised"] and probe["env"] is None
    off = _probe("first", HUGE_PROBE, **{THP_ENV: "0"})
    assert not off["advised"] and "left off" in off["state"]["notes"][-1]


@pytest.mark.skipif(not TCMALLOC.exists(), reason="Debian's libtcmalloc-minimal4 is not installed")
def test_preloaded_tcmalloc_is_left_alone_and_named():
    probe = _probe("tune", LD_PRELOAD=str(TCMALLOC))
    assert probe["state"]["allocator"] == "tcmalloc(LD_PRELOAD)" + THP
    assert "preloaded" in probe["state"]["notes"][0]


def test_bad_thread_count_is_refused():
    from cc_models.runtime import tune_cpu

    with pytest.raises(ValueError, match="threads"):
        tune_cpu(threads=0)


@pytest.mark.slow
@glibc_only
@pytest.mark.parametrize("flag, allocator", [([], TUNED + THP), (["--no-tune-cpu"], "glibc-default")])
def test_cc_bench_run_records_the_allocator(tmp_path, flag, allocator):
    proc = cc_bench(["run", "tf_efficientnet_cc_b0_4e", "--checks", "params", "--threads", "1", *flag],
                    cwd=tmp_path, env=offline_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    (record,) = run_records(tmp_path / ".cc-bench")
    env = record["environment"]
    assert env["allocator"] == allocator and env["threads"] == 1
    assert env["flush_denormals"] is bool(not flag)


@pytest.mark.parametrize("command", ["run", "compare"])
def test_cc_bench_refuses_zero_threads(tmp_path, capsys, command):
    from bench.cli import main

    with pytest.raises(SystemExit) as exit_:  # argparse's usage error
        main([command, "tf_efficientnet_cc_b0_4e", "--threads", "0", "--results", str(tmp_path)])
    assert exit_.value.code == 2
    assert "--threads: '0' is not a positive integer" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--allocators", "default,bogus"], "unknown --impl/--allocators value(s): bogus"),
    (["--batch-sizes", "0"], "--batch-sizes takes positive integers"),
    (["no_such_model"], "unknown model id(s): no_such_model"),
])
def test_allocator_bench_usage_errors(argv, message, capsys):
    from bench.allocator import main

    assert main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
@glibc_only
def test_allocator_bench_times_each_allocator_in_its_own_process():
    proc = subprocess.run([sys.executable, "-m", "bench.allocator", "tf_efficientnet_cc_b0_4e", "--batch-sizes", "8",
                           "--repeats", "3", "--threads", "1"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.strip().splitlines()[-1]
    assert "bs=8" in line
    default, tuned = line.split(": ", 1)[1].split("; ")
    # glibc maps blocks above 32 MiB (its largest dynamic mmap threshold) afresh on every malloc: B0's first
    # activations at batch 8 are 8x32x112x112 floats (12.8 MB) and up, and its workspace several times that, so
    # the default process faults pages in every batch; the tuned one keeps them in the heap (its heap still grows
    # over the first batches, hence a ratio rather than zero)
    default_faults, tuned_faults = int(default.split()[-2]), int(tuned.split()[-2])
    assert default.startswith("glibc-default") and default_faults > 1000
    assert tuned.startswith(TUNED) and tuned_faults < default_faults / 4
