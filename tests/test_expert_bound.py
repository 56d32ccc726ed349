"""``python -m bench.expert_bound``: its usage errors, and one short run's row."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest


@pytest.mark.parametrize("argv, message", [
    (["--batch-sizes", "x"], "--batch-sizes takes positive integers"),
    (["--threads", "0"], "--rounds and --threads >= 1"),
    (["no_such_model"], "unknown model id(s): no_such_model"),
])
def test_expert_bound_usage_errors(argv, message, capsys):
    from bench.expert_bound import main

    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_expert_bound_split_says_why_it_cannot_run(monkeypatch, capsys):
    from bench.expert_bound import main

    monkeypatch.setenv("CC_MODELS_CPU_KERNELS", "0")
    assert main(["tf_efficientnet_cc_b0_4e", "--split", "--rounds", "1"]) == 2
    assert "--split: the CPU kernels are turned off (CC_MODELS_CPU_KERNELS=0)" in capsys.readouterr().err


@pytest.mark.slow
def test_expert_bound_reports_the_extra_bytes_and_the_bound():
    proc = subprocess.run([sys.executable, "-m", "bench.expert_bound", "tf_efficientnet_cc_b0_4e", "--rounds", "2",
                           "--threads", "1"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    row = proc.stdout.strip().splitlines()[-1]
    # b0_4e: 13.3M parameters against plain B0's 5.3M (timm's and the published tables' counts), 4 bytes each
    assert re.search(r"bs=1: 3[12]\.\d MB more parameters than plain", row), row
    found = re.search(r"ours / plain ([\d.]+), no-overlap estimate plain / \(plain \+ read\) ([\d.]+)", row)
    ratio, estimate = (float(v) for v in found.groups())
    assert 0 < ratio < 1.5 and 0 < estimate < 1


@pytest.mark.slow
def test_expert_bound_split_times_the_pointwise_parts():
    from cc_models import cpu_kernels

    if not (cpu_kernels.available() and cpu_kernels._has_pointwise()):
        pytest.skip("the pointwise kernel is built for AVX-512 CPUs only")
    proc = subprocess.run([sys.executable, "-m", "bench.expert_bound", "tf_efficientnet_cc_b0_4e", "--rounds", "2",
                           "--threads", "1", "--split"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.strip().splitlines()[-1]
    found = re.search(r"pointwise CondConvs: mixes (-?[\d.]+) ms(?: \((\d+) MB of expert panels at [\d.]+ GB/s\))?, "
                      r"GEMMs (-?[\d.]+) ms, both (-?[\d.]+) ms \(overlap [-+][\d.]+ ms\); the rest of the pass "
                      r"([\d.]+) ms", line)
    assert found, line
    # The panels the mixes read: 4 experts x Cin x Cout rounded up to whole 48-column panels, over b0_4e's pointwise
    # CondConvs (the stages of 80-320 channels: B0's published widths and expansion 6).
    import cc_models
    from cc_models.layers import CondConv2d

    model = cc_models.from_index("tf_efficientnet_cc_b0_4e")
    expected = sum(4 * m.in_channels * -(-m.out_channels // 48) * 48 * 4 for m in model.modules()
                   if isinstance(m, CondConv2d) and m.kernel_size == (1, 1))
    if found[2] is not None:
        assert int(found[2]) == round(expected / 1e6)
    assert float(found[5]) > 0
