"""The Triton CondConv kernels against independent references, on the CPU through Triton's interpreter.

``TRITON_INTERPRET=1`` is read when ``@triton.jit`` decorates a kernel, so the
kernel modules are loaded afresh here with it set (whatever was imported
before); a check that the kernels really are interpreted ones guards that.
References: timm's ``CondConv2d`` (its own TF "SAME" padding and batch-grouped
convolution) and, for the bias/activation epilogue, a per-sample ``F.conv2d``
with the mixed kernel computed in float64.
"""
from __future__ import annotations

import copy
import importlib.util
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

triton = pytest.importorskip("triton")
timm_layers = pytest.importorskip("timm.layers")

import cc_models.kernels as kernels
from cc_models.layers import CondConv2d

KERNELS_DIR = Path(kernels.__file__).parent


def _load_interpreted(name: str):
    """``cc_models.kernels.<name>`` loaded anew with its kernels decorated under TRITON_INTERPRET=1."""
    before = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        spec = importlib.util.spec_from_file_location(f"cc_models.kernels._interpreted_{name}",
                                                      KERNELS_DIR / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        if before is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = before
    return module


@pytest.fixture(scope="module")
def interpreted(request):
    """The launchers with interpreted kernels, installed where ``cuda_forward`` looks them up."""
    from triton.runtime.interpreter import InterpretedFunction

    depthwise, pointwise = _load_interpreted("depthwise"), _load_interpreted("pointwise")
    assert isinstance(depthwise._depthwise_kernel, InterpretedFunction)
    assert isinstance(pointwise._pointwise_kernel, InterpretedFunction)
    launchers = (depthwise.depthwise_cond_conv, pointwise.pointwise_cond_conv)
    patch = pytest.MonkeyPatch()
    patch.setattr(kernels, "_kernels", lambda: launchers)
    yield launchers
    patch.undo()


def _pair(cin: int, cout: int, k: int, stride: int, experts: int, depthwise: bool, bias: bool, seed: int):
    """timm's CondConv2d and ours with the same (random) experts."""
    torch.manual_seed(seed)
    groups = cin if depthwise else 1
    theirs = timm_layers.CondConv2d(cin, cout, k, stride, padding="same", groups=groups, bias=bias,
                                    num_experts=experts)
    with torch.no_grad():
        theirs.weight.normal_()
        if bias:
            theirs.bias.normal_()
    ours = CondConv2d(cin, cout, k, stride, padding="same", groups=groups, bias=bias, num_experts=experts)
    ours.load_state_dict(theirs.state_dict())
    return theirs.eval(), ours.eval()


def _inputs(batch: int, channels: int, h: int, w: int, experts: int, channels_last: bool, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, h, w, generator=g)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, torch.rand(batch, experts, generator=g)


@pytest.mark.parametrize("experts", [4, 8])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("k", [3, 5])
def test_depthwise_matches_timm(interpreted, k, stride, experts):
    theirs, ours = _pair(24, 24, k, stride, experts, depthwise=True, bias=False, seed=k * stride + experts)
    x, routing = _inputs(3, 24, 9, 8, experts, channels_last=True, seed=k)  # odd height: asymmetric TF pads
    with torch.inference_mode():
        got = kernels.cuda_forward(ours, x, routing)
        want = theirs(x, routing)
    assert got is not None and got.shape == want.shape
    assert got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("experts", [4, 8])
@pytest.mark.parametrize("channels_last", [True, False])
def test_pointwise_matches_timm(interpreted, experts, channels_last):
    theirs, ours = _pair(24, 40, 1, 1, experts, depthwise=False, bias=False, seed=experts)
    x, routing = _inputs(3, 24, 5, 7, experts, channels_last=channels_last, seed=experts)
    with torch.inference_mode():
        got = kernels.cuda_forward(ours, x, routing)
        want = theirs(x, routing)
    assert got is not None
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("channels_last", [True, False])
def test_pointwise_reads_a_fused_models_expert_layout(interpreted, channels_last):
    """A fused model stores pointwise experts as [Cin, Cout] (cc_models.fuse._experts_in_out_)."""
    from cc_models.fuse import _experts_in_out_

    theirs, ours = _pair(24, 40, 1, 1, 4, depthwise=False, bias=False, seed=5)
    _experts_in_out_(ours)
    x, routing = _inputs(3, 24, 5, 7, 4, channels_last=channels_last, seed=5)
    with torch.inference_mode():
        got = kernels.cuda_forward(ours, x, routing)
        want = theirs(x, routing)
        cpu_form = ours(x, routing)  # CondConv2d's own form reads the same layout
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(cpu_form, want, atol=1e-4, rtol=1e-4)


def _reference(layer: CondConv2d, x: torch.Tensor, routing: torch.Tensor, pads: tuple[int, int, int, int],
               act: bool) -> torch.Tensor:
    """Sample by sample: mix the kernel (float64), pad, F.conv2d, add the biases, SiLU."""
    x, routing = x.double(), routing.double()
    outs = []
    for b in range(x.shape[0]):
        weight = (routing[b] @ layer.weight.double()).view(layer.weight_shape)
        bias = routing[b] @ layer.bias.double() if layer.bias is not None else torch.zeros(layer.out_channels)
        if layer.static_bias is not None:
            bias = bias + layer.static_bias.double()
        outs.append(F.conv2d(F.pad(x[b:b + 1], pads), weight, bias.double(), layer.stride, groups=layer.groups))
    out = torch.cat(outs)
    return F.silu(out) if act else out


def _tf_same_pads(h: int, w: int, k: int, s: int) -> tuple[int, int, int, int]:
    """TensorFlow's SAME rule, written out: out = ceil(in / s), the odd pixel goes bottom/right."""
    def one(size):
        total = max((-(-size // s) - 1) * s + k - size, 0)
        return total // 2, total - total // 2
    return (*one(w), *one(h))


@pytest.mark.parametrize("case", [
    # (k, stride, expert bias, static bias, SiLU, channels_last)
    (3, 2, True, False, False, False),
    (5, 1, False, True, True, True),
    (1, 1, True, True, True, True),
    (1, 1, False, False, True, False),
])
def test_epilogue_bias_and_activation(interpreted, case):
    k, stride, expert_bias, static_bias, act, channels_last = case
    channels = 16
    layer = CondConv2d(channels, channels, k, stride, groups=1 if k == 1 else channels, bias=expert_bias,
                       num_experts=4).eval()
    torch.manual_seed(3)
    if static_bias:
        layer.static_bias = torch.randn(channels)
    if act:
        layer.epilogue_act = "silu"
    x, routing = _inputs(2, channels, 7, 6, 4, channels_last=channels_last, seed=5)
    with torch.inference_mode():
        got = kernels.cuda_forward(layer, x, routing)
        unkernelled = layer(x, routing)  # the CPU form, which applies epilogue_act itself
    want = _reference(layer, x, routing, _tf_same_pads(7, 6, k, stride), act).float()
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(unkernelled, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_accumulate_in_fp32(interpreted, dtype):
    theirs, ours = _pair(16, 16, 3, 1, 4, depthwise=True, bias=False, seed=7)
    theirs_pw, pw = _pair(16, 32, 1, 1, 4, depthwise=False, bias=False, seed=8)
    x, routing = _inputs(2, 16, 6, 5, 4, channels_last=True, seed=9)
    x, routing = x.to(dtype), routing.to(dtype)
    # Triton's interpreter multiplies bfloat16 tl.dot operands as raw 16-bit integers (numpy has no
    # bfloat16), so the pointwise kernel's bf16 path is checked on CUDA only (test_cuda_parity.py).
    cases = [(ours, theirs)] + ([(pw, theirs_pw)] if dtype == torch.float16 else [])
    with torch.inference_mode():
        for layer, reference in cases:
            got = kernels.cuda_forward(layer, x, routing)
            want = reference(x.float(), routing.float())
            assert got.dtype == dtype
            torch.testing.assert_close(got.float(), want, atol=0.03, rtol=0.02)


def test_kernels_decline_what_they_do_not_cover(interpreted):
    grouped = CondConv2d(16, 32, 3, groups=4, num_experts=4).eval()
    x, routing = _inputs(1, 16, 5, 5, 4, channels_last=False, seed=0)
    with torch.inference_mode():
        assert kernels.cuda_forward(grouped, x, routing) is None  # grouped but not depthwise
        assert kernels.cuda_forward(CondConv2d(16, 16, 1, num_experts=4).eval(), x.double(), routing.double()) is None
    training = CondConv2d(16, 16, 1, num_experts=4)
    assert kernels.cuda_forward(training, x, routing) is None  # autograd: no backward in the kernels
