"""Turn validated, inherited raw index dictionaries into typed entries.

Only conversion lives here: string forms the model-index format allows
(``'0.875'``, ``'240'``, ``77.32%``) become numbers, and TF conventions
become PyTorch ones. Validation happened before (schema.py, semantic.py);
defaults come from the schema's ``default`` annotations, and the builder
reads no field the schema does not define, so the two cannot drift apart
silently: a gap is a ``BuildError`` located at the field in its model.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from .entries import (
    ArchitectureConfig,
    FrozenDict,
    CollectionEntry,
    DataConfig,
    Erratum,
    HubLocation,
    ModelEntry,
    Paper,
    ReleaseFile,
    Result,
    SourceLocation,
    StageSpec,
    TrainingRecipe,
)
from .schema import definition


def to_number(value: Any) -> float:
    """Numbers in the model-index string forms: ``'0.875'``, ``'240'``, ``'77.32%'``."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    if text.endswith("%"):
        text = text[:-1].strip()
    return float(text)


def to_int(value: Any) -> int:
    number = to_number(value)
    if number != int(number):
        raise ValueError(f"expected a whole number, got {value!r}")
    return int(number)


class BuildError(ValueError):
    """A value the builder cannot use although validation let it through; ``path`` locates it in its model."""

    def __init__(self, path: tuple, message: str):
        self.path = path
        super().__init__(message)


class _Fields:
    """One mapping of a model, read with the defaults of its schema definition (``$defs/<name>``)."""

    def __init__(self, data: Any, name: str, path: tuple = ()):
        self.data = data if isinstance(data, dict) else {}
        self.name = name
        self.path = path
        self.properties = definition(name)["properties"]

    def get(self, key: str, convert: Callable = lambda v: v) -> Any:
        """The value as written, else the schema's default, else None; converted."""
        if key not in self.properties:
            raise BuildError(self.path, f"the builder reads {key!r}, which the schema's $defs/{self.name} does not define")
        value = self.data.get(key, self.properties[key].get("default"))
        if value is None:
            return None
        try:
            return convert(value)
        except (KeyError, TypeError, ValueError) as exc:
            raise BuildError(self.path + (key,), f"cannot build {key!r} from {value!r}: {exc!r}") from None

    def need(self, key: str, convert: Callable = lambda v: v) -> Any:
        value = self.get(key, convert)
        if value is None:
            raise BuildError(self.path + (key,), f"{key!r} is missing and the schema's $defs/{self.name} gives no default")
        return value


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):  # plain types first: an ABC isinstance costs ten times more, per value
        return FrozenDict({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple([_freeze(v) for v in value])
    return value


def _stage(fields: _Fields) -> StageSpec:
    return StageSpec(
        block=fields.need("Block"),
        repeats=fields.need("Repeats", to_int),
        kernel_size=fields.need("Kernel", to_int),
        stride=fields.need("Stride", to_int),
        expansion=fields.need("Expansion", to_number),
        out_channels=fields.need("Channels", to_int),
        se_ratio=fields.need("SE Ratio", to_number),
        experts=fields.need("Experts", to_int),
    )


def architecture_config(arch: _Fields, metadata: _Fields, num_classes: int) -> ArchitectureConfig:
    stages = arch.need("Stages")
    return ArchitectureConfig(
        family=arch.need("Family"),
        stages=tuple(_stage(_Fields(s, "stage", arch.path + ("Stages", i))) for i, s in enumerate(stages)),
        stem_size=arch.need("Stem Size", to_int),
        num_features=arch.need("Num Features", to_int),
        channel_multiplier=arch.need("Channel Multiplier", to_number),
        depth_multiplier=arch.need("Depth Multiplier", to_number),
        experts_multiplier=arch.need("Experts Multiplier", to_int),
        activation=arch.need("Activation"),
        padding=arch.need("Padding"),
        bn_eps=arch.need("BatchNorm Eps", to_number),
        # TF's BatchNorm "momentum" is the decay of the running average: PyTorch's is 1 - decay.
        bn_momentum=round(1.0 - metadata.need("BatchNorm Momentum", to_number), 10),
        drop_rate=arch.need("Drop Rate", to_number),
        drop_path_rate=arch.need("Drop Path Rate", to_number),
        num_classes=num_classes,
        depth_rounding=arch.need("Depth Rounding"),
    )


def data_config(data: _Fields, metadata: _Fields) -> DataConfig:
    size = metadata.need("Image Size", to_int)
    return DataConfig(
        input_size=(3, size, size),
        crop_pct=metadata.need("Crop Pct", to_number),
        interpolation=metadata.need("Interpolation"),
        mean=data.need("Mean", lambda v: tuple(to_number(x) for x in v)),
        std=data.need("Std", lambda v: tuple(to_number(x) for x in v)),
        num_classes=data.need("Num Classes", to_int),
        crop_mode=data.need("Crop Mode"),
    )


def _results(raw: Any) -> tuple[Result, ...]:
    out = []
    for item in raw or ():
        metrics = {name: to_number(v) for name, v in (item.get("Metrics") or {}).items()}
        out.append(Result(task=item["Task"], dataset=item["Dataset"], metrics=FrozenDict(metrics)))
    return tuple(out)


def _errata(raw: Any) -> tuple[Erratum, ...]:
    return tuple(
        Erratum(field=e["Field"], published=e["Published"], reason=e["Reason"], source=e.get("Source"))
        for e in raw or ()
    )


def _hub(hub: _Fields) -> HubLocation | None:
    if not hub.data:
        return None
    return HubLocation(repo_id=hub.need("Repo"), filename=hub.need("Filename"), revision=hub.need("Revision", str),
                       sha256=hub.get("SHA256"))


def _tuple(value: Any) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


def model_entry(raw: Mapping[str, Any], source: SourceLocation) -> ModelEntry:
    """The typed entry of one resolved model; raises ``BuildError`` located in ``raw``."""
    model = _Fields(raw, "model")
    metadata = _Fields(model.get("Metadata"), "metadata", ("Metadata",))
    data = data_config(_Fields(model.get("Data Config"), "dataConfig", ("Data Config",)), metadata)
    training = TrainingRecipe(
        epochs=metadata.get("Epochs", to_int),
        batch_size=metadata.get("Batch Size", to_int),
        lr=metadata.get("LR", to_number),
        momentum=metadata.get("Momentum", to_number),
        weight_decay=metadata.get("Weight Decay", to_number),
        rmsprop_decay=metadata.get("RMSProp Decay", to_number),
        label_smoothing=metadata.get("Label Smoothing", to_number),
        batchnorm_momentum=metadata.get("BatchNorm Momentum", to_number),
        training_data=metadata.get("Training Data", _tuple) or (),
        training_techniques=metadata.get("Training Techniques", _tuple) or (),
    )
    weights = model.get("Weights")
    arch = _Fields(model.get("Architecture Config"), "architectureConfig", ("Architecture Config",))
    return ModelEntry(
        id=model.get("ID") or model.need("Name"),
        name=model.need("Name"),
        collection=model.need("In Collection"),
        flops=metadata.need("FLOPs", to_int),
        parameters=metadata.need("Parameters", to_int),
        file_size=metadata.get("File Size", to_int),
        image_size=data.input_size[-1],
        crop_pct=data.crop_pct,
        interpolation=data.interpolation,
        architecture_tags=metadata.get("Architecture", _tuple) or (),
        tasks=metadata.get("Tasks", _tuple) or (),
        training=training,
        code=model.get("Code"),
        weights=weights,
        results=model.get("Results", _results) or (),
        errata=model.get("Errata", _errata) or (),
        hub=_hub(_Fields(model.get("Hub"), "hub", ("Hub",))),
        release=ReleaseFile.from_url(weights) if weights else None,
        data=data,
        arch=architecture_config(arch, metadata, data.num_classes),
        source=source,
        raw=_freeze(dict(raw)),
    )


def collection_entry(raw: Mapping[str, Any], source: SourceLocation, readme: str | None = None) -> CollectionEntry:
    paper = raw.get("Paper")
    if isinstance(paper, str):  # the schema's other form: a bare URL
        paper = {"Title": paper, "URL": paper}
    return CollectionEntry(name=raw["Name"], paper=Paper(title=paper["Title"], url=paper["URL"]) if paper else None,
                           citation=raw.get("Citation"), source=source, readme=readme)
