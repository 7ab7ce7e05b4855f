"""``drillctl``: the coordinator's command line.

Exit codes: 0 success; 1 something the command checked failed; 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from agents import process
from agents.cli import cmd_snapshots
from agents.records import Outbox
from drill.demo import run_demo


def cmd_demo(args: argparse.Namespace) -> int:
    def say(text: str) -> None:
        if not args.json:
            print(text, flush=True)

    result = run_demo(args.dir, say, args.restic)
    ok = bool(result.records) and all(r.outcome == "success" for r in result.records)
    if args.json:
        json.dump([r.to_document() for r in result.records], sys.stdout, indent=2)
        print()
        return 0 if ok else 1
    print()
    snapshots_args = argparse.Namespace(repository=None, json=False)
    cmd_snapshots(snapshots_args, result.config)
    print(f"\nrecords: {Outbox(result.config.state_dir).path}")
    print(f"config:  {result.config.source}")
    return 0 if ok else 1


def cmd_outbox(args: argparse.Namespace) -> int:
    paths = Outbox(args.state_dir).list()
    if args.json:
        json.dump([Outbox.read(path) for path in paths], sys.stdout, indent=2, ensure_ascii=False)
        print()
    else:
        for path in paths:
            print(path)
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="drillctl", description="Coordinate drill: demos, records, drills.")
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("demo", help="run the embedded default: sample data backed up at all three levels")
    p.add_argument("--dir", default="drill-demo", help="working directory of the demo (default ./drill-demo)")
    p.add_argument("--restic", help="restic binary (default: $DRILL_RESTIC or restic on PATH)")
    p.add_argument("--json", action="store_true", help="print the result records as JSON")
    p = sub.add_parser("outbox", help="list the result records waiting in an agent's outbox")
    p.add_argument("--state-dir", required=True)
    p.add_argument("--json", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level.upper()), format="%(levelname)s %(name)s: %(message)s")
    process.install_signal_handlers()
    commands = {"demo": cmd_demo, "outbox": cmd_outbox}
    return commands[args.command](args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
