"""cc-hub registry: load, validate and query the model index.

>>> import registry
>>> index = registry.load()            # the packaged index
>>> index.get("tf_efficientnet_cc_b1_8e").data.input_size
(3, 240, 240)
"""
from __future__ import annotations

from .entries import (
    ArchitectureConfig,
    CollectionEntry,
    DataConfig,
    Erratum,
    HubLocation,
    ModelEntry,
    ReleaseFile,
    Result,
    SourceLocation,
    StageSpec,
)
from .errors import IndexValidationError, Problem, RegistryError, UnknownModelError
from .index import ModelIndex, check, default_index, load

__all__ = [
    "ArchitectureConfig", "CollectionEntry", "DataConfig", "Erratum", "HubLocation", "IndexValidationError",
    "ModelEntry", "ModelIndex", "Problem", "RegistryError", "ReleaseFile", "Result", "SourceLocation", "StageSpec",
    "UnknownModelError", "check", "default_index", "load",
]
