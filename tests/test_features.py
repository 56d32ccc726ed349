"""timm's feature API on our models, against timm 1.0.31: feature_info, features_only, forward_intermediates."""
from __future__ import annotations

import copy

import pytest
import torch

import cc_models

from model_oracle import max_abs_diff, timm_and_ours

MODEL = "tf_efficientnet_cc_b0_4e"
TOL = 1e-4


@pytest.fixture(scope="module")
def pair():
    return timm_and_ours(MODEL)


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(3))


def test_features_only_matches_timm(pair, image):
    import timm

    theirs_full, _ = pair
    theirs = timm.create_model(MODEL, features_only=True, out_indices=(1, 2, 4)).eval()
    theirs.load_state_dict({k: v for k, v in theirs_full.state_dict().items() if k in theirs.state_dict()})
    ours = cc_models.from_index(MODEL, features_only=True, out_indices=(1, 2, 4)).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)  # same keys as timm's EfficientNetFeatures
    with torch.no_grad():
        a, b = theirs(image), ours(image)
    assert len(a) == len(b) == 3
    for x, y in zip(a, b):
        assert x.shape == y.shape and max_abs_diff(x, y) <= TOL


@pytest.mark.parametrize("out_indices", [(0, 1, 2, 3, 4), (2, 4), (1,), 2, (-1, -2)])
def test_feature_info_matches_timm(out_indices):
    import timm

    theirs = timm.create_model(MODEL, features_only=True, out_indices=out_indices)
    ours = cc_models.from_index(MODEL, features_only=True, out_indices=out_indices)
    assert ours.feature_info.get_dicts() == theirs.feature_info.get_dicts()
    assert ours.feature_info.channels() == theirs.feature_info.channels()
    assert ours.feature_info.reduction() == theirs.feature_info.reduction()
    assert ours.feature_info.module_name() == theirs.feature_info.module_name()


def test_feature_info_of_every_variant_matches_timm():
    import timm

    for name in cc_models.list_models():  # the b1 is deeper (depth multiplier 1.1): other stage lengths
        theirs = timm.create_model(name, features_only=True)
        ours = cc_models.from_index(name, features_only=True)
        assert ours.feature_info.get_dicts() == theirs.feature_info.get_dicts(), name
        assert cc_models.from_index(name).stage_ends == timm.create_model(name).stage_ends, name


@pytest.mark.parametrize("kwargs", [
    {}, {"indices": [0, -1], "stop_early": True}, {"indices": 2, "intermediates_only": True},
    {"extra_blocks": True, "indices": [0, 3, 7]},
])
def test_forward_intermediates_matches_timm(pair, image, kwargs):
    theirs, ours = pair
    with torch.no_grad():
        a, b = theirs.forward_intermediates(image, **kwargs), ours.forward_intermediates(image, **kwargs)
    if not kwargs.get("intermediates_only"):
        assert max_abs_diff(a[0], b[0]) <= TOL
        a, b = a[1], b[1]
    assert [t.shape for t in a] == [t.shape for t in b]
    assert all(max_abs_diff(x, y) <= TOL for x, y in zip(a, b))


@pytest.mark.parametrize("kwargs", [{"indices": [1, 2]}, {"indices": 1, "prune_head": False},
                                    {"indices": [0, 4], "extra_blocks": True}])
def test_prune_intermediate_layers_matches_timm(pair, image, kwargs):
    theirs, ours = copy.deepcopy(pair)
    assert ours.prune_intermediate_layers(**kwargs) == theirs.prune_intermediate_layers(**kwargs)
    assert ours.num_features == theirs.num_features
    assert len(ours.blocks) == len(theirs.blocks)
    with torch.no_grad():
        a = theirs.forward_intermediates(image, kwargs["indices"], intermediates_only=True,
                                         extra_blocks=kwargs.get("extra_blocks", False))
        b = ours.forward_intermediates(image, kwargs["indices"], intermediates_only=True,
                                       extra_blocks=kwargs.get("extra_blocks", False))
    assert all(max_abs_diff(x, y) <= TOL for x, y in zip(a, b)) and len(a) == len(b)


def test_bad_indices_are_clear_errors(pair, image):
    _, ours = pair
    with pytest.raises(ValueError, match="out of range"):
        ours.forward_intermediates(image, indices=[7])
    with pytest.raises(ValueError, match="out of range"):
        cc_models.from_index(MODEL, features_only=True, out_indices=(5,))
