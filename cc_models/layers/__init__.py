"""Building blocks for cc_models, apart from model assembly (as in timm's ``layers``)."""
from __future__ import annotations

from .activations import create_act_layer, get_act_layer
from .cond_conv2d import CondConv2d
from .conv2d_same import Conv2d, Conv2dSame, create_conv2d
from .drop import DropPath, drop_path
from .helpers import make_divisible, to_2tuple
from .norm_act import BatchNormAct2d
from .padding import conv2d_same, get_padding, get_same_padding, is_static_pad, resolve_padding, same_pad_amounts
from .squeeze_excite import SqueezeExcite

__all__ = [
    "BatchNormAct2d", "CondConv2d", "Conv2d", "Conv2dSame", "DropPath", "SqueezeExcite", "conv2d_same", "create_act_layer",
    "create_conv2d", "drop_path", "get_act_layer", "get_padding", "get_same_padding", "is_static_pad",
    "make_divisible", "resolve_padding", "same_pad_amounts", "to_2tuple",
]
