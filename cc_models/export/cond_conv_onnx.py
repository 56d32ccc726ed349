"""A per-sample CondConv that exports to ONNX with a dynamic batch.

The eager forms (``cc_models.layers.cond_conv2d``) fold the batch into a grouped
convolution whose kernel *shape* depends on the batch size, which neither ONNX
exporter can express ("convolution for kernel of unknown shape"). This form
keeps every kernel static:

* pointwise (1x1, stride 1, ungrouped): mix the kernels per sample
  (``routing @ experts``), then one batched ``MatMul`` ``[B, Cout, Cin] @ [B, Cin, H*W]``;
* everything else (the depthwise k x k convs): the expert sum
  ``out = sum_e r[:, e] * conv(x, W_e)``, run as one convolution over all experts
  stacked along the output channels (``[B, g * E * Cout/g, H', W']``), weighted
  by the routing and summed over the expert axis. Convolution is linear in its
  kernel, so this equals the mixed-kernel convolution up to float rounding.

It reads the parameters of the ``CondConv2d`` it replaces (fused or not), so
``static_bias`` from BatchNorm folding rides along.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import CondConv2d, conv2d_same


class ExportCondConv2d(nn.Module):
    """Drop-in for ``CondConv2d`` (same call: ``(x, routing_weights)``), in ops ONNX exports with any batch."""

    def __init__(self, conv: CondConv2d) -> None:
        super().__init__()
        self.out_channels, self.groups, self.num_experts = conv.out_channels, conv.groups, conv.num_experts
        self.kernel_size, self.stride, self.dilation = conv.kernel_size, conv.stride, conv.dilation
        self.padding, self.dynamic_padding, self.pointwise = conv.padding, conv.dynamic_padding, conv.pointwise
        self.bias = conv.bias  # [E, Cout] or None: mixed by the routing
        self.static_bias = conv.static_bias  # [Cout] or None: BatchNorm's shift after folding
        self.epilogue_act = conv.epilogue_act  # "silu" or None: set by cc_models.fuse.fold_activations_
        experts = conv.weight.detach().view(conv.num_experts, *conv.weight_shape)  # [E, Cout, Cin/g, kh, kw]
        if self.pointwise:
            flat = conv.weight.detach()
            if conv.experts_in_out:  # the fused CPU layout, [E, Cin, Cout]: back to timm's [E, Cout, Cin]
                flat = flat.view(conv.num_experts, conv.in_channels, conv.out_channels).transpose(1, 2)
            self.register_buffer("experts", flat.reshape(conv.num_experts, -1).clone())  # [E, Cout * Cin]
        else:
            e, g, cout_g = conv.num_experts, conv.groups, conv.out_channels // conv.groups
            # Output channel (group, expert, j): a grouped conv sees each group's outputs contiguous.
            stacked = experts.view(e, g, cout_g, *conv.weight_shape[1:]).transpose(0, 1)
            self.register_buffer("experts", stacked.reshape(g * e * cout_g, *conv.weight_shape[1:]).clone())

    def forward(self, x: torch.Tensor, routing_weights: torch.Tensor) -> torch.Tensor:
        if self.pointwise:
            weight = torch.matmul(routing_weights, self.experts).view(-1, self.out_channels, x.shape[1])
            out = torch.matmul(weight, x.flatten(2)).view(x.shape[0], self.out_channels, x.shape[2], x.shape[3])
        else:
            if self.dynamic_padding:
                y = conv2d_same(x, self.experts, None, self.kernel_size, self.stride, self.dilation, self.groups)
            else:
                y = F.conv2d(x, self.experts, None, self.stride, self.padding, self.dilation, self.groups)
            g, e = self.groups, self.num_experts
            y = y.view(y.shape[0], g, e, self.out_channels // g, y.shape[2], y.shape[3])
            out = (y * routing_weights.view(-1, 1, e, 1, 1, 1)).sum(2).flatten(1, 2)
        if self.bias is not None:
            out = out + torch.matmul(routing_weights, self.bias)[:, :, None, None]
        if self.static_bias is not None:
            out = out + self.static_bias.view(1, -1, 1, 1)
        return out if self.epilogue_act is None else F.silu(out)


def swap_cond_convs_(model: nn.Module) -> int:
    """Replace every ``CondConv2d`` in ``model`` by its export form, in place; returns how many."""
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, CondConv2d):
                setattr(parent, name, ExportCondConv2d(child))
                count += 1
    return count
