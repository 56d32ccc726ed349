"""The CPU inference form: SiLUs folded into the convolutions, oneDNN with packed weights, TF SAME padding
grown into the kernel. Oracles: the unfused model (F.conv2d + F.pad, as timm runs it) and F.conv2d itself."""
from __future__ import annotations

import copy
import functools
import pickle

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import cc_models
from cc_models import cpu_kernels, onednn
from cc_models.layers import CondConv2d, Conv2d, Conv2dSame, conv2d_same
from cc_models.layers.padding import padding_in_kernel, same_pad_amounts

needs_onednn = pytest.mark.skipif(not onednn.available(), reason="this torch has no x86 oneDNN fused convolution")


@pytest.mark.parametrize("size", [(16, 16), (17, 17), (16, 19), (224, 224), (15, 8)])
@pytest.mark.parametrize("kernel,stride", [(3, 2), (5, 2), (2, 1), (4, 1), (3, 3), (5, 3), (2, 2)])
def test_padding_in_the_kernel_is_tf_same(size, kernel, stride):
    g = torch.Generator().manual_seed(kernel * 10 + stride)
    x = torch.randn(2, 4, *size, generator=g)
    w, b = torch.randn(6, 4, kernel, kernel, generator=g), torch.randn(6, generator=g)
    args = ((kernel, kernel), (stride, stride), (1, 1), 1)
    reference = F.conv2d(F.pad(x, same_pad_amounts(*size, kernel, kernel, stride, stride, 1, 1)), w, b, stride)
    torch.testing.assert_close(conv2d_same(x, w, b, *args, pad_in_kernel=True), reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(conv2d_same(x, w, b, *args), reference, atol=1e-5, rtol=1e-5)


def test_padding_in_the_kernel_declines_what_it_cannot_express():
    assert padding_in_kernel((0, 1, 0, 1), (1, 1)) == ((1, 0, 1, 0), (1, 1))
    assert padding_in_kernel((1, 1, 0, 1), (1, 1)) == ((0, 0, 1, 0), (1, 1))
    assert padding_in_kernel((0, 2, 0, 2), (1, 1)) is None  # two more on the right: needs the copy
    assert padding_in_kernel((0, 1, 0, 1), (2, 2)) is None  # dilated


@functools.lru_cache(maxsize=None)
def _calibrated(model_id: str) -> nn.Module:
    from bench.calibrate import randomize_

    torch.manual_seed(0)
    return randomize_(cc_models.from_index(model_id), seed=0, size=(224, 224)).eval()


def _fused_and_unfused(model_id: str) -> tuple[nn.Module, nn.Module]:
    """Fresh copies (tests may convert them in place) of one calibrated random model: fused, and as built."""
    return copy.deepcopy(_calibrated(model_id)).fuse(), copy.deepcopy(_calibrated(model_id))


def test_fuse_moves_each_silu_after_a_conv_into_it():
    fused, _ = _fused_and_unfused("tf_efficientnet_cc_b0_4e")
    convs = [m for m in fused.modules() if isinstance(m, (Conv2d, CondConv2d))]
    folded = [m for m in convs if m.epilogue_act == "silu"]
    # stem, head, and in every block all but the projection (conv_pwl / DS block's conv_pw)
    blocks = [b for stage in fused.blocks for b in stage]
    assert len(folded) == 2 + sum(len(getattr(b, "fuse_pairs")) - 1 for b in blocks)
    assert all(m.inference for m in convs)
    for parent in fused.modules():
        for conv_name, after_name in getattr(parent, "fuse_pairs", ()):
            if getattr(parent, conv_name).epilogue_act == "silu":
                assert isinstance(getattr(parent, after_name), nn.Identity)


@needs_onednn
def test_cpu_inference_form_takes_onednn_and_matches_the_unfused_model(monkeypatch, count_calls):
    fused, unfused = _fused_and_unfused("tf_efficientnet_cc_b0_4e")
    fused = fused.to(memory_format=torch.channels_last)
    calls = count_calls(onednn, "conv2d", "grouped_conv2d")
    # the grouped form is the fallback where the C++ depthwise kernel is off or cannot be built (test_cpu_kernels)
    monkeypatch.setenv(cpu_kernels.ENV_SWITCH, "0")
    g = torch.Generator().manual_seed(1)
    # one model through several shapes in turn (weights are packed per shape), back to the first
    with torch.inference_mode():
        for shape in [(1, 3, 224, 224), (3, 3, 197, 229), (2, 3, 64, 64), (1, 3, 224, 224)]:
            x = torch.randn(*shape, generator=g)
            expected = unfused(x)
            assert expected.std() > 0.1
            torch.testing.assert_close(fused(x.contiguous(memory_format=torch.channels_last)), expected,
                                       atol=1e-4, rtol=0)
    assert calls["conv2d"] > 0 and calls["grouped_conv2d"] > 0


@needs_onednn
def test_a_packed_weight_follows_changes_to_the_layer():
    conv = Conv2dSame(8, 16, 3, stride=2, bias=True).eval()
    conv.epilogue_act, conv.inference = "silu", True
    x = torch.randn(2, 8, 32, 32).contiguous(memory_format=torch.channels_last)

    def reference() -> torch.Tensor:
        return F.silu(F.conv2d(F.pad(x, (0, 1, 0, 1)), conv.weight, conv.bias, 2))

    with torch.inference_mode():
        torch.testing.assert_close(conv(x), reference(), atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        conv.weight.mul_(2)  # in place
    with torch.inference_mode():
        torch.testing.assert_close(conv(x), reference(), atol=1e-5, rtol=1e-5)
    conv.weight = nn.Parameter(torch.randn_like(conv.weight))  # a new tensor
    with torch.inference_mode():
        torch.testing.assert_close(conv(x), reference(), atol=1e-5, rtol=1e-5)
    assert len(onednn._packed[conv]) <= onednn.SHAPES_PER_LAYER


@needs_onednn
def test_threads_sharing_a_fused_model_through_more_shapes_than_it_keeps_packed():
    from concurrent.futures import ThreadPoolExecutor

    fused, unfused = _fused_and_unfused("tf_efficientnet_cc_b0_4e")
    fused = fused.to(memory_format=torch.channels_last)
    sizes = [(1 + i % 3, 3, 32 + 8 * i, 32 + 8 * i) for i in range(onednn.SHAPES_PER_LAYER + 2)]
    inputs = [torch.randn(*size, generator=torch.Generator().manual_seed(i)) for i, size in enumerate(sizes)]
    with torch.inference_mode():
        expected = [unfused(x) for x in inputs]

    def run(i: int) -> float:
        x = inputs[i % len(inputs)]
        with torch.inference_mode():
            return (fused(x.contiguous(memory_format=torch.channels_last)) - expected[i % len(inputs)]).abs().max().item()

    with ThreadPoolExecutor(4) as pool:
        diffs = list(pool.map(run, range(4 * len(inputs))))
    assert max(diffs) < 1e-4
    assert all(len(cache) <= onednn.SHAPES_PER_LAYER for cache in onednn._packed.values())


def test_fused_model_that_ran_copies_and_pickles():
    fused, unfused = _fused_and_unfused("tf_efficientnet_cc_b0_4e")
    fused = fused.to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        out = fused(x)  # packs weights where oneDNN applies
        for clone in (copy.deepcopy(fused), pickle.loads(pickle.dumps(fused))):
            torch.testing.assert_close(clone(x), out, atol=1e-6, rtol=0)


def test_other_dtypes_and_nchw_inputs_take_the_plain_ops(monkeypatch):
    fused, unfused = _fused_and_unfused("tf_efficientnet_cc_b0_4e")
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(fused(x), unfused(x), atol=1e-4, rtol=0)  # NCHW in (channels_last inside)
        monkeypatch.setattr(onednn, "conv2d", lambda *a, **k: pytest.fail("oneDNN path taken"))
        monkeypatch.setattr(onednn, "grouped_conv2d", lambda *a, **k: pytest.fail("oneDNN path taken"))
        double = torch.float64
        torch.testing.assert_close(fused.to(double)(x.to(double)), unfused.to(double)(x.to(double)), atol=1e-5, rtol=0)
        conv = fused.conv_stem.float()
        torch.testing.assert_close(conv(x), F.silu(conv2d_same(x, conv.weight, conv.bias, conv.kernel_size,
                                                               conv.stride, conv.dilation, 1)), atol=1e-5, rtol=0)


def test_conv_forms_benchmark_times_each_form(capsys):
    from bench import conv_forms

    threads = torch.get_num_threads()
    try:
        assert conv_forms.main(["--repeats", "1", "--batches", "1", "--threads", str(threads)]) == 0
    finally:
        torch.set_num_threads(threads)
    rows = [line for line in capsys.readouterr().out.splitlines() if "bs=1" in line]
    expected = len(conv_forms.STRIDE_2) + (len(conv_forms.CONV_SILU) if onednn.available() else 0)
    two_forms = [line for line in rows if "CondConv" not in line]
    assert len(two_forms) == expected and all(line.count("x)") == 2 for line in two_forms)
    three_forms = [line for line in rows if "depthwise CondConv" in line]  # PyTorch form, C++ kernel, shared kernel
    assert len(three_forms) == (len(conv_forms.DEPTHWISE_CONDCONV) if cpu_kernels.available() else 0)
    assert all(line.count("x)") == 3 for line in three_forms)
    pointwise = [line for line in rows if "pointwise CondConv" in line]  # batched product, C++ GEMM, shared kernel
    assert len(pointwise) == (len(conv_forms.POINTWISE_CONDCONV) * 2 if cpu_kernels.available() else 0)
    forms = 1 + (cpu_kernels.available() and cpu_kernels._has_pointwise()) + onednn.available()
    assert all(line.count("x)") == forms for line in pointwise)
