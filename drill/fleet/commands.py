"""``drillctl serve``, ``drillctl agents …`` and ``drillctl jobs …``: the fleet from the coordinator's side."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from agents import api
from agents.contract.configfile import MAX_SECRET_BYTES, FileRefusedError, read_text_file
from agents.contract.errors import InputError
from drill.config import DrillConfig, FleetSettings, load_drill_config
from drill.drills import DrillView
from drill.fleet import enrolment, queue
from drill.fleet.drills import advance_fleet_drill, start_fleet_drill
from drill.fleet.planner import current_plan, run_plan
from drill.fleet.status import Status, fleet_status
from drill.fleet.tables import create_fleet_tables
from drill.fleet.tls import TlsFiles, self_signed
from drill.ledger.ledger import Ledger
from drill.ledger.store import Store, open_store
from drill.web import accounts

EXIT_OK = 0
EXIT_NOT_HEALTHY = 1


class NotAFleet(InputError):
    code = "not_a_fleet"


def _fleet(config: DrillConfig) -> FleetSettings:
    if config.fleet is None:
        raise NotAFleet(f"{config.source} does not serve a fleet: add listen: HOST:PORT (docs/fleet.md)")
    return config.fleet


def _dump(document: object) -> None:
    json.dump(document, sys.stdout, indent=2, ensure_ascii=False)
    print()


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _store(config: DrillConfig) -> Store:
    store = open_store(config.ledger_url)
    create_fleet_tables(store)
    return store


def tls_files(config: DrillConfig) -> TlsFiles:
    """The operator's certificate, or the self-signed one in state_dir/tls (made the first time)."""
    settings = _fleet(config)
    if settings.tls_cert and settings.tls_key:
        return TlsFiles(settings.tls_cert, settings.tls_key)
    return self_signed(os.path.join(config.state_dir, "tls"), [settings.listen_host])


def cmd_fingerprint(args: argparse.Namespace) -> int:
    """The fingerprint of the certificate serve presents (the self-signed one made now if it is missing), for an
    installer to hand to ``drill-agent enrol --server-fingerprint`` without starting the service."""
    config = load_drill_config(args.config)
    settings = _fleet(config)
    files = tls_files(config)
    url = f"https://{settings.listen_host}:{settings.listen_port}"
    if args.json:
        _dump({"fingerprint": files.fingerprint, "url": url})
    else:
        print(files.fingerprint)
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from drill.fleet.server import FleetServer  # noqa: PLC0415 -- the server's dependencies only for serve
    from drill.fleet.service import serve  # noqa: PLC0415

    config = load_drill_config(args.config)
    settings = _fleet(config)
    files = tls_files(config)
    server = FleetServer(config)
    print(f"drillctl serve: https://{settings.listen_host}:{settings.listen_port}", flush=True)
    print(f"fingerprint: {files.fingerprint}", flush=True)
    try:
        serve(server, files.certificate, files.key)
    finally:
        server.close()
    return EXIT_OK


def cmd_agents(args: argparse.Namespace) -> int:
    config = load_drill_config(args.config)
    settings = _fleet(config)
    store = _store(config)
    try:
        return _agents(args, config, settings, store)
    finally:
        store.close()


def _agents(args: argparse.Namespace, config: DrillConfig, settings: FleetSettings, store: Store) -> int:
    now = time.time()
    if args.agents_command == "token":
        token = enrolment.issue_token(store, args.role, args.site, settings.token_ttl, now)
        if args.json:
            _dump({"token": token, "role": args.role, "site": args.site, "expires": now + settings.token_ttl})
        else:
            where = f" at site {args.site}" if args.site else ""
            print(f"enrolment token for one {args.role}{where}, valid until {_when(now + settings.token_ttl)}, "
                  "single use:")
            print(token)
        return EXIT_OK
    if args.agents_command == "list":
        rows = enrolment.list_agents(store)
        if args.json:
            _dump([row.to_json() for row in rows])
            return EXIT_OK
        print(f"{'HOST':<16} {'ROLE':<8} {'SITE':<12} {'STATUS':<9} {'LAST SEEN':<21} {'FROM':<15} ID")
        for row in rows:
            print(f"{row.host:<16} {row.role:<8} {row.site:<12} {row.status:<9} {_when(row.last_seen):<21} "
                  f"{row.last_address or '-':<15} {row.agent_id}")
        return EXIT_OK
    agent = enrolment.find_agent(store, args.agent)
    actions: dict[str, Callable[[], enrolment.AgentRow]] = {
        "approve": lambda: _approve(config, store, agent.agent_id),
        "revoke": lambda: enrolment.revoke(store, agent.agent_id, now)}
    row = actions[args.agents_command]()
    if args.json:
        _dump(row.to_json())
    else:
        print(f"{row.host} ({row.agent_id}): {row.status}")
    return EXIT_OK


def _approve(config: DrillConfig, store: Store, agent_id: str) -> enrolment.AgentRow:
    from drill.coordinator import open_ledger  # noqa: PLC0415 -- only approval touches the ledger's keys

    row = enrolment.approve(store, agent_id)
    with open_ledger(config) as ledger:
        ledger.add_key(row.public_pem, row.host, row.role)
    return row


def cmd_jobs(args: argparse.Namespace) -> int:
    config = load_drill_config(args.config)
    _fleet(config)
    store = _store(config)
    try:
        jobs = queue.list_jobs(store, state=args.state)
    finally:
        store.close()
    if args.json:
        _dump([job.to_json() for job in jobs])
        return EXIT_OK
    print(f"{'JOB':<34} {'KIND':<7} {'STATE':<9} {'TRIES':<5} {'WHERE':<24} {'OUTCOME':<16} REASON")
    for job in jobs:
        where = job.site or "-"
        if job.spec.get("target"):
            where = f"{job.spec.get('backup_host', '')}/{job.spec['target']}@{where}"
        print(f"{job.job_id:<34} {job.kind:<7} {job.state:<9} {job.attempts:<5} {where:<24} "
              f"{(job.outcome or '-')[:16]:<16} {job.reason}")
    return EXIT_OK


def run_fleet_drill(ledger: Ledger, config: DrillConfig, args: argparse.Namespace,
                    say: Callable[[str], None]) -> DrillView:
    """``drill run``/``drill resume`` on a fleet: queue the drill's jobs (run), then follow it to its end, printing
    each step as its result arrives. Interrupted, the drill goes on (``drillctl serve`` advances it); ``drill
    resume ID`` follows it again."""
    store = _store(config)
    try:
        if args.drill_command == "run":
            systems = [s for s in (args.systems or "").split(",") if s]
            drill_id = start_fleet_drill(ledger, store, config, args.site, systems, now=time.time())
            say(f"drill {drill_id} at site {args.site}: jobs queued for the scratch hosts there")
        else:
            drill_id = args.drill_id
        told: set[tuple[str, str]] = set()
        while True:
            view = advance_fleet_drill(ledger, store, config, drill_id, now=time.time())
            for step in view.steps:
                if (step.system, step.target) not in told:
                    told.add((step.system, step.target))
                    say(f"{step.system}/{step.target}: {step.verdict}")
            if view.finished is not None:
                return view
            if api.cancelled():
                say("stopped following; the drill goes on (drillctl serve advances it; drill resume follows it)")
                return view
            time.sleep(1.0)
    finally:
        store.close()


def cmd_status(args: argparse.Namespace) -> int:
    """Every system's targets: newest backup and verification, RPO, what is open. Exit 1 when anything is."""
    from drill.coordinator import open_ledger  # noqa: PLC0415

    config = load_drill_config(args.config)
    _fleet(config)
    store = _store(config)
    try:
        with open_ledger(config) as ledger:
            status = fleet_status(ledger, store, config, datetime.now(UTC))
    finally:
        store.close()
    if args.json:
        _dump(status.to_json())
    else:
        _print_status(status)
    return EXIT_OK if status.healthy else EXIT_NOT_HEALTHY


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f}h" if seconds < 172800 else f"{seconds / 86400:.1f}d"


def _print_status(status: Status) -> None:
    now = status.made
    problems = sum(len(t.problems) for t in status.targets) + len(status.flags)
    print(f"status of {now.strftime('%Y-%m-%d %H:%M')} UTC: {len({t.system for t in status.targets})} system(s), "
          f"{len(status.targets)} target(s); " + ("all well" if not problems else f"{problems} problem(s)"))
    print(f"{'SYSTEM/TARGET':<28} {'LAST BACKUP':<36} {'LAST VERIFICATION':<34} RPO (objective)")
    for target in status.targets:
        backup, verified = target.backup, target.verification
        backup_text = "-" if backup is None else (
            f"{backup.level} {backup.outcome} {_hours((now - backup.finished).total_seconds())} ago"
            + ("" if backup.bytes is None else f" {backup.bytes / 1e6:.1f} MB"))
        verified_text = "-" if verified is None else (
            f"{verified.verdict} {_hours((now - verified.finished).total_seconds())} ago "
            f"{verified.site}/{verified.scratch_host}")
        rpo = target.rpo_seconds(now)
        rpo_text = f"{'never' if rpo is None else _hours(rpo)} ({_hours(target.rpo_objective_seconds)})"
        print(f"{target.system + '/' + target.target:<28} {backup_text:<36} {verified_text:<34} {rpo_text}")
        for problem in target.problems:
            print(f"  ! {problem.code:<20} {problem.message}")
    for flag in status.flags:
        print(f"  ! {flag.code:<20} {flag.subject}: {flag.message}")


def cmd_users(args: argparse.Namespace) -> int:
    """``users add|list``: the web view's local accounts."""
    config = load_drill_config(args.config)
    _fleet(config)
    store = _store(config)
    try:
        if args.users_command == "add":
            password = _password(args.password_file)
            accounts.add_account(store, args.name, args.role, password, time.time())
            print(f"account {args.name} ({args.role}) saved")
            return EXIT_OK
        listed = accounts.list_accounts(store)
    finally:
        store.close()
    if args.json:
        _dump([{"name": a.name, "role": a.role} for a in listed])
    else:
        for account in listed:
            print(f"{account.name:<24} {account.role}")
    return EXIT_OK


def _password(path: str | None) -> str:
    """The new password: from the file, from standard input ('-'), or asked for twice at the terminal."""
    if path == "-" or (path is None and not sys.stdin.isatty()):
        return sys.stdin.readline().rstrip("\n")
    if path is not None:
        try:
            return read_text_file(path, MAX_SECRET_BYTES).rstrip("\n")
        except (OSError, FileRefusedError) as error:
            raise InputError(f"{path}: {error}") from None
    first, second = getpass.getpass("password: "), getpass.getpass("again: ")
    if first != second:
        raise InputError("the two passwords differ")
    return first


def cmd_plan(args: argparse.Namespace) -> int:
    from drill.coordinator import open_ledger  # noqa: PLC0415

    config = load_drill_config(args.config)
    _fleet(config)
    store = _store(config)
    try:
        with open_ledger(config) as ledger:
            plan = current_plan(ledger, store, config, datetime.now(UTC))
            queued = run_plan(ledger, store, config, plan) if args.plan_command == "run" else []
    finally:
        store.close()
    if args.json:
        _dump({**plan.to_json(), "queued": queued})
        return EXIT_OK
    print(f"plan of {plan.made.isoformat(timespec='seconds')}: {len(plan.jobs)} job(s), {len(plan.flags)} flag(s)")
    for job in plan.jobs:
        subject = f"{job.system}/{job.target}" if job.target else f"repository of {job.system}"
        print(f"  {job.kind:<6} {subject:<28} at {job.site:<10} because {job.reason}")
    for flag in plan.flags:
        print(f"  ! {flag.code:<17} {flag.subject:<28} {flag.message}")
    if args.plan_command == "run":
        print(f"queued {len(queued)} job(s) until the window's end (drillctl jobs list)")
    return EXIT_OK


def add_commands(sub: Any, with_config: Callable[..., None]) -> None:
    """Add serve, agents and jobs to ``drillctl``'s subcommands."""
    p = sub.add_parser("serve", help="run the fleet's HTTPS API (prints its TLS fingerprint first)",
                       description="Serve agents: enrolment, jobs, records. Needs listen: in the config. Stops "
                       "cleanly on SIGTERM/SIGINT.")
    with_config(p, json_flag=False)
    p = sub.add_parser("fingerprint", help="print the TLS fingerprint agents pin at enrolment, without serving",
                       description="The sha256 fingerprint of serve's certificate (the operator's, or the "
                       "self-signed one, made now in state_dir if missing): what drill-agent enrol "
                       "--server-fingerprint takes.")
    with_config(p)
    p = sub.add_parser("agents", help="enrolment tokens, and the enrolled agents: list, approve, revoke")
    agents_sub = p.add_subparsers(dest="agents_command", required=True, metavar="ACTION")
    a = agents_sub.add_parser("token", help="a one-time enrolment token (printed alone on the last line)")
    with_config(a)
    a.add_argument("--role", choices=enrolment.ROLES, default="agent")
    a.add_argument("--site", help="the site the enrolling host must be at")
    a = agents_sub.add_parser("list", help="every enrolled agent and scratch host")
    with_config(a)
    for name, text in (("approve", "let a pending agent receive jobs"),
                       ("revoke", "stop an agent for good: no jobs, its requests refused")):
        a = agents_sub.add_parser(name, help=text)
        a.add_argument("agent", help="the agent's id, a unique prefix of it, or its host name")
        with_config(a)
    p = sub.add_parser("users", help="the web view's accounts: add (or change) one, list them")
    users_sub = p.add_subparsers(dest="users_command", required=True, metavar="ACTION")
    u = users_sub.add_parser("add", help="add an account, or set its role and password (scrypt-hashed)",
                             description="Roles: operator (every page and action), auditor (every page, read-only; "
                             "downloads). The password is asked at the terminal, or read from --password-file "
                             "('-': standard input); at least 12 characters.")
    u.add_argument("name")
    u.add_argument("--role", choices=accounts.ROLES, required=True)
    u.add_argument("--password-file", metavar="FILE")
    with_config(u, json_flag=False)
    u = users_sub.add_parser("list", help="every account and its role")
    with_config(u)
    p = sub.add_parser("status", help="every system's newest backup and verification, RPO and what is open",
                       description="Per system and target: the newest backup (level, age, outcome, size), the newest "
                       "verification (age, verdict, site, scratch host), the RPO achieved against the objective, and "
                       "every open problem (backup_failed, verification_failed, rpo_breach, coverage_overdue, "
                       "no_scratch_host, agent_silent).",
                       epilog="Exit codes: 0 all well, 1 something failed or is overdue (for cron and monitoring), "
                       "2 bad input.")
    with_config(p)
    p = sub.add_parser("plan", help="tonight's verification plan: show it with the reason for every job, or run it")
    plan_sub = p.add_subparsers(dest="plan_command", required=True, metavar="ACTION")
    for name, text in (("show", "the jobs tonight's plan would queue, why, and what is overdue"),
                       ("run", "queue the plan now (drillctl serve also does it at the window's start)")):
        a = plan_sub.add_parser(name, help=text)
        with_config(a)
    p = sub.add_parser("jobs", help="the job queue")
    jobs_sub = p.add_subparsers(dest="jobs_command", required=True, metavar="ACTION")
    j = jobs_sub.add_parser("list", help="jobs and their state")
    with_config(j)
    j.add_argument("--state", choices=queue.STATES)
