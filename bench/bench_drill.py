"""Benchmark: a same-city DR drill's RTO versus the sum of raw restores of the same snapshots, side by side.

Backs up, once, about 1 GB in a few thousand files and a table of about 1.5
million rows in the machine's PostgreSQL and MariaDB, replicated to a second
(same-city) repository. Then, alternating the order in each round:

* raw: ``restic restore`` of the files snapshot, ``restic dump | pg_restore`` and
  ``restic dump | mariadb`` of the dumps, from the same-city repository, one after
  the other (what an operator would do by hand); their times summed;
* drill: ``drillctl drill run --site same-city`` over the three targets; its RTO is
  drill start → last target verified (restic check, restore into scratch and
  throwaway instances, every file and table compared, every step signed).

Usage: python bench/bench_drill.py [--size-mb 1024] [--files 3000] [--rows 1500000] [--repeat 3] [--restic PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_verify import in_workdir, make_parser, prepare, timed


def _run(args: argparse.Namespace, agent: str, work: str) -> int:
    estate = prepare(args, agent, work, site="same-city")
    drill_config = os.path.join(work, "drill.yaml")
    with open(drill_config, "w") as handle:
        yaml.safe_dump({"state_dir": os.path.join(work, "coordinator"),
                        "systems": {"bench": {"agent_config": estate.config}}}, handle)
    raw_sums: list[float] = []
    rtos: list[float] = []
    walls: list[float] = []
    for number in range(args.repeat):
        def run_raw(number: int = number) -> None:
            total = 0.0
            for kind, make in estate.raw.items():
                elapsed, _ = timed(make(number), estate.renv)
                estate.cleanup[kind](number)
                total += elapsed
            raw_sums.append(total)

        def run_drill() -> None:
            elapsed, out = timed(["drillctl", "drill", "run", "-c", drill_config, "--site", "same-city", "--json"],
                                 estate.env)
            drill = json.loads(out)
            if drill["verdict"] != "passed":
                raise SystemExit(f"the drill did not pass: {drill['systems']}")
            rtos.append(max(row["rto_seconds"] for row in drill["systems"]))
            walls.append(elapsed)

        for step in (run_raw, run_drill) if number % 2 == 0 else (run_drill, run_raw):
            step()
        print(f"round {number + 1}/{args.repeat} done", file=sys.stderr)
    raw, rto, wall = (statistics.median(v) for v in (raw_sums, rtos, walls))
    result = {"restic": args.restic, "size_mb": args.size_mb, "rows": args.rows, "raw_restores_seconds": round(raw, 2),
              "drill_rto_seconds": round(rto, 2), "drill_command_seconds": round(wall, 2),
              "ratio": round(rto / raw, 3)}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"raw restores (sum) {raw:7.2f} s   drill RTO {rto:7.2f} s   ratio {rto / raw:.3f}  (target <= 1.25)   "
              f"whole drillctl command {wall:.2f} s (median of {args.repeat})")
    return 0


def main() -> int:
    args = make_parser(__doc__).parse_args()
    return in_workdir(lambda agent, work: _run(args, agent, work))


if __name__ == "__main__":
    sys.exit(main())
