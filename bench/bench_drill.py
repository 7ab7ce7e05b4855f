"""Benchmark: a same-city DR drill's RTO versus the sum of raw restores of the same snapshots, side by side.

Backs up, once, about 1 GB in a few thousand files and a table of about 1.5
million rows in the machine's PostgreSQL and MariaDB, replicated to a second
(same-city) repository. Then, alternating the order in each round:

* raw: ``restic restore`` of the files snapshot, ``restic dump | pg_restore`` and
  ``restic dump | mariadb`` of the dumps, from the same-city repository, one after
  the other (what an operator would do by hand); their times summed;
* drill: ``drillctl drill run --site same-city`` over the three targets; its RTO is
  drill start → last target verified (restic check, restore into scratch and
  throwaway instances, every file and table compared, every step signed). With
  ``--parallel 1,2`` a drill runs with each ``--parallel`` in every round.

Usage: python bench/bench_drill.py [--size-mb 1024] [--files 3000] [--rows 1500000] [--repeat 3] [--restic PATH]
                                   [--parallel N[,N...]]
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
    rtos: dict[int, list[float]] = {n: [] for n in args.parallel}
    walls: dict[int, list[float]] = {n: [] for n in args.parallel}
    for number in range(args.repeat):
        def run_raw(number: int = number) -> None:
            total = 0.0
            for kind, make in estate.raw.items():
                elapsed, _ = timed(make(number), estate.renv)
                estate.cleanup[kind](number)
                total += elapsed
            raw_sums.append(total)

        def run_drills() -> None:
            for parallel in args.parallel:
                elapsed, out = timed(["drillctl", "drill", "run", "-c", drill_config, "--site", "same-city", "--json",
                                      "--parallel", str(parallel)], estate.env)
                drill = json.loads(out)
                if drill["verdict"] != "passed":
                    raise SystemExit(f"the drill did not pass: {drill['systems']}")
                rtos[parallel].append(max(row["rto_seconds"] for row in drill["systems"]))
                walls[parallel].append(elapsed)

        for step in (run_raw, run_drills) if number % 2 == 0 else (run_drills, run_raw):
            step()
        print(f"round {number + 1}/{args.repeat} done", file=sys.stderr)
    raw = statistics.median(raw_sums)
    drills = {n: {"drill_rto_seconds": round(statistics.median(rtos[n]), 2),
                  "drill_command_seconds": round(statistics.median(walls[n]), 2),
                  "ratio": round(statistics.median(rtos[n]) / raw, 3)} for n in args.parallel}
    result = {"restic": args.restic, "size_mb": args.size_mb, "rows": args.rows, "raw_restores_seconds": round(raw, 2),
              "drills": {str(n): figures for n, figures in drills.items()}}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"raw restores (sum) {raw:7.2f} s (median of {args.repeat})")
    for n, figures in drills.items():
        print(f"  --parallel {n}: drill RTO {figures['drill_rto_seconds']:7.2f} s   ratio {figures['ratio']:.3f}  "
              f"(target <= 1.25)   whole drillctl command {figures['drill_command_seconds']:.2f} s")
    return 0


def _parallel_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--parallel takes numbers separated by commas, not {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("--parallel takes numbers of at least 1")
    return values


def main() -> int:
    parser = make_parser(__doc__)
    parser.add_argument("--parallel", type=_parallel_list, default=[1],
                        help="drill steps at once; several, separated by commas, are each measured (default 1)")
    args = parser.parse_args()
    return in_workdir(lambda agent, work: _run(args, agent, work))


if __name__ == "__main__":
    sys.exit(main())
