"""The CUDA parts that can be checked without a GPU: the cuDNN guard, cuda_graph's input check, the GPU
check's dependency bookkeeping. (The CUDA throughput rows: test_bench_cli.py; what needs a GPU:
test_cuda_parity.py and `make gpu-check`.)"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

import cc_models
from cc_models.kernels import cudnn_without_benchmark

REPO = Path(__file__).resolve().parent.parent


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cudnn_autotuner_is_off_inside_and_restored_after():
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        with cudnn_without_benchmark():
            assert torch.backends.cudnn.benchmark is False
        assert torch.backends.cudnn.benchmark is True
    finally:
        torch.backends.cudnn.benchmark = saved


def test_cuda_graph_refuses_a_cpu_input():
    with pytest.raises(ValueError, match="CUDA"):
        cc_models.cuda_graph(torch.nn.Identity(), torch.zeros(1, 3, 8, 8))


def test_gpu_check_finds_requirements_missing_from_image_and_wheelhouse():
    """The wheelhouse bookkeeping: what neither the image nor a carried wheel provides, or not at an accepted
    version, is reported; extras and other pythons' markers are not."""
    check = _gpu_check()
    ours = ("cc-hub", "0.1", ["torch>=2.4", "jsonschema>=4", "fvcore", "huggingface_hub>=2.4,<3",
                              "pytest; extra == 'test'", 'tomli; python_version < "3.11"'])
    assert check.unmet_requirements([ours]) == [
        "fvcore (needed by cc-hub)", "huggingface-hub<3,>=2.4 (needed by cc-hub; 1.33.0 on the image)",
        "jsonschema (needed by cc-hub)"]
    carried = [ours, ("jsonschema", "4.26", ["attrs"]), ("fvcore", "0.1", ["yacs"]),
               ("huggingface-hub", "2.4.0", ["httpx2<3"])]
    assert check.unmet_requirements(carried) == ["httpx2 (needed by huggingface-hub)", "yacs (needed by fvcore)"]


def test_gpu_image_plus_carried_wheels_cover_every_runtime_requirement():
    """A new runtime dependency must be on the GPU image (at an accepted version) or carried
    (scripts/gpu_check.py CARRIED): checked on this environment's copies of our package and the carried ones."""
    import importlib.metadata

    check = _gpu_check()
    dists = [(name, importlib.metadata.version(name), importlib.metadata.requires(name) or [])
             for name in ("cc-hub", *check.CARRIED)]
    assert check.unmet_requirements(dists) == [], "add them to CARRIED in scripts/gpu_check.py"


def test_without_triton_everything_but_the_kernels_works():
    """An install without triton: cc_models imports and runs, and the kernels report themselves unavailable."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['triton'] = None\n"  # import triton now raises ImportError
        "import torch, cc_models, cc_models.kernels as k\n"
        "from cc_models.layers import CondConv2d\n"
        "layer = CondConv2d(8, 8, 3, 2, groups=8, num_experts=4).eval()\n"
        "with torch.inference_mode(): out = layer(torch.randn(2, 8, 9, 9), torch.rand(2, 4))\n"
        "assert out.shape == (2, 8, 5, 5) and not k.available()\n"
        "assert k.cuda_forward(layer, torch.randn(2, 8, 9, 9), torch.rand(2, 4)) is None\n"
        "print('ok')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
