"""Typed, frozen views of a validated model index.

Every package downstream of the registry takes these objects; none of them
re-parses YAML. Values arrive here already schema- and semantically-checked,
so the constructors below only convert (string forms to numbers, TF to
PyTorch conventions) and never validate. Defaults for what the index leaves
out are the schema's (``build.py`` applies them), not these classes'.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

RELEASE_NAME_RE = re.compile(r"^(?P<stem>.+)-(?P<prefix>[0-9a-f]{8})\.(?P<ext>pth|pt|bin|safetensors)$")


class FrozenDict(Mapping):
    """A read-only mapping that, unlike ``types.MappingProxyType``, pickles and deep-copies.

    Entries travel with models (``torch.save(model)``, ``copy.deepcopy``), so
    everything they hold must survive both.
    """

    __slots__ = ("_data",)

    def __init__(self, data: Mapping | None = None, **kwargs: Any) -> None:
        object.__setattr__(self, "_data", dict(data or {}, **kwargs))

    def __getitem__(self, key: Any) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"FrozenDict({self._data!r})"

    def __hash__(self) -> int:
        return hash(tuple(self._data.items()))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("FrozenDict is read-only")

    def __reduce__(self):
        return (FrozenDict, (self._data,))


@dataclass(frozen=True)
class SourceLocation:
    """Where a value was defined: file path, 1-based line and column."""

    file: str
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}" if self.line else self.file


@dataclass(frozen=True)
class StageSpec:
    """One stage of an EfficientNet: ``repeats`` blocks of one kind.

    ``experts`` is the *base* number of CondConv experts (0 = plain convs);
    the model's ``experts_multiplier`` scales it.
    """

    block: str  # "ds" (depthwise-separable) or "ir" (inverted residual)
    repeats: int
    kernel_size: int
    stride: int
    expansion: float
    out_channels: int
    se_ratio: float
    experts: int


@dataclass(frozen=True)
class ArchitectureConfig:
    """Everything the EfficientNet builder needs, in PyTorch conventions."""

    family: str
    stages: tuple[StageSpec, ...]
    stem_size: int
    num_features: int
    channel_multiplier: float
    depth_multiplier: float
    experts_multiplier: int
    activation: str
    padding: str  # "same" (TensorFlow SAME, asymmetric when needed) or "symmetric"
    bn_eps: float
    bn_momentum: float  # PyTorch convention: 1 - TF decay
    drop_rate: float
    drop_path_rate: float
    num_classes: int
    depth_rounding: str  # "ceil" (EfficientNet) or "round"

    @property
    def max_experts(self) -> int:
        return max((s.experts for s in self.stages), default=0) * self.experts_multiplier


@dataclass(frozen=True)
class DataConfig:
    """Eval preprocessing, as timm's ``resolve_data_config`` returns it."""

    input_size: tuple[int, int, int]
    crop_pct: float
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    num_classes: int
    crop_mode: str

    def as_timm_dict(self) -> dict[str, Any]:
        return {
            "input_size": self.input_size,
            "interpolation": self.interpolation,
            "mean": self.mean,
            "std": self.std,
            "crop_pct": self.crop_pct,
            "crop_mode": self.crop_mode,
        }


@dataclass(frozen=True)
class HubLocation:
    """Where the weights live on the Hugging Face Hub."""

    repo_id: str
    filename: str
    revision: str = "main"
    sha256: str | None = None  # full hex digest of `filename`, when known


@dataclass(frozen=True)
class ReleaseFile:
    """The original release checkpoint, torch.hub style (``name-<sha256[:8]>.pth``)."""

    url: str
    filename: str
    sha256_prefix: str

    @classmethod
    def from_url(cls, url: str) -> "ReleaseFile | None":
        filename = url.rsplit("/", 1)[-1]
        match = RELEASE_NAME_RE.match(filename)
        if not match:
            return None
        return cls(url=url, filename=filename, sha256_prefix=match["prefix"])


@dataclass(frozen=True)
class Erratum:
    """A published figure that the index corrects, kept for display."""

    field: str
    published: Any
    reason: str
    source: str | None = None


@dataclass(frozen=True)
class Result:
    """One task/dataset result; ``metrics`` maps metric name to a float (percent for accuracies)."""

    task: str
    dataset: str
    metrics: Mapping[str, float]

    def metric(self, name: str) -> float | None:
        return self.metrics.get(name)


@dataclass(frozen=True)
class TrainingRecipe:
    """The training hyper-parameters the index records (TF conventions, as published)."""

    epochs: int | None
    batch_size: int | None
    lr: float | None
    momentum: float | None
    weight_decay: float | None
    rmsprop_decay: float | None
    label_smoothing: float | None
    batchnorm_momentum: float | None  # TF decay convention (0.99)
    training_data: tuple[str, ...] = ()
    training_techniques: tuple[str, ...] = ()


@dataclass(frozen=True)
class Paper:
    title: str
    url: str


@dataclass(frozen=True)
class CollectionEntry:
    name: str
    paper: Paper | None
    citation: str | None
    source: SourceLocation
    readme: str | None = None  # markdown page holding the collection, when it came from one


@dataclass(frozen=True)
class ModelEntry:
    """One model variant, resolved and typed.

    ``flops`` are multiply-adds per image at ``data.input_size`` (fvcore's
    convention); ``file_size`` is the byte size of the release file named by
    ``weights``.
    """

    id: str
    name: str
    collection: str
    flops: int
    parameters: int
    file_size: int | None
    image_size: int
    crop_pct: float
    interpolation: str
    architecture_tags: tuple[str, ...]
    tasks: tuple[str, ...]
    training: TrainingRecipe
    code: str | None
    weights: str | None
    results: tuple[Result, ...]
    errata: tuple[Erratum, ...]
    hub: HubLocation | None
    release: ReleaseFile | None
    data: DataConfig
    arch: ArchitectureConfig
    source: SourceLocation
    raw: Mapping[str, Any] = field(default_factory=FrozenDict, repr=False, compare=False)

    def __deepcopy__(self, memo: dict) -> "ModelEntry":
        return self  # frozen all the way down: copies of a model may share it

    def result(self, dataset: str = "ImageNet", task: str = "Image Classification") -> Result | None:
        for r in self.results:
            if r.dataset == dataset and r.task == task:
                return r
        return None

    def erratum(self, field_name: str) -> Erratum | None:
        for e in self.errata:
            if e.field == field_name:
                return e
        return None
