"""Reaching an S3 repository through restic's ``rclone:`` backend, for a copy between two providers.

restic reads one set of S3 credentials (``AWS_ACCESS_KEY_ID``, …) per process,
so ``restic copy`` cannot open a source and a destination that need different
keys through its own S3 backend. Its ``rclone:`` backend can: each repository
becomes a remote of its own, defined entirely by rclone's ``RCLONE_CONFIG_<REMOTE>_*``
environment variables, so both key pairs travel in the environment (never on
argv, never in a file) and cannot collide.

:func:`copy_pair` is pure: given the two repositories, it returns the same
repositories re-addressed as rclone remotes. Only ``s3:`` URLs can be
re-addressed; any other backend raises :class:`NotTranslatable`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from urllib.parse import urlsplit

from agents.restic.repository import Repository

# The remotes' names: fixed, so that the two sets of variables never share a name.
SOURCE_REMOTE = "DRILL_FROM"
DESTINATION_REMOTE = "DRILL_TO"
# rclone must not read an operator's own rclone.conf (it could redefine the remotes).
_ISOLATED = {"RCLONE_CONFIG": "/dev/null"}

# restic's S3 variables and the rclone S3 option each becomes.
_S3_OPTIONS = {
    "AWS_ACCESS_KEY_ID": "ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY": "SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN": "SESSION_TOKEN",
    "AWS_DEFAULT_REGION": "REGION",
    "AWS_REGION": "REGION",
}


class NotTranslatable(ValueError):
    """A repository that has no rclone equivalent here (only ``s3:`` repositories do)."""


def credentials_clash(source: Repository, destination: Repository) -> list[str]:
    """The environment variables both repositories set, to different values (sorted names, never values)."""
    return sorted(k for k in set(source.env) & set(destination.env) if source.env[k] != destination.env[k])


def s3_remote(repository: Repository, remote: str) -> Repository:
    """``repository`` (an ``s3:`` URL) addressed as ``rclone:<remote>:<bucket>/<prefix>``.

    The returned repository's ``env`` defines the remote and holds nothing else.
    Raises :class:`NotTranslatable` for another backend or an S3 URL without a bucket.
    """
    if not repository.url.startswith("s3:"):
        raise NotTranslatable(f"repository {repository.name!r} is not on S3 (its URL does not start with 's3:')")
    location = repository.url.removeprefix("s3:")
    if "://" not in location:  # 's3:s3.amazonaws.com/bucket/prefix' means https
        location = "https://" + location
    parts = urlsplit(location)
    path = parts.path.strip("/")
    if not parts.netloc or not path:
        raise NotTranslatable(f"repository {repository.name!r}: its S3 URL names no bucket")
    prefix = f"RCLONE_CONFIG_{remote}_"
    env = {
        f"{prefix}TYPE": "s3",
        f"{prefix}PROVIDER": "Other",
        f"{prefix}ENV_AUTH": "false",
        f"{prefix}ENDPOINT": f"{parts.scheme}://{parts.netloc}",
        f"{prefix}FORCE_PATH_STYLE": "true",
    }
    for variable, option in _S3_OPTIONS.items():
        if variable in repository.env:
            env[prefix + option] = repository.env[variable]
    return dataclasses.replace(repository, url=f"rclone:{remote}:{path}", env=env)


def copy_pair(source: Repository, destination: Repository) -> tuple[Repository, Repository]:
    """Both repositories as rclone remotes; the destination's ``env`` carries both remotes' settings.

    restic starts one rclone per repository with its own environment, so each
    rclone sees both definitions; the remotes' distinct names keep them apart.
    Raises :class:`NotTranslatable` when either is not on S3.
    """
    source_remote = s3_remote(source, SOURCE_REMOTE)
    destination_remote = s3_remote(destination, DESTINATION_REMOTE)
    env: Mapping[str, str] = {**source_remote.env, **destination_remote.env, **_ISOLATED}
    return source_remote, dataclasses.replace(destination_remote, env=env)
