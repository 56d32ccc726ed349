"""A Hugging Face Hub repo folder that timm itself loads: ``config.json``, ``model.safetensors``, ``README.md``.

``config.json`` follows ``timm.models.push_to_hf_hub`` (``architecture``, ``num_classes``,
``num_features``, ``global_pool``, ``pretrained_cfg``), so after an upload
``timm.create_model("hf-hub:ORG/NAME", pretrained=True)`` builds timm's model and loads the
weights, and ``cc_models.from_index`` reads the same file back (``cc_models.hub_config``).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch.nn as nn

from .atomic import write_atomic

WEIGHTS_FILE, CONFIG_FILE, CARD_FILE = "model.safetensors", "config.json", "README.md"


def timm_config(model: nn.Module) -> dict[str, Any]:
    """timm's ``config.json`` for ``model`` (built by ``cc_models.from_index``)."""
    entry, data = model.entry, model.data_config
    size = data.input_size
    pretrained_cfg = {
        **data.as_timm_dict(),
        "num_classes": model.num_classes,
        "pool_size": (size[1] // 32, size[2] // 32),  # the head's feature map at the input size (stride 32)
        "fixed_input_size": False,
        "first_conv": "conv_stem",
        "classifier": "classifier",
        "license": "apache-2.0",
    }
    if entry.weights:
        pretrained_cfg["url"] = entry.weights
    return {
        "architecture": entry.id,  # the index ids are timm's architecture names
        "num_classes": model.num_classes,
        "num_features": model.num_features,
        "global_pool": "avg",
        "pretrained_cfg": pretrained_cfg,
    }


def export_hf_repo(model: nn.Module, out_dir: str | os.PathLike, card: str | None = None) -> list[Path]:
    """Write ``out_dir/{config.json, model.safetensors[, README.md]}`` atomically; returns the paths.

    ``model``: unfused (its state dict is timm's layout), built by ``cc_models.from_index``.
    ``card``: the model card text (``registry.docs.render_card``).
    """
    from safetensors.torch import save_file

    if getattr(model, "entry", None) is None:
        raise ValueError("export_hf_repo needs a model built by cc_models.from_index (it reads model.entry)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    paths = [out / CONFIG_FILE, out / WEIGHTS_FILE]
    config = json.dumps(timm_config(model), indent=2) + "\n"
    write_atomic(paths[0], lambda p: Path(p).write_text(config, encoding="utf-8"))
    write_atomic(paths[1], lambda p: save_file(state, p, metadata={"format": "pt"}))
    if card is not None:
        paths.append(out / CARD_FILE)
        write_atomic(paths[2], lambda p: Path(p).write_text(card, encoding="utf-8"))
    return paths
