"""The ``config.json`` of a timm repo on the Hugging Face Hub: architecture, num_classes, pretrained_cfg.

timm writes it beside the weights (``timm.models.push_to_hf_hub``), and timm reads it first when it
loads ``hf-hub:ORG/NAME``. We read it through ``cc_models.hub.fetch`` (``huggingface_hub.hf_hub_download``
underneath), so ``HF_ENDPOINT``, ``HF_HOME``/``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE`` behave as for any Hub user.
"""
from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from registry.entries import HubLocation

from .errors import UnpinnedWeightsWarning, WeightsError

if TYPE_CHECKING:  # pragma: no cover
    from registry import ModelEntry, ModelIndex

CONFIG_FILE = "config.json"
CONFIG_MAX_BYTES = 1 << 20  # timm's are ~1 KiB; a larger one is refused before its download
# pretrained_cfg fields that describe the eval preprocessing (timm's names).
DATA_FIELDS = ("input_size", "crop_pct", "interpolation", "mean", "std")


@dataclass(frozen=True)
class HubConfig:
    """What a timm ``config.json`` says (legacy single-dict files are split the way timm splits them)."""

    repo_id: str
    architecture: str
    num_classes: int | None
    pretrained_cfg: dict[str, Any] = field(default_factory=dict)

    def data(self) -> dict[str, Any]:
        """The preprocessing fields present, normalised to tuples/floats for comparison."""
        out: dict[str, Any] = {}
        for key in DATA_FIELDS:
            value = self.pretrained_cfg.get(key)
            if value is not None:
                out[key] = tuple(value) if isinstance(value, (list, tuple)) else value
        return out


def parse_config(repo_id: str, raw: Any) -> HubConfig:
    """A :class:`HubConfig` from a decoded ``config.json``; raises ``WeightsError`` when it is not timm's."""
    if not isinstance(raw, dict) or not isinstance(raw.get("architecture"), str):
        raise WeightsError(f"{repo_id}/{CONFIG_FILE} is not a timm model config (no 'architecture' string)",
                           "check that the repo was written by timm or `cc-registry export --format hf-repo`")
    raw = dict(raw)
    if "pretrained_cfg" in raw:
        pretrained = raw["pretrained_cfg"]
    else:  # timm's legacy layout: everything in one dict
        pretrained = {k: v for k, v in raw.items() if k not in ("architecture", "num_features")}
    if not isinstance(pretrained, dict):
        raise WeightsError(f"{repo_id}/{CONFIG_FILE}: 'pretrained_cfg' is not an object")
    num_classes = raw.get("num_classes", pretrained.get("num_classes"))
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)):
        raise WeightsError(f"{repo_id}/{CONFIG_FILE}: num_classes {num_classes!r} is not an integer")
    return HubConfig(repo_id, raw["architecture"], num_classes, dict(pretrained))


def fetch_hub_config(repo_id: str, revision: str | None = None) -> HubConfig:
    """Download (or take from the cache) ``repo_id``'s ``config.json`` and parse it.

    Raises ``OfflineError`` (offline or unreachable: nothing cached), ``WeightsNotFoundError``
    (no such repo, revision or file) or ``WeightsError`` (not a timm config).
    """
    from .hub import fetch  # one way to the Hub: typed errors, the cache when unreachable

    label = f"{repo_id}/{CONFIG_FILE}" + (f"@{revision}" if revision else "")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnpinnedWeightsWarning)  # a config is parsed and checked, not executed
        path = fetch(HubLocation(repo_id, CONFIG_FILE, revision or "main"), max_bytes=CONFIG_MAX_BYTES).path
    try:
        with open(path, encoding="utf-8") as fh:
            raw = json.load(fh)
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{label} is not valid JSON: {exc}") from None
    return parse_config(repo_id, raw)


HF_HUB_PREFIX = "hf-hub:"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _data_problem(data: dict[str, Any]) -> str | None:
    """What is wrong with a repo's preprocessing fields, or None: they configure transforms, so check them."""
    size = data.get("input_size", (3, 1, 1))
    if not (isinstance(size, tuple) and len(size) == 3 and all(isinstance(v, int) and v > 0 for v in size)):
        return f"input_size {size!r} is not three positive integers"
    if not (_is_number(data.get("crop_pct", 1.0)) and 0 < data.get("crop_pct", 1.0) <= 1):
        return f"crop_pct {data.get('crop_pct')!r} is not a number in (0, 1]"
    if not isinstance(data.get("interpolation", ""), str):
        return f"interpolation {data.get('interpolation')!r} is not a string"
    for key in ("mean", "std"):
        value = data.get(key, (0.5, 0.5, 0.5))
        if not (isinstance(value, tuple) and len(value) == size[0] and all(_is_number(v) for v in value)):
            return f"{key} {value!r} is not {size[0]} numbers"
    num_classes = data.get("num_classes", 1)
    if not (isinstance(num_classes, int) and num_classes >= 0):
        return f"num_classes {num_classes!r} is not a non-negative integer"
    return None


def entry_for_hub_repo(ref: str, index: "ModelIndex") -> tuple["ModelEntry", HubConfig]:
    """The index entry a timm repo's ``config.json`` names, pointed at that repo and its preprocessing.

    ``ref``: ``ORG/NAME`` or ``ORG/NAME@REVISION``. The architecture must be a model of ``index``
    (``UnknownModelError`` otherwise); weights then come from the repo's ``model.safetensors``, and
    the data config (input size, crop pct, interpolation, mean, std) is the repo's ``pretrained_cfg``.
    """
    repo_id, _, revision = ref.partition("@")
    config = fetch_hub_config(repo_id, revision or None)
    entry = index.get(config.architecture)
    data = config.data()
    if isinstance(config.pretrained_cfg.get("crop_mode"), str):
        data["crop_mode"] = config.pretrained_cfg["crop_mode"]
    if config.num_classes is not None:
        data["num_classes"] = config.num_classes
    problem = _data_problem(data)
    if problem:
        raise WeightsError(f"{repo_id}/{CONFIG_FILE}: pretrained_cfg.{problem}",
                           "fix the repo's config.json, or load the weights with checkpoint_path= and the index's config")
    data_config = dataclasses.replace(entry.data, **data)
    hub = HubLocation(repo_id, "model.safetensors", revision or "main")
    return dataclasses.replace(entry, hub=hub, release=None, data=data_config), config
