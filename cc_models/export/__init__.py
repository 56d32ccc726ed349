"""Export forms of the models: ONNX with a dynamic batch, and Hub repos that timm loads."""
from __future__ import annotations

from .onnx import export_onnx

__all__ = ["export_onnx"]
