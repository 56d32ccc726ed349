"""cc_models at run time: training, dropout/drop path, TorchScript tracing, torch.compile, channels_last, bf16."""
from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F

import cc_models
from registry import StageSpec

from model_oracle import max_abs_diff, randomize_

NAME = "tf_efficientnet_cc_b0_4e"
SIZE = (160, 160)  # smaller than 224 to keep the suite fast; every code path is the same


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return randomize_(cc_models.from_index(NAME), seed=3, size=SIZE).eval()


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, *SIZE, generator=torch.Generator().manual_seed(5))


@pytest.fixture(scope="module")
def reference(model, images):
    with torch.no_grad():
        return model(images)


def _drop_path_rates(model: torch.nn.Module) -> list[float]:
    return [b.drop_path.drop_prob if hasattr(b.drop_path, "drop_prob") else 0.0 for stage in model.blocks
            for b in stage]


def test_training_step_matches_timm():
    """Same weights, train mode: equal loss, gradients and BatchNorm running-stat updates."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    # The index's BatchNorm momentum (TF 0.99 -> PyTorch 0.01); timm's default for these models is 0.1.
    theirs = randomize_(timm.create_model(NAME, bn_momentum=0.01), seed=4, size=(96, 96)).train()
    ours = cc_models.from_index(NAME, drop_rate=0.0, drop_path_rate=0.0).train()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    assert all(m.momentum == 0.01 for m in ours.modules() if isinstance(m, torch.nn.BatchNorm2d))
    x = torch.randn(3, 3, 96, 96, generator=torch.Generator().manual_seed(6))
    y = torch.tensor([1, 7, 3])
    losses = [F.cross_entropy(m(x), y) for m in (ours, theirs)]
    assert abs(losses[0].item() - losses[1].item()) < 1e-4
    for loss in losses:
        loss.backward()
    ours_params, theirs_params = dict(ours.named_parameters()), dict(theirs.named_parameters())
    # Some gradients are zero up to rounding (a bias feeding straight into a training-mode BatchNorm),
    # so each tensor is compared relative to its own scale plus a floor from the largest gradient overall.
    floor = 1e-5 * max(q.grad.abs().max().item() for q in theirs_params.values())
    for name, p in ours_params.items():
        q = theirs_params[name]
        assert max_abs_diff(p.grad, q.grad) <= 1e-3 * q.grad.abs().max().item() + floor, name
    theirs_buffers = dict(theirs.named_buffers())
    for name, b in ours.named_buffers():
        torch.testing.assert_close(b, theirs_buffers[name], rtol=1e-4, atol=1e-5, msg=name)


def test_dropout_and_drop_path_act_in_training_only():
    timm = pytest.importorskip("timm")
    model = cc_models.from_index(NAME, num_classes=10)  # the index's drop_rate 0.2, drop_path_rate 0.2
    rates = _drop_path_rates(model)
    assert rates == pytest.approx(_drop_path_rates(timm.create_model(NAME, drop_path_rate=0.2)))
    assert rates[0] == 0.0 and rates == sorted(rates) and max(rates) > 0.15  # linear ramp over the blocks
    assert model.drop_rate == 0.2
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    model.train()
    with torch.no_grad():
        torch.manual_seed(1)
        a = model(x)
        torch.manual_seed(2)
        b = model(x)
        torch.manual_seed(1)
        a_again = model(x)
    assert not torch.allclose(a, b)
    torch.testing.assert_close(a, a_again)  # the difference is the seeded dropout, nothing else
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)


def test_a_few_optimizer_steps_reduce_the_loss():
    torch.manual_seed(0)
    model = cc_models.from_index(NAME, num_classes=4, drop_rate=0.0, drop_path_rate=0.0).train()
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    y = torch.arange(4)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        if not losses:  # every parameter, CondConv experts and routing included, gets a gradient
            missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
            assert not missing
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::torch.jit.TracerWarning")
def test_jit_trace(model, images, reference):
    with torch.no_grad():
        traced = torch.jit.trace(model, images, check_trace=False)
        torch.testing.assert_close(traced(images), reference, rtol=0, atol=1e-5)
        other = torch.randn(2, 3, 131, 97, generator=torch.Generator().manual_seed(8))
        torch.testing.assert_close(traced(other), model(other), rtol=0, atol=1e-5)  # SAME pads traced, not baked


def test_torch_compile_full_model_without_graph_breaks(model, images, reference):
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(images), reference, rtol=0, atol=1e-5)


def test_torch_compile_fused_model_without_graph_breaks():
    """The inference form under torch.compile: the CPU kernels' per-layer plans step aside before touching a traced
    tensor (their keys read data pointers and versions), so the graph is the PyTorch form, whole."""
    arch = dataclasses.replace(
        cc_models.get_entry(NAME).arch, stem_size=8, num_features=32, num_classes=10, drop_rate=0.0,
        drop_path_rate=0.0, stages=(StageSpec("ir", 1, 3, 2, 2.0, 16, 0.25, experts=2),))
    fused = randomize_(cc_models.build_efficientnet(arch), seed=0, size=(32, 32)).eval().fuse()
    fused = fused.to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 33, 40, generator=torch.Generator().manual_seed(0)).contiguous(
        memory_format=torch.channels_last)
    with torch.inference_mode():
        eager = fused(x)  # the kernels' plans exist before tracing starts
        compiled = torch.compile(fused, backend="aot_eager", fullgraph=True, dynamic=False)(x)
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_torch_compile_inductor_small_config():
    """Inductor codegen on a one-block CondConv config from the same builder (the full model takes minutes)."""
    arch = dataclasses.replace(
        cc_models.get_entry(NAME).arch, stem_size=8, num_features=32, num_classes=10, drop_rate=0.0,
        drop_path_rate=0.0,
        stages=(StageSpec("ir", 1, 3, 2, 2.0, 8, 0.25, experts=2),))
    small = randomize_(cc_models.build_efficientnet(arch), seed=0, size=(32, 32)).eval()
    # dynamic=False: were a second input size to turn on automatic dynamic shapes, Inductor's CPU codegen would
    # spend minutes in sympy on chains of SAME-padded strided convs (timm's EfficientNet alike).
    compiled = torch.compile(small, fullgraph=True, dynamic=False)
    x = torch.randn(2, 3, 33, 40, generator=torch.Generator().manual_seed(0))  # odd height, even width:
    with torch.no_grad():  # symmetric and asymmetric SAME padding in one graph
        torch.testing.assert_close(compiled(x), small(x), rtol=1e-4, atol=1e-5)


def test_channels_last(model, images, reference):
    model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    assert model_cl.entry is model.entry  # frozen metadata is shared by copies
    with torch.no_grad():
        out = model_cl(images.contiguous(memory_format=torch.channels_last))
    assert max_abs_diff(out, reference) < 1e-4


def test_autocast_bfloat16(model, images, reference):
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(images)
    assert out.dtype == torch.bfloat16
    assert torch.isfinite(out.float()).all()
    rel = ((out.float() - reference).norm() / reference.norm()).item()
    assert rel < 0.05, rel
