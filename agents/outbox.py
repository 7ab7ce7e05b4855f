"""Where an agent keeps its signed records: waiting for the coordinator (``outbox/``), then taken (``outbox/sent/``).

:class:`Outbox` is the queue: write a record, list what waits, mark what the
coordinator took, set aside what it refused. :class:`RecordStore` looks up the
agent's own earlier records (a backup's record, when its verification runs on
the same host), trusting only what its own key signed.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from datetime import UTC

from agents.contract import signing
from agents.contract.documents import DocumentError, to_json_document
from agents.contract.records import AgentRecordKind, BackupRecord, SignedRecord
from agents.keys import KeyStore


class Outbox:
    """The directory of signed records waiting for the coordinator, one DSSE envelope per file."""

    def __init__(self, state_dir: str, keys: KeyStore) -> None:
        self.path = os.path.join(state_dir, "outbox")
        self.sent_path = os.path.join(self.path, "sent")
        self.refused_path = os.path.join(self.path, "refused")
        self.keys = keys

    def write(self, record: AgentRecordKind) -> SignedRecord:
        """Sign ``record`` and write it atomically (temp file, fsync, rename)."""
        os.makedirs(self.path, mode=0o700, exist_ok=True)
        envelope = self.keys.key.sign_document(to_json_document(record))
        stamp = record.timings.finished.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%f")[:-3] + "Z"
        final = os.path.join(self.path, f"{stamp}-{record.kind}-{record.job.id}.json")
        fd, temporary = tempfile.mkstemp(dir=self.path, prefix=".incoming-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(envelope, handle, indent=2, sort_keys=True)
                handle.write("\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        return SignedRecord(envelope, record, self.keys.key.keyid, final)

    def list(self, *, sent: bool = False) -> list[str]:
        """Paths of the records waiting (or, with ``sent``, already taken), oldest first."""
        folder = self.sent_path if sent else self.path
        if not os.path.isdir(folder):
            return []
        return sorted(
            os.path.join(folder, name)
            for name in os.listdir(folder)
            if name.endswith(".json") and not name.startswith(".")
        )

    def read_waiting(self) -> Iterator[tuple[str, object]]:
        """Each waiting record's path and JSON, oldest first; an unreadable file as ``{"unreadable": why}``.

        A file gone between the listing and its reading was taken by another
        ingest and is left out: it waits no more, and it is not unreadable.
        """
        for path in self.list():
            try:
                envelope = read_envelope(path)
            except FileNotFoundError:
                continue
            except (OSError, signing.MalformedEnvelope) as error:
                envelope = {"unreadable": str(error)}
            yield path, envelope

    def mark_sent(self, path: str) -> None:
        """Move a record the coordinator has taken out of the waiting list (again: a no-op)."""
        os.makedirs(self.sent_path, mode=0o700, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):  # another ingest moved it first
            os.replace(path, os.path.join(self.sent_path, os.path.basename(path)))

    def was_refused(self, job_id: str) -> bool:
        """Whether the coordinator refused a record of job ``job_id`` (:meth:`set_aside`)."""
        return os.path.isdir(self.refused_path) and any(
            name.endswith(f"-{job_id}.json") for name in os.listdir(self.refused_path))

    def set_aside(self, path: str, reason: str) -> None:
        """Move a record the coordinator refused to ``refused/``, beside a ``.reason`` file."""
        os.makedirs(self.refused_path, mode=0o700, exist_ok=True)
        target = os.path.join(self.refused_path, os.path.basename(path))
        with contextlib.suppress(FileNotFoundError):
            os.replace(path, target)
            with open(target + ".reason", "w", encoding="utf-8") as handle:
                handle.write(reason + "\n")


def read_envelope(path: str) -> object:
    """The JSON in the file at ``path``. Raises ``OSError`` or :class:`signing.MalformedEnvelope`."""
    with open(path, "rb") as handle:
        data = handle.read(16 << 20)
    try:
        return json.loads(data)
    except ValueError as error:
        raise signing.MalformedEnvelope(f"{os.path.basename(path)} is not JSON: {error}") from error


class RecordStore:
    """The agent's own records, waiting or sent, readable only when its own key signed them."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    def paths(self, kind: str | None = None) -> list[str]:
        """The agent's record files (of ``kind`` only, when given), waiting or sent."""
        every = [*self.outbox.list(), *self.outbox.list(sent=True)]
        return every if kind is None else [p for p in every if f"-{kind}-" in os.path.basename(p)]

    def find_job(self, job_id: str) -> str | None:
        """The record file of job ``job_id``, waiting or sent."""
        return next((p for p in self.paths() if os.path.basename(p).endswith(f"-{job_id}.json")), None)

    def read(self, path: str) -> SignedRecord:
        """The record at ``path``, its signature checked against this agent's key.

        Raises :class:`signing.SignatureError`, :class:`DocumentError` or ``OSError``."""
        return SignedRecord.open(read_envelope(path), self.outbox.keys.verification_keys(), path)

    def backup_record(self, job_id: str) -> BackupRecord | None:
        """The backup record of job ``job_id``, or None when this host has none.

        Raises :class:`signing.SignatureError` or :class:`DocumentError` when one is there but cannot be trusted.
        """
        path = self.find_job(job_id)
        if path is None:
            return None
        try:
            record = self.read(path).record
        except OSError as error:
            raise DocumentError(f"{os.path.basename(path)} cannot be read: {error.strerror}") from error
        if not isinstance(record, BackupRecord):
            raise DocumentError(f"{os.path.basename(path)} is a {record.kind} record, not a backup record")
        return record
