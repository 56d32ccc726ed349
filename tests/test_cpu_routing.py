"""The C++ routing op of the CPU inference form (cc_models.cpu_kernels.block_routing): a CondConv
block's sigmoid(mean over pixels @ W.T + b) in one pass.

Oracles: the same formula in float64, and timm's model for the whole network."""
from __future__ import annotations

import copy
import shutil

import pytest
import torch

import cc_models
from cc_models import cpu_kernels
from cc_models.efficientnet_blocks import CondConvResidual

pytestmark = pytest.mark.skipif(shutil.which("c++") is None, reason="no C++ compiler to build the kernel")


def _oracle(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(x.double().mean((2, 3)) @ weight.double().t() + bias.double())


@pytest.mark.parametrize("batch, channels, h, w, experts", [
    (1, 80, 14, 14, 4), (1, 320, 8, 8, 8), (3, 112, 15, 15, 8), (33, 40, 7, 5, 3), (2, 17, 1, 1, 8)])
def test_op_matches_the_mean_through_the_linear_layer(batch, channels, h, w, experts, two_threads):
    torch.manual_seed(batch * channels)
    x = torch.randn(batch, channels, h, w).contiguous(memory_format=torch.channels_last)
    weight, bias = torch.randn(experts, channels) * 0.1, torch.randn(experts)
    with torch.inference_mode():
        out = cpu_kernels.block_routing(x, weight, bias)
    assert out is not None and out.shape == (batch, experts)
    torch.testing.assert_close(out.double(), _oracle(x, weight, bias), atol=1e-6, rtol=1e-6)


def test_op_steps_aside_where_it_does_not_apply(monkeypatch):
    x = torch.randn(2, 16, 5, 5).contiguous(memory_format=torch.channels_last)
    weight, bias = torch.randn(4, 16), torch.randn(4)
    with torch.inference_mode():
        assert cpu_kernels.block_routing(x.contiguous(), weight, bias) is None  # NCHW
        assert cpu_kernels.block_routing(x.double(), weight.double(), bias.double()) is None
        assert cpu_kernels.block_routing(x, weight, None) is None
        assert cpu_kernels.block_routing(x, weight.t().contiguous().t(), bias) is None  # a strided weight
        monkeypatch.setenv(cpu_kernels.ENV_SWITCH, "0")
        assert cpu_kernels.block_routing(x, weight, bias) is None
        monkeypatch.delenv(cpu_kernels.ENV_SWITCH)
        assert cpu_kernels.block_routing(x, weight, bias) is not None
    assert cpu_kernels.block_routing(x.clone().requires_grad_(), weight, bias) is None  # autograd needs the ATen form


def test_op_rejects_bad_operands_with_a_message():
    assert cpu_kernels.available()
    op = torch.ops.cc_condconv.routing
    x = torch.randn(2, 16, 5, 5).contiguous(memory_format=torch.channels_last)
    weight, bias = torch.randn(4, 16), torch.randn(4)
    with pytest.raises(RuntimeError, match="channels_last"):
        op(x.contiguous(), weight, bias, 0.04)
    with pytest.raises(RuntimeError, match=r"weight must be a contiguous float32 \[E, 16\]"):
        op(x, torch.randn(4, 15), bias, 0.04)
    with pytest.raises(RuntimeError, match=r"bias must be a contiguous float32 \[4\]"):
        op(x, weight, torch.randn(5), 0.04)


@pytest.mark.parametrize("variant", ["tf_efficientnet_cc_b0_4e", "tf_efficientnet_cc_b1_8e"])
def test_fused_blocks_route_through_the_op_and_match_timm(variant, monkeypatch):
    timm = pytest.importorskip("timm")
    from bench.calibrate import randomize_

    ours = randomize_(cc_models.from_index(variant), seed=1, size=(224, 224)).eval()
    theirs = timm.create_model(variant).eval()
    theirs.load_state_dict(ours.state_dict())
    fused = copy.deepcopy(ours).fuse().to(memory_format=torch.channels_last)
    ran = []
    routing = cpu_kernels.block_routing
    monkeypatch.setattr(cpu_kernels, "block_routing", lambda *a: ran.append(routing(*a)) or ran[-1])
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        expected = theirs(x)
        out = fused(x.contiguous(memory_format=torch.channels_last))
    assert len(ran) == sum(isinstance(m, CondConvResidual) for m in fused.modules()) > 0
    assert all(r is not None for r in ran)  # every block took the op
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)
