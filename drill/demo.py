"""The embedded default: the whole story on one machine, with nothing to configure.

Creates sample data (and, when the machine runs them, a sample database in its
PostgreSQL on 127.0.0.1:5432 and its MariaDB/MySQL on 127.0.0.1:3306), a local
repository and a second local repository standing in for the same-city site;
backs everything up at all three levels (changing some files between runs, so
each level has work to do) and replicates it; verifies the newest backups;
runs a same-city drill; exports the evidence bundle and verifies it offline;
writes the drill's reports.
"""

from __future__ import annotations

import os
import random
import secrets
import tempfile
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agents.api import LocalAgent
from agents.contract.jobs import BackupJob, VerifyJob
from agents.contract.records import BackupRecord, DumpManifestInfo, FilesManifestInfo, SignedRecord, VerifyRecord
from drill.config import load_drill_config
from drill.coordinator import ingest, open_ledger
from drill.drills import run_drill, start_drill
from drill.evidence.export import export_bundle, key_listing
from drill.evidence.verify import verify_bundle
from drill.reports.figures import drill_figures
from drill.reports.html import render_report
from drill.reports.i18n import LANGUAGES
from drill.reports.pdf import html_to_pdf
from policies.levels import Level

Say = Callable[[str], None]


@dataclass
class DemoResult:
    agent_config: str
    records: list[SignedRecord] = field(default_factory=list)
    verifications: list[SignedRecord] = field(default_factory=list)
    drill_config: str = ""
    drill: dict[str, Any] = field(default_factory=dict)
    bundle: str = ""
    bundle_intact: bool = False
    reports: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (bool(self.records) and all(_succeeded(r) for r in self.records)
                and all(_succeeded(r) for r in self.verifications)
                and self.drill.get("verdict") == "passed" and self.bundle_intact)


def _succeeded(signed: SignedRecord) -> bool:
    return isinstance(signed.record, BackupRecord | VerifyRecord) and signed.record.outcome == "success"


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


DEMO_DATABASE = "drill_demo"


def _postgres_demo_database(say: Say) -> bool:
    """Create (once) the demo database in the machine's PostgreSQL, if it runs with trust auth; False otherwise."""
    import psycopg  # noqa: PLC0415

    try:
        with psycopg.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres", autocommit=True,
                             connect_timeout=3) as admin:
            if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DEMO_DATABASE,)).fetchone():
                admin.execute(f"CREATE DATABASE {DEMO_DATABASE}")
                with psycopg.connect(host="127.0.0.1", port=5432, user="postgres", dbname=DEMO_DATABASE,
                                     autocommit=True) as db:
                    db.execute("CREATE TABLE invoices (id bigserial PRIMARY KEY, customer text, amount numeric(12,2),"
                               " issued timestamptz DEFAULT now(), note text)")
                    db.execute("INSERT INTO invoices (customer, amount, note) SELECT 'customer ' || g, g * 1.5, "
                               "CASE WHEN g % 4 = 0 THEN NULL ELSE md5(g::text) END FROM generate_series(1, 20000) g")
    except psycopg.Error as error:
        say(f"PostgreSQL on 127.0.0.1:5432 not usable ({str(error).strip().splitlines()[0]}): left out")
        return False
    return True


def _mysql_demo_database(say: Say) -> bool:
    """Create (once) the demo database in the machine's MariaDB/MySQL (root, no password); False otherwise."""
    import pymysql  # noqa: PLC0415

    try:
        connection = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", autocommit=True,
                                     connect_timeout=3)
    except pymysql.MySQLError as error:
        say(f"MariaDB/MySQL on 127.0.0.1:3306 not usable ({error}): left out")
        return False
    try:
        with connection.cursor() as cursor:
            cursor.execute("SET SESSION max_recursive_iterations = 100000")
            cursor.execute("SHOW DATABASES LIKE %s", (DEMO_DATABASE,))
            if not cursor.fetchone():
                cursor.execute(f"CREATE DATABASE {DEMO_DATABASE}")
                cursor.execute(f"CREATE TABLE {DEMO_DATABASE}.customers (id BIGINT AUTO_INCREMENT PRIMARY KEY, "
                               "name VARCHAR(80), city VARCHAR(40), since DATE) ENGINE=InnoDB")
                cursor.execute(  # a constant name, no value interpolated
                    f"INSERT INTO {DEMO_DATABASE}.customers (name, city, since) "  # noqa: S608
                    "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 5000) "
                    "SELECT CONCAT('customer ', n), ELT(1 + n % 3, 'Beijing', 'Shanghai', 'Shenzhen'), "
                    "DATE('2020-01-01') + INTERVAL n DAY FROM g")
    finally:
        connection.close()
    return True


def write_demo_config(directory: str, restic_binary: str | None = None, *, postgres: bool = False,
                      mysql: bool = False, scratch: str | None = None) -> str:
    """Write the demo's config (two local repositories) and password file; return the config path."""
    os.makedirs(directory, exist_ok=True)
    password_file = os.path.join(directory, "restic.pw")
    if not os.path.exists(password_file):
        fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(24) + "\n")
    restic_line = f"restic: {{binary: {restic_binary}}}\n" if restic_binary else ""
    databases = ""
    if postgres:
        databases += (f"  appdb:\n    kind: postgres\n    user: postgres\n    databases: [{DEMO_DATABASE}]\n"
                      "    globals: false\n")
    if mysql:
        databases += f"  crm:\n    kind: mysql\n    user: root\n    databases: [{DEMO_DATABASE}]\n"
    names = ["documents"] + (["appdb"] if postgres else []) + (["crm"] if mysql else [])
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
        DATABASESpolicies:
          nightly:
            targets: [TARGETS]
            repository: local
            replicate_to: [same-city]
            schedule: {{full: "sun 01:00", differential: "wed 01:00", incremental: "daily 01:00"}}
            max_full_interval: 14d
            retention: {{full: 8, differential: 4, incremental: 14}}
        """
    ).replace("RESTIC_LINE", restic_line).replace("DATABASES", databases).replace("TARGETS", ", ".join(names))
    if scratch:
        config += f"scratch:\n  directory: {scratch}\n"
    path = os.path.join(directory, "agent.yaml")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(config)
    return path


def _scratch_directory() -> str:
    """A short scratch parent every user may traverse: throwaway database instances run as postgres/mysql."""
    path = os.path.join(tempfile.gettempdir(), f"drill-demo-scratch-{os.geteuid()}")
    os.makedirs(path, exist_ok=True)
    os.chmod(path, 0o755)  # noqa: S103 -- traversal for the instance accounts; nothing secret is kept here
    return path


def write_drill_config(directory: str, agent_config: str) -> str:
    path = os.path.join(directory, "drill.yaml")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(f"state_dir: {directory}/coordinator\n"
                     f"objectives: {{rto: 1h, rpo: 24h}}\n"
                     f"systems:\n  demo-host:\n    agent_config: {agent_config}\n")
    return path


def run_demo(directory: str, say: Say, restic_binary: str | None = None) -> DemoResult:
    """Run the embedded demo in ``directory`` and return what it made."""
    directory = os.path.abspath(directory)
    data = os.path.join(directory, "data")
    if not os.path.isdir(data):
        say(f"writing sample data to {data}")
        make_sample_data(data)
    postgres = _postgres_demo_database(say)
    mysql = _mysql_demo_database(say)
    agent = LocalAgent.open(write_demo_config(directory, restic_binary, postgres=postgres, mysql=mysql,
                                              scratch=_scratch_directory()))
    for name, created in agent.init_repositories().items():
        say(f"repository {name}: {'created' if created else 'exists'}")
    result = DemoResult(agent.config_path)
    _back_up(agent, data, say, result)
    _verify(agent, say, result)
    _drill_and_evidence(directory, agent, say, result)
    return result


def _back_up(agent: LocalAgent, data: str, say: Say, result: DemoResult) -> None:
    say("\n== backups at three levels, replicated to the same-city site")
    steps = [(Level.FULL, 0.0), (Level.DIFFERENTIAL, 0.05), (Level.INCREMENTAL, 0.02)]
    for number, (level, fraction) in enumerate(steps):
        if fraction:
            changed = change_some_files(data, fraction, seed=number)
            say(f"changed {changed} files")
        for signed in agent.execute(BackupJob(policy="nightly", level=level)):
            result.records.append(signed)
            record = signed.record
            assert isinstance(record, BackupRecord)
            target = record.target
            what = target.name + (f"/{target.database}" if target.database else "")
            manifest = record.manifest
            amount = "nothing"
            if isinstance(manifest, DumpManifestInfo):
                amount = f"{manifest.tables} tables, {manifest.rows} rows"
            elif isinstance(manifest, FilesManifestInfo):
                amount = f"{manifest.files} files, {manifest.hashed_files} hashed, {manifest.reused_hashes} reused"
            replicated = bool(record.replication) and all(r.verified for r in record.replication)
            say(f"{level.value:12} {what:<20} -> {record.outcome}: snapshot "
                f"{record.snapshot.id[:12] if record.snapshot else '-'}, {amount}, replicated: {replicated}")


def _verify(agent: LocalAgent, say: Say, result: DemoResult) -> None:
    say("\n== nightly verification: restore into scratch, compare with the manifests")
    for target in agent.inventory.policies["nightly"].targets:
        for signed in agent.execute(VerifyJob(repository="local", target=target)):
            result.verifications.append(signed)
            record = signed.record
            assert isinstance(record, VerifyRecord)
            compared = record.compared
            database = record.snapshot.database if record.snapshot else None
            amount = (f"{compared.tables} tables, {compared.rows} rows" if database
                      else f"{compared.files} files, {compared.bytes} bytes")
            say(f"{target + ('/' + database if database else ''):<24} {record.verdict}: {amount} compared")


def _drill_and_evidence(directory: str, agent: LocalAgent, say: Say, result: DemoResult) -> None:
    say("\n== same-city DR drill")
    drill_config = load_drill_config(write_drill_config(directory, agent.config_path))
    result.drill_config = drill_config.source
    with open_ledger(drill_config) as ledger:
        ingest(ledger, drill_config)
        drill_id = start_drill(ledger, drill_config, "same-city", None)
        view = run_drill(ledger, drill_config, drill_id, say)
        result.drill = drill_figures(view.started, view.steps, view.finished)
        say(f"drill {drill_id}: {view.verdict.upper()}")
        bundle = os.path.join(directory, f"evidence-{drill_id[:8]}.zip")
        export_bundle(ledger, bundle, drill_id=drill_id)
        keys = key_listing(ledger)
        coordinator = ledger.coordinator.keyid
    verification = verify_bundle(bundle, [coordinator])
    result.bundle = bundle
    result.bundle_intact = verification.intact
    say(f"evidence bundle {bundle}: {'INTACT' if verification.intact else 'NOT INTACT'} "
        f"({verification.records} records; coordinator key {coordinator})")
    reports = os.path.join(directory, "reports")
    os.makedirs(reports, exist_ok=True)
    for lang in LANGUAGES:
        page = render_report(result.drill, keys, lang)
        path = os.path.join(reports, f"drill-{drill_id[:8]}.{lang}.html")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(page)
        result.reports.append(path)
    pdf = os.path.join(reports, f"drill-{drill_id[:8]}.zh-CN.pdf")
    with open(pdf, "wb") as handle:
        handle.write(html_to_pdf(render_report(result.drill, keys, "zh-CN")))
    result.reports.append(pdf)
