"""restic's ``--json`` output, parsed by ``message_type`` into frozen dataclasses.

Unknown message types and unknown fields are ignored (restic adds fields between
versions); a line that is not JSON is returned as ``None`` so the caller can keep
it as plain text. A field of the wrong type is a :class:`MalformedResticOutput`:
restic's output is untrusted input like any other.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agents.contract.errors import DrillError


class MalformedResticOutput(DrillError):
    """restic printed JSON that does not have the shape its documentation promises."""

    code = "restic_output_malformed"


@dataclass(frozen=True)
class BackupStatus:
    percent_done: float
    files_done: int
    bytes_done: int
    total_files: int
    total_bytes: int


@dataclass(frozen=True)
class BackupError:
    item: str
    during: str
    message: str


@dataclass(frozen=True)
class BackupSummary:
    snapshot_id: str
    files_new: int
    files_changed: int
    files_unmodified: int
    dirs_new: int
    dirs_changed: int
    dirs_unmodified: int
    data_added: int
    total_files_processed: int
    total_bytes_processed: int
    total_duration: float
    backup_start: str | None = None  # restic 0.17+: the snapshot's time

    def as_record(self) -> dict[str, Any]:
        """The summary as it goes into a result record."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class ExitError:
    code: int
    message: str


@dataclass(slots=True)
class BackupItem:
    """One file or directory restic stored (``verbose_status`` at ``-vv``); a directory's path ends in '/'.

    restic reports regular files and directories, not symlinks or other node types. A value, though not declared
    frozen: restic reports every file, and a frozen ``__init__`` costs 0.7 s of CPU a million more.
    """

    action: str  # new, unchanged, modified
    item: str


BackupMessage = BackupStatus | BackupError | BackupSummary | ExitError | BackupItem

_VERBOSE_PREFIX = '{"message_type":"verbose_status","action":"'
_ITEM_KEY = '","item":"'


@dataclass(frozen=True)
class Snapshot:
    """One entry of ``restic snapshots --json``."""

    id: str
    short_id: str
    time: datetime
    tree: str
    paths: tuple[str, ...]
    hostname: str
    tags: tuple[str, ...]
    parent: str | None
    original: str | None

    def tag_value(self, key: str) -> str | None:
        """The value of a ``key=value`` tag, or None."""
        prefix = key + "="
        for tag in self.tags:
            if tag.startswith(prefix):
                return tag[len(prefix):]
        return None


def _field(obj: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
    """``obj[name]`` when it is a ``kind``; ``default`` when missing or null. Raises :class:`MalformedResticOutput`."""
    value = obj.get(name)
    if value is None:
        return default
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple)
                                                                                 else (kind,))):
        raise MalformedResticOutput(f"field {name!r} is {type(value).__name__}, expected {kind}")
    return value


def _strings(obj: dict[str, Any], name: str) -> tuple[str, ...]:
    values = _field(obj, name, list, [])
    if not all(isinstance(v, str) for v in values):
        raise MalformedResticOutput(f"field {name!r} holds something other than text")
    return tuple(values)


def _int(obj: dict[str, Any], name: str) -> int:
    value = _field(obj, name, int, 0)
    return int(value)


def _float(obj: dict[str, Any], name: str) -> float:
    value = float(_field(obj, name, (int, float), 0.0))
    if not math.isfinite(value):
        raise MalformedResticOutput(f"field {name!r} is {value}")
    return value


def parse_json_line(line: str) -> dict[str, Any] | None:
    """Decode one line of restic output, or None when it is not a JSON object."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def _error_message(error: Any) -> str:
    # 0.14 prints Go's error struct ({"Op","Path","Err"}), 0.17+ {"message": ...}.
    if isinstance(error, dict):
        if isinstance(error.get("message"), str):
            return str(error["message"])
        op, err = error.get("Op"), error.get("Err")
        if op is not None:
            return f"{op}: errno {err}"
    return json.dumps(error, sort_keys=True)


def _fast_item(line: str) -> BackupItem | None:
    """A ``verbose_status`` line read without decoding all of it: there is one per file, millions in a backup.

    Falls back (None) to the full decoder for any line not in restic's usual field order.
    """
    action_end = line.find('"', len(_VERBOSE_PREFIX))
    if action_end < 0 or not line.startswith(_ITEM_KEY, action_end):
        return None
    try:
        item, _ = json.decoder.scanstring(line, action_end + len(_ITEM_KEY))  # type: ignore[attr-defined]
    except ValueError:
        return None
    return BackupItem(action=line[len(_VERBOSE_PREFIX):action_end], item=item)


def parse_backup_message(line: str) -> BackupMessage | None:
    """Turn one line of ``restic backup --json`` into a message, or None if irrelevant."""
    if line.startswith(_VERBOSE_PREFIX):
        fast = _fast_item(line)
        if fast is not None:
            return fast if fast.item else None  # 'scan_finished' names no item
    obj = parse_json_line(line)
    if obj is None:
        return None
    kind = obj.get("message_type")
    if kind == "verbose_status":
        item = _field(obj, "item", str, "")
        return BackupItem(action=str(_field(obj, "action", str, "")), item=str(item)) if item else None
    if kind == "status":
        return BackupStatus(
            percent_done=_float(obj, "percent_done"),
            files_done=_int(obj, "files_done"),
            bytes_done=_int(obj, "bytes_done"),
            total_files=_int(obj, "total_files"),
            total_bytes=_int(obj, "total_bytes"),
        )
    if kind == "summary":
        snapshot_id = _field(obj, "snapshot_id", str, "")
        return BackupSummary(
            snapshot_id=snapshot_id,
            files_new=_int(obj, "files_new"),
            files_changed=_int(obj, "files_changed"),
            files_unmodified=_int(obj, "files_unmodified"),
            dirs_new=_int(obj, "dirs_new"),
            dirs_changed=_int(obj, "dirs_changed"),
            dirs_unmodified=_int(obj, "dirs_unmodified"),
            data_added=_int(obj, "data_added"),
            total_files_processed=_int(obj, "total_files_processed"),
            total_bytes_processed=_int(obj, "total_bytes_processed"),
            total_duration=_float(obj, "total_duration"),
            backup_start=_field(obj, "backup_start", str),
        )
    if kind == "error":
        return BackupError(
            item=str(_field(obj, "item", str, "")),
            during=str(_field(obj, "during", str, "")),
            message=_error_message(obj.get("error")),
        )
    if kind == "exit_error":
        return ExitError(code=_int(obj, "code"), message=str(_field(obj, "message", str, "")))
    return None


def parse_time(text: str) -> datetime:
    """Parse a time as restic prints it (RFC 3339 with up to nanoseconds).

    Raises ValueError for text that is not such a time.
    """
    # restic prints nanoseconds; Python's fromisoformat takes at most microseconds.
    head, _, rest = text.partition(".")
    if rest:
        digits = ""
        for ch in rest:
            if not ch.isdigit():
                break
            digits += ch
        zone = rest[len(digits):]
        text = f"{head}.{digits[:6].ljust(6, '0')}{zone}"
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def parse_snapshots(output: str) -> list[Snapshot]:
    """Parse ``restic snapshots --json`` (a JSON array) into snapshots, oldest first.

    Raises :class:`MalformedResticOutput` when it is not such an array.
    """
    try:
        data = json.loads(output or "[]")
    except json.JSONDecodeError as exc:
        raise MalformedResticOutput(f"snapshots output is not JSON: {exc}") from exc
    if not isinstance(data, list):
        raise MalformedResticOutput("snapshots output is not a list")
    snapshots = []
    for obj in data:
        if not isinstance(obj, dict):
            raise MalformedResticOutput("a snapshot entry is not an object")
        try:
            snapshots.append(
                Snapshot(
                    id=_field(obj, "id", str, ""),
                    short_id=_field(obj, "short_id", str, "") or str(obj.get("id", ""))[:8],
                    time=parse_time(_field(obj, "time", str, "")),
                    tree=_field(obj, "tree", str, ""),
                    paths=_strings(obj, "paths"),
                    hostname=_field(obj, "hostname", str, ""),
                    tags=_strings(obj, "tags"),
                    parent=_field(obj, "parent", str),
                    original=_field(obj, "original", str),
                )
            )
        except ValueError as exc:
            raise MalformedResticOutput(f"bad snapshot time: {exc}") from exc
    snapshots.sort(key=lambda s: s.time)
    return snapshots
