"""The embedded default: the whole story on one machine, with nothing to configure.

Creates sample data, a local repository and a second local repository standing
in for the same-city site, backs the data up at all three levels (changing some
files between runs, so each level has work to do), and lists the snapshots.
"""

from __future__ import annotations

import os
import random
import secrets
import textwrap
from collections.abc import Callable
from dataclasses import dataclass

from agents.config.model import AgentConfig, load_config
from agents.jobs.backup import run_policy_backup
from agents.records import ResultRecord
from agents.repositories import open_repository
from policies.levels import Level

Say = Callable[[str], None]


@dataclass(frozen=True)
class DemoResult:
    config: AgentConfig
    records: list[ResultRecord]


def make_sample_data(root: str, *, files: int = 200, seed: int = 7) -> None:
    """Write a small tree of text and binary files under ``root`` (deterministic for a seed)."""
    rng = random.Random(seed)  # noqa: S311 -- sample data, not security
    for index in range(files):
        folder = os.path.join(root, f"dept-{index % 5}", f"case-{index % 17:02d}")
        os.makedirs(folder, exist_ok=True)
        size = rng.choice([200, 2_000, 20_000, 200_000])
        with open(os.path.join(folder, f"doc-{index:04d}.bin"), "wb") as handle:
            handle.write(rng.randbytes(size))
    os.makedirs(os.path.join(root, "cache"), exist_ok=True)
    with open(os.path.join(root, "cache", "ignored.dat"), "wb") as handle:
        handle.write(b"excluded by the 'cache/' pattern\n")
    with open(os.path.join(root, "draft.tmp"), "w", encoding="utf-8") as handle:
        handle.write("excluded by the '*.tmp' pattern\n")


def change_some_files(root: str, fraction: float, seed: int) -> int:
    """Append to a fraction of the sample files; return how many changed."""
    rng = random.Random(seed)  # noqa: S311
    paths = sorted(
        os.path.join(d, f) for d, _, names in os.walk(root) for f in names if f.endswith(".bin")
    )
    chosen = rng.sample(paths, max(1, int(len(paths) * fraction)))
    for path in chosen:
        with open(path, "ab") as handle:
            handle.write(rng.randbytes(100))
    return len(chosen)


def write_demo_config(directory: str, restic_binary: str | None = None) -> str:
    """Write the demo's config (two local repositories) and password file; return the config path."""
    os.makedirs(directory, exist_ok=True)
    password_file = os.path.join(directory, "restic.pw")
    if not os.path.exists(password_file):
        fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(24) + "\n")
    restic_line = f"restic: {{binary: {restic_binary}}}\n" if restic_binary else ""
    config = textwrap.dedent(
        f"""\
        host: demo-host
        state_dir: {directory}/state
        RESTIC_LINErepositories:
          local:
            url: {directory}/repo-local
            password_file: {password_file}
          same-city:
            url: {directory}/repo-same-city
            password_file: {password_file}
        targets:
          documents:
            kind: files
            paths: [{directory}/data]
            exclude: ["*.tmp", "cache/"]
        policies:
          nightly:
            targets: [documents]
            repository: local
            replicate_to: [same-city]
            schedule: {{full: "sun 01:00", differential: "wed 01:00", incremental: "daily 01:00"}}
            max_full_interval: 14d
            retention: {{full: 8, differential: 4, incremental: 14}}
        """
    ).replace("RESTIC_LINE", restic_line)
    path = os.path.join(directory, "agent.yaml")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(config)
    return path


def run_demo(directory: str, say: Say, restic_binary: str | None = None) -> DemoResult:
    """Run the embedded demo in ``directory`` and return its records."""
    directory = os.path.abspath(directory)
    data = os.path.join(directory, "data")
    if not os.path.isdir(data):
        say(f"writing sample data to {data}")
        make_sample_data(data)
    config = load_config(write_demo_config(directory, restic_binary))
    for repository in config.repositories.values():
        created = open_repository(config, repository.name).init()
        say(f"repository {repository.name}: {'created' if created else 'exists'} at {repository.url}")
    records: list[ResultRecord] = []
    steps = [(Level.FULL, 0.0), (Level.DIFFERENTIAL, 0.05), (Level.INCREMENTAL, 0.02)]
    for number, (level, fraction) in enumerate(steps):
        if fraction:
            changed = change_some_files(data, fraction, seed=number)
            say(f"changed {changed} files")
        for record in run_policy_backup(config, "nightly", level):
            records.append(record)
            doc = record.to_document()
            manifest = doc["manifest"] or {}
            say(
                f"{level.value:12} -> {doc['outcome']}: snapshot {(doc['snapshot'] or {}).get('id', '-')[:12]}, "
                f"{manifest.get('files', 0)} files, {manifest.get('hashed_files', 0)} hashed, "
                f"{manifest.get('reused_hashes', 0)} reused, replicated: "
                f"{bool(doc['replication']) and all(r['verified'] for r in doc['replication'])}"
            )
    return DemoResult(config, records)
