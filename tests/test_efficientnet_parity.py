"""cc_models against timm (the oracle) for the three index variants: layout, counts, outputs, FLOPs."""
from __future__ import annotations

import pytest
import torch

timm = pytest.importorskip("timm")

import cc_models

from model_oracle import ANCHORS, VARIANTS, fvcore_counts, max_abs_diff, randomize_, timm_and_ours

TOL = 1e-4


@pytest.fixture(scope="module", params=VARIANTS)
def pair(request):
    """(name, ours, timm's) in eval mode, ours holding timm's randomised weights (loaded strictly)."""
    name = request.param
    theirs, ours = timm_and_ours(name, seed=1)
    return name, ours, theirs


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_parameter_count(pair):
    name, ours, theirs = pair
    assert _n_params(ours) == ANCHORS[name]["params"]
    assert _n_params(ours) == _n_params(theirs)


def test_state_dict_layout_is_timms(pair):
    _, ours, theirs = pair
    ours_layout = [(k, tuple(v.shape), v.dtype) for k, v in ours.state_dict().items()]
    theirs_layout = [(k, tuple(v.shape), v.dtype) for k, v in theirs.state_dict().items()]
    assert ours_layout == theirs_layout  # names, shapes, dtypes and order, num_batches_tracked included
    condconv = [k for k, v in ours.state_dict().items() if k.endswith(("conv_pw.weight", "conv_dw.weight"))
                and v.ndim == 2]
    assert condconv, "CondConv weights are stored flat, [num_experts, params per expert]"


@pytest.mark.parametrize("batch", [1, 5])
def test_outputs_match_timm_at_input_size(pair, batch):
    name, ours, theirs = pair
    size = ours.data_config.input_size
    x = torch.randn(batch, *size, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        expected = theirs(x)
        got = ours(x)
    assert got.shape == (batch, 1000)
    assert expected.std() > 0.1, "logits too small for the tolerance to mean anything"
    assert max_abs_diff(got, expected) < TOL


def test_outputs_match_timm_at_odd_size(pair):
    # 197x229: symmetric SAME pads at some strided layers, asymmetric at others.
    _, ours, theirs = pair
    x = torch.randn(2, 3, 197, 229, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        assert max_abs_diff(ours(x), theirs(x)) < TOL


def test_features_and_head_match_timm(pair):
    _, ours, theirs = pair
    x = torch.randn(2, *ours.data_config.input_size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        feats, their_feats = ours.forward_features(x), theirs.forward_features(x)
        # TF SAME: every stride-2 layer rounds up, so 240 px gives 8x8 features.
        assert feats.shape == their_feats.shape == (2, 1280, -(-x.shape[-2] // 32), -(-x.shape[-1] // 32))
        # Feature maps reach ~10 before pooling: same relative tolerance as the logits.
        assert max_abs_diff(feats, their_feats) < TOL * max(1.0, their_feats.abs().max().item())
        pre = ours.forward_head(feats, pre_logits=True)
        assert pre.shape == (2, 1280)
        assert max_abs_diff(pre, theirs.forward_head(their_feats, pre_logits=True)) < TOL
        assert max_abs_diff(ours.forward_head(feats), theirs.forward_head(their_feats)) < TOL


def test_our_weights_load_into_timm(pair):
    name, _, _ = pair
    ours = randomize_(cc_models.from_index(name), seed=2, size=(160, 160)).eval()
    theirs = timm.create_model(name).eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(1, *ours.data_config.input_size, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert max_abs_diff(ours(x), theirs(x)) < TOL


def test_fvcore_count_equals_timms(pair):
    name, ours, theirs = pair
    x = torch.randn(1, *ours.data_config.input_size)
    total, condconv = fvcore_counts(ours, x)
    their_total, their_condconv = fvcore_counts(theirs, x)
    assert their_total == ANCHORS[name]["fvcore"]  # the oracle itself still agrees with the published anchor
    assert total == their_total == ANCHORS[name]["fvcore"]
    assert condconv == their_condconv == ANCHORS[name]["fvcore_condconv"]
