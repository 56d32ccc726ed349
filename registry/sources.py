"""Read an index: follow its imports, confined to the root's folder.

A root file (``model-index.yml``) may ``Import:`` YAML files and markdown
pages, and its ``Models:``/``Collections:`` may be lists or paths to files.
Imports are untrusted: no absolute paths, no ``..``, no symlink that leads
out of the root's folder, no file read twice.
"""
from __future__ import annotations

import contextlib
import gc
import glob
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from .errors import Problem
from .yaml_io import CONTROL_RE, Document, PathKey, YamlProblems, markdown_blocks, parse_yaml, read_text

INDEX_SUFFIXES = (".yml", ".yaml", ".md")


@dataclass
class RawItem:
    """A model or collection mapping as written, with where it was written."""

    data: Any
    doc: Document
    path: PathKey
    readme: str | None = None  # the markdown page it came from, if any

    def problem(self, sub: PathKey, message: str) -> Problem:
        return self.doc.problem(self.path + tuple(sub), message)


@dataclass
class IndexSources:
    root: Path
    documents: list[Document] = field(default_factory=list)
    models: list[RawItem] = field(default_factory=list)
    collections: list[RawItem] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError, RuntimeError):  # outside the cwd, or a path that cannot be resolved
        return str(path)


def resolve(path: Path) -> Path | str:
    """The real path, or why there is none (Python 3.11 raises RuntimeError on a symlink loop, 3.13 OSError)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return "too many levels of symbolic links (a symlink loop?)"
    except ValueError:
        return "the path contains a NUL character"


def read_documents(path: Path) -> list[Document]:
    """Parse one index file (YAML, or a markdown page's embedded blocks)."""
    display = display_path(path)
    text = read_text(path, display)
    if path.suffix == ".md":
        bad = CONTROL_RE.search(text)  # the page's prose is rendered into the docs, not only its block
        if bad:
            line = text.count("\n", 0, bad.start()) + 1
            column = bad.start() - text.rfind("\n", 0, bad.start())
            raise YamlProblems([Problem(display, line, column, "$", f"control character U+{ord(bad.group()):04X} "
                                                                    "in the page; index files hold printable text only")])
        return markdown_blocks(text, display)
    return [parse_yaml(text, display)]


@contextlib.contextmanager
def gc_paused():
    """No cyclic garbage collection while reading: the values built hold no cycles, and on a large index
    the collector's repeated passes over millions of new objects took half the time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _Reader:
    def __init__(self, root_dir: Path, sources: IndexSources):
        self.root_dir = root_dir.resolve()
        self.sources = sources
        self.seen: dict[Path, str] = {}

    def resolve(self, spec: Any, doc: Document, where: PathKey) -> list[Path]:
        """Paths an import names, or [] after recording why it cannot be read."""
        problem = self.sources.problems.append
        if not isinstance(spec, str) or not spec.strip():
            problem(doc.problem(where, f"an import must be a relative file path, got {spec!r}"))
            return []
        if CONTROL_RE.search(spec):
            problem(doc.problem(where, f"import {ascii(spec)} contains a control character"))
            return []
        pure = PurePosixPath(spec.replace("\\", "/"))
        if pure.is_absolute() or spec.startswith("~") or (len(spec) > 1 and spec[1] == ":"):
            problem(doc.problem(where, f"import {spec!r} is an absolute path; imports are relative to the file"))
            return []
        if ".." in pure.parts:
            problem(doc.problem(where, f"import {spec!r} uses '..'; imports may not leave the index folder"))
            return []
        base = Path(doc.file).resolve().parent if Path(doc.file).is_absolute() else (Path.cwd() / doc.file).resolve().parent
        pattern = base / Path(*pure.parts)
        if glob.has_magic(spec):
            matches = sorted(Path(p) for p in glob.glob(str(pattern)))
            if not matches:
                problem(doc.problem(where, f"import pattern {spec!r} matches no file"))
            candidates = matches
        else:
            candidates = [pattern]
        out = []
        for candidate in candidates:
            resolved = resolve(candidate)
            if isinstance(resolved, str):
                problem(doc.problem(where, f"import {spec!r}: {resolved}"))
                continue
            if not resolved.is_relative_to(self.root_dir):
                problem(doc.problem(where, f"import {spec!r} leads out of the index folder {self.root_dir} "
                                           f"(to {resolved}); symlinks may not point outside it"))
                continue
            if not candidate.exists():
                problem(doc.problem(where, f"imported file {spec!r} does not exist (looked for {display_path(candidate)})"))
                continue
            if not candidate.is_file():
                problem(doc.problem(where, f"import {spec!r} is not a file"))
                continue
            if resolved.suffix not in INDEX_SUFFIXES:
                problem(doc.problem(where, f"import {spec!r}: only .yml, .yaml and .md files can be imported"))
                continue
            out.append(resolved)
        return out

    def read(self, path: Path, importer: Document | None = None, where: PathKey = (),
             list_kind: str = "models") -> list[Document]:
        resolved = path.resolve()
        if resolved in self.seen:
            if importer is not None:
                self.sources.problems.append(importer.problem(
                    where, f"{display_path(path)} is imported more than once (first by {self.seen[resolved]})"))
            return []
        self.seen[resolved] = importer.file if importer else "the command line"
        try:
            docs = read_documents(path)
        except YamlProblems as exc:
            self.sources.problems.extend(exc.problems)
            return []
        for doc in docs:
            self.sources.documents.append(doc)
            self.walk(doc, list_kind)
        return docs

    def walk(self, doc: Document, list_kind: str = "models") -> None:
        data = doc.data
        readme = doc.file if doc.is_markdown else None
        if isinstance(data, list):  # ``Models: path`` / ``Collections: path`` may name a bare list
            self.add_items(data, doc, (), list_kind, readme)
            return
        if not isinstance(data, dict):
            self.sources.problems.append(doc.problem((), f"expected a mapping at the top of the file, got {type(data).__name__}"))
            return
        keys = {str(k).lower(): k for k in data}
        if "import" in keys:
            imports = data[keys["import"]]
            if isinstance(imports, str):
                imports = [imports]
                items = [((keys["import"],), imports[0])]
            elif isinstance(imports, list):
                items = [((keys["import"], i), spec) for i, spec in enumerate(imports)]
            else:
                items = []  # the schema reports the wrong type
            for where, spec in items:
                for target in self.resolve(spec, doc, where):
                    self.read(target, doc, where)
        for kind in ("models", "collections"):
            if kind not in keys:
                continue
            value = data[keys[kind]]
            where = (keys[kind],)
            if isinstance(value, str):
                for target in self.resolve(value, doc, where):
                    self.read(target, doc, where, list_kind=kind)
            elif isinstance(value, list):
                self.add_items(value, doc, where, kind, readme)

    def add_items(self, items: list, doc: Document, where: PathKey, kind: str, readme: str | None) -> None:
        bucket = self.sources.models if kind == "models" else self.sources.collections
        for i, item in enumerate(items):
            bucket.append(RawItem(item, doc, where + (i,), readme))


def collect(path: Path) -> IndexSources:
    """Read ``path`` (a root index, an imported file or a markdown page) and everything it imports."""
    path = Path(path)
    reason = resolve(path)
    if isinstance(reason, str):
        sources = IndexSources(root=path)
        sources.problems.append(Problem(display_path(path), 0, 0, "$", f"cannot read: {reason}"))
        return sources
    if path.is_dir():
        for name in ("model-index.yml", "model-index.yaml"):
            if (path / name).is_file():
                path = path / name
                break
        else:
            sources = IndexSources(root=path)
            sources.problems.append(Problem(display_path(path), 0, 0, "$", "folder has no model-index.yml"))
            return sources
    sources = IndexSources(root=path)
    if not path.exists():
        sources.problems.append(Problem(display_path(path), 0, 0, "$", "no such file"))
        return sources
    if path.suffix not in INDEX_SUFFIXES:
        sources.problems.append(Problem(display_path(path), 0, 0, "$", "not an index file: expected .yml, .yaml or .md"))
        return sources
    with gc_paused():
        _Reader(path.resolve().parent, sources).read(path)
    return sources
