"""CondConv: a convolution whose kernel is a per-sample mix of expert kernels.

Paper: CondConv: Conditionally Parameterized Convolutions for Efficient Inference
(https://arxiv.org/abs/1904.04971). Parameters are stored exactly as timm stores
them, flat per expert (``weight: [num_experts, out * in / groups * kh * kw]``),
so timm checkpoints load unchanged. The routing weights are computed once per
block and passed in, because the block's three CondConvs share them.

Compute, chosen by measurement on CPU (``bench/layer_timing.py``):
* 1x1, stride 1, ungrouped, in a fused model on an AVX-512 CPU: the C++ GEMM of ``cc_models.cpu_kernels.pointwise``,
  each sample's kernel mixed panel by panel in cache as the GEMM's packing step (the samples of a group together
  where the experts do not stay in L2), with an optional per-sample input-channel ``gate`` (the SE gate before a
  projection) folded into the kernel's rows.
* 1x1, stride 1, ungrouped, otherwise: mix the kernels per sample, then one batched matmul
  ``[B, Cout, Cin] @ [B, Cin, H*W]``: 0.24-0.74x the time of timm's batch-grouped
  convolution at batch 32 and 0.38-0.94x at batch 1 (2 threads, B0 shapes). On a channels_last
  input the same product runs as ``[B, H*W, Cin] @ [B, Cin, Cout]``, so the output stays channels_last.
  A fused model stores the experts as ``[Cin, Cout]`` so that the mixed kernel is that right operand
  as it is (``experts_in_out``); on CPU a SiLU after it runs with the bias in one C++ pass
  (``cc_models.cpu_kernels.bias_silu_``).
* everything else (the depthwise k x k convs): fold the batch into the channels
  and run one grouped convolution with ``groups = B * groups``, as timm does;
  a per-sample loop took 1.8-4.4x as long at batch 32 (the same op at batch 1). In a fused model on
  CPU that convolution runs in oneDNN (``cc_models.onednn.grouped_conv2d``), and on a channels_last
  input a C++ kernel replaces it (``cc_models.cpu_kernels``: each sample's kernel mixed in cache and
  convolved from the channels_last input, 0.25-0.6x the grouped form's time on B0's layers).
The unfused model keeps to ops FLOP counters understand (matmul, bmm, conv).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import cpu_kernels, kernels, onednn
from .helpers import to_2tuple
from .padding import resolve_padding, same_conv_operands


class CondConv2d(nn.Module):
    # class defaults too: a model pickled before these attributes existed still runs
    inference = False
    experts_in_out = False

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: str | int = "same",
        dilation: int = 1,
        groups: int = 1,
        bias: bool = False,
        num_experts: int = 4,
    ) -> None:
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"channels ({in_channels} -> {out_channels}) must be divisible by groups={groups}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = to_2tuple(kernel_size)
        self.stride = to_2tuple(stride)
        self.dilation = to_2tuple(dilation)
        self.groups = groups
        self.num_experts = num_experts
        static_pad, self.dynamic_padding = resolve_padding(padding, kernel_size, stride, dilation)
        self.padding = to_2tuple(static_pad)
        self.weight_shape = (out_channels, in_channels // groups) + self.kernel_size
        self.weight = nn.Parameter(torch.empty(num_experts, math.prod(self.weight_shape)))
        if bias:
            self.bias = nn.Parameter(torch.empty(num_experts, out_channels))
        else:
            self.register_parameter("bias", None)
        # Set only by BatchNorm folding (cc_models.fuse): a per-channel shift that is not mixed by the
        # routing weights. A None buffer stays out of the state dict, which keeps timm's layout.
        self.register_buffer("static_bias", None)
        # Set only by cc_models.fuse.fold_activations_: the activation after the conv, applied by the conv
        # (on CUDA in the Triton kernels' epilogue, on CPU in oneDNN's for the grouped form), and the
        # inference form (TF SAME padding grown into the kernel, see padding.padding_in_kernel).
        self.epilogue_act: str | None = None
        self.inference = False
        # Set only by fold_activations_, for the pointwise form: ``weight`` holds each expert as [Cin, Cout]
        # (timm's is [Cout, Cin]); a fused model never hands its weights out in timm's format anyway.
        self.experts_in_out = False
        self.pointwise = (self.kernel_size == (1, 1) and self.stride == (1, 1) and groups == 1
                          and self.padding == (0, 0) and not self.dynamic_padding)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Each expert is initialised like an ordinary conv kernel of the same shape.
        for expert in self.weight.data.view(self.num_experts, *self.weight_shape):
            nn.init.kaiming_uniform_(expert, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(math.prod(self.weight_shape[1:]))
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor, routing_weights: torch.Tensor, gate: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: [B, C, H, W]; ``routing_weights``: [B, num_experts]; ``gate``: [B, C] or None, a per-sample scale
        of the input channels (the SE gate before a projection), folded into the kernel where the CPU kernel runs."""
        if self.inference and x.is_cpu:  # the C++ kernels; None where they don't apply
            if gate is not None and not self.pointwise:  # only the pointwise kernel folds a gate in
                x, gate = x * gate[:, :, None, None], None
            out = cpu_kernels.run(self, x, routing_weights, gate)
            if out is not None:
                return out
        if gate is not None:
            x = x * gate[:, :, None, None]
        if x.is_cuda:  # Triton kernels mixing the experts inside the convolution; None where they don't apply
            out = kernels.cuda_forward(self, x, routing_weights)
            if out is not None:
                return out
        weight = torch.matmul(routing_weights, self.weight)  # [B, P]: this sample's kernel
        bias = self._mixed_bias(routing_weights)
        if bias is not None and bias.dim() == 1:
            bias = bias.expand(x.shape[0], -1)
        if self.pointwise:
            if (self.inference and self.experts_in_out and self.epilogue_act == "silu"
                    and cpu_kernels.epilogue_applies(x, weight)):
                return self._forward_bmm_silu(x, weight, bias)
            return self._activate(self._forward_bmm(x, weight, bias))
        if x.is_cuda:  # cuDNN's autotuner never finishes on batch x channels groups
            with kernels.cudnn_without_benchmark():
                return self._activate(self._forward_grouped(x, weight, bias))
        return self._forward_grouped(x, weight, bias, self.epilogue_act)

    def _activate(self, out: torch.Tensor) -> torch.Tensor:
        if self.epilogue_act is None:
            return out
        # In place on the fresh output where autograd cannot need it (the fused model's inference).
        return F.silu(out, inplace=self.inference and not torch.is_grad_enabled())

    def _forward_bmm(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        b, c, h, w = x.shape
        if self.experts_in_out:
            # [B, H*W, Cin] @ [B, Cin, Cout] with the mixed kernel already [Cin, Cout]: 0.78-0.85x the time of the
            # forms below on B0's 7x7 layers at batch 32, the same on 14x14 (bench/layer_timing.py). The permute is
            # a view for channels_last and NCHW inputs alike; the output is channels_last.
            xt = x.permute(0, 2, 3, 1).reshape(b, h * w, c)
            weight = weight.view(b, c, self.out_channels)
            out = torch.bmm(xt, weight) if bias is None else torch.baddbmm(bias.unsqueeze(1), xt, weight)
            return out.view(b, h, w, self.out_channels).permute(0, 3, 1, 2)
        if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
            # [B, H*W, Cin] @ [B, Cin, Cout]: the output stays channels_last, so the layers after it keep
            # oneDNN's channels_last kernels (1.12x the whole model at batch 32, 1 thread, b0_4e).
            xt = x.permute(0, 2, 3, 1).reshape(b, h * w, c)
            weight = weight.view(b, self.out_channels, c).transpose(1, 2)
            out = torch.bmm(xt, weight) if bias is None else torch.baddbmm(bias.unsqueeze(1), xt, weight)
            return out.view(b, h, w, self.out_channels).permute(0, 3, 1, 2)
        # reshape, not view: a channels_last input flattens to a strided view bmm takes as is.
        weight, x = weight.view(b, self.out_channels, c), x.reshape(b, c, h * w)
        if bias is None:
            out = torch.bmm(weight, x)
        else:  # the bias rides along in the matmul's output pass instead of a second pass over it
            out = torch.baddbmm(bias.unsqueeze(-1), weight, x)
        return out.view(b, self.out_channels, h, w)

    def _mixed_bias(self, routing_weights: torch.Tensor) -> torch.Tensor | None:
        """``static_bias`` [C] alone, or with the experts' own biases mixed per sample, [B, C]; None without either."""
        if self.bias is None:
            return self.static_bias
        mixed = torch.matmul(routing_weights, self.bias)
        return mixed if self.static_bias is None else mixed + self.static_bias

    def _forward_bmm_silu(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """``_forward_bmm`` then the SiLU, the bias and SiLU in one pass after the product (``cpu_kernels.bias_silu_``)
        instead of baddbmm's copy of the bias into the output and a SiLU pass of its own."""
        b, c, h, w = x.shape
        out = torch.bmm(x.permute(0, 2, 3, 1).reshape(b, h * w, c), weight.view(b, c, self.out_channels))
        cpu_kernels.bias_silu_(out, bias)
        return out.view(b, h, w, self.out_channels).permute(0, 3, 1, 2)

    def _forward_grouped(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                         act: str | None = None) -> torch.Tensor:
        """The batch folded into the channels, one grouped convolution; ``act`` applied after it (in oneDNN's
        epilogue where that applies)."""
        b, c, h, w = x.shape
        weight = weight.view((b * self.out_channels, c // self.groups) + self.kernel_size)
        if bias is not None:
            bias = bias.reshape(b * self.out_channels)
        # Each sample becomes its own group of channels: a view of an NCHW input (and of any input at batch 1),
        # a copy of a channels_last one.
        x = x if b == 1 else x.reshape(1, b * c, h, w)
        groups = self.groups * b
        padding = self.padding
        if self.dynamic_padding:
            x, weight, padding = same_conv_operands(x, weight, self.kernel_size, self.stride, self.dilation,
                                                    pad_in_kernel=self.inference and x.device.type == "cpu")
        if self.inference and self.dilation == (1, 1) and onednn.applies(x, weight, contiguous_too=True):
            out = onednn.grouped_conv2d(x, weight, bias, self.stride, padding, groups, act)
        else:
            out = F.conv2d(x, weight, bias, self.stride, padding, self.dilation, groups)
            if act is not None:
                out = self._activate(out)
        return out.view(b, self.out_channels, out.shape[-2], out.shape[-1])

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
             f"num_experts={self.num_experts}")
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.dynamic_padding:
            s += ", padding=SAME(dynamic)"
        elif self.padding != (0, 0):
            s += f", padding={self.padding}"
        return s
