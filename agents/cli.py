"""``drill-agent``: the host agent's command line.

Exit codes: 0 everything succeeded; 1 a job failed or was partial (see its
record); 2 bad usage or configuration; 130 interrupted.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from agents import process
from agents.config.example import render_example
from agents.config.model import AgentConfig, load_config
from agents.contract.configfile import MAX_SECRET_BYTES, ConfigError, FileRefusedError, read_text_file
from agents.contract.documents import format_time, to_json_document
from agents.contract.errors import DrillError, InputError
from agents.contract.jobs import LATEST, MAX_READ_DATA_PARTS, BackupJob, CheckJob, VerifyJob
from agents.contract.records import (
    BackupRecord,
    CheckRecord,
    FilesManifestInfo,
    RefusedRecord,
    SignedRecord,
    VerifyRecord,
)
from agents.execute import execute
from agents.jobs import catalog
from agents.jobs.anchors import Anchors, collect_anchors
from agents.repositories import init_repository, open_keys, open_record_store, open_repository
from agents.restic.messages import BackupStatus
from agents.restic.runner import ResticError
from agents.state import PolicyBusy
from policies.levels import Level
from targets.registry import KINDS

EXIT_OK, EXIT_JOB_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

log = logging.getLogger("drill-agent")


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


class TerminalProgress:
    """One self-overwriting status line on a terminal; silent elsewhere."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()

    def __call__(self, target: str, status: BackupStatus) -> None:
        if not self.enabled:
            return
        line = (
            f"\r[{target}] {status.percent_done * 100:5.1f}%  {status.files_done}/{status.total_files} files  "
            f"{_human_bytes(status.bytes_done)}/{_human_bytes(status.total_bytes)}"
        )
        sys.stderr.write(line.ljust(78)[:200])
        sys.stderr.flush()

    def done(self) -> None:
        if self.enabled:
            sys.stderr.write("\r" + " " * 78 + "\r")


def _records_exit(records: Sequence[SignedRecord]) -> int:
    if process.CANCELLATION.is_cancelled:
        return EXIT_INTERRUPTED
    if any(isinstance(r.record, RefusedRecord) for r in records):
        return EXIT_USAGE
    return EXIT_OK if records and all(r.record.outcome == "success" for r in records  # type: ignore[union-attr]
                                      ) else EXIT_JOB_FAILED


def _print_json(records: Sequence[SignedRecord]) -> None:
    json.dump([to_json_document(r.record) for r in records], sys.stdout, indent=2, ensure_ascii=False)
    print()


def _print_findings(record: BackupRecord | VerifyRecord | CheckRecord | RefusedRecord) -> None:
    for finding in record.findings:
        subject = f"{finding.subject} " if finding.subject and record.kind != "backup" else ""
        print(f"  {finding.severity:7} {finding.code}: {subject}{finding.message}")


def _print_record(signed: SignedRecord) -> None:
    record = signed.record
    if isinstance(record, RefusedRecord):  # the operator's input: said on stderr, exit 2
        for finding in record.findings:
            print(f"drill-agent: {record.refused.kind} refused: {finding.message} ({finding.code})", file=sys.stderr)
        return
    assert isinstance(record, BackupRecord)
    level = record.level.effective or record.level.requested
    snapshot = record.snapshot.id[:12] if record.snapshot else "-"
    what = record.target.name + (f"/{record.target.database}" if record.target.database else "")
    manifest = record.manifest
    counts = "files - hashed - reused -"
    if isinstance(manifest, FilesManifestInfo):
        counts = f"files {manifest.files}  hashed {manifest.hashed_files} reused {manifest.reused_hashes}"
    elif manifest is not None:
        counts = f"tables {manifest.tables}  rows {manifest.rows}"
    print(f"{record.outcome.upper():8} {record.policy}/{what}  level {level.value}  snapshot {snapshot}  {counts}  "
          f"{record.timings.duration_seconds:.1f}s")
    _print_findings(record)
    if signed.path:
        print(f"  record: {signed.path}")


def cmd_backup(args: argparse.Namespace, config: AgentConfig) -> int:
    job = BackupJob(policy=args.policy, target=args.target, level=Level(args.level) if args.level else None)
    progress = TerminalProgress() if not (args.json or args.quiet) else None
    try:
        records = execute(config, job, progress=progress)
    except PolicyBusy as busy:
        print(str(busy), file=sys.stderr)
        return EXIT_JOB_FAILED
    finally:
        if progress is not None:
            progress.done()
    if args.json:
        _print_json(records)
    elif not args.quiet:
        for record in records:
            _print_record(record)
    return _records_exit(records)


def _snapshot_rows(config: AgentConfig, name: str, anchors: Anchors) -> list[dict[str, Any]]:
    """drill's backups in repository ``name``; a manifest's digest as the agent's own signed record of the backup
    says it (a tag, where an earlier version wrote one, is whatever the repository's password holder wrote)."""
    restic = open_repository(config, name)
    rows = []
    for backup in catalog.collect_backups(restic.snapshots(host=config.host, first_contact=True), host=config.host):
        vouching = anchors.record_for(backup)
        digest = vouching.manifest.digest if vouching is not None and vouching.manifest is not None else None
        rows.append({
            "repository": name,
            "site": config.sites[name],
            "snapshot_id": backup.snapshot_id,
            "time": format_time(backup.time),
            "host": backup.host,
            "policy": backup.policy,
            "target": backup.target,
            "database": backup.database,
            "level": backup.level.value,
            "base": backup.base,
            "job_id": backup.job_id,
            "manifest_path": backup.manifest_path,
            "manifest_digest": digest,
            "recorded": vouching is not None,
            "tree": backup.tree,
            "copied_from": backup.original,
            "manifest_snapshot_id": backup.manifest_snapshot_id,
        })
    return rows


def _manifest_column(row: dict[str, Any]) -> str:
    """The manifest's digest as the agent's own record says it; without such a record, where the manifest is."""
    if row["manifest_digest"]:
        return str(row["manifest_digest"])[:19]
    return f"in {str(row['manifest_snapshot_id'])[:8]}" if row["manifest_snapshot_id"] else "-"


def cmd_snapshots(args: argparse.Namespace, config: AgentConfig) -> int:
    names = [args.repository] if args.repository else list(config.repositories)
    for name in names:
        if name not in config.repositories:
            print(f"unknown repository {name!r}; defined: {', '.join(config.repositories)}", file=sys.stderr)
            return EXIT_USAGE
    rows: list[dict[str, Any]] = []
    failed = False
    anchors, _ = collect_anchors(open_record_store(config))
    for name in names:
        try:
            rows += _snapshot_rows(config, name, anchors)
        except ResticError as error:
            failed = True
            print(f"{name}: {error.describe()}", file=sys.stderr)
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        print()
    else:
        whats = [row["target"] + (f"/{row['database']}" if row["database"] else "") for row in rows]
        width = max([12, *(len(w) for w in whats)])
        print(f"{'REPOSITORY':12} {'SNAPSHOT':10} {'TIME (UTC)':20} {'POLICY':10} {'TARGET':{width}} "
              f"{'LEVEL':12} {'BASE':10} MANIFEST")
        for row, what in zip(rows, whats, strict=True):
            print(
                f"{row['repository']:12} {row['snapshot_id'][:8]:10} {row['time'][:19]:20} {row['policy']:10} "
                f"{what:{width}} {row['level']:12} {(row['base'] or '-')[:8]:10} {_manifest_column(row)}"
            )
    return EXIT_JOB_FAILED if failed else EXIT_OK


def cmd_init(args: argparse.Namespace, config: AgentConfig) -> int:
    keys = open_keys(config)
    key, created_key = keys.ensure()
    results: list[dict[str, object]] = []
    if not args.json:
        print(f"signing key: {key.keyid} ({'created' if created_key else 'kept'}; public key in {keys.public_path})")
    failed = False
    for name, repository in config.repositories.items():
        try:
            created, agent_key = init_repository(config, name)
            results.append({"repository": name, "created": created, "agent_key": agent_key})
            if not args.json:
                print(f"{name}: {'initialised' if created else 'already initialised'} ({repository.url}); "
                      + (f"the agent's own key: {agent_key[:8]}" if agent_key else "opened with its password"))
        except ResticError as error:
            failed = True
            results.append({"repository": name, "error": error.describe()})
            print(f"{name}: {error.describe()}", file=sys.stderr)
    if args.json:
        json.dump({"signing_key": {"keyid": key.keyid, "created": created_key}, "repositories": results},
                  sys.stdout, indent=2)
        print()
    return EXIT_JOB_FAILED if failed else EXIT_OK


def cmd_run(args: argparse.Namespace, config: AgentConfig) -> int:
    from agents.daemon import run_due_policies, run_forever  # noqa: PLC0415 -- only this command needs it

    if args.once:
        records = run_due_policies(config, progress=None)
        for record in records:
            _print_record(record)
        return _records_exit(records) if records else EXIT_OK
    worker = _fleet_worker(config)
    run_forever(config, tick_seconds=args.tick, beside=worker)
    return EXIT_INTERRUPTED if process.CANCELLATION.is_cancelled else EXIT_OK


def _fleet_worker(config: AgentConfig) -> Callable[[threading.Event], None] | None:
    """The fleet worker's loop when this agent has enrolled, else None (it works alone)."""
    from agents.fleet.membership import load_membership  # noqa: PLC0415
    from agents.fleet.worker import Worker  # noqa: PLC0415

    membership = load_membership(config)
    if membership is None:
        return None
    print(f"drill-agent: working with the coordinator {membership.coordinator} at {membership.url} as "
          f"{membership.agent_id}", flush=True)
    return Worker(config, membership).run


def _enrolment_token(args: argparse.Namespace) -> str:
    """The token from ``--token``, or read from ``--token-file`` ('-': standard input, as an installer passes it
    to keep it off the command line). Raises ``InputError`` for an empty one."""
    if args.token is not None:
        return str(args.token)
    if args.token_file == "-":  # noqa: S105 -- "-" is standard input, not a password
        text = sys.stdin.read(4096)
    else:
        try:
            text = read_text_file(args.token_file, MAX_SECRET_BYTES)
        except FileRefusedError as error:
            raise InputError(f"{args.token_file}: the file {error.reason}") from None
        except OSError as error:
            raise InputError(f"{args.token_file}: {error.strerror or error}") from None
    token = text.strip()
    if not token:
        raise InputError(f"{args.token_file}: no enrolment token in it (drillctl agents token prints one)")
    return token


def cmd_enrol(args: argparse.Namespace, config: AgentConfig) -> int:
    from agents.fleet.enrol import enrol  # noqa: PLC0415

    membership = enrol(config, args.coordinator, _enrolment_token(args), args.server_fingerprint, args.site)
    if args.json:
        json.dump({"agent_id": membership.agent_id, "coordinator": membership.coordinator,
                   "url": membership.url}, sys.stdout, indent=2)
        print()
    else:
        print(f"enrolled with {membership.coordinator} at {membership.url} as {membership.agent_id}; "
              "drill-agent run now works with it")
    return EXIT_OK


def _verification_exit(records: Sequence[SignedRecord]) -> int:
    if process.CANCELLATION.is_cancelled:
        return EXIT_INTERRUPTED
    if any(isinstance(r.record, RefusedRecord) for r in records):
        return EXIT_USAGE
    verdicts = {r.record.verdict for r in records if isinstance(r.record, VerifyRecord | CheckRecord)}
    # Evidence of damage outranks a verification that could not run.
    if "failed" in verdicts:
        return EXIT_JOB_FAILED
    return EXIT_USAGE if "error" in verdicts else EXIT_OK


def cmd_verify(args: argparse.Namespace, config: AgentConfig) -> int:
    job = VerifyJob(repository=args.repository, target=args.target, target_kind=args.kind,
                    snapshot=LATEST if args.latest else args.snapshot, database=args.database,
                    backup_host=args.host, scratch={"directory": args.scratch} if args.scratch else None,
                    read_data_parts=args.read_data_parts)
    records = execute(config, job)
    if args.json:
        _print_json(records)
    else:
        for signed in records:
            _print_verification(signed)
    return _verification_exit(records)


def cmd_check(args: argparse.Namespace, config: AgentConfig) -> int:
    records = execute(config, CheckJob(repository=args.repository, read_data_parts=args.read_data_parts))
    if args.json:
        _print_json(records)
    else:
        for signed in records:
            record = signed.record
            if isinstance(record, CheckRecord):
                print(f"{record.verdict.upper()}  {record.repository.name}: restic check, data part "
                      f"{record.check.read_data_subset}")
                _print_findings(record)
            else:
                _print_record(signed)
    return _verification_exit(records)


def _print_verification(signed: SignedRecord) -> None:
    record = signed.record
    if not isinstance(record, VerifyRecord):
        _print_record(signed)
        return
    snapshot = record.snapshot
    what = record.target + (f"/{snapshot.database}" if snapshot and snapshot.database else "")
    compared = record.compared
    counts = f"{compared.files} files, {compared.bytes} bytes"
    if compared.tables is not None:
        counts = f"{compared.tables} tables, {compared.rows} rows, {compared.bytes} dump bytes"
    print(f"{record.verdict.upper()}  {what} snapshot {snapshot.id[:12] if snapshot else '-'}  {counts} compared")
    _print_findings(record)


def cmd_config_validate(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file)
    except ConfigError as error:
        if args.json:
            json.dump({"valid": False, "problems": [p.__dict__ for p in error.problems]}, sys.stdout, indent=2)
            print()
        else:
            print(f"{args.file}: {len(error.problems)} problem(s)", file=sys.stderr)
            for problem in error.problems:
                print(f"  {problem}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        json.dump({"valid": True, "host": config.host, "policies": sorted(config.policies)}, sys.stdout)
        print()
    else:
        print(f"{args.file}: valid (host {config.host}; policies: {', '.join(sorted(config.policies))})")
    return EXIT_OK


def parts(text: str) -> int:
    """An argument that is a whole number of parts, 1 to 256 (restic's own limit)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= MAX_READ_DATA_PARTS:
        raise argparse.ArgumentTypeError(f"{value} is not between 1 and {MAX_READ_DATA_PARTS}")
    return value


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="drill-agent",
        description="Back up files with restic, with a content manifest per snapshot, at full, differential "
        "and incremental levels; replicate to a second site; write a result record per job.",
        epilog="Exit codes: 0 success, 1 a job failed or was partial, 2 bad usage or config, 130 interrupted.",
    )
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", "-c", required=True, help="agent config file (see 'config example')")

    p = sub.add_parser("backup", help="back up a policy's targets now")
    with_config(p)
    p.add_argument("--policy", "-p", required=True, help="policy name from the config")
    p.add_argument("--target", "-t", help="only this target of the policy (default: all of them)")
    p.add_argument("--level", choices=[lv.value for lv in Level],
                   help="force a level (default: what the policy's schedule gives for today); an incremental or "
                   "differential without a usable full is upgraded to full")
    p.add_argument("--json", action="store_true", help="print the result records as JSON")
    p.add_argument("--quiet", "-q", action="store_true", help="print nothing; the exit code tells")

    p = sub.add_parser("snapshots", help="list drill's snapshots with level, base and outcome")
    with_config(p)
    p.add_argument("--repository", "-r", help="only this repository (default: all)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("init", help="initialise every repository of the config (existing ones are left alone)")
    with_config(p)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("run", help="back up on schedule until stopped (SIGINT/SIGTERM stop cleanly)")
    with_config(p)
    p.add_argument("--tick", type=float, default=30.0, help="seconds between schedule checks (default 30)")
    p.add_argument("--once", action="store_true", help="run what is due now, then exit")

    p = sub.add_parser("enrol", help="join a coordinator with a one-time token (drillctl agents token)",
                       epilog="Exit codes: 0 enrolled, 2 bad input or the coordinator refused (the reason is "
                       "printed).")
    with_config(p)
    p.add_argument("--coordinator", required=True, metavar="URL", help="https://HOST:PORT of drillctl serve")
    given = p.add_mutually_exclusive_group(required=True)
    given.add_argument("--token", help="the enrolment token (visible to other users in the process list: prefer "
                       "--token-file)")
    given.add_argument("--token-file", metavar="FILE", help="read the token from FILE ('-': standard input)")
    p.add_argument("--server-fingerprint", required=True, metavar="sha256:HEX",
                   help="the fingerprint drillctl serve printed: the coordinator's certificate is pinned to it")
    p.add_argument("--site", help="the site this host is at (default: that of its repositories)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser(
        "verify",
        help="restore a backup into scratch (files: a directory; databases: a throwaway instance) and compare "
        "it with its manifest",
        epilog="Exit codes: 0 passed, 1 verification failed (findings), 2 could not verify.",
    )
    with_config(p)
    p.add_argument("--repository", "-r", required=True, help="repository to restore from")
    p.add_argument("--target", "-t", required=True, help="target name, as in the backup's tags")
    p.add_argument("--kind", choices=sorted(KINDS),
                   help="the target's kind, when this agent does not have the target (a scratch host)")
    p.add_argument("--database", "-d", help="a database target: only this database (default: each of them)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--snapshot", help="snapshot id (or a prefix of it)")
    which.add_argument("--latest", action="store_true",
                       help="the newest backup of the target (of each database of a database target)")
    p.add_argument("--host", help="host whose backup to verify (default: this config's host)")
    p.add_argument("--scratch",
                   help="parent directory of the scratch restore (default: scratch.directory, else state_dir/scratch)")
    p.add_argument("--read-data-parts", type=parts, default=30, metavar="N",
                   help="restic check reads 1/N of the packs, the next part each time (default 30; 1 = all)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("check", help="restic check of a repository, reading the next part of its data",
                       epilog="Exit codes: 0 no damage, 1 damage found, 2 could not check.")
    with_config(p)
    p.add_argument("--repository", "-r", required=True, help="repository to check")
    p.add_argument("--read-data-parts", type=parts, default=30, metavar="N",
                   help="read 1/N of the packs, the next part each time (default 30; 1 = all)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("config", help="validate a config or print an annotated example")
    config_sub = p.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    v = config_sub.add_parser("validate", help="check a config file; prints every problem with its line")
    v.add_argument("file")
    v.add_argument("--json", action="store_true")
    config_sub.add_parser("example", help="print an example config with every key described")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Everything the agent writes (state, records, keys, restic's cache) is its own alone.
    os.umask(0o077)
    args = make_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return _dispatch(args)
    except ConfigError as error:
        where = getattr(args, "config", None) or getattr(args, "file", "")
        print(f"{where}: invalid configuration:", file=sys.stderr)
        for problem in error.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_USAGE
    except DrillError as error:
        print(f"drill-agent: {error}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as error:  # the state directory or a file the config names cannot be used
        print(f"drill-agent: {error.filename or ''}: {error.strerror or error}", file=sys.stderr)
        return EXIT_USAGE


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "config":
        if args.config_command == "example":
            sys.stdout.write(render_example())
            return EXIT_OK
        return cmd_config_validate(args)
    config = load_config(args.config, remembered=True)  # the schema check of an unchanged config is not repeated
    process.install_signal_handlers()
    handlers = {"backup": cmd_backup, "snapshots": cmd_snapshots, "init": cmd_init, "run": cmd_run,
                "verify": cmd_verify, "check": cmd_check, "enrol": cmd_enrol}
    return handlers[args.command](args, config)


def run() -> NoReturn:
    """The ``drill-agent`` program: :func:`main` with everything imported set aside from the garbage collector.

    What the program imported lives until it exits; frozen (``gc.freeze``), it is scanned neither by each full
    collection nor at exit -- ≈ 0.1 s of every command, whose start-up is most of a one-second job. Not in
    :func:`main`, which tests call in their own process.
    """
    gc.freeze()
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    run()
