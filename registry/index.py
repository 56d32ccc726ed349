"""``registry.load()``: read, validate and type a model index."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import model_index

from .build import BuildError, collection_entry, model_entry
from .entries import CollectionEntry, ModelEntry, SourceLocation
from .errors import IndexValidationError, Problem, UnknownModelError
from .inherit import ResolvedItem, inherit
from .schema import resolved_problems, validate_documents
from .semantic import check_index
from .sources import IndexSources, RawItem, collect, display_path, resolve


@dataclass(frozen=True)
class ModelIndex:
    """A validated index: typed, frozen entries in definition order."""

    root: Path
    models: tuple[ModelEntry, ...]
    collections: tuple[CollectionEntry, ...]

    def get(self, model_id: str) -> ModelEntry:
        for entry in self.models:
            if entry.id == model_id:
                return entry
        raise UnknownModelError(model_id, self.ids)

    def collection(self, name: str) -> CollectionEntry:
        for entry in self.collections:
            if entry.name == name:
                return entry
        raise KeyError(f"unknown collection {name!r}")

    def models_in(self, collection: str) -> tuple[ModelEntry, ...]:
        return tuple(m for m in self.models if m.collection == collection)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(m.id for m in self.models)

    def __iter__(self) -> Iterator[ModelEntry]:
        return iter(self.models)

    def __len__(self) -> int:
        return len(self.models)

    def __contains__(self, model_id: object) -> bool:
        return model_id in self.ids


def _location(item: RawItem) -> SourceLocation:
    line, column = item.doc.locate(item.path)
    return SourceLocation(item.doc.file, line, column)


ROOT_NAMES = ("model-index.yml", "model-index.yaml")


def _enclosing_sources(path: Path) -> IndexSources | None:
    """The sources of the nearest root index above ``path``, if it imports ``path``; read once.

    Only the nearest root is read: an index folder holds one index, and a root further up is
    outside what the user named.
    """
    path = resolve(path)
    if isinstance(path, str) or path.is_dir() or path.name in ROOT_NAMES:
        return None
    for folder in path.parents:
        for name in ROOT_NAMES:
            candidate = folder / name
            if candidate.is_file():
                sources = collect(candidate)
                return sources if any(Path(d.file).resolve() == path for d in sources.documents) else None
    return None


def _restrict(sources: IndexSources, problems: list[Problem], path: Path) -> tuple[IndexSources, list[Problem]]:
    """Only what concerns one file of a larger index: its own problems and those of the pages its models inherit from."""
    path = path.resolve()
    mine = lambda file: Path(file).resolve() == path
    models = [m for m in sources.models if mine(m.doc.file)]
    inherited = {Path(m.collection.doc.file).resolve() for m in models if isinstance(m, ResolvedItem)}
    restricted = IndexSources(
        root=path,
        documents=[d for d in sources.documents if mine(d.file)],
        models=models,
        collections=[c for c in sources.collections if mine(c.doc.file)],
    )
    return restricted, [p for p in problems if mine(p.file) or Path(p.file).resolve() in inherited]


def check(path: str | Path | None = None) -> tuple[IndexSources, list[Problem]]:
    """Read the index at ``path`` (default: the packaged one); return its sources and every problem.

    A file that a root index imports is checked in the context of that root (so
    that its ``In Collection`` references resolve), reporting only its own problems
    and those of the collection pages its models inherit from.
    """
    target = Path(path) if path is not None else model_index.root()
    context = _enclosing_sources(target) if target.exists() else None
    sources, problems = _check(context or collect(target))
    return _restrict(sources, problems, target) if context else (sources, problems)


def _check(sources: IndexSources) -> tuple[IndexSources, list[Problem]]:
    problems = list(sources.problems)
    problems += validate_documents(sources.documents)
    sources.models = inherit(sources.models, sources.collections)
    # A model whose collection is unknown is reported as such, not for the fields it would inherit.
    problems += resolved_problems(m for m in sources.models if isinstance(m, ResolvedItem))
    problems += check_index(sources.models, sources.collections)
    if not problems and not sources.models and not sources.collections:
        problems.append(Problem(display_path(sources.root), 1, 1, "$", "index defines no models and no collections"))
    return sources, sorted(set(problems), key=lambda p: (p.file, p.line, p.column, p.message))


def load(path: str | Path | None = None) -> ModelIndex:
    """Load the index at ``path`` (a root file, folder, imported file or markdown page; default: packaged).

    Raises ``IndexValidationError`` carrying every located problem.
    """
    sources, problems = check(path)
    if problems:
        raise IndexValidationError(problems)
    models = []
    for item in sources.models:
        try:
            models.append(model_entry(item.data, _location(item)))
        except BuildError as exc:  # a gap between schema and builder, located at its field
            problems.append(item.problem(exc.path, f"cannot build the entry: {exc}"))
    if problems:
        raise IndexValidationError(problems)
    collections = tuple(collection_entry(item.data, _location(item), item.readme) for item in sources.collections)
    return ModelIndex(root=Path(sources.root).resolve(), models=tuple(models), collections=collections)


_DEFAULT: ModelIndex | None = None


def default_index() -> ModelIndex:
    """The packaged index, loaded once per process."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = load()
    return _DEFAULT
