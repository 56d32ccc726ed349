"""Safe, located YAML reading for untrusted index files.

PyYAML's safe loader still keeps the last of two duplicate keys silently,
expands aliases without bound and forgets where values came from. This
module composes the node graph with the safe loader and builds the Python
values itself, so that it can:

- record the line and column of every value (``positions``, keyed by path),
- reject duplicate mapping keys,
- bound the number of values built (an alias bomb is a few lines of YAML
  that expand to billions of values) and the nesting depth,
- bound the file size, require UTF-8 and reject empty files.

Markdown pages carry their block inside ``<!-- ... -->``; the block's
positions are shifted so they point into the page.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .errors import Problem

MAX_FILE_BYTES = 1 << 20  # an index file is a few KiB; a MiB is already suspicious
MAX_VALUES = 100_000  # values built per document, aliases counted each time they are used
MAX_DEPTH = 64

PathKey = tuple  # JSON path as a tuple of str keys / int indices


def format_path(path: PathKey) -> str:
    out = "$"
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(part)):
            out += f".{part}"
        else:
            out += f"[{str(part)!r}]"
    return out


@dataclass
class Document:
    """One parsed YAML document with the location of each of its values."""

    file: str
    data: Any
    positions: dict[PathKey, tuple[int, int]] = field(default_factory=dict)
    is_markdown: bool = False
    text: str = ""

    def locate(self, path: PathKey) -> tuple[int, int]:
        """Line/column of ``path``, or of its nearest located ancestor."""
        path = tuple(path)
        while path:
            if path in self.positions:
                return self.positions[path]
            path = path[:-1]
        return self.positions.get((), (1, 1))

    def problem(self, path: PathKey, message: str) -> Problem:
        line, column = self.locate(path)
        return Problem(self.file, line, column, format_path(path), message)


class YamlProblems(Exception):
    """Reading failed; ``problems`` says where and why."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class _Budget:
    def __init__(self) -> None:
        self.values = 0


def read_text(path: Path, display: str) -> str:
    """Read an index file as UTF-8 text, bounded in size; located problems otherwise."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise YamlProblems([Problem(display, 0, 0, "$", f"cannot read file: {exc.strerror or exc}")]) from None
    if size > MAX_FILE_BYTES:
        raise YamlProblems(
            [Problem(display, 0, 0, "$", f"file is {size:,} bytes; index files are limited to {MAX_FILE_BYTES:,}")]
        )
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise YamlProblems([Problem(display, 0, 0, "$", f"cannot read file: {exc.strerror or exc}")]) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise YamlProblems(
            [Problem(display, line, column, "$", f"file is not valid UTF-8 (byte 0x{raw[exc.start]:02x}); save it as UTF-8")]
        ) from None


def parse_yaml(text: str, display: str, line_offset: int = 0, column_offset: int = 0) -> Document:
    """Parse one YAML document from ``text``; positions are 1-based and shifted by the offsets."""
    if not text.strip() or all(not ln.strip() or ln.lstrip().startswith("#") for ln in text.splitlines()):
        raise YamlProblems([Problem(display, line_offset + 1, 1, "$", "file is empty: expected a YAML mapping")])

    def place(mark) -> tuple[int, int]:
        col = mark.column + 1 + (column_offset if mark.line == 0 else 0)
        return mark.line + 1 + line_offset, col

    loader = yaml.SafeLoader(text)
    try:
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line, column = place(mark) if mark else (line_offset + 1, 1)
            raise YamlProblems([Problem(display, line, column, "$", _describe_yaml_error(exc, text, mark))]) from None
        except yaml.YAMLError as exc:
            raise YamlProblems([Problem(display, line_offset + 1, 1, "$", f"YAML error: {exc}")]) from None
        if root is None:
            raise YamlProblems([Problem(display, line_offset + 1, 1, "$", "file is empty: expected a YAML mapping")])

        doc = Document(file=display, data=None, text=text)
        problems: list[Problem] = []
        budget = _Budget()

        def build(node: Node, path: PathKey, depth: int) -> Any:
            budget.values += 1
            if budget.values > MAX_VALUES:
                raise YamlProblems(
                    [Problem(display, *place(node.start_mark), format_path(path),
                             f"document expands to more than {MAX_VALUES:,} values (alias bomb?); "
                             "aliases may not multiply the document's size")]
                )
            if depth > MAX_DEPTH:
                raise YamlProblems(
                    [Problem(display, *place(node.start_mark), format_path(path),
                             f"nesting deeper than {MAX_DEPTH} levels (recursive alias?)")]
                )
            doc.positions.setdefault(path, place(node.start_mark))
            if isinstance(node, ScalarNode):
                try:
                    return loader.construct_object(node)
                except ConstructorError as exc:
                    problems.append(Problem(display, *place(node.start_mark), format_path(path), str(exc.problem)))
                    return None
            if isinstance(node, SequenceNode):
                return [build(item, path + (i,), depth + 1) for i, item in enumerate(node.value)]
            if isinstance(node, MappingNode):
                loader.flatten_mapping(node)  # resolve `<<` merge keys
                out: dict = {}
                first_seen: dict = {}
                for key_node, value_node in node.value:
                    if not isinstance(key_node, ScalarNode):
                        problems.append(Problem(display, *place(key_node.start_mark), format_path(path),
                                                "mapping keys must be plain scalars"))
                        continue
                    key = loader.construct_object(key_node)
                    if not isinstance(key, (str, int, float, bool)) or key is None:
                        key = str(key)
                    if key in out:
                        line, _ = first_seen[key]
                        problems.append(Problem(display, *place(key_node.start_mark), format_path(path + (key,)),
                                                f"duplicate key {key!r} (first defined on line {line}); "
                                                "YAML would silently keep only the last value"))
                        continue
                    first_seen[key] = place(key_node.start_mark)
                    doc.positions[path + (key,)] = place(key_node.start_mark)
                    out[key] = build(value_node, path + (key,), depth + 1)
                return out
            raise YamlProblems([Problem(display, *place(node.start_mark), format_path(path), "unsupported YAML node")])

        try:
            doc.data = build(root, (), 0)
        except RecursionError:
            raise YamlProblems([Problem(display, line_offset + 1, 1, "$", "document nests too deeply")]) from None
        if problems:
            raise YamlProblems(problems)
        return doc
    finally:
        loader.dispose()


def _describe_yaml_error(exc: yaml.MarkedYAMLError, text: str, mark) -> str:
    problem = (exc.problem or str(exc)).strip()
    if "'\\t'" in problem:
        return "tab character used for indentation; YAML indents with spaces only"
    msg = f"YAML syntax error: {problem}"
    if exc.context and exc.context != exc.problem:
        msg += f" ({exc.context.strip()})"
    return msg


_COMMENT_RE = re.compile(r"<!--(.*?)-->", re.S)
_TYPE_RE = re.compile(r"^\s*type\s*:\s*['\"]?model-?index['\"]?\s*$", re.I | re.M)


def markdown_blocks(text: str, display: str) -> list[Document]:
    """The ``<!-- Type: model-index ... -->`` blocks of a markdown page, parsed and located."""
    docs: list[Document] = []
    for match in _COMMENT_RE.finditer(text):
        body = match.group(1)
        if not _TYPE_RE.search(body):
            continue  # an ordinary HTML comment
        start = match.start(1)
        line_offset = text.count("\n", 0, start)
        column_offset = start - (text.rfind("\n", 0, start) + 1)
        try:
            doc = parse_yaml(body, display, line_offset, column_offset)
        except YamlProblems as exc:
            hint = flattened_block_hint(body, display, line_offset)
            raise YamlProblems(exc.problems + hint) from None
        doc.is_markdown = True
        hint = flattened_block_hint(body, display, line_offset, doc.data)
        if hint:
            raise YamlProblems(hint)
        docs.append(doc)
    if not docs:
        raise YamlProblems(
            [Problem(display, 1, 1, "$", "markdown page has no '<!-- Type: model-index ... -->' block")]
        )
    return docs


_MODEL_FIELDS = ("Metadata", "FLOPs", "In Collection", "Results", "Weights", "Code", "ID", "File Size")


def flattened_block_hint(body: str, display: str, line_offset: int, data: Any = None) -> list[Problem]:
    """Say so when a block lost its indentation (pages scraped from a rendered site do).

    Such a block has no indented line at all and model fields (``Metadata``,
    ``FLOPs``...) turn up as top-level keys, or it does not parse.
    """
    lines = [ln for ln in body.splitlines() if ln.strip()]
    if not lines or any(ln[:1] in (" ", "\t") for ln in lines):
        return []  # indented blocks get the ordinary schema errors
    stray = [k for k in _MODEL_FIELDS if isinstance(data, dict) and k in data]
    if data is not None and not stray:
        return []
    for number, ln in enumerate(body.splitlines()):
        if re.match(r"^(Metadata|FLOPs|In Collection)\s*:", ln):
            break
    else:
        number = 0
    fields = ", ".join(stray) or "Metadata, FLOPs, ..."
    return [Problem(
        display, line_offset + number + 1, 1, "$",
        f"the model-index block has lost its indentation: fields of a model ({fields}) sit at the top level "
        "instead of under their '- Name:' item. Indent each model's fields by two spaces under its '- Name:' "
        "line (and Metadata's fields under 'Metadata:'), as in model_index/models/*.yml",
    )]
