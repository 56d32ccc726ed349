"""``cc-registry pin [ID...]``: record each Hub file's commit and SHA-256 in the index, from the Hub's metadata.

For each model (default: all with a Hub block) the Hub at ``HF_ENDPOINT`` is asked for the file at the
entry's Revision: the commit it resolves to, and the file's SHA-256 (the LFS digest the Hub reports; a
file not in LFS is downloaded, checked against its git blob id, then hashed). The entry's ``Hub:`` block
is edited as text: ``Revision:`` becomes the commit (the branch or tag it came from is kept in a comment)
and ``SHA256:`` is set; every other line of the file, comments included, stays as it was. Loads then
download that commit and check that digest. Exit 0 all pinned, 1 a file could not be pinned, 2 usage,
no network, or an index file that cannot be written; on any failure no file changes.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path

from . import index as index_mod
from .safe_files import atomic_write

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2
_KEY = re.compile(r"^(?P<indent>\s*)(?:- )?(?P<key>[A-Za-z0-9 ]+):(?P<rest>.*)$")


def add_parser(sub) -> None:
    p = sub.add_parser("pin", help="record each Hub file's commit and SHA-256 in the index (from the Hub)",
                       description=__doc__.split("\n\n", 1)[1].replace("``", "`"))
    p.add_argument("ids", nargs="*", metavar="ID", help="model ids (default: every model with a Hub block)")
    p.add_argument("--index", type=Path, help="index root (default: packaged)")
    p.add_argument("--dry-run", action="store_true", help="ask the Hub and print, but do not edit the files")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=cmd_pin)


def hub_pin(repo_id: str, filename: str, revision: str) -> tuple[str, str]:
    """``(commit, sha256)`` of ``repo_id/filename@revision`` from the Hub's metadata."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url

    meta = get_hf_file_metadata(hf_hub_url(repo_id, filename, revision=revision), retry_on_errors=True)
    etag = (meta.etag or "").lower()
    if not re.fullmatch(r"[0-9a-f]{40}", meta.commit_hash or ""):
        raise ValueError(f"the Hub gave no commit for {repo_id}/{filename}@{revision}")
    if re.fullmatch(r"[0-9a-f]{64}", etag):
        return meta.commit_hash, etag
    if not re.fullmatch(r"[0-9a-f]{40}", etag):  # neither an LFS SHA-256 nor a git blob id
        raise ValueError(f"the Hub gave no usable ETag for {repo_id}/{filename}@{revision} ({meta.etag!r})")
    data = Path(hf_hub_download(repo_id, filename, revision=meta.commit_hash)).read_bytes()  # not in LFS: small
    if hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest() != etag:
        raise ValueError(f"{repo_id}/{filename}@{meta.commit_hash}: the file does not match its git blob id {etag}")
    return meta.commit_hash, hashlib.sha256(data).hexdigest()


def edit_hub_block(text: str, line: int, commit: str, sha256: str) -> str:
    """``text`` with the ``Hub:`` block of the model starting at 1-based ``line`` pinned; only those lines change."""
    lines = text.splitlines(keepends=True)

    def indent(i: int) -> int:
        return len(lines[i]) - len(lines[i].lstrip(" -"))

    def content(i: int) -> bool:
        return bool(lines[i].strip()) and not lines[i].lstrip().startswith("#")

    item_indent = len(lines[line - 1]) - len(lines[line - 1].lstrip(" "))  # where this model's "- " starts
    hub = block_end = None
    for i in range(line, len(lines)):
        if not content(i):
            continue
        if len(lines[i]) - len(lines[i].lstrip(" ")) <= item_indent:
            break  # the next model, or the end of the list
        m = _KEY.match(lines[i])
        if hub is None and m and m["key"] == "Hub":
            if m["rest"].split("#")[0].strip():
                raise ValueError(f"line {i + 1}: the Hub block is in flow style; write it as a block mapping to pin it")
            hub, hub_indent = i, indent(i)
        elif hub is not None and indent(i) <= hub_indent:
            block_end = i
            break
    if hub is None:
        raise ValueError(f"no Hub block below line {line}")
    block_end = block_end if block_end is not None else len(lines)
    while block_end > hub + 1 and not content(block_end - 1):
        block_end -= 1
    keys = {m["key"]: i for i in range(hub + 1, block_end) if (m := _KEY.match(lines[i]))}
    key_indent = _KEY.match(lines[hub + 1])["indent"] if hub + 1 < block_end else " " * (hub_indent + 2)
    newline = "\r\n" if lines[hub].endswith("\r\n") else "\n"
    if not lines[block_end - 1].endswith("\n"):
        lines[block_end - 1] += newline
    for key, value in (("Revision", commit), ("SHA256", sha256)):
        if key in keys:
            old = _KEY.match(lines[keys[key]])
            was, _, comment = old["rest"].partition("#")
            note = f"  #{comment.rstrip()}" if comment else ("" if was.strip() in ("", commit) or key != "Revision"
                                                              else f"  # pinned from {was.strip()}")
            lines[keys[key]] = f"{old['indent']}{key}: {value}{note}{newline}"
        else:
            lines.insert(block_end, f"{key_indent}{key}: {value}{newline}")
            block_end += 1
    return "".join(lines)


def cmd_pin(args: argparse.Namespace) -> int:
    index = index_mod.load(args.index)
    entries = [index.get(i) for i in args.ids] if args.ids else [m for m in index.models if m.hub is not None]
    report, failed, unreachable, edits = [], False, False, {}
    for entry in entries:
        row = {"id": entry.id, "repo": entry.hub.repo_id if entry.hub else None}
        try:
            if entry.hub is None:
                raise ValueError("the entry has no Hub block")
            hub = entry.hub
            commit, sha = hub_pin(hub.repo_id, hub.filename, hub.revision)
            path = Path(entry.source.file).resolve()
            edits[path] = edit_hub_block(edits.get(path) or path.read_text(encoding="utf-8"), entry.source.line,
                                         commit, sha)
            row.update(filename=hub.filename, revision=hub.revision, commit=commit, sha256=sha, file=str(path))
        except Exception as exc:  # network, Hub and layout failures alike: one line each, then exit 1 (2: no network)
            failed = True
            unreachable = unreachable or isinstance(exc, ConnectionError) or type(exc).__module__.startswith("httpx")
            row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        report.append(row)
    if not args.dry_run and not failed:
        originals = {path: path.read_text(encoding="utf-8") for path in edits}
        try:
            for path, text in edits.items():
                atomic_write(path, text)
        except OSError as exc:
            for path, text in originals.items():
                if path.read_text(encoding="utf-8") != text:
                    atomic_write(path, text)
            print(f"cc-registry pin: cannot write {exc.filename}: {exc.strerror}", file=sys.stderr)
            return EXIT_USAGE
        try:
            index_mod.load(args.index)  # the edited index must still be valid
        except Exception:
            for path, text in originals.items():
                atomic_write(path, text)
            raise
    if args.format == "json":
        print(json.dumps({"pinned": not failed and not args.dry_run, "models": report}, indent=2))
    for row in report if args.format == "text" else ():
        if "error" in row:
            print(f"{row['id']}: cannot pin: {row['error']}", file=sys.stderr)
        else:
            print(f"{row['id']}: {row['repo']}/{row['filename']}@{row['revision']} -> commit {row['commit']}, "
                  f"SHA-256 {row['sha256']}")
    if failed:
        print("cc-registry pin: nothing was written (fix the failures above and run again)", file=sys.stderr)
    return (EXIT_USAGE if unreachable else EXIT_INVALID) if failed else EXIT_OK
