"""A repository's ``keys/`` folder, read and written by the agent itself: on a local file system, or on S3.

Only what :mod:`agents.restic.agentkey` needs: list the key files, read one,
say whether one is there, write a new one whole. restic's other files are never
touched here. On S3, requests are signed with AWS Signature Version 4 from the
repository's own credentials (its env file); addressed path-style
(``endpoint/bucket/prefix/keys/NAME``), as restic's S3 URLs name them.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import hmac
import http.client
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Protocol
from xml.etree import ElementTree

from agents.restic.repository import Repository
from agents.state import write_atomically

KEY_ID = re.compile(r"[0-9a-f]{64}")  # a key file's name, as restic parses it; anything else is not read
MAX_LISTING_BYTES = 4 << 20  # a listing of a keys/ folder: a few hundred bytes a key
TIMEOUT = 15.0  # the most all of one open's requests take: a key folder that does not answer is not worth more


class KeyFolderError(OSError):
    """The key folder could not be read or written (the message says what the store answered)."""


class KeyFolder(Protocol):
    """A repository's ``keys/`` folder."""

    def names(self) -> list[str]:
        """The key files' names (restic's key ids; nothing else in the folder), sorted; [] when there is no
        folder (no repository yet)."""
        ...

    def read(self, name: str, limit: int) -> bytes:
        """Key file ``name``, at most ``limit`` bytes of it."""
        ...

    def holds(self, name: str) -> bool:
        """Whether key file ``name`` is there."""
        ...

    def write(self, name: str, data: bytes) -> None:
        """Store key file ``name`` whole (never half of it)."""
        ...

    def remove(self, name: str) -> None:
        """Remove key file ``name`` (gone already is fine)."""
        ...


def key_folder(repository: Repository) -> KeyFolder | None:
    """The key folder of ``repository`` when the agent can reach it itself (local, or ``s3:`` with an access key
    in its env file); None for any other backend."""
    folder = repository.local_path
    if folder is not None:
        return LocalKeyFolder(os.path.join(folder, "keys"))
    if repository.url.startswith("s3:") and "AWS_ACCESS_KEY_ID" in repository.env \
            and "AWS_SECRET_ACCESS_KEY" in repository.env:
        # All its requests within the repository's connect_timeout (at most TIMEOUT): an S3 endpoint that does
        # not answer delays the job by that much before restic meets it in its turn.
        return S3KeyFolder.for_url(repository.url, repository.env, budget=min(TIMEOUT, repository.connect_timeout))
    return None


class LocalKeyFolder:
    """``keys/`` of a repository on a local file system."""

    def __init__(self, path: str) -> None:
        self.path = path

    def names(self) -> list[str]:
        try:
            return sorted(name for name in os.listdir(self.path) if KEY_ID.fullmatch(name))
        except FileNotFoundError:
            return []

    def read(self, name: str, limit: int) -> bytes:
        with open(os.path.join(self.path, name), "rb") as handle:
            return handle.read(limit)

    def holds(self, name: str) -> bool:
        return os.path.isfile(os.path.join(self.path, name))

    def write(self, name: str, data: bytes) -> None:
        """Written as restic's local backend writes its files: a temporary name, synced, renamed, the folder
        synced; read-only, and readable by the group when the repository's ``config`` is (a repository shared
        by a group must stay openable by its other members)."""
        try:
            mode = os.stat(os.path.join(os.path.dirname(self.path), "config")).st_mode & 0o440
        except OSError:
            mode = 0o400
        write_atomically(os.path.join(self.path, name), data, mode=mode or 0o400, durable=True)

    def remove(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.path, name))


class S3KeyFolder:
    """``keys/`` of a repository on S3, through signed HTTP requests (a PUT is whole by S3's own rule)."""

    def __init__(self, endpoint: str, bucket: str, prefix: str, env: Mapping[str, str],
                 budget: float = TIMEOUT) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.deadline = time.monotonic() + budget  # for all its requests together
        self.bucket = bucket
        self.folder = f"{prefix}/keys/" if prefix else "keys/"
        self._access = env["AWS_ACCESS_KEY_ID"]
        self._secret = env["AWS_SECRET_ACCESS_KEY"]
        self._token = env.get("AWS_SESSION_TOKEN")
        self._region = (env.get("AWS_DEFAULT_REGION") or env.get("AWS_REGION") or _aws_region(self.endpoint)
                        or "us-east-1")

    @classmethod
    def for_url(cls, url: str, env: Mapping[str, str], budget: float = TIMEOUT) -> S3KeyFolder | None:
        """The key folder of restic S3 URL ``url`` (``s3:https://host/bucket/prefix``; without a scheme, https);
        None when it names no bucket."""
        location = url.removeprefix("s3:")
        if "://" not in location:
            location = "https://" + location
        parts = urllib.parse.urlsplit(location)
        bucket, _, prefix = parts.path.strip("/").partition("/")
        if not parts.netloc or not bucket or parts.scheme not in ("http", "https"):
            return None
        return cls(f"{parts.scheme}://{parts.netloc}", bucket, prefix.strip("/"), env, budget)

    def names(self) -> list[str]:
        try:
            body = self._request("GET", "", {"list-type": "2", "prefix": self.folder, "max-keys": "1000"},
                                 limit=MAX_LISTING_BYTES)
        except KeyFolderError as error:
            if error.errno == 404:  # no bucket yet: no repository yet
                return []
            raise
        try:
            root = ElementTree.fromstring(body)  # noqa: S314 (the store's answer, size-bounded; expat limits expansion)
        except ElementTree.ParseError as error:
            raise KeyFolderError(f"the S3 listing of {self.folder} is not XML: {error}") from error
        names = [element.text or "" for element in root.iter() if element.tag.endswith("}Key") or element.tag == "Key"]
        return sorted(n.removeprefix(self.folder) for n in names
                      if n.startswith(self.folder) and KEY_ID.fullmatch(n.removeprefix(self.folder)))

    def read(self, name: str, limit: int) -> bytes:
        return self._request("GET", self.folder + name, limit=limit)

    def holds(self, name: str) -> bool:
        try:
            self._request("HEAD", self.folder + name, limit=0)
        except KeyFolderError as error:
            if error.errno == 404:
                return False
            raise
        return True

    def write(self, name: str, data: bytes) -> None:
        self._request("PUT", self.folder + name, body=data, limit=1 << 16)

    def remove(self, name: str) -> None:
        self._request("DELETE", self.folder + name, limit=1 << 16)  # S3 answers 204 for a key that is gone too

    def _request(self, method: str, key: str, query: dict[str, str] | None = None, body: bytes = b"",
                 limit: int = 0) -> bytes:
        path = "/" + urllib.parse.quote(f"{self.bucket}/{key}" if key else self.bucket, safe="/-_.~")
        canonical_query = "&".join(f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}"
                                   for k, v in sorted((query or {}).items()))
        headers = self._signed_headers(method, path, canonical_query, body)
        url = self.endpoint + path + (f"?{canonical_query}" if canonical_query else "")
        request = urllib.request.Request(  # noqa: S310 (the scheme is http or https: for_url)
            url, data=body if method == "PUT" else None, method=method, headers=headers)
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise KeyFolderError(f"S3 at {self.endpoint} took too long to answer")
        try:
            with _OPENER.open(request, timeout=remaining) as response:
                return bytes(response.read(limit + 1)[:limit]) if limit else b""
        except urllib.error.HTTPError as error:
            try:
                said = error.read(2000).decode("utf-8", "replace") if method != "HEAD" else ""
            except (OSError, http.client.HTTPException):
                said = ""
            raise KeyFolderError(error.code, f"S3 answered {error.code} to {method} {key or self.bucket}: "
                                 f"{_s3_message(said)}") from error
        except (OSError, http.client.HTTPException, ValueError) as error:  # ValueError: a URL http.client refuses
            raise KeyFolderError(f"S3 at {self.endpoint} could not be reached: {error}") from error

    def _signed_headers(self, method: str, path: str, canonical_query: str, body: bytes) -> dict[str, str]:
        """AWS Signature Version 4 for one request (``host``, the payload's hash and the time signed)."""
        now = datetime.datetime.now(datetime.UTC)
        stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        headers = {"host": urllib.parse.urlsplit(self.endpoint).netloc,
                   "x-amz-content-sha256": hashlib.sha256(body).hexdigest(), "x-amz-date": stamp}
        if self._token:
            headers["x-amz-security-token"] = self._token
        signed = ";".join(sorted(headers))
        canonical = "\n".join([method, path, canonical_query,
                               "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)), signed,
                               headers["x-amz-content-sha256"]])
        scope = f"{day}/{self._region}/s3/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
        key = ("AWS4" + self._secret).encode()
        for part in (day, self._region, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        headers["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={self._access}/{scope}, SignedHeaders={signed}, "
                                    f"Signature={signature}")
        return headers


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is an error here: urllib would send the signed headers (the session token) to the new host."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def _aws_region(endpoint: str) -> str | None:
    """The region an AWS endpoint's host name names (``s3.eu-west-1.amazonaws.com``, ``s3-eu-west-1…``)."""
    found = re.fullmatch(r"s3[.-]([a-z0-9-]+)\.amazonaws\.com(:\d+)?", urllib.parse.urlsplit(endpoint).netloc)
    return found.group(1) if found else None


def _s3_message(body: str) -> str:
    """The ``<Message>`` of an S3 error document, else its first 200 characters."""
    start, end = body.find("<Message>"), body.find("</Message>")
    return body[start + 9:end] if 0 <= start < end else body[:200]
