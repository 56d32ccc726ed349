"""The C++ depthwise CondConv kernel of the CPU inference form (cc_models.cpu_kernels).

Oracles: F.conv2d in float64 on each sample with its own mixed kernel and TF SAME padding done by F.pad
(as timm runs it), and timm's model for the whole network."""
from __future__ import annotations

import copy
import shutil
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import cc_models
from cc_models import cpu_kernels
from cc_models.layers import CondConv2d
from cc_models.layers.padding import same_pad_amounts

pytestmark = pytest.mark.skipif(shutil.which("c++") is None, reason="no C++ compiler to build the kernel")


@pytest.fixture
def calls(count_calls):
    """How many times the layers ran each kernel."""
    return count_calls(cpu_kernels, "depthwise_call", "bias_silu_")


def _layer(channels: int, kernel: int, stride: int, padding: str, experts: int, *, expert_bias: bool,
           static_bias: bool, silu: bool, seed: int) -> CondConv2d:
    torch.manual_seed(seed)
    layer = CondConv2d(channels, channels, kernel, stride, padding=padding, groups=channels, bias=expert_bias,
                       num_experts=experts).eval()
    if static_bias:
        layer.static_bias = torch.randn(channels)
    layer.epilogue_act = "silu" if silu else None
    layer.inference = True
    return layer


def _oracle(layer: CondConv2d, x: torch.Tensor, routing: torch.Tensor) -> torch.Tensor:
    """Each sample convolved with its own mixed kernel, in float64."""
    x, routing = x.double(), routing.double()
    experts = layer.weight.detach().double().view(layer.num_experts, *layer.weight_shape)
    kh, kw = layer.kernel_size
    if layer.dynamic_padding:
        x = F.pad(x, same_pad_amounts(x.shape[-2], x.shape[-1], kh, kw, *layer.stride, 1, 1))
        padding = 0
    else:
        padding = layer.padding
    outs = []
    for b in range(x.shape[0]):
        weight = torch.einsum("e,eoikl->oikl", routing[b], experts)
        bias = torch.zeros(layer.out_channels, dtype=torch.float64)
        if layer.bias is not None:
            bias += routing[b] @ layer.bias.detach().double()
        if layer.static_bias is not None:
            bias += layer.static_bias.double()
        outs.append(F.conv2d(x[b:b + 1], weight, bias, layer.stride, padding, 1, layer.groups))
    out = torch.cat(outs)
    return F.silu(out) if layer.epilogue_act == "silu" else out


CASES = [  # channels (a multiple of 16, or with a tail), kernel, stride, padding, input size
    (48, 3, 1, "same", (7, 7)),
    (40, 5, 1, "same", (14, 14)),
    (32, 5, 2, "same", (14, 14)),  # TF SAME: one more pixel bottom/right
    (24, 3, 2, "same", (15, 15)),
    (64, 5, 2, "same", (9, 12)),
    (16, 3, 1, "symmetric", (5, 9)),
    (8, 5, 1, "same", (3, 3)),  # the kernel larger than the map: every output reads padding
    (96, 5, 1, "same", (1, 1)),
]


@pytest.mark.parametrize("channels,kernel,stride,padding,size", CASES)
@pytest.mark.parametrize("batch", [1, 3])
def test_kernel_matches_per_sample_convolution(channels, kernel, stride, padding, size, batch, calls, two_threads):
    layer = _layer(channels, kernel, stride, padding, 4, expert_bias=batch == 3, static_bias=True, silu=True,
                   seed=channels + kernel)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, channels, *size, generator=g).contiguous(memory_format=torch.channels_last)
    routing = torch.rand(batch, 4, generator=g)
    with torch.inference_mode():
        out = layer(x, routing)
    assert calls["depthwise_call"] == 1
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out.double(), _oracle(layer, x, routing), atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("silu", [True, False])
@pytest.mark.parametrize("static_bias", [True, False])
def test_kernel_without_bias_or_activation(silu, static_bias, calls):
    layer = _layer(40, 3, 1, "same", 8, expert_bias=False, static_bias=static_bias, silu=silu, seed=3)
    x = torch.randn(2, 40, 6, 6).contiguous(memory_format=torch.channels_last)
    routing = torch.rand(2, 8)
    with torch.inference_mode():
        out = layer(x, routing)
    assert calls["depthwise_call"] == 1
    torch.testing.assert_close(out.double(), _oracle(layer, x, routing), atol=2e-5, rtol=2e-5)


def test_silu_epilogue_keeps_extremes_and_nan():
    layer = _layer(16, 3, 1, "same", 1, expert_bias=False, static_bias=True, silu=True, seed=0)
    with torch.no_grad():
        layer.weight.zero_()
        layer.static_bias.copy_(torch.tensor([-1e4, -100.0, -88.5, -20.0, -1.0, 0.0, 1e-30, 1.0, 20.0, 88.5, 100.0,
                                              1e4, 1e30, -1e30, float("nan"), 3.0]))
    x = torch.randn(1, 16, 2, 2).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        out = layer(x, torch.ones(1, 1))
    expected = F.silu(layer.static_bias.double()).view(1, 16, 1, 1).expand_as(out)
    torch.testing.assert_close(out.double(), expected, atol=1e-6, rtol=2e-6, equal_nan=True)


def test_whole_model_runs_the_kernel_and_matches_timm(calls, monkeypatch):
    timm = pytest.importorskip("timm")
    monkeypatch.setattr(cpu_kernels, "_has_pointwise", lambda: False)  # the batched products (test_cpu_pointwise)
    from bench.calibrate import randomize_

    ours = randomize_(cc_models.from_index("tf_efficientnet_cc_b0_4e"), seed=0, size=(224, 224)).eval()
    theirs = timm.create_model("tf_efficientnet_cc_b0_4e").eval()
    theirs.load_state_dict(ours.state_dict())
    fused = copy.deepcopy(ours).fuse().to(memory_format=torch.channels_last)
    depthwise = [m for m in fused.modules() if isinstance(m, CondConv2d) and not m.pointwise]
    expansions = [m for m in fused.modules() if isinstance(m, CondConv2d) and m.pointwise and m.epilogue_act]
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        expected = theirs(x)
        out = fused(x.contiguous(memory_format=torch.channels_last))
    assert calls["depthwise_call"] == len(depthwise) > 0
    assert calls["bias_silu_"] == len(expansions) > 0
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("bias_shape", [None, "shared", "per sample"])
def test_bias_silu_epilogue_matches_add_then_silu(bias_shape):
    g = torch.Generator().manual_seed(4)
    out = torch.randn(3, 7, 40, generator=g) * 4  # 40 channels: two vectors of 16 and a tail of 8
    bias = {None: None, "shared": torch.randn(40, generator=g), "per sample": torch.randn(3, 1, 40, generator=g)}[bias_shape]
    expected = F.silu(out.double() + (0 if bias is None else bias.double()))
    result = cpu_kernels.bias_silu_(out, None if bias is None else bias.reshape(-1, 40).squeeze(0))
    assert result.data_ptr() == out.data_ptr()  # in place
    torch.testing.assert_close(out.double(), expected, atol=2e-6, rtol=2e-6)


def test_pointwise_condconv_ends_in_the_epilogue(calls, monkeypatch):
    from cc_models.fuse import _experts_in_out_

    monkeypatch.setattr(cpu_kernels, "_has_pointwise", lambda: False)  # the batched product, not the C++ pointwise
    torch.manual_seed(6)
    layer = CondConv2d(24, 40, 1, 1, padding="same", num_experts=4).eval()
    layer.static_bias, layer.epilogue_act, layer.inference = torch.randn(40), "silu", True
    x = torch.randn(3, 24, 5, 7).contiguous(memory_format=torch.channels_last)
    routing = torch.rand(3, 4)
    kernels = (routing.double() @ layer.weight.detach().double()).view(3, 40, 24, 1, 1)
    expected = F.silu(torch.cat([F.conv2d(x[b:b + 1].double(), kernels[b], layer.static_bias.double())
                                 for b in range(3)]))
    _experts_in_out_(layer)
    with torch.inference_mode():
        out = layer(x, routing)
    assert calls["bias_silu_"] == 1
    torch.testing.assert_close(out.double(), expected, atol=2e-5, rtol=2e-5)


def test_kernel_is_skipped_where_it_does_not_apply(calls, monkeypatch):
    layer = _layer(16, 3, 2, "same", 4, expert_bias=False, static_bias=True, silu=True, seed=5)
    x = torch.randn(2, 16, 8, 8)
    routing = torch.rand(2, 4)
    with torch.inference_mode():
        expected = _oracle(layer, x, routing)
        layer(x, routing)  # NCHW input: the grouped form, which reads it as is
        copy.deepcopy(layer).double()(x.double().contiguous(memory_format=torch.channels_last), routing.double())
        monkeypatch.setenv(cpu_kernels.ENV_SWITCH, "0")
        off = layer(x.contiguous(memory_format=torch.channels_last), routing)
        monkeypatch.delenv(cpu_kernels.ENV_SWITCH)
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:  # an opaque op would hide the conv
        layer(x.contiguous(memory_format=torch.channels_last), routing)
    assert counter.get_total_flops() > 0
    assert calls["depthwise_call"] == 0
    torch.testing.assert_close(off.double(), expected, atol=2e-5, rtol=2e-5)
    # autograd: the kernel has no backward, so a training step keeps the differentiable form
    xg = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    layer(xg, routing).sum().backward()
    assert calls["depthwise_call"] == 0 and xg.grad is not None


def test_a_kept_plan_still_steps_aside_call_by_call(calls, monkeypatch):
    layer = _layer(32, 5, 2, "same", 4, expert_bias=True, static_bias=True, silu=True, seed=8)
    x = torch.randn(2, 32, 9, 9).contiguous(memory_format=torch.channels_last)
    routing = torch.rand(2, 4)
    expected = _oracle(layer, x, routing)
    with torch.inference_mode():
        layer(x, routing)  # works out the padding and the layout for this shape
        outs = {"NCHW input of the same shape": layer(x.contiguous(), routing)}
        monkeypatch.setenv(cpu_kernels.ENV_SWITCH, "0")
        outs[f"{cpu_kernels.ENV_SWITCH}=0"] = layer(x, routing)
        monkeypatch.delenv(cpu_kernels.ENV_SWITCH)
    xg = x.clone().requires_grad_()
    outs["autograd"] = layer(xg, routing)
    assert calls["depthwise_call"] == 1
    with torch.inference_mode():
        outs["the kernel again"] = layer(x, torch.rand(2, 4).copy_(routing))
    assert calls["depthwise_call"] == 2
    for case, out in outs.items():
        torch.testing.assert_close(out.double(), expected, atol=2e-5, rtol=2e-5, msg=case)


def test_expert_layout_follows_weight_updates(calls):
    layer = _layer(32, 3, 1, "same", 4, expert_bias=False, static_bias=False, silu=False, seed=7)
    x = torch.randn(2, 32, 5, 5).contiguous(memory_format=torch.channels_last)
    routing = torch.rand(2, 4)
    with torch.inference_mode():
        layer(x, routing)
    with torch.no_grad():
        layer.weight.mul_(-2.0)  # in place: the cached [E, taps, C] copy must be rebuilt
    with torch.inference_mode():
        out = layer(x, routing)
    torch.testing.assert_close(out.double(), _oracle(layer, x, routing), atol=2e-5, rtol=2e-5)
    assert calls["depthwise_call"] == 2


def test_op_rejects_bad_operands_with_a_message():
    assert cpu_kernels.available()
    op = torch.ops.cc_condconv.depthwise
    x = torch.randn(2, 16, 5, 5).contiguous(memory_format=torch.channels_last)
    experts, routing = torch.randn(4, 9 * 16), torch.rand(2, 4)
    with pytest.raises(RuntimeError, match="channels_last"):
        op(x.contiguous(), experts, routing, None, 3, 3, 1, 1, 1, 5, 5, False)
    with pytest.raises(RuntimeError, match=r"experts must be"):
        op(x, torch.randn(4, 8 * 16), routing, None, 3, 3, 1, 1, 1, 5, 5, False)
    with pytest.raises(RuntimeError, match=r"routing must be"):
        op(x, experts, torch.rand(3, 4), None, 3, 3, 1, 1, 1, 5, 5, False)
    with pytest.raises(RuntimeError, match=r"bias must be"):
        op(x, experts, routing, torch.randn(15), 3, 3, 1, 1, 1, 5, 5, False)
    with pytest.raises(RuntimeError, match=r"positive"):
        op(x, experts, routing, None, 3, 3, 0, 1, 1, 5, 5, False)
    with pytest.raises(RuntimeError, match=r"bias_silu_: out must be"):
        torch.ops.cc_condconv.bias_silu_(torch.randn(4, 5), None)
    with pytest.raises(RuntimeError, match=r"bias_silu_: bias must be"):
        torch.ops.cc_condconv.bias_silu_(torch.randn(2, 4, 5), torch.randn(4))


def test_a_failed_build_warns_once_and_keeps_the_pytorch_form(monkeypatch):
    from torch.utils import cpp_extension

    def no_compiler(**kwargs):
        raise RuntimeError("Error building extension 'cc_condconv_cpu': c++: command not found")

    monkeypatch.setattr(cpp_extension, "load", no_compiler)
    monkeypatch.setattr(cpu_kernels, "_failure", None)
    with pytest.warns(RuntimeWarning, match="could not be built .*command not found"):
        assert cpu_kernels._load.__wrapped__() is False
    assert "command not found" in cpu_kernels.failure()


def test_build_name_tracks_source_cpu_and_torch(monkeypatch):
    from torch.utils import cpp_extension

    assert cpu_kernels.available()
    name = cpu_kernels.build_name()
    assert name.startswith("cc_condconv_cpu_")
    # the name a run record gives is the library that was built (torch's build once appended to our flag list)
    assert (Path(cpp_extension._get_build_directory(name, verbose=False)) / f"{name}.so").exists()
    monkeypatch.setattr(cpu_kernels, "_cpu_flags", lambda: "sse2")  # another machine: another build
    assert cpu_kernels.build_name() != name
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cpu_kernels.available()  # built once already in this session: no warning


def test_run_records_say_whether_the_kernel_served(monkeypatch):
    from bench import env

    assert env.collect("cpu").cpu_kernels == f"built ({cpu_kernels.build_name()}, {cpu_kernels.build_isa()})"
    assert env.cpu_kernels_state("cuda") == "not used on cuda"
    monkeypatch.setenv(cpu_kernels.ENV_SWITCH, "0")
    assert env.cpu_kernels_state("cpu") == f"off ({cpu_kernels.ENV_SWITCH}=0)"
