"""The no-CondConv reference `cc-bench compare` times: our builder with the experts removed is timm's plain
EfficientNet-B0/B1 (same state-dict layout, outputs within 1e-4 unfused, fused and channels_last)."""
from __future__ import annotations

import pytest
import torch

timm = pytest.importorskip("timm")

import cc_models
from bench.calibrate import randomize_
from bench.compare import plain_reference

TOL = 1e-4


@pytest.mark.parametrize("model_id", ["tf_efficientnet_cc_b0_4e", "tf_efficientnet_cc_b1_8e"])
def test_plain_reference_is_timms_plain_efficientnet(model_id):
    size = cc_models.data_config(model_id).input_size
    torch.manual_seed(0)
    theirs = randomize_(timm.create_model(plain_reference(model_id)), seed=3, size=size[1:]).eval()
    ours = cc_models.from_index(model_id, experts_multiplier=0).eval()
    assert not any(type(m).__name__ == "CondConv2d" for m in ours.modules())
    ours.load_state_dict(theirs.state_dict(), strict=True)  # timm's keys and shapes, every one
    x = torch.randn(2, *size, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        expected = theirs(x)
        assert expected.std() > 0.1, "logits too small for the tolerance to mean anything"
        assert (ours(x) - expected).abs().max().item() < TOL
        ours.fuse().to(memory_format=torch.channels_last)
        assert (ours(x) - expected).abs().max().item() < TOL
        assert (ours(x.contiguous(memory_format=torch.channels_last)) - expected).abs().max().item() < TOL
