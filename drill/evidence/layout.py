"""What an evidence bundle holds and where: shared by export and verification.

A bundle is a ZIP file::

    README.txt                 how to verify it, in English and Chinese
    bundle.dsse.json           the bundle's manifest, signed by the coordinator (DSSE)
    checkpoint.dsse.json       a checkpoint of the ledger (tree size, root, key set), signed by the coordinator
    keys/<owner>-<id>.pem      every public key of the ledger
    records/<index>-<kind>.dsse.json   the signed records in scope, exactly as in the ledger
    report.en.html, report.zh-CN.html  the drill report (drill bundles)

The manifest lists each record with its ledger index, leaf hash and inclusion
proof against the checkpoint, each key with its fingerprint, and each report
with its digest.
"""

from __future__ import annotations

BUNDLE_TYPE = "application/vnd.drill.bundle+json"
MANIFEST = "bundle.dsse.json"
CHECKPOINT = "checkpoint.dsse.json"
README = "README.txt"
SCHEMA = "drill.bundle/v1"

# Limits that keep a hostile file from exhausting the verifier.
MAX_BUNDLE_BYTES = 1 << 30
MAX_MEMBERS = 20_000
MAX_MEMBER_BYTES = 64 << 20
MAX_TOTAL_BYTES = 512 << 20
MAX_RATIO = 200  # uncompressed / compressed, for members above 1 MiB


def record_name(index: int, kind: str) -> str:
    return f"records/{index:08d}-{kind}.dsse.json"


def report_name(lang: str) -> str:
    return f"report.{lang}.html"


README_TEXT = """\
drill evidence bundle / drill 证据包
====================================

Verify this bundle offline, on any machine with drill installed:

    drillctl evidence verify THIS-FILE.zip --trust COORDINATOR-FINGERPRINT

Get the coordinator's fingerprint from its operators through a channel you trust
(it is also printed in the report). Exit code 0: every record's signature holds,
every record is in the ledger checkpoint the coordinator signed (Merkle inclusion
proofs, RFC 6962), nothing was removed, reordered or added, and the report's
figures follow from the records. Anything else names what is wrong.

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
且报告中的数字与记录一致。其他情况会指出具体问题。上面的 openssl 步骤说明了如何手工校验单条记录的签名。
"""
