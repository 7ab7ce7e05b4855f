"""Benchmark: ``drillctl serve`` on the machine's PostgreSQL under many simulated agents.

Simulated agents are lightweight clients (one Ed25519 key each, enrolled straight into the database), not full
agents; every request they send is signed and checked exactly as a real agent's. Two phases:

* **polls**: every agent polls once, spread over ``--poll-seconds``; a fifth of them have a job waiting, which the
  poll claims and signs. Reported: p50/p99 latency of polls that claimed a job and of those that did not.
* **records**: agents push batches of ``--batch`` signed backup records, ``--concurrency`` at a time. Reported:
  records taken into the ledger per second.

Also the service's peak memory (VmHWM). The verification window is set away from now unless ``--plan-during``: then
serve makes the nightly plan over every agent (in a process of its own) while they poll. Only loopback is used;
every loop is bounded.

Then (``--part drill`` alone, ``--part load`` to skip it) a same-city drill of real agents dispatched to two
scratch hosts, its RTO against the sum of raw restores (see ``fleet_drill.py``).

Usage: python bench/bench_coordinator.py [--part all|load|drill] [--agents 10000] [--poll-seconds 60]
           [--records 20000] [--batch 50] [--concurrency 32] [--plan-during]
           [--drill-systems 4] [--drill-size-mb 256] [--drill-capacity 2] [--repeat 2] [--restic PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

import httpx
import psycopg
import yaml

from agents.contract import httpsig, signing
from agents.contract.inventory import Inventory
from drill.fleet.tables import create_fleet_tables
from drill.ledger.ledger import Ledger
from drill.ledger.store import open_store

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fleet_drill  # beside this file; bench/ is not a package

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"

def _window(plan_during: bool) -> str:
    """The verification window: around now when the nightly plan is to be made during the polls, else three hours
    away."""
    hour = (time.localtime().tm_hour + (0 if plan_during else 3)) % 24
    return f"{hour:02d}:00-{(hour + 1) % 24:02d}:00"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _record(host: str, number: int) -> dict[str, Any]:
    return {"schema": "drill.result/v1", "record_id": str(uuid.uuid4()),
            "job": {"id": f"bench-{host}-{number}", "kind": "backup"}, "host": host, "agent": host,
            "policy": "nightly", "target": {"name": "documents", "kind": "files"},
            "repository": {"name": "local", "site": "local"},
            "level": {"requested": "incremental", "effective": "incremental"},
            "timings": {"started": "2026-11-30T01:00:00Z", "finished": "2026-11-30T01:00:05Z",
                        "duration_seconds": 5.0, "phases": {}}, "outcome": "success", "findings": []}


def _enrol_all(url: str, count: int, coordinator: signing.SigningKey) -> list[tuple[str, signing.SigningKey]]:
    """``count`` agents enrolled straight into the tables (the HTTP enrolment is one request each, not measured)."""
    store = open_store(url)
    create_fleet_tables(store)
    ledger = Ledger(store, coordinator, "coordinator")
    agents = []
    inventory = json.dumps(Inventory(host="x", targets={"documents": {"kind": "files"}},
                                     repositories={"local": {"site": "local"}}).model_dump(mode="json", by_alias=True))
    now = time.time()
    with psycopg.connect(url, autocommit=False) as connection:
        with connection.cursor() as cursor:
            for number in range(count):
                key = signing.generate_key()
                host = f"vm{number:05d}"
                pem = signing.public_pem(key.public)
                cursor.execute(
                    "INSERT INTO fleet_agents (agent_id, host, role, site, public_pem, inventory, version, capacity, "
                    "status, enrolled, revoked, last_seen, last_address) VALUES (%s, %s, 'agent', 'local', %s, %s, "
                    "'bench', 1, 'approved', %s, NULL, NULL, NULL)", (key.keyid, host, pem, inventory, now))
                cursor.execute("INSERT INTO ledger_keys (keyid, public_pem, owner, role, added) VALUES "
                               "(%s, %s, %s, 'agent', '2026-11-30T00:00:00Z')", (key.keyid, pem, host))
                agents.append((host, key))
        connection.commit()
    del ledger
    store.close()
    return agents


def _queue_jobs(url: str, agents: list[tuple[str, signing.SigningKey]]) -> int:
    """A backup job waiting for every fifth agent."""
    store = open_store(url)
    now = time.time()
    from drill.fleet import queue  # noqa: PLC0415

    count = 0
    for host, key in agents[::5]:
        queue.enqueue(store, {"kind": "backup", "policy": "nightly"}, reason=f"bench {host}", now=now,
                      lifetime=3600, agent_id=key.keyid)
        count += 1
    store.close()
    return count


async def _post(client: httpx.AsyncClient, key: signing.SigningKey, path: str, document: Any) -> tuple[float, Any]:
    body = json.dumps(document, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json", **httpsig.sign_request(key, "POST", path, body)}
    started = time.perf_counter()
    response = await client.post(path, content=body, headers=headers)
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"{path}: {response.status_code} {response.text[:300]}")
    return elapsed, response.json()


async def _polls(base: str, agents: list[tuple[str, signing.SigningKey]], spread: float) -> dict[str, Any]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # a benchmark on loopback; agents pin the fingerprint
    claimed: list[float] = []
    idle: list[float] = []
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=base, verify=context, limits=limits, timeout=60) as client:
        started = time.monotonic()

        async def one(index: int, key: signing.SigningKey) -> None:
            await asyncio.sleep(max(0.0, started + spread * index / len(agents) - time.monotonic()))
            elapsed, answer = await _post(client, key, "/v1/poll", {"running": [], "free": 1})
            (claimed if answer["jobs"] else idle).append(elapsed)

        await asyncio.gather(*(one(i, key) for i, (_, key) in enumerate(agents)))
        wall = time.monotonic() - started
    return {"polls": len(agents), "poll_wall_seconds": round(wall, 1), "claims": len(claimed),
            "claim_p50_ms": _ms(claimed, 50), "claim_p99_ms": _ms(claimed, 99),
            "poll_p50_ms": _ms(idle, 50), "poll_p99_ms": _ms(idle, 99)}


def _ms(values: list[float], percentile: int) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(1000 * ordered[min(len(ordered) - 1, int(len(ordered) * percentile / 100))], 1)


async def _records(base: str, agents: list[tuple[str, signing.SigningKey]], total: int, batch: int,
                   concurrency: int) -> dict[str, Any]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    batches = []
    for number in range(total // batch):
        host, key = agents[number % len(agents)]
        batches.append((key, [key.sign_document(_record(host, number * batch + i)) for i in range(batch)]))
    semaphore = asyncio.Semaphore(concurrency)
    taken = 0
    async with httpx.AsyncClient(base_url=base, verify=context, timeout=120) as client:
        started = time.monotonic()

        async def push(key: signing.SigningKey, records: list[dict[str, Any]]) -> None:
            nonlocal taken
            async with semaphore:
                _, answer = await _post(client, key, "/v1/records", {"records": records})
                taken += sum(1 for r in answer["results"] if r["status"] == "taken")

        await asyncio.gather(*(push(key, records) for key, records in batches))
        wall = time.monotonic() - started
    return {"records": taken, "records_wall_seconds": round(wall, 1), "records_per_second": round(taken / wall)}


def _peak_memory_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("all", "load", "drill"), default="all",
                        help="the simulated agents' load, the fleet drill, or both")
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--poll-seconds", type=float, default=60.0, help="spread the agents' polls over this")
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--plan-during", action="store_true",
                        help="let serve make the nightly plan (over every agent) while they poll")
    fleet_drill.add_arguments(parser)
    args = parser.parse_args()
    results: dict[str, Any] = {}
    if args.part in ("all", "load"):
        results |= _load(args)
    if args.part in ("all", "drill") and args.drill_systems > 0:
        results |= fleet_drill.with_database(args, ADMIN, _free_port())
    print(json.dumps(results, indent=2))
    targets = []
    if "claim_p99_ms" in results:
        targets.append(("claim p99 < 100 ms", (results["claim_p99_ms"] or 0) < 100))
        targets.append((">= 1000 records/s", results["records_per_second"] >= 1000))
    if "drill_rto_ratio" in results:
        targets.append(("drill RTO <= 1.0x the raw restores' sum", results["drill_rto_ratio"] <= 1.0))
    for name, met in targets:
        print(f"target {name}: {'met' if met else 'NOT met'}")
    return 0


def _load(args: argparse.Namespace) -> dict[str, Any]:
    """The simulated agents' polls and record pushes against serve on a database of its own; the figures."""
    database = f"drill_bench_{secrets.token_hex(4)}"
    work = tempfile.mkdtemp(prefix="drill-bench-coordinator-")
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {database}")
    url = f"postgresql://postgres@127.0.0.1:5432/{database}"
    serve = None
    try:
        state = os.path.join(work, "coordinator")
        coordinator, _ = signing.ensure_key(os.path.join(state, "keys"))
        print(f"enrolling {args.agents} simulated agents ...", flush=True)
        agents = _enrol_all(url, args.agents, coordinator)
        jobs = _queue_jobs(url, agents)
        port = _free_port()
        config = os.path.join(work, "coordinator.yaml")
        with open(config, "w") as handle:
            yaml.safe_dump({"state_dir": state, "ledger": url, "listen": f"127.0.0.1:{port}",
                            "fleet": {"connections": 8}, "verification": {"window": _window(args.plan_during)}}, handle)
        program = shutil.which("drillctl") or os.path.join(os.path.dirname(sys.executable), "drillctl")
        serve = subprocess.Popen([program, "serve", "-c", config], stdout=subprocess.PIPE, text=True)
        assert serve.stdout is not None
        base = serve.stdout.readline().split()[-1]
        serve.stdout.readline()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/healthz", verify=False, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        print(f"{jobs} jobs queued; polling ...", flush=True)
        polls = asyncio.run(_polls(base, agents, args.poll_seconds))
        print(f"pushing {args.records} records ...", flush=True)
        records = asyncio.run(_records(base, agents, args.records, args.batch, args.concurrency))
        return {"agents": args.agents, **polls, **records, "serve_peak_memory_mb": _peak_memory_mb(serve.pid)}
    finally:
        if serve is not None:
            serve.terminate()
            serve.wait(60)
        with psycopg.connect(ADMIN, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
