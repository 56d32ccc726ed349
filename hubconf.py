"""torch.hub entry points: ``torch.hub.load(REPO_DIR, "tf_efficientnet_cc_b0_4e", source="local")``.

One entry point per model of the packaged index; keyword arguments go to
``cc_models.from_index`` (``pretrained``, ``num_classes``, ``features_only``...).
"""
from __future__ import annotations

dependencies = ["torch", "torchvision", "yaml", "jsonschema", "huggingface_hub", "safetensors"]

import cc_models  # noqa: E402  (torch.hub checks `dependencies` first)


def _entry_point(model_id: str):
    def load(pretrained: bool = False, **kwargs):
        return cc_models.from_index(model_id, pretrained=pretrained, **kwargs)

    load.__name__ = model_id
    load.__doc__ = f"{model_id} from the cc-hub index (``pretrained=True``: its Hub weights, verified)."
    return load


globals().update({model_id: _entry_point(model_id) for model_id in cc_models.list_models()})
