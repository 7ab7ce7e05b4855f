"""What an evidence bundle holds and where, and the typed form of its manifest: shared by export and verification.

A bundle is a ZIP file of regular files (no directories, no links)::

    README.txt                 how to verify it, in English and Chinese
    bundle.dsse.json           the bundle's manifest, signed by the coordinator (DSSE)
    checkpoint.dsse.json       a checkpoint of the ledger (tree size, root, key set), signed by the coordinator
    keys/<owner>-<id>.pem      every public key of the ledger
    records/<index>-<kind>.dsse.json   the signed records in scope, exactly as in the ledger
    report.en.html, report.zh-CN.html  the drill report (drill bundles)

The manifest (``drill.bundle/v2``) lists each record with its ledger index,
leaf hash and inclusion proof against the checkpoint, each key with its
fingerprint, each report with its digest, and -- in ``files`` -- every other
member of the bundle (README and checkpoint included) with its digest in the
bundle's algorithm: nothing in a bundle is outside what the coordinator signed.
A ``drill.bundle/v1`` manifest had no ``files`` table (its README was not
covered); it is still read, to say so.

The manifest and the checkpoint are read only through :class:`BundleManifest`
and :class:`CheckpointBody`, so a field of the wrong type is a named problem,
never a crash.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import AfterValidator, Field, StrictInt, StringConstraints, model_validator

from agents.contract.documents import Document, Timestamp
from drill.reports.i18n import LANGUAGES

BUNDLE_TYPE = "application/vnd.drill.bundle+json"
CHECKPOINT_TYPE = "application/vnd.drill.checkpoint+json"  # as the ledger signs its checkpoints
MANIFEST = "bundle.dsse.json"
CHECKPOINT = "checkpoint.dsse.json"
README = "README.txt"
SCHEMA = "drill.bundle/v2"
SCHEMA_V1 = "drill.bundle/v1"  # before the files table: README and members not covered

# Limits that keep a hostile file from exhausting the verifier.
MAX_BUNDLE_BYTES = 1 << 30
MAX_MEMBERS = 20_000
MAX_MEMBER_BYTES = 64 << 20
MAX_TOTAL_BYTES = 512 << 20
MAX_RATIO = 200  # uncompressed / compressed, for members above 1 MiB
MAX_PROOF = 64  # hashes in an inclusion proof: enough for a tree of 2**64 records


def record_name(index: int, kind: str) -> str:
    return f"records/{index:08d}-{kind}.dsse.json"


def report_name(lang: str) -> str:
    return f"report.{lang}.html"


# -- the manifest, typed -------------------------------------------------------------

# ``algorithm:hex`` of a 256-bit digest (SHA-256 and SM3 alike): hashes, digests, key fingerprints.
Digest = Annotated[str, StringConstraints(strict=True, pattern=r"^(sha256|sm3):[0-9a-f]{64}$")]
# No control characters in names and words: they are printed on the auditor's terminal.
MemberName = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=1024,
                                              pattern=r"^[^\x00-\x1f\x7f-\x9f]+$")]
Text = Annotated[str, StringConstraints(strict=True, max_length=1024, pattern=r"^[^\x00-\x1f\x7f-\x9f]*$")]
Algorithm = Literal["sha256", "sm3"]
Count = Annotated[StrictInt, Field(ge=0)]


def _known_language(lang: str) -> str:
    if lang not in LANGUAGES:
        raise ValueError(f"{lang[:20]!r} is not one of the report languages {', '.join(LANGUAGES)}")
    return lang


class ListedKey(Document):
    """A public key of the ledger: its fingerprint, whose it is, and the member holding its PEM."""

    keyid: Digest
    owner: Text
    role: Text
    file: MemberName


class ListedEntry(Document):
    """A record in scope: where it is in the ledger and in the bundle, and its inclusion proof."""

    index: Count
    file: MemberName
    leaf_hash: Digest
    record_id: Text
    kind: Text
    drill_id: Text | None = None
    proof: Annotated[list[Digest], Field(max_length=MAX_PROOF)]


class ListedReport(Document):
    file: MemberName
    lang: Annotated[Text, AfterValidator(_known_language)]
    digest: Digest


class CheckpointRef(Document):
    file: MemberName
    tree_size: Count


class BundleScope(Document):
    """One drill, or the records taken into the ledger in a time range."""

    drill_id: Annotated[Text, Field(min_length=1)] | None = None
    since: Timestamp | None = None
    until: Timestamp | None = None


class BundleManifest(Document):
    """The content of ``bundle.dsse.json`` (v2; a v1 manifest reads with ``files`` None)."""

    schema_: Literal["drill.bundle/v2", "drill.bundle/v1"] = Field(default="drill.bundle/v2", alias="schema")
    created: Timestamp
    scope: BundleScope
    algorithm: Algorithm
    coordinator: Digest
    checkpoint: CheckpointRef
    keys: list[ListedKey]
    entries: list[ListedEntry]
    reports: list[ListedReport] = Field(default_factory=list)
    files: dict[MemberName, Digest] | None = None  # member -> digest: every member but the manifest

    @model_validator(mode="after")
    def _covers_its_members(self) -> Self:
        if self.schema_ == SCHEMA and self.files is None:
            raise ValueError("files: a drill.bundle/v2 manifest lists every member with its digest")
        if self.reports and self.scope.drill_id is None:
            raise ValueError("reports: only a drill's bundle has reports")
        for report in self.reports:
            if report.file != report_name(report.lang):
                raise ValueError(f"reports: the {report.lang} report is {report_name(report.lang)}, "
                                 f"not {report.file[:80]}")
        return self


class CheckpointBody(Document):
    """What a checkpoint of the ledger signs (as ``drill.ledger.ledger`` writes it), typed for reading."""

    schema_: Literal["drill.checkpoint/v1"] = Field(alias="schema")
    tree_size: Count
    root: Digest
    issued: Timestamp
    algorithm: Algorithm
    keys_digest: Digest


README_TEXT = """\
drill evidence bundle / drill 证据包
====================================

Verify this bundle offline, on any machine with drill installed:

    drillctl evidence verify THIS-FILE.zip --trust COORDINATOR-FINGERPRINT

Get the coordinator's fingerprint from its operators through a channel you trust
(it is also printed in the report). Exit code 0: every record's signature holds,
every record is in the ledger checkpoint the coordinator signed (Merkle inclusion
proofs, RFC 6962), nothing was removed, reordered or added, and the report's
figures follow from the records. Every file of the bundle -- this README too -- is
listed with its digest in the manifest the coordinator signed (bundle.dsse.json):
a file changed, added, removed, or stored as a link or directory makes the bundle
not intact. Anything else names what is wrong.

By hand, with openssl (3.0 or newer), for one record:
  1. The record file is a DSSE envelope: {"payloadType", "payload" (base64), "signatures": [{"keyid", "sig"}]}.
  2. Decode the payload:  jq -r .payload R.dsse.json | base64 -d > payload.json
     and the signature:   jq -r '.signatures[0].sig' R.dsse.json | base64 -d > sig.bin
  3. Build what was signed: "DSSEv1 <len(type)> <type> <len(payload)> <payload>"
       type=$(jq -r .payloadType R.dsse.json)
       printf 'DSSEv1 %d %s %d ' ${#type} "$type" $(stat -c %s payload.json) > pae.bin; cat payload.json >> pae.bin
  4. Find the key whose fingerprint is the keyid in keys/ (the fingerprint is the SHA-256 of the raw key:
       openssl pkey -pubin -in keys/KEY.pem -outform DER | tail -c 32 | sha256sum), then:
       openssl pkeyutl -verify -pubin -inkey keys/KEY.pem -rawin -in pae.bin -sigfile sig.bin
     It prints "Signature Verified Successfully".

离线校验本证据包（任意安装了 drill 的计算机）：

    drillctl evidence verify 证据包.zip --trust 协调器指纹

协调器指纹须通过可信渠道向其运维人员获取（报告中也有列出）。退出码为 0 表示：每条记录的签名有效，
每条记录都包含在协调器签名的账本检查点中（Merkle 包含证明，RFC 6962），没有记录被删除、调换或添加，
且报告中的数字与记录一致。证据包中的每个文件（包括本说明）及其摘要都列在协调器签名的清单
（bundle.dsse.json）中：任何文件被修改、增加、删除，或以链接、目录形式存放，证据包即不完整。
其他情况会指出具体问题。上面的 openssl 步骤说明了如何手工校验单条记录的签名。
"""
