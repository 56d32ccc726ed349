"""EfficientNet (with optional CondConv stages), built from the index's ``ArchitectureConfig``.

One builder serves every variant: the index says how many stages, blocks,
channels and experts; the rules that turn those into layers (depth scaling
with ceil, channel rounding to multiples of 8, linearly ramped drop path) are
timm's, so module names, parameter shapes and state-dict keys match timm's
EfficientNet and its checkpoints load with ``strict=True``.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from registry import ArchitectureConfig, DataConfig, ModelEntry, StageSpec

from .efficientnet_blocks import CondConvResidual, DepthwiseSeparableConv, InvertedResidual
from .features import block_out_channels, stage_features, take_indices
from .fuse import fold_activations_, fuse_batchnorm_
from .layers import BatchNormAct2d, CondConv2d, create_conv2d, get_act_layer, make_divisible

__all__ = ["EfficientNet", "build_efficientnet", "round_channels", "scale_stage_depth", "init_weights_goog"]


def round_channels(channels: int, multiplier: float = 1.0, divisor: int = 8, round_limit: float = 0.9) -> int:
    """Width scaling: ``channels * multiplier`` rounded to a multiple of ``divisor`` (timm's ``round_channels``)."""
    if not multiplier:
        return channels
    return make_divisible(channels * multiplier, divisor, round_limit=round_limit)


def scale_stage_depth(repeats: int, depth_multiplier: float = 1.0, rounding: str = "ceil") -> int:
    """Depth scaling of one stage (timm's ``_scale_stage_depth`` for a one-definition stage).

    ``ceil`` is EfficientNet's rule: any multiplier above 1 deepens every stage.
    """
    if rounding == "round":
        return max(1, round(repeats * depth_multiplier))
    if rounding == "ceil":
        return int(math.ceil(repeats * depth_multiplier))
    raise ValueError(f"unknown depth rounding {rounding!r}; expected 'ceil' or 'round'")


class EfficientNet(nn.Module):
    """EfficientNet / EfficientNet-CondConv, timm-compatible (names, shapes, outputs).

    Built by ``build_efficientnet(arch)``; the factory also attaches ``entry``,
    ``data_config`` and ``pretrained_cfg``.

    For inference, ``model.eval().fuse()`` folds BatchNorm into the convolutions
    and ``model.to(memory_format=torch.channels_last)`` (with channels_last
    inputs) picks oneDNN's faster kernels; together about 2x on a CPU.
    """

    fuse_pairs = (("conv_stem", "bn1"), ("conv_head", "bn2"))

    def __init__(self, arch: ArchitectureConfig) -> None:
        super().__init__()
        self.arch = arch
        self.num_classes = arch.num_classes
        self.drop_rate = arch.drop_rate
        act_layer = get_act_layer(arch.activation)
        norm_layer = partial(BatchNormAct2d, eps=arch.bn_eps, momentum=arch.bn_momentum, act_layer=act_layer)
        round_chs = partial(round_channels, multiplier=arch.channel_multiplier)

        stem_size = round_chs(arch.stem_size)
        self.conv_stem = create_conv2d(3, stem_size, 3, stride=2, padding=arch.padding)
        self.bn1 = norm_layer(stem_size)

        depths = [scale_stage_depth(s.repeats, arch.depth_multiplier, arch.depth_rounding) for s in arch.stages]
        total_blocks, block_idx = sum(depths), 0
        in_chs, stages = stem_size, []
        for stage, depth in zip(arch.stages, depths):
            blocks = []
            out_chs = round_chs(stage.out_channels)
            for i in range(depth):
                # Stochastic depth grows linearly with the block's position in the network.
                dpr = arch.drop_path_rate * block_idx / total_blocks
                stride = stage.stride if i == 0 else 1
                blocks.append(_make_block(stage, in_chs, out_chs, stride, arch, norm_layer, dpr))
                in_chs = out_chs
                block_idx += 1
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        # timm's feature taps (list of dicts) and the block-stack positions they sit after.
        self.feature_info = stage_features(self.blocks, [s.stride for s in arch.stages])
        self.stage_ends = [f["stage"] for f in self.feature_info]

        if arch.num_features > 0:
            self.num_features = round_chs(arch.num_features)
            self.conv_head = create_conv2d(in_chs, self.num_features, 1, padding=arch.padding)
            self.bn2 = norm_layer(self.num_features)
        else:
            self.num_features = in_chs
            self.conv_head = nn.Identity()
            self.bn2 = nn.Identity()
        self.classifier = self._make_classifier(self.num_classes)

        self.is_fused = False
        self.entry: ModelEntry | None = None  # the index entry this model was built from (frozen, picklable)
        self.data_config: DataConfig | None = None
        self.pretrained_cfg: dict[str, Any] = {}
        init_weights_goog(self)

    # -- inference form -------------------------------------------------------------------------------------
    def fuse(self) -> "EfficientNet":
        """Fold every BatchNorm into its convolution, in place (eval mode only); returns ``self``.

        Then the SiLU after each convolution moves into it and the convolutions take their inference
        form (``cc_models.fuse.fold_activations_``: oneDNN on CPU, Triton on CUDA). Outputs stay equal
        to the unfused model's within float rounding. The fused model is for inference: it cannot
        train, and ``state_dict()`` refuses, because its parameters no longer have timm's layout.
        """
        fuse_batchnorm_(self)
        fold_activations_(self)
        self.is_fused = True
        return self

    def train(self, mode: bool = True) -> "EfficientNet":
        if mode and getattr(self, "is_fused", False):
            raise RuntimeError("a fused model cannot train: build the model again (BatchNorm was folded away)")
        return super().train(mode)

    def state_dict(self, *args, **kwargs):
        if self.is_fused:
            raise RuntimeError("this model was fused for inference (fuse()); its parameters are not in timm's "
                               "layout. Save the state dict of an unfused model instead.")
        return super().state_dict(*args, **kwargs)

    # -- classifier ------------------------------------------------------------------------------------------
    def _make_classifier(self, num_classes: int) -> nn.Module:
        return nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a freshly initialised one (``num_classes <= 0``: no classifier)."""
        ref = next(self.parameters())
        self.num_classes = num_classes
        self.classifier = self._make_classifier(num_classes).to(device=ref.device, dtype=ref.dtype)
        if isinstance(self.classifier, nn.Linear):
            _init_linear(self.classifier, routing=False)
        self.classifier.train(self.training)

    # -- forward ---------------------------------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn1(self.conv_stem(x))
        x = self.blocks(x)
        return self.bn2(self.conv_head(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        # adaptive_avg_pool2d like timm's head, so FLOP counts agree op for op.
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        if self.drop_rate > 0.0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    # -- intermediate layers (timm's API) -------------------------------------------------------------------
    def forward_intermediates(self, x: torch.Tensor, indices: int | list[int] | None = None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = "NCHW", intermediates_only: bool = False,
                              extra_blocks: bool = False):
        """Final features and the feature maps at ``indices`` (timm semantics: None all, int the last n).

        Indices count ``feature_info`` taps, or with ``extra_blocks`` the stem (0) and every stage.
        Returns ``intermediates`` with ``intermediates_only``, else ``(final features, intermediates)``.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        if extra_blocks:
            taken, max_index = take_indices(len(self.blocks) + 1, indices)
        else:
            taken, max_index = take_indices(len(self.stage_ends), indices)
            taken, max_index = [self.stage_ends[i] for i in taken], self.stage_ends[max_index]
        intermediates = []
        feat_idx = 0  # the stem
        x = self.bn1(self.conv_stem(x))
        if feat_idx in taken:
            intermediates.append(x)
        blocks = self.blocks[:max_index] if stop_early else self.blocks
        for feat_idx, stage in enumerate(blocks, start=1):
            x = stage(x)
            if feat_idx in taken:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        if feat_idx == self.stage_ends[-1]:
            x = self.bn2(self.conv_head(x))
        return x, intermediates

    def prune_intermediate_layers(self, indices: int | list[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True, extra_blocks: bool = False) -> list[int]:
        """Drop the stages, head conv and classifier not needed for ``indices``; returns the kept indices."""
        if extra_blocks:
            taken, max_index = take_indices(len(self.blocks) + 1, indices)
            num_chs = block_out_channels(self.blocks[max_index - 1][-1]) if max_index else self.conv_stem.out_channels
        else:
            taken, max_index = take_indices(len(self.stage_ends), indices)
            num_chs, max_index = self.feature_info[max_index]["num_chs"], self.stage_ends[max_index]
        prune_end = prune_norm or prune_head or max_index < len(self.blocks)
        self.blocks = self.blocks[:max_index]
        if prune_end:
            self.conv_head, self.bn2 = nn.Identity(), nn.Identity()
            self.num_features = num_chs
        if prune_head or prune_end:
            self.reset_classifier(0)
        return taken


def _make_block(stage: StageSpec, in_chs: int, out_chs: int, stride: int, arch: ArchitectureConfig,
                norm_layer, drop_path_rate: float) -> nn.Module:
    common = dict(se_ratio=stage.se_ratio, act_layer=arch.activation, norm_layer=norm_layer, padding=arch.padding,
                  drop_path_rate=drop_path_rate)
    num_experts = stage.experts * arch.experts_multiplier
    if stage.block == "ds":
        if num_experts:
            raise ValueError("depthwise-separable ('ds') stages cannot use CondConv experts")
        if stage.expansion != 1:
            raise ValueError(f"depthwise-separable ('ds') stages have no expansion, got {stage.expansion}")
        return DepthwiseSeparableConv(in_chs, out_chs, stage.kernel_size, stride, **common)
    if stage.block == "ir":
        if num_experts:
            return CondConvResidual(in_chs, out_chs, stage.kernel_size, stride, exp_ratio=stage.expansion,
                                    num_experts=num_experts, **common)
        return InvertedResidual(in_chs, out_chs, stage.kernel_size, stride, exp_ratio=stage.expansion, **common)
    raise ValueError(f"unknown block type {stage.block!r}; expected 'ds' or 'ir'")


def _init_linear(m: nn.Linear, routing: bool) -> None:
    # TF reference: uniform in +-1/sqrt(fan_out), and the routing layer also counts its fan-in.
    fan = m.weight.size(0) + (m.weight.size(1) if routing else 0)
    init_range = 1.0 / math.sqrt(fan)
    nn.init.uniform_(m.weight, -init_range, init_range)
    nn.init.zeros_(m.bias)


def init_weights_goog(model: nn.Module) -> None:
    """Weight initialisation of the TensorFlow reference (fan-out normal convs; as timm's ``_init_weight_goog``)."""
    for name, m in model.named_modules():
        if isinstance(m, CondConv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            for expert in m.weight.data.view(m.num_experts, *m.weight_shape):
                nn.init.normal_(expert, 0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            _init_linear(m, routing=name.endswith("routing_fn"))


def build_efficientnet(arch: ArchitectureConfig) -> EfficientNet:
    """The model ``arch`` describes, randomly initialised."""
    if arch.family != "efficientnet":
        raise ValueError(f"build_efficientnet builds family 'efficientnet', got {arch.family!r}")
    return EfficientNet(arch)
