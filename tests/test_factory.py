"""cc_models.from_index and friends: index lookup, overrides, metadata, weights hand-off, a second index."""
from __future__ import annotations

import copy
import dataclasses
import sys
import types

import pytest
import torch

import cc_models
import registry

from model_oracle import FIXTURE_INDEX, VARIANTS, max_abs_diff, randomize_

NAME = "tf_efficientnet_cc_b0_4e"


def test_list_models_and_data_config_follow_the_index():
    index = registry.load()
    assert cc_models.list_models() == list(index.ids) == list(VARIANTS)
    for model_id in VARIANTS:
        assert cc_models.data_config(model_id) == index.get(model_id).data
    assert cc_models.list_models(index=FIXTURE_INDEX) == ["efficientnet_cc_b0_4e"]
    with pytest.raises(registry.UnknownModelError):
        cc_models.from_index("tf_efficientnet_cc_b9_99e")


@pytest.mark.parametrize("model_id", VARIANTS)
def test_data_config_matches_timm(model_id):
    timm = pytest.importorskip("timm")
    expected = timm.data.resolve_data_config({}, pretrained_cfg=timm.models.get_pretrained_cfg(model_id).to_dict())
    assert cc_models.data_config(model_id).as_timm_dict() == expected


def test_model_carries_its_entry_and_a_timm_style_pretrained_cfg():
    timm = pytest.importorskip("timm")
    entry = registry.default_index().get(NAME)
    model = cc_models.from_index(NAME)
    assert model.entry is entry and model.data_config == entry.data
    assert model.pretrained_cfg["architecture"] == NAME and model.pretrained_cfg["url"] == entry.weights
    # timm's own data helpers read our models like theirs
    assert timm.data.resolve_data_config({}, model=model) == entry.data.as_timm_dict()
    assert copy.deepcopy(model).entry is entry


def test_index_may_be_a_path_or_a_loaded_index():
    index = registry.load(FIXTURE_INDEX)
    by_path = cc_models.from_index("efficientnet_cc_b0_4e", index=str(FIXTURE_INDEX))
    by_index = cc_models.from_index("efficientnet_cc_b0_4e", index=index)
    assert by_index.entry is index.get("efficientnet_cc_b0_4e")
    assert by_path.entry == by_index.entry
    with pytest.raises(registry.UnknownModelError):
        cc_models.from_index(NAME, index=index)  # not in that index


def test_overrides_replace_architecture_fields():
    model = cc_models.from_index(NAME, drop_rate=0.3, drop_path_rate=0.1, num_classes=10)
    assert model.drop_rate == 0.3 and model.arch.drop_path_rate == 0.1
    assert model.get_classifier().out_features == 10 and model.num_classes == 10
    last = model.blocks[-1][-1].drop_path.drop_prob
    assert last == pytest.approx(0.1 * 15 / 16)  # 16 blocks, ramped from 0
    assert model.data_config.num_classes == 1000  # the data config describes the checkpoint, not the head
    with pytest.raises(TypeError, match="unknown architecture override"):
        cc_models.from_index(NAME, dropout=0.5)


def test_classifier_can_be_reset_or_removed():
    model = cc_models.from_index(NAME).eval()
    x = torch.randn(2, 3, 64, 64)
    model.reset_classifier(7)
    assert model.get_classifier().out_features == 7 and model(x).shape == (2, 7)
    model.reset_classifier(0)
    assert isinstance(model.get_classifier(), torch.nn.Identity) and model(x).shape == (2, 1280)
    assert cc_models.from_index(NAME, num_classes=0).eval()(x).shape == (2, 1280)


def test_unknown_family_is_rejected():
    entry = registry.default_index().get(NAME)
    odd = dataclasses.replace(entry, arch=dataclasses.replace(entry.arch, family="resnet"))
    with pytest.raises(ValueError, match="no builder for architecture family 'resnet'"):
        cc_models.build_model(odd)


def test_weights_are_loaded_only_when_asked(monkeypatch, tmp_path):
    calls = []
    fake = types.ModuleType("cc_models.weights")
    fake.load_pretrained = lambda model, entry, **kw: calls.append((model, entry, kw))
    monkeypatch.setitem(sys.modules, "cc_models.weights", fake)
    entry = registry.default_index().get(NAME)

    cc_models.from_index(NAME)
    assert calls == []
    model = cc_models.from_index(NAME, pretrained=True, revision="abc123", num_classes=3)
    assert calls[-1] == (model, entry, {"checkpoint_path": None, "revision": "abc123"})
    assert model.num_classes == 3  # the head is sized before the weights arrive: load_pretrained adapts it
    ckpt = tmp_path / "model.safetensors"
    model = cc_models.from_index(NAME, checkpoint_path=ckpt)
    assert calls[-1] == (model, entry, {"checkpoint_path": ckpt, "revision": None})
    with pytest.raises(ValueError, match="revision"):
        cc_models.from_index(NAME, revision="abc123")


def test_fixture_index_validates():
    index = registry.load(FIXTURE_INDEX)  # raises IndexValidationError on any problem
    entry = index.get("efficientnet_cc_b0_4e")
    assert entry.arch.padding == "symmetric"
    assert entry.arch.bn_eps == 1e-5 and entry.arch.bn_momentum == pytest.approx(0.1)
    assert entry.data.mean == (0.485, 0.456, 0.406) and entry.data.std == (0.229, 0.224, 0.225)
    assert entry.release is not None and len(entry.release.sha256_prefix) == 8


def test_fixture_index_model_matches_timms_pytorch_variant():
    """timm's efficientnet_cc_b0_4e (symmetric padding, eps 1e-5), built from a second index through the same code."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    theirs = randomize_(timm.create_model("efficientnet_cc_b0_4e"), seed=5).eval()
    ours = cc_models.from_index("efficientnet_cc_b0_4e", index=FIXTURE_INDEX).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    assert all(m.eps == 1e-5 and m.momentum == pytest.approx(0.1)
               for m in ours.modules() if isinstance(m, torch.nn.BatchNorm2d))
    with torch.no_grad():
        for shape in [(2, 3, 224, 224), (1, 3, 197, 229)]:
            x = torch.randn(*shape, generator=torch.Generator().manual_seed(shape[-1]))
            assert max_abs_diff(ours(x), theirs(x)) < 1e-4
        # The index's padding and eps are what make the difference: the TF variant differs on the same weights.
        tf_variant = cc_models.from_index(NAME).eval()
        tf_variant.load_state_dict(theirs.state_dict())
        x = torch.randn(1, 3, 224, 224)
        assert max_abs_diff(tf_variant(x), theirs(x)) > 1e-2
