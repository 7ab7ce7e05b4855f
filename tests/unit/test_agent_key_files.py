"""restic's key-file format as the agent reads and writes it, and the S3 key folder's addressing (no restic here:
tests/integration/test_agent_keys.py opens these keys with both restic versions)."""

from __future__ import annotations

import base64
import json
import time

import pytest

from agents.restic.agentkey import AGENT_N, KeyFileError, open_key_file, seal_key_file
from agents.restic.keyfolders import S3KeyFolder

MASTER = b'{"mac":{"k":"AAAAAAAAAAAAAAAAAAAAAA==","r":"AAAAAAAAAAAAAAAAAAAAAA=="},"encrypt":"AAAA"}'


def test_a_sealed_key_file_opens_with_its_password_only() -> None:
    document = seal_key_file(MASTER, b"right", "app01")
    key = json.loads(document)
    assert (key["kdf"], key["N"], key["username"], key["hostname"]) == ("scrypt", AGENT_N, "drill-agent", "app01")
    assert len(base64.b64decode(key["salt"])) == 64  # restic refuses any other salt length
    assert open_key_file(document, b"right") == MASTER
    with pytest.raises(KeyFileError, match="does not open"):
        open_key_file(document, b"wrong")


def test_a_key_file_altered_in_one_bit_does_not_open() -> None:
    key = json.loads(seal_key_file(MASTER, b"right", "app01"))
    data = bytearray(base64.b64decode(key["data"]))
    data[20] ^= 1  # inside the ciphertext: the MAC no longer matches
    key["data"] = base64.b64encode(bytes(data)).decode()
    with pytest.raises(KeyFileError, match="does not open"):
        open_key_file(json.dumps(key).encode(), b"right")


@pytest.mark.parametrize(("change", "says"), [
    ({"N": 1 << 30}, "not ones restic makes"),  # a planted key file asking for 128 GiB: refused, not computed
    ({"N": 1000}, "not ones restic makes"),  # not a power of two
    ({"N": 1024, "r": 8, "p": 1 << 14}, "not ones restic makes"),  # little memory, minutes of work
    ({"kdf": "argon2"}, "not scrypt"),
    ({"salt": "not base64!"}, "not a restic key file"),
    ({"data": ""}, "too short"),
])
def test_a_key_file_restic_would_not_make_is_refused_at_once(change: dict[str, object], says: str) -> None:
    key = {**json.loads(seal_key_file(MASTER, b"right", "app01")), **change}
    started = time.monotonic()
    with pytest.raises(KeyFileError, match=says):
        open_key_file(json.dumps(key).encode(), b"right")
    assert time.monotonic() - started < 1  # nothing was computed for it


def test_not_json_is_not_a_key_file() -> None:
    with pytest.raises(KeyFileError, match="not a restic key file"):
        open_key_file(b"\x00\x01 not json", b"right")


@pytest.mark.parametrize(("url", "endpoint", "bucket", "folder"), [
    ("s3:http://127.0.0.1:9000/backups/app01", "http://127.0.0.1:9000", "backups", "app01/keys/"),
    ("s3:s3.example.net/backups/app01/db", "https://s3.example.net", "backups", "app01/db/keys/"),
    ("s3:https://s3.example.net/backups", "https://s3.example.net", "backups", "keys/"),
])
def test_an_s3_url_names_its_key_folder(url: str, endpoint: str, bucket: str, folder: str) -> None:
    found = S3KeyFolder.for_url(url, {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"})
    assert found is not None
    assert (found.endpoint, found.bucket, found.folder) == (endpoint, bucket, folder)


@pytest.mark.parametrize("url", ["s3:https://s3.example.net/", "s3:ftp://host/bucket/x"])
def test_an_s3_url_without_a_bucket_or_with_another_scheme_has_no_key_folder(url: str) -> None:
    assert S3KeyFolder.for_url(url, {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"}) is None
