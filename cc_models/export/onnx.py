"""ONNX export with a dynamic batch, height and width.

>>> import cc_models
>>> cc_models.export_onnx("tf_efficientnet_cc_b0_4e", "b0_4e.onnx")        # doctest: +SKIP

The model is copied, its CondConvs swapped for the per-sample export form
(``cond_conv_onnx``), and traced by PyTorch's TorchScript-based exporter
(``dynamo=False``). Height and width stay dynamic too: TF "SAME" padding
depends on the input size, and under tracing ``conv2d_same`` records that
arithmetic (``Shape`` -> pad amounts -> ``Pad``) instead of constants, so
the graph pads correctly at every size (tested at 224 and odd sizes).

The model being exported is left as it was: fused or not, eval or train.
"""
from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from .atomic import write_atomic
from .cond_conv_onnx import swap_cond_convs_

DEFAULT_OPSET = 17
INPUT_NAME, OUTPUT_NAME = "input", "logits"


def export_form(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with every CondConv in its ONNX-exportable form."""
    clone = copy.deepcopy(model).eval()
    swap_cond_convs_(clone)
    # The legacy exporter reads state_dict(), which a fused model refuses (its layout is not timm's).
    # The copy is only traced, never saved as a checkpoint, so let it answer.
    if getattr(clone, "is_fused", False):
        clone.is_fused = False
    return clone


def export_onnx(
    model_or_id: nn.Module | str,
    path: str | os.PathLike,
    *,
    input_size: tuple[int, int, int] | None = None,
    opset: int = DEFAULT_OPSET,
    pretrained: bool = False,
    checkpoint_path: str | os.PathLike | None = None,
) -> Path:
    """Write ``model_or_id`` (a model or an index id) as ONNX to ``path`` (atomically); returns the path.

    Input ``[batch, 3, height, width]`` named ``input``, output ``logits``; batch, height and width are
    dynamic. ``input_size``: the tracing size (default: the model's data config). ``pretrained`` /
    ``checkpoint_path`` load weights when ``model_or_id`` is an id.
    """
    if isinstance(model_or_id, str):
        from ..factory import from_index

        model = from_index(model_or_id, pretrained=pretrained, checkpoint_path=checkpoint_path)
    else:
        model = model_or_id
    if input_size is None:
        data = getattr(model, "data_config", None)
        input_size = tuple(data.input_size) if data is not None else (3, 224, 224)
    form = export_form(model)
    param = next(form.parameters())
    example = torch.zeros(2, *input_size, dtype=param.dtype, device=param.device)

    def write(tmp: str) -> None:
        # The TorchScript exporter is deprecated in favour of torch.export's, which specialises the SAME padding
        # arithmetic away; keep its notice out of our users' output.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                form, (example,), tmp, dynamo=False, opset_version=opset,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch", 2: "height", 3: "width"}, OUTPUT_NAME: {0: "batch"}},
            )

    return write_atomic(Path(path), write)
