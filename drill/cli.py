"""``drillctl``: the coordinator's command line.

Exit codes: 0 success; 1 something the command checked failed; 2 bad usage.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn

from agents import api
from agents.contract import signing
from agents.contract.configfile import MAX_SECRET_BYTES, ConfigError, FileRefusedError, read_text_file
from agents.contract.documents import format_time, to_json_document
from agents.contract.errors import DrillError, InputError
from drill.config import DrillConfig, load_drill_config
from drill.coordinator import ingest, open_ledger
from drill.demo import run_demo
from drill.drills import (
    MAX_PARALLEL,
    DrillView,
    finish_drill,
    list_drills,
    load_drill,
    run_drill,
    start_drill,
)
from drill.evidence.export import export_bundle, key_listing
from drill.evidence.verify import Verification, verify_bundle
from drill.fleet.commands import (
    add_commands,
    cmd_agents,
    cmd_fingerprint,
    cmd_jobs,
    cmd_plan,
    cmd_serve,
    cmd_status,
    cmd_users,
    run_fleet_drill,
)
from drill.ledger.ledger import read_checkpoint_log
from drill.reports.figures import drill_figures
from drill.reports.html import render_report
from drill.reports.i18n import LANGUAGES, duration
from drill.reports.pdf import html_to_pdf

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def cmd_demo(args: argparse.Namespace) -> int:
    def say(text: str) -> None:
        if not args.json:
            print(text, flush=True)

    result = run_demo(args.dir, say, args.restic)
    if args.json:
        _dump({"backups": [to_json_document(r.record) for r in result.records],
               "verifications": [to_json_document(r.record) for r in result.verifications],
               "drill": result.drill, "bundle": result.bundle, "bundle_intact": result.bundle_intact,
               "reports": result.reports, "ok": result.ok})
        return EXIT_OK if result.ok else EXIT_FAILED
    print(f"\nreport:   {result.reports[0] if result.reports else '-'}")
    for path in result.reports[1:]:
        print(f"          {path}")
    print(f"evidence: {result.bundle}")
    print(f"configs:  {result.agent_config}, {result.drill_config}")
    print(f"\n{'DEMO PASSED' if result.ok else 'DEMO FAILED'}")
    return EXIT_OK if result.ok else EXIT_FAILED


def cmd_outbox(args: argparse.Namespace) -> int:
    records, unreadable = api.waiting_records(args.state_dir)
    if args.json:
        _dump([to_json_document(r.record) for r in records])
    else:
        for record in records:
            print(record.path)
    for path, why in unreadable:
        print(f"drillctl outbox: {path} is not a readable record ({why}); the coordinator will refuse it",
              file=sys.stderr)
    return EXIT_FAILED if unreadable else EXIT_OK


def _load(args: argparse.Namespace) -> DrillConfig:
    return load_drill_config(args.config)


def _say(args: argparse.Namespace) -> Callable[[str], None]:
    def say(text: str) -> None:
        if not getattr(args, "json", False):
            print(text, flush=True)

    return say


def _dump(document: object) -> None:
    json.dump(document, sys.stdout, indent=2, ensure_ascii=False)
    print()


def cmd_ingest(args: argparse.Namespace) -> int:
    config = _load(args)
    with open_ledger(config) as ledger:
        result = ingest(ledger, config)
    if args.json:
        _dump({"taken": len(result.taken), "already_present": len(result.already),
               "refused": [{"file": f, "code": c, "reason": r} for f, c, r in result.refused]})
    else:
        print(f"taken {len(result.taken)}, already in the ledger {len(result.already)}, "
              f"refused {len(result.refused)}")
        for path, code, reason in result.refused:
            print(f"  refused {path}: {code}: {reason}")
    return EXIT_OK if not result.refused else EXIT_FAILED


def _show(view: DrillView) -> dict[str, Any]:
    figures = drill_figures(view.started, view.steps, view.finished)
    return {**figures, "missing": [f"{s}/{t}" for s, t in view.missing()]}


def _print_drill(view: DrillView) -> None:
    figures = drill_figures(view.started, view.steps, view.finished)
    print(f"drill {view.drill_id}  site {figures['site']}  started {figures['started']}  "
          f"verdict {figures['verdict'].upper()}")
    for row in figures["systems"]:
        print(f"  {row['system']}/{row['target']:<14} {row['verdict']:<9} RPO {duration(row['rpo_seconds'], 'en'):<12}"
              f" (objective {duration(row['rpo_objective_seconds'], 'en')})  RTO {duration(row['rto_seconds'], 'en')}"
              f" (objective {duration(row['rto_objective_seconds'], 'en')})")
        for finding in row["findings"]:
            print(f"      {finding['code']}: {finding['message']}")


def _drill_exit(view: DrillView) -> int:
    return EXIT_OK if view.verdict == "passed" else EXIT_FAILED


def cmd_drill(args: argparse.Namespace) -> int:
    config = _load(args)
    say = _say(args)
    with open_ledger(config) as ledger:
        if args.drill_command == "list":
            views = list_drills(ledger)
            rows = [{"drill_id": v.drill_id, "site": v.started.site, "started": format_time(v.started.started),
                     "verdict": v.verdict} for v in views]
            if args.json:
                _dump(rows)
            else:
                for row in rows:
                    print(f"{row['drill_id']}  {row['started']}  site {row['site']:<10} {row['verdict']}")
            return EXIT_OK
        if config.fleet is not None and args.drill_command in ("run", "resume"):
            if args.parallel is not None:
                raise InputError("--parallel is for a drill on this machine's agents; a fleet drill runs as many "
                                 "steps at once as its scratch hosts' capacity allows")
            view = run_fleet_drill(ledger, config, args, say)
        elif args.drill_command == "run":
            systems = [s for s in (args.systems or "").split(",") if s]
            ingest(ledger, config)  # the backup records the drill relies on, into the ledger first
            drill_id = start_drill(ledger, config, args.site, systems)
            say(f"drill {drill_id} at site {args.site}")
            view = run_drill(ledger, config, drill_id, say, parallel=args.parallel or 1)
        elif args.drill_command == "resume":
            view = run_drill(ledger, config, args.drill_id, say, parallel=args.parallel or 1)
        elif args.drill_command == "close":
            view = finish_drill(ledger, config, args.drill_id, closing=True)
        else:
            view = load_drill(ledger, args.drill_id)
        ledger.checkpoint()
    if args.json:
        _dump(_show(view))
    else:
        _print_drill(view)
    return _drill_exit(view)


def cmd_keys(args: argparse.Namespace) -> int:
    config = _load(args)
    with open_ledger(config) as ledger:
        if args.keys_command == "add":
            try:
                pem = read_text_file(args.file, MAX_SECRET_BYTES)
            except FileRefusedError as error:
                raise InputError(f"{args.file} {error.reason}") from error
            print(ledger.add_key(pem, args.owner, "agent"))
            return EXIT_OK
        keys = [{"keyid": k.keyid, "owner": k.owner, "role": k.role} for k in ledger.keys().values()]
    if args.json:
        _dump(keys)
    else:
        for key in keys:
            print(f"{key['role']:<12} {key['owner']:<16} {key['keyid']}")
    return EXIT_OK


def cmd_ledger(args: argparse.Namespace) -> int:
    config = _load(args)
    log = read_checkpoint_log(args.against) if args.against else None  # unreadable: exit 2 before anything
    # Opened without the check on opening: the audit names every problem itself, instead of refusing at the first.
    with open_ledger(config, verify=False) as ledger:
        problems = ledger.audit(against=log)
        # A checkpoint signed over a ledger with problems would vouch for them: sign one only when intact.
        checkpoint = None if problems else signing.envelope_payload(ledger.checkpoint())
    if args.json:
        _dump({"intact": not problems, "problems": [{"code": p.code, "message": p.message} for p in problems],
               "checkpoint": checkpoint})
        return EXIT_OK if not problems else EXIT_FAILED
    if log is not None:
        print(f"checked against {len(log.checkpoints)} checkpoint(s) in {log.path}")
    if checkpoint is not None:
        print(f"{checkpoint['tree_size']} records, root {checkpoint['root']}")
        print("intact")
        return EXIT_OK
    print(f"NOT INTACT: {len(problems)} problem(s); no checkpoint signed")
    for problem in problems:
        print(f"  {problem.code}: {problem.message}")
    return EXIT_FAILED


def _date(text: str | None) -> datetime | None:
    """A date or time given on the command line (ISO 8601; UTC when no zone is given)."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InputError(f"{text!r} is not a date or time: give ISO 8601, e.g. 2026-11-30 or "
                         "2026-11-30T02:00:00Z") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def cmd_evidence(args: argparse.Namespace) -> int:
    if args.evidence_command == "verify":
        try:
            result = verify_bundle(args.bundle, args.trust or ())
        except DrillError as error:  # verify_bundle reports problems; should any typed error escape, it is one
            result = Verification()
            result.add(error.code, str(error))
        if args.json:
            _dump({"intact": result.intact, "pinned": result.pinned, "coordinator": result.coordinator,
                   "records": result.records, "scope": result.scope,
                   "problems": [{"code": p.code, "message": p.message} for p in result.problems]})
        elif result.intact:
            print(f"INTACT: {result.records} records, signed by coordinator {result.coordinator}")
            if not result.pinned:
                print("  the coordinator's key was not pinned: compare its fingerprint with the published one, "
                      "or run again with --trust FINGERPRINT")
        else:
            print(f"NOT INTACT: {len(result.problems)} problem(s)")
            for problem in result.problems:
                print(f"  {problem.code}: {problem.message}")
        return EXIT_OK if result.intact else EXIT_FAILED
    config = _load(args)
    if args.drill is None and args.since is None and args.until is None:
        print("drillctl: give --drill ID, or --since/--until", file=sys.stderr)
        return EXIT_USAGE
    since, until = _date(args.since), _date(args.until)
    with open_ledger(config) as ledger:
        manifest = export_bundle(ledger, args.out, drill_id=args.drill, since=since, until=until)
    print(f"{args.out}: {len(manifest['entries'])} records, coordinator {manifest['coordinator']}")
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    config = _load(args)
    with open_ledger(config) as ledger:
        view = load_drill(ledger, args.drill_id)
        keys = key_listing(ledger)
    page = render_report(drill_figures(view.started, view.steps, view.finished), keys, args.lang)
    data = page.encode() if args.format == "html" else html_to_pdf(page)
    out = args.out or os.path.join(config.state_dir, "reports", f"drill-{view.drill_id}.{args.lang}.{args.format}")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out + ".part", "wb") as handle:
        handle.write(data)
    os.replace(out + ".part", out)
    print(out)
    return EXIT_OK


def cmd_config(args: argparse.Namespace) -> int:
    """``config validate FILE``: every problem of the drill config, each with its file, line and field."""
    try:
        config = load_drill_config(args.file)
    except ConfigError as error:
        if args.json:
            _dump({"valid": False, "problems": [p.__dict__ for p in error.problems]})
        else:
            print(f"{args.file}: {len(error.problems)} problem(s)", file=sys.stderr)
            for problem in error.problems:
                print(f"  {problem}", file=sys.stderr)
        return EXIT_USAGE
    role = "serves a fleet" if config.fleet is not None else "embedded"
    if args.json:
        _dump({"valid": True, "fleet": config.fleet is not None, "systems": sorted(config.systems)})
    else:
        print(f"{args.file}: valid ({role}; {len(config.systems)} system(s) named)")
    return EXIT_OK


def _steps_at_once(text: str) -> int:
    """``--parallel``: checked before the drill is started, so that a typo leaves no drill in the ledger."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_PARALLEL:
        raise argparse.ArgumentTypeError(f"takes a number of steps from 1 to {MAX_PARALLEL}, not {text!r}")
    return value


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="drillctl", description="Coordinate drill: demos, records, drills.")
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("demo", help="run the embedded default: sample data backed up at all three levels")
    p.add_argument("--dir", default="drill-demo", help="working directory of the demo (default ./drill-demo)")
    p.add_argument("--restic", help="restic binary (default: $DRILL_RESTIC or restic on PATH)")
    p.add_argument("--json", action="store_true", help="print the result records as JSON")
    p = sub.add_parser("outbox", help="list the result records waiting in an agent's outbox",
                       description="List the signed result records waiting in an agent's outbox (signatures are "
                                   "not checked here: the coordinator checks them when it ingests). A file there "
                                   "that is not a readable record is named on stderr, and the exit code is 1.")
    p.add_argument("--state-dir", required=True, help="the agent's state directory (state_dir in its config)")
    p.add_argument("--json", action="store_true", help="print the records as JSON")

    def with_config(p: argparse.ArgumentParser, json_flag: bool = True) -> None:
        p.add_argument("--config", "-c", required=True, help="drill config (systems, objectives, ledger)")
        if json_flag:
            p.add_argument("--json", action="store_true")

    def with_parallel(p: argparse.ArgumentParser) -> None:
        p.add_argument("--parallel", type=_steps_at_once, metavar="N",
                       help="verify up to N targets at once (default 1; each has its own scratch directory or "
                            "throwaway instance, all on this machine)")

    add_commands(sub, with_config)

    p = sub.add_parser("config", help="check a coordinator config (before it goes live: Ansible's validate:)")
    config_sub = p.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    v = config_sub.add_parser("validate", help="check a drill config and the agent configs it names; prints every "
                              "problem with its line", epilog="Exit codes: 0 valid, 2 not (every problem printed).")
    v.add_argument("file")
    v.add_argument("--json", action="store_true")

    p = sub.add_parser("ingest", help="take the signed records waiting in the local agents' outboxes into the ledger")
    with_config(p)

    p = sub.add_parser("drill", help="run, resume, close, show and list DR drills")
    drill_sub = p.add_subparsers(dest="drill_command", required=True, metavar="ACTION")
    d = drill_sub.add_parser("run", help="restore and verify every system in scope from one site",
                             epilog="Exit codes: 0 the drill passed, 1 it failed or is incomplete, 2 bad input.")
    with_config(d)
    d.add_argument("--site", required=True, help="site to restore from (e.g. local, same-city)")
    d.add_argument("--systems", help="comma-separated systems (default: all in the drill config)")
    with_parallel(d)
    for name, text in (("resume", "run the steps an interrupted drill lacks, then finish it"),
                       ("close", "end an interrupted drill as incomplete"),
                       ("show", "a drill's verdict, RPO/RTO per system and findings")):
        d = drill_sub.add_parser(name, help=text)
        d.add_argument("drill_id")
        with_config(d)
        if name == "resume":
            with_parallel(d)
    d = drill_sub.add_parser("list", help="every drill in the ledger")
    with_config(d)

    p = sub.add_parser("keys", help="list or enrol the public keys records are signed with")
    keys_sub = p.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    k = keys_sub.add_parser("list", help="the keys the ledger knows")
    with_config(k)
    k = keys_sub.add_parser("add", help="enrol a remote agent's public key (PEM), handed over out of band")
    with_config(k, json_flag=False)
    k.add_argument("--owner", required=True, help="the agent's host name")
    k.add_argument("file")

    p = sub.add_parser("ledger", help="re-check every record of the ledger and sign a checkpoint")
    ledger_sub = p.add_subparsers(dest="ledger_command", required=True, metavar="ACTION")
    a = ledger_sub.add_parser("audit", help="every entry and signed checkpoint; a new checkpoint when intact",
                              epilog="Exit codes: 0 intact, 1 problems found (each named), 2 bad input (a config "
                              "problem, a checkpoint log that cannot be read).")
    with_config(a)
    a.add_argument("--against", metavar="FILE",
                   help="also check every checkpoint in this checkpoint log (the drill config's checkpoint_log)")

    p = sub.add_parser("evidence", help="export an evidence bundle, or verify one offline")
    evidence_sub = p.add_subparsers(dest="evidence_command", required=True, metavar="ACTION")
    e = evidence_sub.add_parser("export", help="write a bundle of a drill (or a time range) to one ZIP file")
    with_config(e, json_flag=False)
    e.add_argument("--drill", help="drill id")
    e.add_argument("--since", help="records taken into the ledger from this date/time (ISO 8601, UTC)")
    e.add_argument("--until", help="... until before this date/time")
    e.add_argument("--out", required=True, help="the bundle file to write")
    e = evidence_sub.add_parser("verify", help="check a bundle offline; names anything altered, removed or added",
                                epilog="Exit codes: 0 intact, 1 not intact (each problem named).")
    e.add_argument("bundle")
    e.add_argument("--trust", action="append", metavar="FINGERPRINT",
                   help="the coordinator's key fingerprint, obtained out of band (repeatable)")
    e.add_argument("--json", action="store_true")

    p = sub.add_parser("report", help="a drill's report in HTML or PDF, in Chinese or English")
    report_sub = p.add_subparsers(dest="report_command", required=True, metavar="WHAT")
    r = report_sub.add_parser("drill", help="the report of one drill")
    r.add_argument("drill_id")
    with_config(r, json_flag=False)
    r.add_argument("--format", choices=["html", "pdf"], default="html")
    r.add_argument("--lang", choices=list(LANGUAGES), default="zh-CN")
    r.add_argument("--out", help="file to write (default: state_dir/reports/drill-ID.LANG.FORMAT)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Everything the coordinator writes (its key, the SQLite ledger, reports, bundles) is its own alone.
    os.umask(0o077)
    args = make_parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level.upper()), format="%(levelname)s %(name)s: %(message)s")
    api.install_signal_handlers()
    commands = {"demo": cmd_demo, "outbox": cmd_outbox, "ingest": cmd_ingest, "drill": cmd_drill,
                "keys": cmd_keys, "ledger": cmd_ledger, "evidence": cmd_evidence, "report": cmd_report,
                "serve": cmd_serve, "agents": cmd_agents, "jobs": cmd_jobs, "plan": cmd_plan,
                "fingerprint": cmd_fingerprint, "config": cmd_config, "status": cmd_status,
                "users": cmd_users}
    try:
        return commands[args.command](args)
    except ConfigError as error:
        print(f"{getattr(args, 'config', '')}: invalid configuration:", file=sys.stderr)
        for problem in error.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_USAGE
    except DrillError as error:
        print(f"drillctl: {error}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as error:
        print(f"drillctl: {error.filename or ''}: {error.strerror or error}", file=sys.stderr)
        return EXIT_USAGE


def run() -> NoReturn:
    """The ``drillctl`` program: :func:`main` with everything imported set aside from the garbage collector.

    What the program imported lives until it exits; frozen (``gc.freeze``), it is scanned neither by each full
    collection nor at exit -- ≈ 0.1 s of every command, whose start-up is most of a one-second job. Not in
    :func:`main`, which tests call in their own process.
    """
    gc.freeze()
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    run()
