"""Reading objects from manifest files: YAML (multi-document) or JSON, files, directories or
stdin, with `kind: List` documents expanded."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
"""Files a directory contributes (kubectl's set)."""


class ManifestError(Exception):
    """A file could not be read or parsed, or a document is not an object."""


@dataclass(frozen=True)
class Manifest:
    """One object and where it came from (for error messages)."""

    source: str
    object: Any


def _files(arg: str) -> Iterator[tuple[str, str]]:
    """(source name, text) of each file an -f argument names."""
    if arg == "-":
        yield "<stdin>", sys.stdin.read()
        return
    path = Path(arg)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in MANIFEST_SUFFIXES and p.is_file())
        if not files:
            raise ManifestError(f"no manifest files ({', '.join(MANIFEST_SUFFIXES)}) in {arg}")
    else:
        files = [path]
    for file in files:
        try:
            yield str(file), file.read_text()
        except OSError as exc:
            raise ManifestError(f"cannot read {file}: {exc.strerror}") from None


def load_manifests(args: Sequence[str]) -> list[Manifest]:
    """Every object in the files, directories (not recursive) or stdin (`-`) named, in order."""
    import yaml

    out: list[Manifest] = []
    for arg in args:
        for source, text in _files(arg):
            try:
                docs = [d for d in yaml.safe_load_all(text) if d is not None]
            except yaml.YAMLError as exc:
                raise ManifestError(f"cannot parse {source}: {exc}") from None
            for doc in docs:
                if not isinstance(doc, dict):
                    raise ManifestError(f"{source}: a document is not an object: {doc!r:.60}")
                if str(doc.get("kind", "")).endswith("List") and "items" in doc:
                    items = doc.get("items") or []
                    out.extend(Manifest(source, item) for item in items)
                else:
                    out.append(Manifest(source, doc))
    return out
