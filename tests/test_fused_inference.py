"""The inference form the benchmark times (BatchNorm folded, channels_last) still matches timm within 1e-4."""
from __future__ import annotations

import copy

import pytest
import torch

timm = pytest.importorskip("timm")

import cc_models
from cc_models.fuse import fold_batchnorm_
from cc_models.layers import CondConv2d

from model_oracle import VARIANTS, max_abs_diff, timm_and_ours

TOL = 1e-4


@pytest.fixture(scope="module", params=VARIANTS)
def fused_pair(request):
    """(timm's model, ours fused) holding the same randomised weights."""
    theirs, ours = timm_and_ours(request.param, seed=2)
    return theirs, ours.fuse()


@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_outputs_match_timm(fused_pair, batch, channels_last):
    theirs, ours = fused_pair
    size = ours.data_config.input_size
    x = torch.randn(batch, *size, generator=torch.Generator().manual_seed(batch))
    model = copy.deepcopy(ours)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x_ours = x.contiguous(memory_format=torch.channels_last)
    else:
        x_ours = x
    with torch.inference_mode():
        expected, got = theirs(x), model(x_ours)
    assert expected.std() > 0.1, "logits too small for the tolerance to mean anything"
    assert max_abs_diff(got, expected) < TOL


def test_fused_model_has_no_batchnorm_and_keeps_timm_format_out_of_reach(fused_pair):
    _, ours = fused_pair
    assert ours.is_fused
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in ours.modules())
    with pytest.raises(RuntimeError, match="fused"):
        ours.state_dict()
    with pytest.raises(RuntimeError, match="cannot train"):
        copy.deepcopy(ours).train()


def test_fuse_needs_eval_mode():
    model = cc_models.from_index("tf_efficientnet_cc_b0_4e")
    with pytest.raises(RuntimeError, match="eval"):
        model.fuse()


@pytest.mark.parametrize("kernel, groups", [(1, 1), (3, 16)])
def test_condconv_batchnorm_folding(kernel, groups):
    """Folding into a CondConv (pointwise bmm path and grouped depthwise path) equals conv then BatchNorm."""
    g = torch.Generator().manual_seed(0)
    conv = CondConv2d(16, 16, kernel, stride=1, padding="same", groups=groups, num_experts=4)
    bn = torch.nn.BatchNorm2d(16, eps=1e-3).eval()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5, generator=g)
        bn.bias.normal_(0, 0.5, generator=g)
        bn.running_mean.normal_(0, 0.5, generator=g)
        bn.running_var.uniform_(0.5, 2.0, generator=g)
    assert "static_bias" not in conv.state_dict(), "unfused layers keep timm's state-dict layout"
    x = torch.randn(3, 16, 9, 9, generator=g)
    routing = torch.rand(3, 4, generator=g)
    with torch.no_grad():
        expected = bn(conv(x, routing))
        fold_batchnorm_(conv, bn)
        got = conv(x, routing)
    assert conv.static_bias is not None
    assert max_abs_diff(got, expected) < 1e-5


def test_pointwise_condconv_keeps_channels_last():
    """The channels_last pointwise form computes what the NCHW one does and returns channels_last."""
    g = torch.Generator().manual_seed(0)
    conv = CondConv2d(16, 24, 1, num_experts=4)
    x = torch.randn(3, 16, 9, 9, generator=g)
    routing = torch.rand(3, 4, generator=g)
    with torch.no_grad():
        expected = conv(x, routing)
        got = conv(x.contiguous(memory_format=torch.channels_last), routing)
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert max_abs_diff(got, expected) < 1e-5
