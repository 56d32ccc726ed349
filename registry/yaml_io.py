"""Safe, located YAML reading for untrusted index files.

PyYAML's safe loader still keeps the last of two duplicate keys silently,
expands aliases without bound, forgets where values came from and lets
control characters, NaN, custom tags and 5,000-digit integers through (or
raises on them). This module composes the node graph with libyaml (its
nodes keep their marks) and builds the Python values itself, so that it can:

- record the line and column of every value (``positions``, keyed by path),
- reject duplicate mapping keys, tags other than YAML's plain types, NaN and
  infinity, integers beyond 64 bits, control characters and lone surrogates,
- bound the number of values built (an alias bomb is a few lines of YAML
  that expand to billions of values; merge keys count too) and the nesting depth,
- read only regular files, bounded in size; require UTF-8; reject empty files.

Markdown pages carry their block inside ``<!-- ... -->``; the block's
positions are shifted so they point into the page.
"""
from __future__ import annotations

import errno
import functools
import math
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .errors import Problem

MAX_FILE_BYTES = 1 << 20  # an index file is a few KiB; a MiB is already suspicious
MAX_VALUES = 100_000  # values built per document, aliases counted each time they are used
MAX_DEPTH = 64
SHALLOW_DEPTH = 3  # positions kept while reading: files, items, their fields; deeper ones found on demand
MAX_NUMBER_CHARS = 40  # longer int/float literals are refused before conversion (int() is quadratic)
INT_LIMIT = 1 << 63  # counts in an index fit in 64 bits

# libyaml (when PyYAML was built with it) composes ~10x faster and bounds nesting itself.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# C0 controls other than tab/LF/CR, DEL, C1 controls, lone surrogates and the two non-characters:
# none belongs in an index, whether typed raw or written as an escape in a quoted string.
CONTROL_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")

_TAG = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL = (_TAG + t for t in ("str", "int", "float", "bool", "null"))
_SEQ, _MAP, _MERGE, _TIMESTAMP = (_TAG + t for t in ("seq", "map", "merge", "timestamp"))

PathKey = tuple  # JSON path as a tuple of str keys / int indices


def format_path(path: PathKey) -> str:
    out = "$"
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(part)):
            out += f".{part}"
        else:
            out += f"[{_quoted(str(part))}]"
    return out


def _quoted(text: str) -> str:
    """repr() with every non-ASCII character escaped, so a message can always be printed and encoded."""
    return ascii(text)


@dataclass
class Document:
    """One parsed YAML document with the location of each of its values."""

    file: str
    data: Any
    positions: dict[PathKey, tuple[int, int]] = field(default_factory=dict)
    is_markdown: bool = False
    text: str = ""
    offsets: tuple[int, int] = (0, 0)  # line and column of ``text`` in the file (markdown blocks)
    complete: bool = True  # False: ``positions`` holds paths up to SHALLOW_DEPTH only

    def locate(self, path: PathKey) -> tuple[int, int]:
        """Line/column of ``path``, or of its nearest located ancestor."""
        path = tuple(path)
        if not self.complete and len(path) > SHALLOW_DEPTH:
            # A deep path is only asked for to report a problem: read the text again, keeping every position.
            self.positions = parse_yaml(self.text, self.file, *self.offsets, all_positions=True).positions
            self.complete = True
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


def _file_problem(display: str, message: str) -> YamlProblems:
    return YamlProblems([Problem(display, 0, 0, "$", message)])


def read_bytes(path: Path, display: str, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular file, at most ``limit`` of them; located problems otherwise.

    The file is opened without blocking (a FIFO would wait for a writer forever) and checked with
    fstat *after* opening, so a symlink swapped in between, or one to /dev/zero, is caught; the read
    itself is bounded, since a device's size says nothing about how much it yields.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        raise _file_problem(display, f"cannot read file: {_os_reason(exc)}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file (a FIFO, device or socket)"
            raise _file_problem(display, f"cannot read file: it is {kind}; index files are regular files")
        if info.st_size > limit:
            raise _file_problem(display, f"file is {info.st_size:,} bytes; index files are limited to {limit:,}")
        chunks, total = [], 0
        while total <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise _file_problem(display, f"cannot read file: {_os_reason(exc)}") from None
    finally:
        os.close(fd)
    if total > limit:
        raise _file_problem(display, f"file grew past {limit:,} bytes while being read; index files are limited to that")
    return b"".join(chunks)


def _os_reason(exc: Exception) -> str:
    if isinstance(exc, ValueError):
        return "the path contains a NUL character"
    if getattr(exc, "errno", None) == errno.ELOOP:
        return "too many levels of symbolic links (a symlink loop?)"
    return exc.strerror or str(exc) if isinstance(exc, OSError) else str(exc)


def read_text(path: Path, display: str) -> str:
    """Read an index file as UTF-8 text, bounded in size; located problems otherwise."""
    raw = read_bytes(path, display)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise YamlProblems(
            [Problem(display, line, column, "$", f"file is not valid UTF-8 (byte 0x{raw[exc.start]:02x}); save it as UTF-8")]
        ) from None


def _tag(tag: str) -> str:
    """A tag as it was written: ``!!python/tuple`` rather than ``tag:yaml.org,2002:python/tuple``."""
    return _quoted("!!" + tag[len(_TAG):] if tag.startswith(_TAG) else tag)


def _control_message(char: str, where: str) -> str:
    kind = "lone surrogate" if "\ud800" <= char <= "\udfff" else "control character"
    return f"{kind} U+{ord(char):04X} {where}; index files hold printable text only"


_PLAIN_TAGS: dict[str, str] = {}  # plain scalar text -> implicit tag; an index repeats its values a lot


@functools.lru_cache(maxsize=None)
def _loader_class(base: type) -> type:
    """``base`` with a memoised resolver: libyaml calls back into Python's resolver for every scalar."""

    class Loader(base):  # type: ignore[misc, valid-type]
        def resolve(self, kind, value, implicit):
            if kind is not ScalarNode:
                return _SEQ if kind is SequenceNode else _MAP
            if not implicit[0]:  # quoted: a string
                return _STR
            tag = _PLAIN_TAGS.get(value)
            if tag is None:
                if len(_PLAIN_TAGS) > 100_000:
                    _PLAIN_TAGS.clear()
                tag = _PLAIN_TAGS[value] = super().resolve(kind, value, implicit)
            return tag

    return Loader


class _Builder:
    """Python values from a composed node graph, with positions, bounded and strict.

    Its loop is the hot path of validating a large index: plain strings take a short cut, equal
    strings are stored once, and positions deeper than ``record_depth`` are not kept.
    """

    def __init__(self, loader: Any, doc: Document, place, record_depth: int) -> None:
        self.loader, self.doc, self.place = loader, doc, place
        self.record_depth = record_depth
        self.problems: list[Problem] = []
        self.values = 0
        self.strings: dict[str, str] = {}

    def fail(self, node: Node, path: PathKey, message: str) -> None:
        self.problems.append(Problem(self.doc.file, *self.place(node.start_mark), format_path(path), message))

    def build(self, node: Node, path: PathKey, depth: int) -> Any:
        self.values += 1
        if self.values > MAX_VALUES:
            raise YamlProblems([Problem(self.doc.file, *self.place(node.start_mark), format_path(path),
                                        f"document expands to more than {MAX_VALUES:,} values (alias bomb?); "
                                        "aliases and merge keys may not multiply the document's size")])
        if depth > MAX_DEPTH:
            raise YamlProblems([Problem(self.doc.file, *self.place(node.start_mark), format_path(path),
                                        f"nesting deeper than {MAX_DEPTH} levels (recursive alias?)")])
        if len(path) <= self.record_depth and path not in self.doc.positions:
            self.doc.positions[path] = self.place(node.start_mark)
        cls = node.__class__
        if cls is ScalarNode:
            if node.tag == _STR and node.style != '"':  # only a double-quoted string can hold an escape
                return self.strings.setdefault(node.value, node.value)
            return self.scalar(node, path)
        if node.tag not in (_SEQ, _MAP):
            self.fail(node, path, f"tag {_tag(node.tag)} is not allowed; index files hold plain YAML "
                                  "mappings, lists, strings, numbers and booleans")
            return None
        if cls is SequenceNode:
            return [self.build(item, path + (i,), depth + 1) for i, item in enumerate(node.value)]
        return self.mapping(node, path, depth)

    def scalar(self, node: ScalarNode, path: PathKey) -> Any:
        tag, text = node.tag, node.value
        if tag == _STR or tag == _TIMESTAMP:  # a date stays the text it was written as
            bad = CONTROL_RE.search(text)
            if bad:
                self.fail(node, path, _control_message(bad.group(), "in a string (written as an escape?)"))
                return None
            return self.strings.setdefault(text, text)
        if tag not in (_INT, _FLOAT, _BOOL, _NULL):
            self.fail(node, path, f"tag {_tag(tag)} is not allowed; index files hold plain YAML "
                                  "strings, numbers and booleans")
            return None
        if tag == _INT and text.isdigit() and text.isascii() and (text[0] != "0" or text == "0") \
                and len(text) <= 18:  # plain decimal, the common case (a leading 0 is octal in YAML 1.1)
            return int(text)
        if tag in (_INT, _FLOAT) and len(text) > MAX_NUMBER_CHARS:
            self.fail(node, path, f"number {_quoted(text[:20])}... is {len(text):,} characters long; "
                                  f"numbers in an index are at most {MAX_NUMBER_CHARS}")
            return None
        try:
            value = self.loader.yaml_constructors[tag](self.loader, node)
        except Exception:  # `!!int abc`, `!!bool maybe`: the tag does not fit the text
            kind = tag[len(_TAG):]
            self.fail(node, path, f"{_quoted(text)} is not a valid {kind} (explicit tag !!{kind})")
            return None
        if isinstance(value, float) and not math.isfinite(value):
            self.fail(node, path, f"{_quoted(text)} is not a finite number; NaN and infinity are not allowed")
            return None
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= INT_LIMIT:
            self.fail(node, path, f"integer {_quoted(text)} does not fit in 64 bits")
            return None
        return value

    def key(self, node: Node, path: PathKey) -> Any:
        if not isinstance(node, ScalarNode):
            self.fail(node, path, "mapping keys must be plain scalars")
            return None
        if node.tag not in (_STR, _INT, _FLOAT, _BOOL, _NULL):
            self.fail(node, path, f"tag {_tag(node.tag)} on a key is not allowed; keys are plain strings")
            return None
        key = self.scalar(node, path)
        return str(key) if key is None else key

    def mapping(self, node: MappingNode, path: PathKey, depth: int) -> dict:
        out: dict = {}
        first_seen: dict = {}
        merges = []
        record = len(path) < self.record_depth
        positions = self.doc.positions
        for key_node, value_node in node.value:
            tag = key_node.tag
            if tag == _STR and key_node.__class__ is ScalarNode and key_node.style != '"':
                key = self.strings.setdefault(key_node.value, key_node.value)
            elif tag == _MERGE:
                merges.append(value_node)
                continue
            else:
                n_problems = len(self.problems)
                key = self.key(key_node, path)
                if len(self.problems) > n_problems:
                    continue
            if key in out:
                line, _ = self.place(first_seen[key])
                self.fail(key_node, path + (key,), f"duplicate key {_quoted(str(key))} (first defined on line {line}); "
                                                   "YAML would silently keep only the last value")
                continue
            mark = first_seen[key] = key_node.start_mark
            child = path + (key,)
            if record and child not in positions:
                positions[child] = self.place(mark)
            out[key] = self.build(value_node, child, depth + 1)
        # `<<: *base` / `<<: [*a, *b]`: keys written here win, then earlier merged mappings over later ones.
        for value_node in merges:
            sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
            if not all(isinstance(s, MappingNode) for s in sources):
                self.fail(value_node, path + ("<<",), "a merge key '<<' takes a mapping or a list of mappings "
                                                      "(usually an alias such as *defaults)")
                continue
            for source in sources:
                merged = self.mapping(source, path, depth + 1)
                self.values += len(merged)
                for key, value in merged.items():
                    out.setdefault(key, value)
        return out


def parse_yaml(text: str, display: str, line_offset: int = 0, column_offset: int = 0, *,
               all_positions: bool = False) -> Document:
    """Parse one YAML document from ``text``; positions are 1-based and shifted by the offsets.

    Positions are kept down to SHALLOW_DEPTH unless ``all_positions``; ``Document.locate`` reads the
    text again for a deeper one.
    """
    if not text.strip() or all(not ln.strip() or ln.lstrip().startswith("#") for ln in text.splitlines()):
        raise YamlProblems([Problem(display, line_offset + 1, 1, "$", "file is empty: expected a YAML mapping")])

    def place(mark) -> tuple[int, int]:
        col = mark.column + 1 + (column_offset if mark.line == 0 else 0)
        return mark.line + 1 + line_offset, col

    bad = CONTROL_RE.search(text)
    if bad:  # libyaml would stop at it with only an offset; say where and what
        line = text.count("\n", 0, bad.start())
        column = bad.start() - (text.rfind("\n", 0, bad.start()) + 1)
        raise YamlProblems([Problem(display, line + 1 + line_offset, column + 1 + (column_offset if line == 0 else 0),
                                    "$", _control_message(bad.group(), "in the file"))])

    loader = _loader_class(_Loader)(text)
    try:
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line, column = place(mark) if mark else (line_offset + 1, 1)
            raise YamlProblems([Problem(display, line, column, "$", _describe_yaml_error(exc, text, mark))]) from None
        except yaml.YAMLError as exc:
            raise YamlProblems([Problem(display, line_offset + 1, 1, "$", f"YAML error: {exc}")]) from None
        except RecursionError:  # only the pure-Python composer recurses; libyaml stops at 1,000 levels
            raise YamlProblems([Problem(display, line_offset + 1, 1, "$", "document nests too deeply")]) from None
        if root is None:
            raise YamlProblems([Problem(display, line_offset + 1, 1, "$", "file is empty: expected a YAML mapping")])

        doc = Document(file=display, data=None, text=text, offsets=(line_offset, column_offset),
                       complete=all_positions)
        builder = _Builder(loader, doc, place, MAX_DEPTH + 1 if all_positions else SHALLOW_DEPTH)
        try:
            doc.data = builder.build(root, (), 0)
        except RecursionError:
            raise YamlProblems([Problem(display, line_offset + 1, 1, "$", "document nests too deeply")]) from None
        if builder.problems:
            raise YamlProblems(builder.problems)
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


def html_comments(text: str) -> Iterator[tuple[int, int]]:
    """(start, end) of the body of each ``<!-- ... -->`` in ``text``.

    A linear scan: the regular expression ``<!--(.*?)-->`` is quadratic on a page of unclosed
    ``<!--`` (a 1 MiB page would take hours).
    """
    position = 0
    while True:
        start = text.find("<!--", position)
        if start < 0:
            return
        end = text.find("-->", start + 4)
        if end < 0:
            return  # unclosed: not a comment, and no later one can close either
        yield start + 4, end
        position = end + 3


def strip_html_comments(text: str) -> str:
    """``text`` without its HTML comments; each leaves its newlines, so later lines keep their numbers."""
    out, position = [], 0
    for start, end in html_comments(text):
        out.append(text[position:start - 4])
        out.append("\n" * text.count("\n", start, end))
        position = end + 3
    out.append(text[position:])
    return "".join(out)
# [ \t] rather than \s: with re.M, `^\s*` would rescan every following blank line from each line (quadratic).
_TYPE_RE = re.compile(r"^[ \t]*type[ \t]*:[ \t]*['\"]?model-?index['\"]?[ \t]*\r?$", re.I | re.M)


def markdown_blocks(text: str, display: str) -> list[Document]:
    """The ``<!-- Type: model-index ... -->`` blocks of a markdown page, parsed and located."""
    docs: list[Document] = []
    counted, line_offset = 0, 0  # lines counted incrementally: a page may hold many blocks
    for start, end in html_comments(text):
        body = text[start:end]
        if not _TYPE_RE.search(body):
            continue  # an ordinary HTML comment
        line_offset += text.count("\n", counted, start)
        counted = start
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
