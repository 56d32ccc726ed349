"""The JSON Schema is the one definition of an index entry: fields, allowed values and defaults."""
from __future__ import annotations

import pytest
import yaml

import cc_models
import registry
from cc_models.layers.activations import _ACT_LAYERS
from registry.docs.block import plain_data
from registry.schema import definition, load_schema

from constants import MODEL_IDS

B0 = MODEL_IDS[0]


def _enum(name: str, key: str) -> set:
    return set(definition(name)["properties"][key]["enum"])


def test_allowed_activations_are_exactly_what_cc_models_builds():
    assert _enum("architectureConfig", "Activation") == set(_ACT_LAYERS)


def test_allowed_families_are_exactly_what_cc_models_builds():
    assert _enum("architectureConfig", "Family") == set(cc_models.factory._BUILDERS)


def _required_only() -> dict:
    """The packaged b0_4e (inherited values included) cut down to what the schema requires, plus a Hub repo."""
    defs = load_schema()["$defs"]
    keep = lambda mapping, names: {k: mapping[k] for k in names if k in mapping}
    model = plain_data(registry.load().get(B0).raw)
    out = keep(model, defs["model"]["required"] + defs["resolvedModel"]["required"])
    for key, spec in defs["resolvedModel"]["properties"].items():
        out[key] = keep(model[key], spec["required"])
    out["Architecture Config"]["Stages"] = [keep(s, defs["stage"]["required"]) for s in model["Architecture Config"]["Stages"]]
    out["Hub"] = keep(model["Hub"], defs["hub"]["required"])
    out["Name"] = "b0_required_only"  # without its Experts, the name may not claim 4
    return out


def _with_schema_defaults(model: dict) -> dict:
    """The same model with every default the schema gives written out."""
    fill = lambda mapping, name: {**{k: p["default"] for k, p in definition(name)["properties"].items() if "default" in p},
                                  **mapping}
    out = {**model, "Metadata": fill(model["Metadata"], "metadata"), "Data Config": fill(model["Data Config"], "dataConfig"),
           "Hub": fill(model["Hub"], "hub"), "Architecture Config": fill(model["Architecture Config"], "architectureConfig")}
    out["Architecture Config"]["Stages"] = [fill(s, "stage") for s in model["Architecture Config"]["Stages"]]
    return out


def _load_one(tmp_path, model: dict, name: str) -> registry.ModelIndex:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"Collections": [{"Name": model["In Collection"]}], "Models": [model]}, sort_keys=False))
    return registry.load(path)


def test_the_builder_takes_its_defaults_from_the_schema(tmp_path):
    minimal = _required_only()
    assert "Activation" not in minimal["Architecture Config"] and "Experts" not in minimal["Architecture Config"]["Stages"][0]
    bare = _load_one(tmp_path, minimal, "bare.yml").get(minimal["Name"])
    explicit = _load_one(tmp_path, _with_schema_defaults(minimal), "explicit.yml").get(minimal["Name"])
    for field in ("arch", "data", "hub", "training", "flops", "parameters"):
        assert getattr(bare, field) == getattr(explicit, field), field


def test_a_gap_between_schema_and_builder_is_located_at_the_field(tmp_path, monkeypatch):
    monkeypatch.delitem(definition("architectureConfig")["properties"]["Activation"], "default")
    minimal = _required_only()
    with pytest.raises(registry.IndexValidationError) as info:
        _load_one(tmp_path, minimal, "gap.yml")
    (problem,) = info.value.problems
    line = (tmp_path / "gap.yml").read_text().splitlines().index("  Architecture Config:") + 1
    assert (problem.file.rsplit("/", 1)[-1], problem.line) == ("gap.yml", line)
    assert problem.path == "$.Models[0]['Architecture Config'].Activation"
    assert "'Activation' is missing and the schema's $defs/architectureConfig gives no default" in problem.message
