"""The C++ pointwise CondConv kernel of the CPU inference form (cc_models.cpu_kernels.pointwise), and the SE gate
folded into it.

Oracle: F.conv2d in float64 on each sample, its input scaled by its gate, with its own mixed kernel; timm's model
for the whole network."""
from __future__ import annotations

import copy
import os
import platform
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import cc_models
from cc_models import cpu_kernels, hugepages
from cc_models.fuse import _experts_in_out_
from cc_models.layers import CondConv2d

pytestmark = pytest.mark.skipif(shutil.which("c++") is None, reason="no C++ compiler to build the kernel")
needs_kernel = pytest.mark.skipif(
    not (shutil.which("c++") and cpu_kernels.available() and cpu_kernels._has_pointwise()),
    reason="the pointwise kernel is built for AVX-512 CPUs only")


@pytest.fixture
def calls(count_calls):
    return count_calls(cpu_kernels, "pointwise_call", "bias_silu_")


def _layer(cin: int, cout: int, experts: int, *, expert_bias: bool = False, static_bias: bool = True,
           silu: bool = True, seed: int = 0) -> CondConv2d:
    torch.manual_seed(seed)
    layer = CondConv2d(cin, cout, 1, 1, padding="same", bias=expert_bias, num_experts=experts).eval()
    if static_bias:
        layer.static_bias = torch.randn(cout)
    layer.epilogue_act = "silu" if silu else None
    layer.inference = True
    _experts_in_out_(layer)
    return layer


def _oracle(layer: CondConv2d, x: torch.Tensor, routing: torch.Tensor, gate: torch.Tensor | None) -> torch.Tensor:
    """Each sample, its input scaled by its gate, convolved with its own mixed kernel, in float64."""
    e, cin, cout = layer.num_experts, layer.in_channels, layer.out_channels
    experts = layer.weight.detach().double().view(e, cin, cout).transpose(1, 2)  # back to [E, Cout, Cin]
    x, routing = x.double(), routing.double()
    if gate is not None:
        x = x * gate.double()[:, :, None, None]
    outs = []
    for b in range(x.shape[0]):
        kernel = torch.einsum("e,eoi->oi", routing[b], experts).view(cout, cin, 1, 1)
        bias = layer._mixed_bias(routing[b:b + 1].float())
        bias = None if bias is None else bias.reshape(-1).double()
        outs.append(F.conv2d(x[b:b + 1], kernel, bias))
    out = torch.cat(outs)
    return F.silu(out) if layer.epilogue_act == "silu" else out


# (Cin, Cout, H, W): Cout 16/32/48 (one panel of 1, 2, 3 vectors), 112 and 320 (whole panels and a short last one);
# H*W a multiple of 7 (blocks of 7 pixels), 64 and 25 (blocks of 8 and single pixels), 1 (a single pixel).
CASES = [(24, 16, 7, 7), (40, 32, 5, 5), (19, 48, 14, 14), (96, 112, 8, 8), (160, 320, 1, 1), (33, 64, 3, 5)]


@needs_kernel
@pytest.mark.parametrize("cin,cout,h,w", CASES)
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("experts", [4, 3])
def test_kernel_matches_per_sample_convolution(cin, cout, h, w, batch, experts, calls, two_threads):
    layer = _layer(cin, cout, experts, expert_bias=True, seed=cin + cout)
    x = torch.randn(batch, cin, h, w).contiguous(memory_format=torch.channels_last)
    routing, gate = torch.rand(batch, experts), torch.rand(batch, cin)
    with torch.inference_mode():
        out = layer(x, routing, gate)
    assert calls["pointwise_call"] == 1
    assert out.is_contiguous(memory_format=torch.channels_last) and out.shape == (batch, cout, h, w)
    torch.testing.assert_close(out.double(), _oracle(layer, x, routing, gate), atol=2e-5, rtol=2e-5)


@needs_kernel
@pytest.mark.parametrize("silu", [True, False])
@pytest.mark.parametrize("bias", ["none", "static", "experts"])
@pytest.mark.parametrize("with_gate", [True, False])
def test_kernel_bias_gate_and_activation(silu, bias, with_gate, calls):
    layer = _layer(56, 48, 8, expert_bias=bias == "experts", static_bias=bias == "static", silu=silu, seed=3)
    x = torch.randn(2, 56, 7, 7).contiguous(memory_format=torch.channels_last)
    routing = torch.rand(2, 8)
    gate = torch.rand(2, 56) if with_gate else None
    with torch.inference_mode():
        out = layer(x, routing, gate)
    assert calls["pointwise_call"] == 1
    torch.testing.assert_close(out.double(), _oracle(layer, x, routing, gate), atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("case", ["channels not a multiple of 16", "NCHW input", "no kernel on this CPU"])
def test_other_layers_keep_the_batched_product_and_the_gate(case, calls, monkeypatch):
    cout, experts, batch = (40, 4, 2) if case == "channels not a multiple of 16" else (32, 8, 8)
    layer = _layer(24, cout, experts, seed=9)
    x = torch.randn(batch, 24, 5, 5)
    if case != "NCHW input":
        x = x.contiguous(memory_format=torch.channels_last)
    if case == "no kernel on this CPU":
        monkeypatch.setattr(cpu_kernels, "_has_pointwise", lambda: False)
    routing, gate = torch.rand(batch, experts), torch.rand(batch, 24)
    with torch.inference_mode():
        out = layer(x, routing, gate)
    assert calls["pointwise_call"] == 0
    torch.testing.assert_close(out.double(), _oracle(layer, x, routing, gate), atol=2e-5, rtol=2e-5)


@needs_kernel
def test_kernel_steps_aside_for_autograd_and_flop_counters(calls):
    from torch.utils.flop_counter import FlopCounterMode

    layer = _layer(24, 32, 4, seed=11)
    x = torch.randn(2, 24, 5, 5).contiguous(memory_format=torch.channels_last)
    routing = torch.rand(2, 4)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:  # an opaque op would hide the matmul
        layer(x, routing)
    assert counter.get_total_flops() > 0
    xg = x.clone().requires_grad_()
    layer(xg, routing).sum().backward()
    assert calls["pointwise_call"] == 0 and xg.grad is not None


@needs_kernel
def test_a_kept_plan_still_steps_aside_call_by_call(calls, monkeypatch):
    """run() works out a layer's operands once per input shape; what can change between two calls of that shape
    must still send a call to the PyTorch form."""
    from torch.utils.flop_counter import FlopCounterMode

    layer = _layer(24, 32, 4, seed=15)
    x = torch.randn(2, 24, 5, 5).contiguous(memory_format=torch.channels_last)
    routing, gate = torch.rand(2, 4), torch.rand(2, 24)
    expected = _oracle(layer, x, routing, gate)
    with torch.inference_mode():
        layer(x, routing, gate)
    assert calls["pointwise_call"] == 1
    with torch.inference_mode():
        outs = {"NCHW input of the same shape": layer(x.contiguous(), routing, gate)}
        with FlopCounterMode(display=False) as counter:
            outs["a FlopCounterMode"] = layer(x, routing, gate)
        assert counter.get_total_flops() > 0
        monkeypatch.setenv(cpu_kernels.ENV_SWITCH, "0")
        outs[f"{cpu_kernels.ENV_SWITCH}=0"] = layer(x, routing, gate)
        monkeypatch.delenv(cpu_kernels.ENV_SWITCH)
    xg = x.clone().requires_grad_()
    outs["autograd"] = layer(xg, routing, gate)
    outs["autograd"].sum().backward()
    assert calls["pointwise_call"] == 1 and xg.grad is not None
    for case, out in outs.items():
        torch.testing.assert_close(out.double(), expected, atol=2e-5, rtol=2e-5, msg=case)
    with torch.inference_mode():
        out = layer(x, routing, gate)
    assert calls["pointwise_call"] == 2
    torch.testing.assert_close(out.double(), expected, atol=2e-5, rtol=2e-5)


@needs_kernel
def test_plans_are_kept_per_shape_and_threads_and_follow_the_epilogue(calls, monkeypatch, two_threads):
    layer = _layer(1152, 192, 8, seed=16)  # grouped at batch 8 on 2 threads, not at batch 1
    sizes = []
    group_size = cpu_kernels.group_size
    monkeypatch.setattr(cpu_kernels, "group_size", lambda *a: sizes.append(group_size(*a)) or sizes[-1])
    xs = {b: torch.randn(b, 1152, 7, 7).contiguous(memory_format=torch.channels_last) for b in (1, 8)}
    routing = {b: torch.rand(b, 8) for b in xs}
    with torch.inference_mode():
        for b in (1, 8, 1, 8):
            torch.testing.assert_close(layer(xs[b], routing[b]).double(), _oracle(layer, xs[b], routing[b], None),
                                       atol=2e-5, rtol=2e-5)
        assert sizes == [1, 4]  # each shape worked out once
        torch.set_num_threads(1)
        layer(xs[8], routing[8])
        assert sizes == [1, 4, 8]  # one thread: more samples to a group
        torch.set_num_threads(2)
        layer.epilogue_act = None  # a plan keeps the SiLU flag: a new epilogue must not reuse it
        out = layer(xs[8], routing[8])
    assert calls["pointwise_call"] == 6
    torch.testing.assert_close(out.double(), _oracle(layer, xs[8], routing[8], None), atol=2e-5, rtol=2e-5)


@needs_kernel
def test_plans_per_layer_are_bounded():
    """Ever new input sizes (a server resizing nothing) must not grow a layer's plans without end."""
    layer = _layer(24, 32, 4, seed=17)
    with torch.inference_mode():
        for size in range(1, 3 * cpu_kernels.MAX_PLANS):
            x = torch.randn(1, 24, size, 3).contiguous(memory_format=torch.channels_last)
            layer(x, torch.rand(1, 4))
            assert len(cpu_kernels._plans[layer][1]) <= cpu_kernels.MAX_PLANS


@needs_kernel
def test_expert_panels_follow_weight_updates(calls):
    layer = _layer(24, 32, 4, seed=12)
    x = torch.randn(2, 24, 7, 7).contiguous(memory_format=torch.channels_last)
    routing = torch.rand(2, 4)
    with torch.inference_mode():
        layer(x, routing)
    with torch.no_grad():
        layer.weight.mul_(-2.0)  # in place: the cached [panels, Cin, E, 48] copy must be rebuilt
    with torch.inference_mode():
        out = layer(x, routing)
    assert calls["pointwise_call"] == 2
    torch.testing.assert_close(out.double(), _oracle(layer, x, routing, None), atol=2e-5, rtol=2e-5)


@needs_kernel
@pytest.mark.skipif(not hugepages.available(), reason="no transparent huge pages on this system")
@pytest.mark.parametrize("huge", [True, False])
def test_expert_panels_live_in_huge_pages(huge, calls, monkeypatch):
    if not huge:
        monkeypatch.setenv(hugepages.ENV_SWITCH, "0")
    layer = _layer(1152, 320, 8, seed=14)  # B0's last projection: 7 panels x 1152 x 8 x 48 floats, 12.4 MB
    x = torch.randn(1, 1152, 7, 7).contiguous(memory_format=torch.channels_last)
    routing = torch.rand(1, 8)
    with torch.inference_mode():
        out = layer(x, routing)
    panels = cpu_kernels._experts_panels(layer)
    assert calls["pointwise_call"] == 1
    # a mapping of its own (not torch's memory, which tune_cpu may have had advised in this process too)
    assert (panels.untyped_storage().nbytes() == panels.numel() * 4 + hugepages.HUGE_PAGE) is huge
    if huge:
        assert hugepages.advised(panels) and hugepages.huge_bytes(panels) >= 4 * hugepages.HUGE_PAGE
    torch.testing.assert_close(out.double(), _oracle(layer, x, routing, None), atol=5e-5, rtol=5e-5)


@needs_kernel
@pytest.mark.parametrize("variant,batch", [("tf_efficientnet_cc_b0_4e", 2), ("tf_efficientnet_cc_b0_8e", 2),
                                           ("tf_efficientnet_cc_b0_8e", 8)])
def test_whole_model_folds_the_se_gate_and_matches_timm(variant, batch, calls, count_calls, monkeypatch):
    timm = pytest.importorskip("timm")
    from bench.calibrate import randomize_
    from cc_models.layers import SqueezeExcite

    ours = randomize_(cc_models.from_index(variant), seed=0, size=(224, 224)).eval()
    theirs = timm.create_model(variant).eval()
    theirs.load_state_dict(ours.state_dict())
    fused = copy.deepcopy(ours).fuse().to(memory_format=torch.channels_last)
    pointwise = [m for m in fused.modules() if isinstance(m, CondConv2d) and m.pointwise]
    se_calls = count_calls(SqueezeExcite, "forward")
    sizes = []
    group_size = cpu_kernels.group_size
    monkeypatch.setattr(cpu_kernels, "group_size", lambda *a: sizes.append(group_size(*a)) or sizes[-1])
    x = torch.randn(batch, 3, 224, 224)
    with torch.inference_mode():
        expected = theirs(x)
        out = fused(x.contiguous(memory_format=torch.channels_last))
    assert calls["pointwise_call"] == len(pointwise) > 0 and calls["bias_silu_"] == 0
    # B0-8e's 1152-channel projections mix their samples in groups at batch 8 (4 per group on 2 threads)
    grouped = 3 if variant.endswith("8e") and batch == 8 and torch.get_num_threads() == 2 else 0
    assert sum(size > 1 for size in sizes) >= grouped
    blocks = sum(1 for m in fused.modules() if isinstance(m, SqueezeExcite))
    assert se_calls["forward"] == blocks - len(pointwise) // 2  # the CondConv blocks' gates went into the kernel
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)


@needs_kernel
def test_op_rejects_bad_operands_with_a_message():
    op = torch.ops.cc_condconv.pointwise
    x = torch.randn(2, 24, 5, 5).contiguous(memory_format=torch.channels_last)
    experts, routing = torch.randn(1, 24, 4, 48), torch.rand(2, 4)
    with pytest.raises(RuntimeError, match="channels_last"):
        op(x.contiguous(), experts, routing, None, None, 32, False, 1)
    with pytest.raises(RuntimeError, match="multiple of 16"):
        op(x, experts, routing, None, None, 40, False, 1)
    with pytest.raises(RuntimeError, match="experts must be"):
        op(x, torch.randn(1, 23, 4, 48), routing, None, None, 32, False, 1)
    with pytest.raises(RuntimeError, match="routing must be"):
        op(x, experts, torch.rand(2, 3), None, None, 32, False, 1)
    with pytest.raises(RuntimeError, match="bias must be"):
        op(x, experts, routing, torch.randn(31), None, 32, False, 1)
    with pytest.raises(RuntimeError, match="gate must be"):
        op(x, experts, routing, None, torch.rand(2, 23), 32, False, 1)
    with pytest.raises(RuntimeError, match="group_size must be at least 1"):
        op(x, experts, routing, None, None, 32, False, 0)


# Groups of samples mixed together over ranges of input channels (csrc: a group's panels hold 64 Ki floats, so
# 170 rows for groups of 8, 341 for 4): K = 400 takes three ranges with groups of 8, two with 4; 11 samples leave
# a group of 3 (2 + 1) after one of 8, 5 leave one of 1 after one of 4.
@needs_kernel
@pytest.mark.parametrize("group", [2, 3, 4, 8])
@pytest.mark.parametrize("experts", [8, 4, 3])
@pytest.mark.parametrize("cin,cout,h,w,batch", [(400, 112, 7, 7, 11), (400, 48, 4, 4, 5), (24, 32, 5, 5, 11)])
def test_grouped_mix_matches_per_sample_convolution(group, experts, cin, cout, h, w, batch, two_threads):
    layer = _layer(cin, cout, experts, expert_bias=True, seed=cin + group)
    x = torch.randn(batch, cin, h, w).contiguous(memory_format=torch.channels_last)
    routing, gate = torch.rand(batch, experts), torch.rand(batch, cin)
    bias = layer._mixed_bias(routing)
    with torch.inference_mode():
        out = torch.ops.cc_condconv.pointwise(x, cpu_kernels._experts_panels(layer), routing, bias, gate, cout, True,
                                              group)
    torch.testing.assert_close(out.double(), _oracle(layer, x, routing, gate), atol=5e-5, rtol=5e-5)


def test_group_size_rule(monkeypatch):
    monkeypatch.setattr(cpu_kernels, "l2_bytes", lambda: 2 << 20)  # the Xeon the rule was measured on
    # a panel's expert slice (Cin x E x 48 floats) within three quarters of L2 keeps one sample at a time
    assert cpu_kernels.group_size(672, 8, 192, 32, 2) == 1  # 1.03 MB
    assert cpu_kernels.group_size(1152, 4, 320, 32, 2) == 1  # 0.88 MB
    # 1.77 MB: groups as large as leave each of the threads four (panel, group) pairs
    assert cpu_kernels.group_size(1152, 8, 320, 32, 2) == 8  # 7 panels x 4 groups
    assert cpu_kernels.group_size(1152, 8, 192, 8, 2) == 4  # 4 panels x 2 groups
    assert cpu_kernels.group_size(1152, 8, 192, 8, 4) == 2
    assert cpu_kernels.group_size(1152, 8, 192, 2, 2) == 1  # batch 2: too few pairs to group at all
    assert cpu_kernels.group_size(1152, 8, 320, 1, 1) == 1
    # a CPU with 1 MiB of L2 groups the slices of 0.88 and 1.03 MB too
    monkeypatch.setattr(cpu_kernels, "l2_bytes", lambda: 1 << 20)
    assert cpu_kernels.group_size(672, 8, 192, 32, 2) == 8
    assert cpu_kernels.group_size(1152, 4, 320, 32, 2) == 8
    assert cpu_kernels.group_size(192, 8, 1152, 32, 2) == 1  # 0.29 MB


def test_l2_size_comes_from_sysfs(tmp_path):
    for name, (level, kind, size) in {"index0": ("1", "Data", "48K"), "index1": ("1", "Instruction", "64K"),
                                      "index2": ("2", "Unified", "1280K"), "index3": ("3", "Unified", "480M")}.items():
        for field, value in (("level", level), ("type", kind), ("size", size)):
            (tmp_path / name).mkdir(exist_ok=True)
            (tmp_path / name / field).write_text(value + "\n")
    assert cpu_kernels.read_l2_bytes(str(tmp_path)) == 1280 << 10
    (tmp_path / "index2" / "size").write_text("garbage\n")
    assert cpu_kernels.read_l2_bytes(str(tmp_path)) == cpu_kernels.L2_DEFAULT
    assert cpu_kernels.read_l2_bytes(str(tmp_path / "missing")) == cpu_kernels.L2_DEFAULT
    # this machine's, against glibc's reading of the same cache where it has one
    reported = os.sysconf("SC_LEVEL2_CACHE_SIZE") if "SC_LEVEL2_CACHE_SIZE" in os.sysconf_names else 0
    if Path("/sys/devices/system/cpu/cpu0/cache").is_dir() and reported > 0:
        assert cpu_kernels.l2_bytes() == reported


def test_the_library_reports_the_instruction_set_it_was_built_for():
    # -march=native: the build's instruction set is this CPU's (its /proc/cpuinfo flags are the oracle), and the
    # pointwise op has a CPU kernel in AVX-512 builds only
    if not cpu_kernels.available():
        pytest.skip(f"the kernel library is not built here: {cpu_kernels.failure()}")
    flags = cpu_kernels._cpu_flags().split()
    expected = "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "x86-64"
    assert cpu_kernels.build_isa() == expected
    assert cpu_kernels._has_pointwise() == (expected == "avx512")
    has_kernel = getattr(torch._C, "_dispatch_has_kernel_for_dispatch_key", None)  # private: a second witness only
    if has_kernel is not None:
        assert has_kernel("cc_condconv::pointwise", "CPU") == (expected == "avx512")


# A build for a CPU without AVX-512 (Haswell: AVX2 and FMA), in its own process since a process holds one library
# of the cc_condconv namespace. It must keep the depthwise kernel, leave the pointwise CondConvs to the batched
# product, and still match timm.
AVX2_BUILD = """
    import torch, timm, cc_models
    from cc_models import cpu_kernels
    from bench.calibrate import randomize_
    cpu_kernels.CFLAGS = tuple("-march=haswell" if f == "-march=native" else f for f in cpu_kernels.CFLAGS)
    assert cpu_kernels.available(), cpu_kernels.failure()
    depthwise, calls = cpu_kernels.depthwise_call, []
    cpu_kernels.depthwise_call = lambda *a, **k: calls.append(1) or depthwise(*a, **k)
    ours = randomize_(cc_models.from_index("tf_efficientnet_cc_b0_4e"), seed=0, size=(224, 224)).eval()
    theirs = timm.create_model("tf_efficientnet_cc_b0_4e").eval()
    theirs.load_state_dict(ours.state_dict())
    ours.fuse().to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        diff = (ours(x.contiguous(memory_format=torch.channels_last)) - theirs(x)).abs().max().item()
    print(cpu_kernels.build_name(), cpu_kernels.build_isa(), cpu_kernels._has_pointwise(), len(calls), diff)
"""


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64")
                    or "avx2" not in cpu_kernels._cpu_flags().split(), reason="builds for, and runs, AVX2 code")
def test_an_avx2_build_keeps_the_batched_product_and_matches_timm():
    pytest.importorskip("timm")
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(AVX2_BUILD)], capture_output=True, text=True,
                          timeout=600, env=dict(os.environ, CC_MODELS_CPU_KERNELS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    name, isa, has_pointwise, depthwise_calls, diff = proc.stdout.split()
    assert name != cpu_kernels.build_name()  # its own build, not this process's library
    assert (isa, has_pointwise) == ("avx2", "False")
    assert int(depthwise_calls) > 0
    assert float(diff) < 1e-4


@needs_kernel
def test_pointwise_op_routes_run_through_another_op_inside_the_block_only():
    """bench.expert_bound --split times ours with timing builds swapped in; outside the block the library's op."""
    layer = _layer(40, 32, 4)
    x = torch.randn(2, 40, 5, 5).contiguous(memory_format=torch.channels_last)
    routing = torch.rand(2, 4)
    with torch.inference_mode():
        before = cpu_kernels.run(layer, x, routing)
        seen = []

        def fake(x_, panels, routing_, bias, gate, n, silu, group):
            seen.append((tuple(x_.shape), tuple(panels.shape), n, silu))
            return torch.zeros(x_.shape[0], n, *x_.shape[2:]).contiguous(memory_format=torch.channels_last)

        with cpu_kernels.pointwise_op(fake):
            inside = cpu_kernels.run(layer, x, routing)
        after = cpu_kernels.run(layer, x, routing)
    assert seen == [((2, 40, 5, 5), (1, 40, 4, 48), 32, True)] and inside.abs().max() == 0
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    torch.testing.assert_close(before, _oracle(layer, x, routing, None).float(), rtol=1e-5, atol=1e-5)


@needs_kernel
@pytest.mark.slow
def test_timing_builds_register_apart_from_the_library():
    """A timing build compiles the same source under its own op namespace, without touching the library's op."""
    with pytest.raises(ValueError, match="skip 'mix', 'gemm' or both"):
        cpu_kernels.timing_build("gemm", "packing")
    op = cpu_kernels.timing_build("gemm", "mix")
    assert op is torch.ops.cc_condconv_skip_gemm_mix.pointwise
    layer = _layer(96, 112, 4)
    x = torch.randn(3, 96, 8, 8).contiguous(memory_format=torch.channels_last)
    routing = torch.rand(3, 4)
    with torch.inference_mode():
        out = cpu_kernels.run(layer, x, routing)
        garbage = op(x, cpu_kernels._experts_panels(layer), routing, layer.static_bias, None, 112, True, 1)
    assert garbage.shape == out.shape  # nothing mixed or multiplied: what the output holds is whatever was there
    torch.testing.assert_close(out, _oracle(layer, x, routing, None).float(), rtol=1e-5, atol=1e-5)
