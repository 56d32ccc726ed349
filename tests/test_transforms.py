"""cc_models transforms: pixel-identical to timm's eval transform, on images of many sizes and shapes."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

timm = pytest.importorskip("timm")
import timm.data

import cc_models
from cc_models.transforms import eval_transform, train_transform

from model_oracle import FIXTURE_INDEX, VARIANTS

# (width, height): tiny, thin, very wide, very tall, exact crop sizes, odd and ordinary photos.
IMAGE_SIZES = [(1, 1), (3, 2), (7, 5), (1000, 9), (12, 900), (224, 224), (240, 240), (256, 256), (255, 257),
               (272, 300), (333, 517), (640, 480)]


def _image(width: int, height: int) -> Image.Image:
    rng = np.random.default_rng(width * 10_007 + height)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    return [_image(w, h) for w, h in IMAGE_SIZES]


def _timm_eval_transform(model_name: str):
    model = timm.create_model(model_name, pretrained=False, num_classes=0)
    return timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))


@pytest.mark.parametrize("model_id", VARIANTS)
def test_eval_transform_is_pixel_identical_to_timm(model_id, images):
    ours, theirs = cc_models.create_transform(model_id), _timm_eval_transform(model_id)
    size = cc_models.data_config(model_id).input_size
    for img in images:
        a, b = ours(img), theirs(img)
        assert a.shape == size and a.dtype == torch.float32
        assert torch.equal(a, b), f"{model_id}: {img.size}"


def test_fixture_index_transform_is_pixel_identical_to_timm(images):
    """ImageNet mean/std and the fixture's crop: a second DataConfig through the same code."""
    ours = cc_models.create_transform("efficientnet_cc_b0_4e", index=FIXTURE_INDEX)
    theirs = _timm_eval_transform("efficientnet_cc_b0_4e")
    for img in images:
        assert torch.equal(ours(img), theirs(img)), img.size


@pytest.mark.parametrize("changes", [
    {"crop_mode": "squash"},
    {"crop_pct": 0.9, "interpolation": "bilinear"},  # 224 / 0.9 = 248.9: floor, not round, gives the resize
    {"crop_pct": 1.0, "input_size": (3, 97, 97), "interpolation": "nearest"},
])
def test_other_data_configs_match_timm(images, changes):
    config = dataclasses.replace(cc_models.data_config("tf_efficientnet_cc_b0_4e"), **changes)
    theirs = timm.data.create_transform(**config.as_timm_dict())
    ours = eval_transform(config)
    for img in images:
        assert torch.equal(ours(img), theirs(img)), img.size


def test_unsupported_configs_are_rejected():
    config = cc_models.data_config("tf_efficientnet_cc_b0_4e")
    with pytest.raises(ValueError, match="crop mode"):
        eval_transform(dataclasses.replace(config, crop_mode="border"))
    with pytest.raises(ValueError, match="interpolation"):
        eval_transform(dataclasses.replace(config, interpolation="area51"))
    with pytest.raises(ValueError, match="square"):
        eval_transform(dataclasses.replace(config, input_size=(3, 224, 256)))


def test_train_transform_augments_at_the_input_size(images):
    transform = cc_models.create_transform("tf_efficientnet_cc_b1_8e", train=True)
    img = images[-1]
    torch.manual_seed(0)
    a = transform(img)
    torch.manual_seed(0)
    a_again = transform(img)
    b = transform(img)
    assert a.shape == (3, 240, 240) and a.dtype == torch.float32
    assert torch.equal(a, a_again) and not torch.equal(a, b)  # random, driven by torch's RNG
    assert -1.0 - 1e-6 <= a.min() and a.max() <= 1.0 + 1e-6  # normalised with mean = std = 0.5
    assert train_transform(cc_models.data_config("tf_efficientnet_cc_b0_4e"), hflip=0)(img).shape == (3, 224, 224)
