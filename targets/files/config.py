"""Configuration of a ``files`` target: its schema fragment and its typed form."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from targets.hashing import ALGORITHMS, DEFAULT_ALGORITHM

SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Directories and files of this host.",
    "required": ["kind", "paths"],
    "additionalProperties": False,
    "properties": {
        "kind": {"const": "files", "description": "What kind of data this target is.", "examples": ["files"]},
        "paths": {
            "type": "array",
            "minItems": 1,
            "maxItems": 1000,
            "items": {"type": "string", "pattern": "^/", "minLength": 2, "maxLength": 4096},
            "description": "Absolute paths to back up; directories are walked without following symlinks.",
            "examples": [["/srv/documents", "/etc/app"]],
        },
        "exclude": {
            "type": "array",
            "maxItems": 1000,
            "items": {"type": "string", "minLength": 1, "maxLength": 4096},
            "default": [],
            "description": (
                "Glob patterns to leave out: 'name' matches at any depth, 'dir/' directories only, "
                "'a/b*' the path relative to the configured path, '/abs/path' an absolute path."
            ),
            "examples": [["*.tmp", "cache/"]],
        },
        "hash": {
            "enum": list(ALGORITHMS),
            "default": DEFAULT_ALGORITHM,
            "description": "Content hash of the manifest: blake3 (fast), sha256, or sm3 (GB/T 32905).",
            "examples": [DEFAULT_ALGORITHM],
        },
    },
}


@dataclass(frozen=True)
class FilesTargetConfig:
    name: str
    paths: tuple[str, ...]
    exclude: tuple[str, ...]
    hash: str
    kind: str = "files"


def make_files_target(name: str, raw: Mapping[str, Any]) -> FilesTargetConfig:
    """Build the typed target from a mapping already validated against :data:`SCHEMA`."""
    return FilesTargetConfig(
        name=name,
        paths=tuple(raw["paths"]),
        exclude=tuple(raw.get("exclude", ())),
        hash=raw.get("hash", DEFAULT_ALGORITHM),
    )
