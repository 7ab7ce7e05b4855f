"""Write what is generated under docs/: the JSON Schemas of the documents and the configuration reference.

    .venv/bin/python scripts/make_docs.py           # write docs/schemas/*.json and docs/configuration.md
    .venv/bin/python scripts/make_docs.py --check   # exit 1, naming the files, when they are stale

The test suite runs ``--check``: a schema changed without regenerating fails CI.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents.config.schema import CONFIG_SCHEMA  # noqa: E402
from agents.contract import fleet  # noqa: E402
from agents.contract.inventory import Inventory  # noqa: E402
from agents.contract.jobs import job_json_schema  # noqa: E402
from agents.contract.records import record_json_schema  # noqa: E402
from agents.contract.schemadoc import render_reference  # noqa: E402
from drill.config import SCHEMA as DRILL_SCHEMA  # noqa: E402

CONFIGURATION_HEAD = """\
# Configuration reference

Generated from the schemas by `scripts/make_docs.py`; do not edit by hand. `drill-agent config example`
prints an annotated agent config, and `drill-agent config validate FILE` checks one, naming every problem with
its line. `NAME` stands for a name you choose (letters, digits, `_`, `.`, `-`).

"""


def generated() -> dict[str, str]:
    """Every generated file (path relative to the repository) and its content."""
    schemas = {"drill.result.v1.json": record_json_schema(), "drill.job.v1.json": job_json_schema(),
               "drill.inventory.v1.json": Inventory.model_json_schema(by_alias=True),
               **{f"drill.fleet.v1.{model.__name__}.json": model.model_json_schema(by_alias=True)
                  for model in fleet.WIRE_DOCUMENTS}}
    files = {f"docs/schemas/{name}": json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
             for name, schema in schemas.items()}
    files["docs/configuration.md"] = CONFIGURATION_HEAD + "\n".join([
        render_reference("The agent's config (`drill-agent --config`)", CONFIG_SCHEMA,
                         "One file per host; secrets stay in the files it names (mode 0600), never in it."),
        render_reference("The coordinator's drill config (`drillctl --config`)", DRILL_SCHEMA,
                         "Names the agent configs a drill covers, the objectives and the ledger."),
    ])
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale files (exit 1)")
    args = parser.parse_args()
    stale = []
    for relative, content in generated().items():
        path = ROOT / relative
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == content:
            continue
        stale.append(relative)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8")
    if args.check and stale:
        print(f"stale: {', '.join(stale)}; run: python scripts/make_docs.py", file=sys.stderr)
        return 1
    for relative in stale:
        print(f"wrote {relative}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
