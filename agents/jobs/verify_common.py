"""What the files and the database verifications share: the backup's own record and the manifest's digest."""

from __future__ import annotations

from agents.contract.errors import DrillError
from agents.contract.records import BackupRecord, ManifestCheck
from agents.jobs.check import BackgroundCheck
from agents.records import RecordDraft, VerifyDraft
from agents.restic.exitcodes import ResticOutcome, damage_in
from agents.restic.runner import ResticError
from targets import hashing


class CouldNotVerify(DrillError):
    """The verification could not run to its end; the message says why. Never a pass."""

    code = "could_not_verify"


class CheckGate:
    """What stands between a verification and its restore: the repository check, waited for once.

    Calling it waits for the check, puts its result in the record (``repository_damaged`` for each problem) and
    says whether restoring may go on; it raises :class:`CouldNotVerify` when the check could not run.
    :meth:`settle` records the result without raising, for a verification that ended before it asked.
    """

    def __init__(self, check: BackgroundCheck, record: RecordDraft[VerifyDraft]) -> None:
        self._check = check
        self._record = record
        self._passed: bool | None = None
        self._error: str | None = None
        self._error_reported = False

    def __call__(self) -> bool:
        self._wait()
        if self._error is not None:
            self._error_reported = True
            raise CouldNotVerify(self._error)
        return bool(self._passed)

    @property
    def known(self) -> bool:
        """Whether the check has ended (asking costs no wait)."""
        return self._check.done

    def settle(self, *, report_error: bool = True) -> None:
        """Wait for the check and record its result; its error too, as ``could_not_verify``, if no one asked
        (and ``report_error``: not when the record already says why the verification could not run)."""
        self._wait()
        if self._error is not None and not self._error_reported and report_error:
            self._error_reported = True
            self._record.add("could_not_verify", "error", self._error)

    def _wait(self) -> None:
        if self._passed is not None:
            return
        outcome = self._check.outcome()
        self._record.details.check = outcome.result
        self._error = outcome.error
        for problem in outcome.result.problems:
            self._record.add("repository_damaged", "error", problem)
        self._passed = outcome.error is None and outcome.result.passed


def note_damage(error: ResticError, record: RecordDraft[VerifyDraft]) -> bool:
    """When restic failed because stored data is bad, add ``repository_damaged`` (restic's own line, the pack it
    names) and return True: that is a failed backup, whether ``restic check`` or the restore found it."""
    if error.outcome is not ResticOutcome.DAMAGED:
        return False
    damage = damage_in(error.stderr_tail)
    line = damage.line if damage else error.describe()
    pack = damage.pack if damage else None
    record.add("repository_damaged", "error", f"{line} (pack {pack})" if pack else line, pack)
    return True


# The most a manifest is read into memory when the record vouching for it does not say its size (records written
# before they did): about a million files.
LEGACY_MANIFEST_LIMIT = 512 << 20


def manifest_limit(vouching: BackupRecord) -> int:
    """How many bytes of the stored manifest to read at most: the size the record vouched for."""
    size = vouching.manifest.size if vouching.manifest is not None else None
    return size if size is not None else LEGACY_MANIFEST_LIMIT


def check_manifest_size(size: int, vouching: BackupRecord, record: RecordDraft[VerifyDraft]) -> bool:
    """False (with a ``manifest_digest_mismatch``) when the stored manifest is larger than the record vouched for:
    it is not that manifest, and it is not read into memory to find out."""
    limit = manifest_limit(vouching)
    if size <= limit:
        return True
    expected = vouching.manifest.digest if vouching.manifest is not None else "none"
    record.details.manifest = ManifestCheck(digest=f"not read: {size} bytes", expected=expected,
                                            checked_against="backup record", record_id=vouching.record_id)
    record.add("manifest_digest_mismatch", "error",
               f"the manifest in the repository is {size} bytes; the backup record {vouching.record_id} vouched for "
               f"{limit}: it is not the manifest of that backup (not read)")
    return False


def check_manifest_digest(data: bytes, vouching: BackupRecord, record: RecordDraft[VerifyDraft]) -> bool:
    """Compare the stored manifest's digest with what the signed backup record vouched for; record both; False if
    they differ. The snapshot's own tag is never the witness: whoever writes a snapshot writes its tags."""
    expected = vouching.manifest.digest if vouching.manifest is not None else ""
    digest = hashing.digest_bytes("sha256", data)
    record.details.manifest = ManifestCheck(digest=digest, expected=expected or "none",
                                            checked_against="backup record", record_id=vouching.record_id)
    if digest != expected:
        record.add("manifest_digest_mismatch", "error",
                   f"the manifest in the repository has digest {digest}, the backup record "
                   f"{vouching.record_id} says {expected or 'nothing'}")
        return False
    return True
