"""Writing an evidence bundle: the records in scope, their proofs, the keys, the report; signed; atomically.

The bundle is written to a temporary file beside ``out`` and renamed into place
only when complete, so a failure leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import time
import zipfile
from datetime import datetime
from typing import Any

from agents.contract import signing
from agents.contract.documents import to_json_document, utc_now
from agents.contract.errors import DrillError
from drill.drills import load_drill
from drill.evidence import layout
from drill.ledger.ledger import Entry, Ledger
from drill.reports.figures import drill_figures
from drill.reports.html import render_report
from drill.reports.i18n import LANGUAGES
from targets import hashing


class ExportError(DrillError):
    """Nothing to export, or the output cannot be written; the message says which."""

    code = "export_failed"


def _in_range(entry: Entry, since: datetime | None, until: datetime | None) -> bool:
    moment = datetime.fromisoformat(entry.recorded.replace("Z", "+00:00"))
    return (since is None or moment >= since) and (until is None or moment < until)


def key_listing(ledger: Ledger) -> list[dict[str, str]]:
    return [{"keyid": k.keyid, "owner": k.owner, "role": k.role} for k in ledger.keys().values()]


def export_bundle(ledger: Ledger, out: str, *, drill_id: str | None = None, since: datetime | None = None,
                  until: datetime | None = None) -> dict[str, Any]:
    """Write the bundle for one drill (or a time range) to ``out``; return its signed manifest's content.

    Raises :class:`ExportError` when the scope holds no record, and the drill
    errors of :func:`load_drill` for an unknown drill.
    """
    reports: dict[str, str] = {}
    if drill_id is not None:
        view = load_drill(ledger, drill_id)
        entries = view.entries
        figures = drill_figures(view.started, view.steps, view.finished)
        keys = key_listing(ledger)
        reports = {lang: render_report(figures, keys, lang) for lang in LANGUAGES}
        scope = layout.BundleScope(drill_id=drill_id)
    else:
        entries = [e for e in ledger.entries() if _in_range(e, since, until)]
        scope = layout.BundleScope(since=since, until=until)
    if not entries:
        raise ExportError("no record in the ledger falls in this scope")
    checkpoint = ledger.checkpoint()
    size = int(signing.envelope_payload(checkpoint)["tree_size"])
    algorithm = ledger.algorithm
    members: dict[str, bytes] = {layout.CHECKPOINT: signing.canonical_json(checkpoint),
                                 layout.README: layout.README_TEXT.encode()}
    listed_keys = []
    for key in ledger.keys().values():
        name = f"keys/{key.owner}-{key.keyid.split(':')[1][:16]}.pem"
        members[name] = key.public_pem.encode()
        listed_keys.append(layout.ListedKey(keyid=key.keyid, owner=key.owner, role=key.role, file=name))
    listed_entries = []
    for entry in entries:
        name = layout.record_name(entry.index, entry.kind)
        members[name] = signing.canonical_json(entry.envelope)
        listed_entries.append(layout.ListedEntry(
            index=entry.index, file=name, leaf_hash=entry.leaf_hash, record_id=entry.record_id, kind=entry.kind,
            drill_id=entry.drill_id, proof=ledger.inclusion_proof(entry.index, size)))
    listed_reports = []
    for lang, page in reports.items():
        name = layout.report_name(lang)
        members[name] = page.encode()
        listed_reports.append(layout.ListedReport(file=name, lang=lang,
                                                  digest=hashing.digest_bytes(algorithm, page.encode())))
    # Every member but the manifest itself, with its digest: nothing in the bundle is outside the signature.
    files = {name: hashing.digest_bytes(algorithm, content) for name, content in sorted(members.items())}
    manifest = layout.BundleManifest.model_validate({
        "schema": layout.SCHEMA, "created": utc_now(), "scope": scope, "algorithm": algorithm,
        "coordinator": ledger.coordinator.keyid,
        "checkpoint": layout.CheckpointRef(file=layout.CHECKPOINT, tree_size=size),
        "keys": listed_keys, "entries": listed_entries, "reports": listed_reports, "files": files})
    document = to_json_document(manifest)
    members[layout.MANIFEST] = signing.canonical_json(
        ledger.coordinator.sign_document(document, layout.BUNDLE_TYPE))
    _write_zip(out, members)
    return document


def _write_zip(out: str, members: dict[str, bytes]) -> None:
    directory = os.path.dirname(os.path.abspath(out))
    try:
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=".bundle-", suffix=".zip")
    except OSError as error:
        raise ExportError(f"cannot write in {directory}: {error.strerror}") from error
    try:
        with os.fdopen(fd, "wb") as handle, zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED) as bundle:
            moment = time.localtime()[:6]
            for name in sorted(members):
                info = zipfile.ZipInfo(name, date_time=moment)
                # Say "regular file" in the Unix mode bits: the verifier refuses links and directories.
                info.create_system = 3
                info.external_attr = (stat.S_IFREG | 0o644) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                bundle.writestr(info, members[name])
        os.replace(temporary, out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
