"""cc_models: EfficientNet-CondConv architectures built from the model index, timm-checkpoint compatible.

>>> import cc_models
>>> cc_models.list_models()
['tf_efficientnet_cc_b0_4e', 'tf_efficientnet_cc_b0_8e', 'tf_efficientnet_cc_b1_8e']
>>> model = cc_models.from_index("tf_efficientnet_cc_b0_4e").eval()
>>> transform = cc_models.create_transform("tf_efficientnet_cc_b0_4e")
>>> backbone = cc_models.from_index("tf_efficientnet_cc_b0_4e", features_only=True, out_indices=(2, 3, 4))
"""
from __future__ import annotations

from typing import Any

from .cuda_graph import cuda_graph
from .efficientnet import EfficientNet, build_efficientnet
from .factory import build_model, create_transform, data_config, from_index, get_entry, list_models, pretrained_cfg

__all__ = [
    "EfficientNet", "build_efficientnet", "build_model", "create_transform", "cuda_graph", "data_config", "from_index",
    "get_entry", "export_onnx", "list_models", "load_pretrained", "pretrained_cfg",
]


def __getattr__(name: str) -> Any:
    # Weight loading imports the Hub client; keep ``import cc_models`` light until it is used.
    if name == "load_pretrained":
        from .weights import load_pretrained

        return load_pretrained
    if name == "export_onnx":  # pulls in torch.onnx: only when asked for
        from .export import export_onnx

        return export_onnx
    raise AttributeError(f"module 'cc_models' has no attribute {name!r}")
