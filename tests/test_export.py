"""Exports against independent oracles: ONNX Runtime vs timm, timm loading our Hub repo, torch.hub.

ONNX: exported by the CLI from timm's (randomised) weights, run by ONNX Runtime on the CPU at
batch 1, 3, 8 and 32 and at sizes whose TF "SAME" padding differs, compared with timm's model.
Hub repo: written by the CLI, served by the loopback Hub, loaded by timm itself in a child process
(``timm.create_model("hf-hub:ORG/NAME", pretrained=True)``, HF_ENDPOINT pointed at it) and read back
by ``cc_models.from_index("hf-hub:ORG/NAME")``.
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import cc_models
from registry.cli import main as cc_registry

from hub_server import fake_hub, hub_env  # noqa: F401  (fixtures)
from model_oracle import max_abs_diff, timm_and_ours

MODEL = "tf_efficientnet_cc_b0_4e"
ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-4


@pytest.fixture(scope="module")
def pair():
    return timm_and_ours(MODEL)


@pytest.fixture(scope="module")
def checkpoint(pair, tmp_path_factory) -> Path:
    """timm's randomised weights as a local checkpoint file."""
    path = tmp_path_factory.mktemp("ckpt") / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in pair[0].state_dict().items()}, str(path))
    return path


def _images(batch: int, height: int = 224, width: int = 224) -> torch.Tensor:
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(batch + height + width))


@pytest.mark.slow
def test_onnx_export_runs_in_onnxruntime_at_any_batch_and_size(pair, checkpoint, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    theirs, ours = pair
    assert cc_registry(["export", MODEL, "--format", "onnx", "--checkpoint", str(checkpoint),
                        "--out", str(tmp_path)]) == 0
    path = tmp_path / f"{MODEL}.onnx"
    assert str(path) in capsys.readouterr().out
    import onnx

    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    dims = [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "", "height", "width"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    # 225 and 193 (odd) and 240: TF SAME padding differs from 224's (0 vs 1 pixel on one side at stride 2).
    for batch, height, width in ((1, 224, 224), (3, 224, 224), (8, 224, 224), (32, 224, 224), (2, 225, 193),
                                 (1, 240, 240)):
        x = _images(batch, height, width)
        with torch.no_grad():
            expected = theirs(x)
        got = session.run(None, {"input": x.numpy()})[0]
        assert got.shape == tuple(expected.shape)
        assert np.abs(got - expected.numpy()).max() <= TOL, (batch, height, width)


@pytest.mark.slow
def test_onnx_export_of_a_fused_model(pair, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    theirs, ours = pair
    fused = copy.deepcopy(ours).fuse()
    with pytest.raises(RuntimeError):
        fused.state_dict()  # what stopped the legacy exporter
    path = cc_models.export_onnx(fused, tmp_path / "fused.onnx")
    with pytest.raises(RuntimeError):
        fused.state_dict()  # the caller's model is left as it was
    x = _images(3)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        assert np.abs(got - theirs(x).numpy()).max() <= TOL


def test_export_usage_errors(tmp_path, capsys):
    assert cc_registry(["export", MODEL, "--format", "hf-repo", "--out", str(tmp_path)]) == 2
    assert "--pretrained" in capsys.readouterr().err
    assert cc_registry(["export", MODEL, "--format", "onnx", "--checkpoint", str(tmp_path / "missing.pth"),
                        "--out", str(tmp_path)]) == 2
    assert "missing.pth" in capsys.readouterr().err
    assert cc_registry(["export", MODEL, "--format", "hf-card", "--pretrained", "--out", str(tmp_path)]) == 2
    assert cc_registry(["export", "no_such_model", "--format", "onnx", "--out", str(tmp_path)]) == 2
    assert not list(tmp_path.iterdir())


_TIMM_CHILD = """
import sys, timm, torch
model = timm.create_model(sys.argv[1], pretrained=True).eval()
x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(7))
with torch.no_grad():
    torch.save({"logits": model(x), "cfg": dict(model.pretrained_cfg)}, sys.argv[2])
"""


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::cc_models.errors.UnpinnedWeightsWarning")  # a test repo pins nothing
def test_hf_repo_export_loads_in_timm_and_back(pair, checkpoint, fake_hub, tmp_path, capsys):
    theirs, ours = pair
    out = tmp_path / "repo"
    assert cc_registry(["export", MODEL, "--format", "hf-repo", "--checkpoint", str(checkpoint),
                        "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == MODEL and config["num_classes"] == 1000
    repo = "test-org/cc-export"
    for path in out.iterdir():
        fake_hub.add_file(repo, path.name, path.read_bytes(), lfs=path.suffix == ".safetensors")

    result_file = tmp_path / "timm.pt"
    env = {**os.environ, "HF_ENDPOINT": fake_hub.endpoint, "HF_HUB_DISABLE_TELEMETRY": "1"}
    proc = subprocess.run([sys.executable, "-c", _TIMM_CHILD, f"hf-hub:{repo}", str(result_file)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = torch.load(result_file, weights_only=False)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected = ours(x)
    assert max_abs_diff(loaded["logits"], expected) <= TOL
    entry = cc_models.get_entry(MODEL)
    for key, value in entry.data.as_timm_dict().items():  # timm read our pretrained_cfg as we meant it
        assert tuple(loaded["cfg"][key]) == tuple(value) if isinstance(value, tuple) else loaded["cfg"][key] == value

    # The reverse: our loader reads the repo's config.json (architecture, num_classes, pretrained_cfg).
    back = cc_models.from_index(f"hf-hub:{repo}", pretrained=True).eval()
    assert back.data_config == entry.data and back.pretrained_cfg["hf_hub_id"] == repo
    with torch.no_grad():
        assert max_abs_diff(back(x), expected) <= TOL


def test_from_index_reads_a_timm_config(fake_hub):
    repo = "test-org/cc-legacy"
    # timm's legacy single-dict layout, another classifier size and another crop
    legacy = {"architecture": MODEL, "num_classes": 10, "input_size": [3, 256, 256], "crop_pct": 0.95,
              "interpolation": "bilinear", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
    fake_hub.add_file(repo, "config.json", json.dumps(legacy).encode(), lfs=False)
    model = cc_models.from_index(f"hf-hub:{repo}")
    assert model.num_classes == 10 and model.classifier.out_features == 10
    assert model.data_config.input_size == (3, 256, 256) and model.data_config.crop_pct == 0.95
    assert model.data_config.interpolation == "bilinear" and model.data_config.num_classes == 10

    fake_hub.add_file("test-org/other", "config.json", json.dumps({"architecture": "resnet50"}).encode(), lfs=False)
    from registry.errors import UnknownModelError

    with pytest.raises(UnknownModelError):
        cc_models.from_index("hf-hub:test-org/other")
    from cc_models.errors import WeightsError, WeightsNotFoundError

    fake_hub.add_file("test-org/broken", "config.json", b"[1, 2]", lfs=False)
    with pytest.raises(WeightsError, match="not a timm model config"):
        cc_models.from_index("hf-hub:test-org/broken")
    with pytest.raises(WeightsNotFoundError):
        cc_models.from_index("hf-hub:test-org/absent")
    bad = {"architecture": MODEL, "pretrained_cfg": {"input_size": [3, "224", 224]}}
    fake_hub.add_file("test-org/bad-size", "config.json", json.dumps(bad).encode(), lfs=False)
    with pytest.raises(WeightsError, match="input_size"):
        cc_models.from_index("hf-hub:test-org/bad-size")


def test_torch_hub_load_local():
    import timm

    model = torch.hub.load(str(ROOT), MODEL, source="local", trust_repo=True)
    reference = timm.create_model(MODEL)
    assert {k: v.shape for k, v in model.state_dict().items()} == \
        {k: v.shape for k, v in reference.state_dict().items()}
    backbone = torch.hub.load(str(ROOT), MODEL, source="local", features_only=True, out_indices=(3, 4))
    assert backbone.feature_info.channels() == [112, 320]
