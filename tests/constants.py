"""Facts the tests share, each defined once: the model ids and the public anchors they are checked against.

The results store's columns, check names and statuses are the project's own definition
(``registry.results_schema``), imported where needed, never copied here.
"""
from __future__ import annotations

# Public anchors (shared/reference/anchors.md): exact parameter counts and fvcore multiply-adds at batch 1.
ANCHORS = {
    "tf_efficientnet_cc_b0_4e": {"params": 13_314_116, "fvcore": 410_171_168, "fvcore_condconv": 217_270_560},
    "tf_efficientnet_cc_b0_8e": {"params": 24_013_284, "fvcore": 420_870_304, "fvcore_condconv": 227_964_960},
    "tf_efficientnet_cc_b1_8e": {"params": 39_715_968, "fvcore": 745_303_680, "fvcore_condconv": 437_895_360},
}
MODEL_IDS = tuple(ANCHORS)
PARAMS = {model_id: anchor["params"] for model_id, anchor in ANCHORS.items()}
MACS = {model_id: anchor["fvcore"] for model_id, anchor in ANCHORS.items()}
