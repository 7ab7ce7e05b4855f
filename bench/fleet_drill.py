"""The fleet drill part of ``bench_coordinator.py``: a same-city drill dispatched to two scratch hosts, against the
sum of raw restores of the same snapshots one after the other.

Sets up ``--drill-systems`` systems (``--drill-size-mb`` each, in files of about 1 MiB), each a real agent
(``drill-agent run`` on its own loopback address and state dir) backing up to a local repository and replicating
to a same-city one, and two scratch hosts at the same city (``--drill-capacity`` jobs each), all enrolled with
``drillctl serve`` on the machine's PostgreSQL. Then, alternating the order in each of ``--repeat`` rounds:

* raw: ``restic restore latest`` of each system's same-city repository, one after the other; the times summed;
* drill: ``drillctl drill run --site same-city``; its RTO is drill start → the last system verified (a restic check,
  the restore on a scratch host, every file compared with its manifest, every step signed).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import psycopg
import yaml

from agents.contract import signing

FILE_BYTES = 1 << 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--drill-systems", type=int, default=4, help="systems in the drill (0: skip the drill)")
    parser.add_argument("--drill-size-mb", type=int, default=256, help="data of each system")
    parser.add_argument("--drill-capacity", type=int, default=2,
                        help="jobs at once on each scratch host (2: the default of a scratch host's fleet.capacity)")
    parser.add_argument("--repeat", type=int, default=2, help="rounds of raw restores and drills")
    parser.add_argument("--restic", default=shutil.which("restic") or "restic")


def _program(name: str) -> str:
    found = shutil.which(name) or os.path.join(os.path.dirname(sys.executable), name)
    if not os.path.exists(found):
        raise SystemExit(f"{name} is not on PATH; run bash scripts/setup.sh and use .venv/bin/python")
    return found


def _run(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    """Run ``argv``; its seconds and stdout, or exit with its stderr if it fails."""
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} … failed ({done.returncode}): {done.stderr[-800:]}")
    return time.perf_counter() - started, done.stdout


def _write_yaml(path: str, document: dict[str, Any]) -> str:
    with open(path, "w") as handle:
        yaml.safe_dump(document, handle)
    return path


def _wait(what: str, condition: Any, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.5)


@contextlib.contextmanager
def _processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    try:
        yield started
    finally:
        for process in started:
            process.terminate()
        for process in started:
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()


def _estate(args: argparse.Namespace, work: str) -> tuple[list[str], list[str], dict[str, str]]:
    """Agent configs with data and a full backup each, scratch host configs, and each system's same-city repository
    by host."""
    password = os.path.join(work, "restic.pw")
    with open(password, "w") as handle:
        handle.write(os.urandom(12).hex() + "\n")
    os.chmod(password, 0o600)
    agents, cities = [], {}
    for number in range(args.drill_systems):
        host = f"sys{number + 1:02d}"
        data = os.path.join(work, host, "data")
        os.makedirs(data)
        for index in range(args.drill_size_mb):
            with open(os.path.join(data, f"{index:05d}.bin"), "wb") as handle:
                handle.write(os.urandom(FILE_BYTES))
        repositories = {site: {"url": os.path.join(work, "repos", f"{host}-{site}"), "password_file": password,
                               "site": site} for site in ("local", "same-city")}
        cities[host] = str(repositories["same-city"]["url"])
        agents.append(_write_yaml(os.path.join(work, f"{host}.yaml"), {
            "host": host, "state_dir": os.path.join(work, host, "state"), "restic": {"binary": args.restic},
            "repositories": repositories, "targets": {"files": {"kind": "files", "paths": [data]}},
            "policies": {"nightly": {"targets": ["files"], "repository": "local", "replicate_to": ["same-city"]}},
            "fleet": {"source_address": f"127.0.0.{10 + number}"}}))
        _run([_program("drill-agent"), "init", "-c", agents[-1]])
        _run([_program("drill-agent"), "backup", "-c", agents[-1], "-p", "nightly", "--level", "full"])
        print(f"  {host}: {args.drill_size_mb} MiB backed up and replicated", file=sys.stderr, flush=True)
    readable = {f"{host}-city": {"url": url, "password_file": password, "site": "same-city"}
                for host, url in cities.items()}
    scratches = []
    for number in (1, 2):
        directory = tempfile.mkdtemp(prefix="drill-bench-scratch-", dir="/tmp")
        os.chmod(directory, 0o755)  # throwaway instances run as an unprivileged account
        scratches.append(_write_yaml(os.path.join(work, f"scratch{number}.yaml"), {
            "host": f"scratch{number}", "role": "scratch", "state_dir": os.path.join(work, f"scratch{number}"),
            "restic": {"binary": args.restic}, "repositories": readable, "scratch": {"directory": directory},
            "fleet": {"source_address": f"127.0.1.{number}", "capacity": args.drill_capacity}}))
    return agents, scratches, cities


def run(args: argparse.Namespace, url: str, work: str, port: int) -> dict[str, Any]:
    """Set up the estate in ``work``, serve on ``port`` with the ledger at ``url``, measure; the figures."""
    print(f"setting up {args.drill_systems} systems for the drill ...", file=sys.stderr, flush=True)
    agents, scratches, cities = _estate(args, work)
    config = _write_yaml(os.path.join(work, "drill-coordinator.yaml"), {
        "state_dir": os.path.join(work, "drill-coordinator"), "ledger": url, "listen": f"127.0.0.1:{port}",
        "fleet": {"poll_seconds": 1},
        "verification": {"window": f"{(time.localtime().tm_hour + 3) % 24:02d}:00-"
                                   f"{(time.localtime().tm_hour + 4) % 24:02d}:00"}})
    ctl, agent = _program("drillctl"), _program("drill-agent")
    with _processes() as started:
        serve = subprocess.Popen([ctl, "serve", "-c", config], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                 text=True)
        started.append(serve)
        assert serve.stdout is not None
        base, fingerprint = serve.stdout.readline().split()[-1], serve.stdout.readline().split()[-1]
        for path, role in [*((a, "agent") for a in agents), *((s, "scratch") for s in scratches)]:
            _, out = _run([ctl, "agents", "token", "-c", config, "--role", role])
            site = "local" if role == "agent" else "same-city"
            _run([agent, "enrol", "-c", path, "--coordinator", base, "--token", out.strip().splitlines()[-1],
                  "--server-fingerprint", fingerprint, "--site", site])
            started.append(subprocess.Popen([agent, "run", "-c", path, "--tick", "1"], stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL, text=True))
        with psycopg.connect(url, autocommit=True) as ledger:
            def delivered() -> bool:
                row = ledger.execute("SELECT count(*) FROM ledger_entries WHERE kind = 'backup'").fetchone()
                return bool(row and row[0] == len(agents))
            _wait("every backup record at the coordinator", delivered)
        raw_sums: list[float] = []
        rtos: list[float] = []
        env = {**os.environ, "RESTIC_PASSWORD_FILE": os.path.join(work, "restic.pw")}
        for number in range(args.repeat):
            def raw() -> None:
                total = 0.0
                for host, repository in cities.items():
                    target = os.path.join(work, "raw-restore", host)
                    elapsed, _ = _run([args.restic, "-r", repository, "restore", "latest", "--target", target], env)
                    shutil.rmtree(target)
                    total += elapsed
                raw_sums.append(total)

            def drill() -> None:
                _, out = _run([ctl, "drill", "run", "-c", config, "--site", "same-city", "--json"])
                result = json.loads(out)
                if result["verdict"] != "passed":
                    raise SystemExit(f"the drill did not pass: {result['systems']}")
                rtos.append(max(row["rto_seconds"] for row in result["systems"]))

            for step in (raw, drill) if number % 2 == 0 else (drill, raw):
                step()
            print(f"  drill round {number + 1}/{args.repeat}: raw sum {raw_sums[-1]:.1f} s, "
                  f"drill RTO {rtos[-1]:.1f} s", file=sys.stderr, flush=True)
        phases, timeline = _verify_phases(url, len(agents))
    raw_sum, rto = statistics.median(raw_sums), statistics.median(rtos)
    return {"drill_systems": args.drill_systems, "drill_size_mb_each": args.drill_size_mb,
            "scratch_hosts": 2, "scratch_capacity": args.drill_capacity, "raw_restore_sum_s": round(raw_sum, 2),
            "drill_rto_s": round(rto, 2), "drill_rto_ratio": round(rto / raw_sum, 2),
            "drill_verify_phases_s": phases, "drill_jobs_s": timeline}


def _verify_phases(url: str, count: int) -> tuple[dict[str, float], list[dict[str, float]]]:
    """Where the last drill's time went: the mean of each phase over its ``count`` verify records, and for each of
    its jobs the seconds from queued to started, started to finished, finished to its record taken in."""
    with psycopg.connect(url, autocommit=True) as ledger:
        rows = ledger.execute("SELECT envelope FROM ledger_entries WHERE kind = 'verify' ORDER BY idx DESC LIMIT %s",
                              (count,)).fetchall()
        queued = {job_id: (created, updated) for job_id, created, updated in ledger.execute(
            "SELECT job_id, created, updated FROM fleet_jobs WHERE drill_id IS NOT NULL").fetchall()}
    sums: dict[str, float] = {}
    timeline = []
    for (envelope,) in rows:
        payload = signing.envelope_payload(json.loads(envelope))
        timings = payload["timings"]
        for phase, seconds in timings.get("phases", {}).items():
            sums[phase] = sums.get(phase, 0.0) + seconds / len(rows)
        created, updated = queued.get(payload["job"]["request"], (None, None))
        if created is not None:
            started = datetime.fromisoformat(timings["started"]).timestamp()
            finished = datetime.fromisoformat(timings["finished"]).timestamp()
            timeline.append({"queued_to_started": round(started - created, 2),
                             "ran": round(finished - started, 2), "to_ledger": round(updated - finished, 2)})
    return {phase: round(seconds, 2) for phase, seconds in sums.items()}, timeline


def with_database(args: argparse.Namespace, admin_url: str, port: int) -> dict[str, Any]:
    """:func:`run` on a database of its own and a work folder, both removed afterwards."""
    database = f"drill_bench_drill_{os.urandom(4).hex()}"
    work = tempfile.mkdtemp(prefix="drill-bench-drill-")
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {database}")
    try:
        return run(args, admin_url.rsplit("/", 1)[0] + f"/{database}", work, port)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        shutil.rmtree(work, ignore_errors=True)
        for leftover in os.listdir("/tmp"):
            if leftover.startswith("drill-bench-scratch-"):
                shutil.rmtree(os.path.join("/tmp", leftover), ignore_errors=True)
