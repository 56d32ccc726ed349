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
