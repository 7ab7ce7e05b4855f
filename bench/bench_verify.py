"""Benchmark: ``drill-agent verify`` versus a raw restore of the same snapshot, side by side.

Backs up, once, about 1 GB in a few thousand files and a table of about 1.5
million rows in the machine's PostgreSQL and MariaDB; then, alternating the
order in each round:

* files  raw:   ``restic restore SNAPSHOT --target DIR`` into a fresh directory;
* files  drill: ``drill-agent verify`` (``restic check`` with a 1/30 read-data
  subset, restore into scratch, re-hash and compare every file);
* postgres raw: ``restic dump … | pg_restore`` into a new database of the machine's
  server; drill: ``drill-agent verify`` (throwaway cluster, load, checksum every table);
* mariadb  raw: ``restic dump … | mariadb`` into a new database; drill: the same verify.

Every figure is a whole command-line process, start-up included. The ratio
drill/raw is printed per kind, with drill's own phases.

Usage: python bench/bench_verify.py [--size-mb 1024] [--files 3000] [--rows 1500000] [--repeat 3] [--restic PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_backup import make_data
from bench_databases import DB, drop_bench_databases, setup_mariadb, setup_postgres


def timed(argv: list[str] | str, env: dict[str, str]) -> tuple[float, str]:
    """Run ``argv`` (a string: through bash); return its seconds and stdout, or exit if it fails."""
    started = time.perf_counter()
    if isinstance(argv, str):
        argv = ["bash", "-c", argv]
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{argv} failed ({result.returncode}): {result.stderr[-800:]}")
    return elapsed, result.stdout


def make_parser(description: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--files", type=int, default=3000)
    parser.add_argument("--rows", type=int, default=1_500_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--restic", default=shutil.which("restic") or "restic")
    parser.add_argument("--json", action="store_true")
    return parser


def in_workdir(run: Callable[[str, str], int]) -> int:
    """Call ``run(agent, work)`` in a fresh work folder; remove it and the bench databases afterwards."""
    agent = shutil.which("drill-agent")
    if agent is None:
        raise SystemExit("drill-agent is not on PATH; run bash scripts/setup.sh and use .venv/bin/python")
    work = tempfile.mkdtemp(prefix="drill-vbench-", dir="/var/tmp")
    os.chmod(work, 0o755)  # throwaway instances run as postgres/mysql and must pass through
    try:
        return run(agent, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        drop_bench_databases()


def main() -> int:
    args = make_parser(__doc__).parse_args()
    return in_workdir(lambda agent, work: _run(args, agent, work))


@dataclass
class Estate:
    """Data backed up once, and the raw restores of the same snapshots (by kind, taking a round number)."""

    config: str
    env: dict[str, str]
    raw: dict[str, Callable[[int], str]]
    cleanup: dict[str, Callable[[int], object]]
    renv: dict[str, str]


def prepare(args: argparse.Namespace, agent: str, work: str, *, site: str = "local") -> Estate:
    """Generate the data, back it up (replicated to a same-city repository) and list the raw restores from ``site``."""
    password = os.path.join(work, "pw")
    with open(password, "w") as handle:
        handle.write(secrets.token_hex(16))
    env = {**os.environ, "RESTIC_PASSWORD_FILE": password}
    data = os.path.join(work, "data")
    print(f"generating {args.size_mb} MiB in {args.files} files and {args.rows} rows", file=sys.stderr)
    make_data(data, args.size_mb, args.files)
    setup_postgres(args.rows)
    setup_mariadb(args.rows)
    repositories = {"local": os.path.join(work, "repo"), "same-city": os.path.join(work, "repo-far")}
    scratch = os.path.join(work, "scratch")
    os.mkdir(scratch)
    os.chmod(scratch, 0o755)
    config = os.path.join(work, "agent.yaml")
    with open(config, "w") as handle:
        yaml.safe_dump({
            "host": "bench", "state_dir": os.path.join(work, "state"), "restic": {"binary": args.restic},
            "repositories": {name: {"url": url, "password_file": password} for name, url in repositories.items()},
            "targets": {"files": {"kind": "files", "paths": [data]},
                        "postgres": {"kind": "postgres", "user": "postgres", "databases": [DB], "globals": False},
                        "mariadb": {"kind": "mysql", "user": "root", "databases": [DB]}},
            "policies": {"bench": {"targets": ["files", "postgres", "mariadb"], "repository": "local",
                                   "replicate_to": ["same-city"]}},
            "scratch": {"directory": scratch},
        }, handle)
    timed([agent, "init", "--config", config], env)
    timed([agent, "backup", "--config", config, "--policy", "bench", "--level", "full", "--quiet"], env)
    _, listing = timed([agent, "snapshots", "--config", config, "--repository", site, "--json"], env)
    snapshots = {row["target"]: row["snapshot_id"] for row in json.loads(listing)}
    restic = args.restic
    raw: dict[str, Callable[[int], str]] = {
        "files": lambda n: f"{restic} restore -q {snapshots['files']} --target {scratch}/raw-{n}",
        "postgres": lambda n: (f"set -o pipefail; psql -q -h 127.0.0.1 -U postgres -c 'CREATE DATABASE raw_{n}' && "
                               f"{restic} dump -q {snapshots['postgres']} /{DB}.dump | "
                               f"pg_restore --no-owner -h 127.0.0.1 -U postgres -d raw_{n}"),
        "mariadb": lambda n: (f"set -o pipefail; mariadb -h 127.0.0.1 -u root -e 'CREATE DATABASE raw_{n}' && "
                              f"{restic} dump -q {snapshots['mariadb']} /{DB}.dump | "
                              f"mariadb -h 127.0.0.1 -u root raw_{n}"),
    }
    cleanup: dict[str, Callable[[int], object]] = {
        "files": lambda n: shutil.rmtree(f"{scratch}/raw-{n}", ignore_errors=True),
        "postgres": lambda n: subprocess.run(["psql", "-q", "-h", "127.0.0.1", "-U", "postgres", "-c",
                                              f"DROP DATABASE raw_{n}"], check=True),
        "mariadb": lambda n: subprocess.run(["mariadb", "-h", "127.0.0.1", "-u", "root", "-e",
                                             f"DROP DATABASE raw_{n}"], check=True),
    }
    return Estate(config, env, raw, cleanup, {**env, "RESTIC_REPOSITORY": repositories[site]})


def _run(args: argparse.Namespace, agent: str, work: str) -> int:
    estate = prepare(args, agent, work)
    config, env, raw, cleanup, renv = estate.config, estate.env, estate.raw, estate.cleanup, estate.renv
    seconds: dict[str, list[float]] = {f"{k} {w}": [] for k in raw for w in ("raw", "drill")}
    phases: dict[str, list[dict[str, float]]] = {k: [] for k in raw}
    for number in range(args.repeat):
        for kind, make_raw in raw.items():
            def run_raw(kind: str = kind, make_raw: Any = make_raw, number: int = number) -> None:
                elapsed, _ = timed(make_raw(number), renv)
                cleanup[kind](number)
                seconds[f"{kind} raw"].append(elapsed)

            def run_drill(kind: str = kind) -> None:
                elapsed, out = timed([agent, "verify", "--config", config, "--repository", "local", "--target", kind,
                                      "--latest", "--json"], env)
                [document] = json.loads(out)
                if document["verdict"] != "passed":
                    raise SystemExit(f"verify of {kind} did not pass: {document['findings']}")
                seconds[f"{kind} drill"].append(elapsed)
                phases[kind].append(document["timings"]["phases"])

            for step in (run_raw, run_drill) if number % 2 == 0 else (run_drill, run_raw):
                step()
        print(f"round {number + 1}/{args.repeat} done", file=sys.stderr)
    medians = {k: round(statistics.median(v), 2) for k, v in seconds.items()}
    result = {
        "restic": subprocess.run([args.restic, "version"], capture_output=True, text=True,
                                 check=True).stdout.split()[1],
        "size_mb": args.size_mb, "files": args.files, "rows": args.rows, "seconds": medians,
        "ratios": {k: round(medians[f"{k} drill"] / medians[f"{k} raw"], 3) for k in raw},
        "drill_phases": {k: {p: round(statistics.median(r[p] for r in v), 2) for p in v[0]} for k, v in phases.items()},
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"restic {result['restic']}; {args.size_mb} MiB in {args.files} files; {args.rows} rows; "
          f"median of {args.repeat}")
    for kind in raw:
        print(f"{kind:9} raw {medians[f'{kind} raw']:7.2f} s   drill verify {medians[f'{kind} drill']:7.2f} s   "
              f"ratio {result['ratios'][kind]:.3f}  (target <= 1.15)   phases {result['drill_phases'][kind]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
