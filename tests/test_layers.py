"""cc_models.layers: padding, CondConv, squeeze-excite, drop path, rounding rules (timm and plain references)."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

timm = pytest.importorskip("timm")
import timm.layers as tl
from timm.models._efficientnet_blocks import SqueezeExcite as TimmSqueezeExcite
from timm.models._efficientnet_builder import _scale_stage_depth, round_channels as timm_round_channels

from cc_models.efficientnet import round_channels, scale_stage_depth
from cc_models.layers import (
    BatchNormAct2d,
    CondConv2d,
    Conv2d,
    Conv2dSame,
    DropPath,
    SqueezeExcite,
    create_conv2d,
    make_divisible,
    padding as padding_module,
    resolve_padding,
    same_pad_amounts,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- padding ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kernel,stride,dilation", list(itertools.product([1, 2, 3, 5], [1, 2, 3], [1, 2])))
def test_same_conv_matches_tf_rule_and_timm(kernel, stride, dilation):
    ours = create_conv2d(3, 4, kernel, stride=stride, dilation=dilation, padding="same")
    theirs = tl.create_conv2d(3, 4, kernel, stride=stride, dilation=dilation, padding="same")
    theirs.load_state_dict(ours.state_dict())
    for h, w in [(1, 2), (5, 8), (15, 16), (33, 30)]:  # non-square: a swapped h/w would show
        x = torch.randn(2, 3, h, w, generator=_gen(h * w))
        out = ours(x)
        assert out.shape[-2:] == (-(-h // stride), -(-w // stride))  # TF SAME: out = ceil(in / stride)
        torch.testing.assert_close(out, theirs(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("kernel,stride", [(1, 1), (3, 1), (3, 2), (5, 2), (5, 1)])
def test_symmetric_conv_is_pytorch_padding(kernel, stride):
    ours = create_conv2d(3, 4, kernel, stride=stride, padding="symmetric")
    assert type(ours) is Conv2d and ours.padding == ((kernel - 1) // 2,) * 2
    reference = tl.create_conv2d(3, 4, kernel, stride=stride, padding="")
    reference.load_state_dict(ours.state_dict())
    x = torch.randn(1, 3, 16, 13)
    torch.testing.assert_close(ours(x), reference(x), rtol=0, atol=0)


def test_same_padding_is_static_where_it_can_be():
    assert resolve_padding("same", 3, 1) == (1, False)
    assert resolve_padding("same", 5, 1) == (2, False)
    assert resolve_padding("same", 3, 2) == (0, True)
    assert resolve_padding("same", 2, 1) == (0, True)  # even kernel: asymmetric even at stride 1
    assert resolve_padding("symmetric", 5, 2) == (2, False)
    assert type(create_conv2d(3, 4, 3, 1, padding="same")) is Conv2d
    assert type(create_conv2d(3, 4, 3, 2, padding="same")) is Conv2dSame
    with pytest.raises(ValueError, match="unknown padding"):
        resolve_padding("reflect", 3, 1)


def test_dynamic_same_padding_is_cached_and_pads_only_when_asymmetric(monkeypatch):
    conv = Conv2dSame(3, 4, 3, stride=2)
    pads = []
    real_pad = F.pad
    monkeypatch.setattr(padding_module.F, "pad", lambda x, p, *a, **k: pads.append(tuple(p)) or real_pad(x, p, *a, **k))
    same_pad_amounts.cache_clear()
    conv(torch.randn(1, 3, 16, 16))
    conv(torch.randn(2, 3, 16, 16))
    info = same_pad_amounts.cache_info()
    assert (info.misses, info.hits) == (1, 1)  # computed once for 16x16, then looked up
    assert pads == [(0, 1, 0, 1), (0, 1, 0, 1)]  # even size at stride 2: the extra pixel goes bottom/right
    conv(torch.randn(1, 3, 17, 17))  # odd size: (1, 1) both ways, so the conv pads itself, no copy
    assert len(pads) == 2 and same_pad_amounts.cache_info().misses == 2


# -- CondConv --------------------------------------------------------------------------------------------------

CONDCONV_CASES = [
    # in, out, kernel, stride, groups, padding, bias
    (8, 12, 1, 1, 1, "same", False),     # pointwise: the batched-matmul path
    (8, 12, 1, 1, 1, "same", True),
    (12, 12, 5, 2, 12, "same", False),   # depthwise, strided, dynamic SAME
    (12, 12, 3, 1, 12, "same", True),    # depthwise, static SAME
    (8, 6, 3, 2, 2, "symmetric", True),  # grouped, PyTorch padding
]


def _reference_condconv(x, routing, layer: CondConv2d):
    """Per-sample F.conv2d with the mixed kernel: the definition, no batching tricks."""
    outs = []
    for i in range(x.shape[0]):
        w = (routing[i] @ layer.weight).view(layer.weight_shape)
        b = routing[i] @ layer.bias if layer.bias is not None else None
        xi = x[i:i + 1]
        if layer.dynamic_padding:
            xi = F.pad(xi, same_pad_amounts(*xi.shape[-2:], *layer.kernel_size, *layer.stride, *layer.dilation))
        outs.append(F.conv2d(xi, w, b, layer.stride, layer.padding, layer.dilation, layer.groups))
    return torch.cat(outs)


@pytest.mark.parametrize("case", CONDCONV_CASES)
def test_condconv_matches_definition_and_timm(case):
    cin, cout, k, s, groups, pad, bias = case
    torch.manual_seed(0)
    ours = CondConv2d(cin, cout, k, s, padding=pad, groups=groups, bias=bias, num_experts=3)
    assert ours.weight.shape == (3, cout * cin // groups * k * k)  # timm's flat expert storage
    theirs = tl.CondConv2d(cin, cout, k, s, padding=pad if pad == "same" else "", groups=groups, bias=bias,
                           num_experts=3)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    for h, w in [(9, 10), (16, 16)]:
        x = torch.randn(3, cin, h, w, generator=_gen(h))
        routing = torch.rand(3, 3, generator=_gen(w))
        out = ours(x, routing)
        torch.testing.assert_close(out, _reference_condconv(x, routing, ours), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out, theirs(x, routing), rtol=1e-5, atol=1e-5)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(ours(x_cl, routing), out, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", CONDCONV_CASES[:3])
def test_condconv_gradients_match_timm(case):
    cin, cout, k, s, groups, pad, bias = case
    ours = CondConv2d(cin, cout, k, s, padding=pad, groups=groups, bias=bias, num_experts=4)
    theirs = tl.CondConv2d(cin, cout, k, s, padding=pad, groups=groups, bias=bias, num_experts=4)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, cin, 8, 8, generator=_gen(1))
    routing = torch.rand(2, 4, generator=_gen(2))
    grads = []
    for layer in (ours, theirs):
        xr, rr = x.clone().requires_grad_(), routing.clone().requires_grad_()
        layer(xr, rr).square().sum().backward()
        grads.append((xr.grad, rr.grad, layer.weight.grad))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_condconv_rejects_indivisible_groups():
    with pytest.raises(ValueError, match="divisible"):
        CondConv2d(6, 8, 3, groups=4)


# -- other blocks ----------------------------------------------------------------------------------------------

def test_squeeze_excite_matches_timm():
    ours = SqueezeExcite(24, 6, "swish")
    theirs = TimmSqueezeExcite(24, rd_channels=6, act_layer=nn.SiLU)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, 24, 7, 5)
    torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=1e-6)


def test_batchnorm_act_keeps_batchnorm_state_keys():
    assert list(BatchNormAct2d(8, act_layer="swish").state_dict()) == list(nn.BatchNorm2d(8).state_dict())
    bn = BatchNormAct2d(8, eps=1e-3, momentum=0.01, act_layer="swish", apply_act=False).eval()
    x = torch.randn(2, 8, 3, 3)
    plain = nn.BatchNorm2d(8, eps=1e-3).eval()
    torch.testing.assert_close(bn(x), plain(x))  # no activation when apply_act=False
    assert bn.momentum == 0.01 and bn.eps == 1e-3


def test_drop_path_drops_whole_samples_in_training_only():
    layer = DropPath(0.5)
    x = torch.ones(2000, 3, 2, 2)
    layer.eval()
    assert layer(x) is x
    layer.train()
    torch.manual_seed(0)
    y = layer(x)
    per_sample = y.flatten(1)
    assert torch.all(per_sample == per_sample[:, :1])  # all of a sample kept or all dropped
    assert set(per_sample[:, 0].unique().tolist()) == {0.0, 2.0}  # kept samples rescaled by 1 / keep
    assert 0.45 < (per_sample[:, 0] == 0).float().mean().item() < 0.55
    assert DropPath(0.0).train()(x) is x


def test_rounding_rules_match_timm():
    for channels, multiplier in itertools.product(range(1, 400), (0.5, 0.75, 1.0, 1.1, 1.2, 1.4, 1.8, 2.0, 3.1)):
        assert round_channels(channels, multiplier) == timm_round_channels(channels, multiplier)
        assert make_divisible(channels * multiplier) == tl.make_divisible(channels * multiplier)
    for repeats, multiplier in itertools.product(range(1, 9), (0.5, 1.0, 1.1, 1.2, 1.4, 1.8, 2.0, 2.2, 3.1)):
        for rounding in ("ceil", "round"):
            assert scale_stage_depth(repeats, multiplier, rounding) == len(
                _scale_stage_depth([{}], [repeats], multiplier, rounding))
