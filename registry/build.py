"""Turn validated raw index dictionaries into typed entries.

Only conversion lives here: string forms the model-index format allows
(``'0.875'``, ``'240'``, ``77.32%``) become numbers, and TF conventions
become PyTorch ones. Validation happened before (schema.py, semantic.py).
"""
from __future__ import annotations

from typing import Any, Mapping

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


def _opt(mapping: Mapping[str, Any], key: str, convert=to_number):
    value = mapping.get(key)
    return None if value is None else convert(value)


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return FrozenDict({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def _stage(raw: Mapping[str, Any]) -> StageSpec:
    return StageSpec(
        block=raw["Block"],
        repeats=to_int(raw["Repeats"]),
        kernel_size=to_int(raw["Kernel"]),
        stride=to_int(raw["Stride"]),
        expansion=to_number(raw["Expansion"]),
        out_channels=to_int(raw["Channels"]),
        se_ratio=to_number(raw.get("SE Ratio", 0.0)),
        experts=to_int(raw.get("Experts", 0)),
    )


def architecture_config(raw: Mapping[str, Any], metadata: Mapping[str, Any], num_classes: int) -> ArchitectureConfig:
    tf_bn_decay = metadata.get("BatchNorm Momentum")
    # TF's BatchNorm "momentum" is the decay of the running average: PyTorch's is 1 - decay.
    bn_momentum = round(1.0 - to_number(tf_bn_decay), 10) if tf_bn_decay is not None else 0.1
    return ArchitectureConfig(
        family=raw["Family"],
        stages=tuple(_stage(s) for s in raw["Stages"]),
        stem_size=to_int(raw["Stem Size"]),
        num_features=to_int(raw["Num Features"]),
        channel_multiplier=to_number(raw.get("Channel Multiplier", 1.0)),
        depth_multiplier=to_number(raw.get("Depth Multiplier", 1.0)),
        experts_multiplier=to_int(raw.get("Experts Multiplier", 1)),
        activation=raw.get("Activation", "swish"),
        padding=raw.get("Padding", "symmetric"),
        bn_eps=to_number(raw.get("BatchNorm Eps", 1e-5)),
        bn_momentum=bn_momentum,
        drop_rate=to_number(raw.get("Drop Rate", 0.0)),
        drop_path_rate=to_number(raw.get("Drop Path Rate", 0.0)),
        num_classes=num_classes,
        depth_rounding=raw.get("Depth Rounding", "ceil"),
    )


def data_config(raw: Mapping[str, Any], metadata: Mapping[str, Any]) -> DataConfig:
    size = to_int(metadata["Image Size"])
    return DataConfig(
        input_size=(3, size, size),
        crop_pct=to_number(metadata["Crop Pct"]),
        interpolation=metadata["Interpolation"],
        mean=tuple(to_number(v) for v in raw["Mean"]),
        std=tuple(to_number(v) for v in raw["Std"]),
        num_classes=to_int(raw.get("Num Classes", 1000)),
        crop_mode=raw.get("Crop Mode", "center"),
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


def _hub(raw: Mapping[str, Any] | None) -> HubLocation | None:
    if not raw:
        return None
    return HubLocation(
        repo_id=raw["Repo"],
        filename=raw.get("Filename", "model.safetensors"),
        revision=str(raw.get("Revision", "main")),
        sha256=raw.get("SHA256"),
    )


def _tuple(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def model_entry(raw: Mapping[str, Any], source: SourceLocation) -> ModelEntry:
    metadata = raw.get("Metadata") or {}
    data = data_config(raw["Data Config"], metadata)
    training = TrainingRecipe(
        epochs=_opt(metadata, "Epochs", to_int),
        batch_size=_opt(metadata, "Batch Size", to_int),
        lr=_opt(metadata, "LR"),
        momentum=_opt(metadata, "Momentum"),
        weight_decay=_opt(metadata, "Weight Decay"),
        rmsprop_decay=_opt(metadata, "RMSProp Decay"),
        label_smoothing=_opt(metadata, "Label Smoothing"),
        batchnorm_momentum=_opt(metadata, "BatchNorm Momentum"),
        training_data=_tuple(metadata.get("Training Data")),
        training_techniques=_tuple(metadata.get("Training Techniques")),
    )
    weights = raw.get("Weights")
    return ModelEntry(
        id=raw.get("ID", raw["Name"]),
        name=raw["Name"],
        collection=raw["In Collection"],
        flops=to_int(metadata["FLOPs"]),
        parameters=to_int(metadata["Parameters"]),
        file_size=_opt(metadata, "File Size", to_int),
        image_size=data.input_size[-1],
        crop_pct=data.crop_pct,
        interpolation=data.interpolation,
        architecture_tags=_tuple(metadata.get("Architecture")),
        tasks=_tuple(metadata.get("Tasks")),
        training=training,
        code=raw.get("Code"),
        weights=weights,
        results=_results(raw.get("Results")),
        errata=_errata(raw.get("Errata")),
        hub=_hub(raw.get("Hub")),
        release=ReleaseFile.from_url(weights) if weights else None,
        data=data,
        arch=architecture_config(raw["Architecture Config"], metadata, data.num_classes),
        source=source,
        raw=_freeze(dict(raw)),
    )


def collection_entry(raw: Mapping[str, Any], source: SourceLocation, readme: str | None = None) -> CollectionEntry:
    paper = raw.get("Paper")
    if isinstance(paper, Mapping):
        paper_obj = Paper(title=paper.get("Title") or paper.get("title", ""), url=paper.get("URL") or paper.get("url", ""))
    elif isinstance(paper, str):
        paper_obj = Paper(title=paper, url=paper)
    else:
        paper_obj = None
    return CollectionEntry(
        name=raw["Name"], paper=paper_obj, citation=raw.get("Citation"), source=source, readme=readme
    )
