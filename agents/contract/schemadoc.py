"""A config schema as a reference page: every key with its path, type, default, description and example.

``scripts/make_docs.py`` writes ``docs/configuration.md`` with it; a test fails
when that page no longer matches the schemas, so the reference cannot drift.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any


def _type(schema: dict[str, Any]) -> str:
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    if "enum" in schema:
        return " \\| ".join(f"`{json.dumps(v)}`" for v in schema["enum"])
    if "oneOf" in schema or "anyOf" in schema:
        return " or ".join(_type(s) for s in schema.get("oneOf", schema.get("anyOf", [])))
    kind = schema.get("type", "")
    if kind == "array":
        return f"list of {_type(schema.get('items', {})) or 'values'}"
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict) and "properties" not in schema:
        return "mapping of names"
    return str(kind)


def _cell(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
    return text.replace("|", "\\|").replace("\n", " ")


def _rows(schema: dict[str, Any], path: str, required: bool) -> Iterator[str]:
    default = f"`{_cell(schema['default'])}`" if "default" in schema else ("required" if required else "")
    example = f"`{_cell(schema['examples'][0])}`" if schema.get("examples") and not (
        "properties" in schema or isinstance(schema.get("additionalProperties"), dict)) else ""
    yield (f"| `{path}` | {_type(schema)} | {default} | {_cell(schema.get('description', ''))} | {example} |")
    needed = set(schema.get("required", []))
    for key, sub in schema.get("properties", {}).items():
        yield from _rows(sub, f"{path}.{key}" if path else key, key in needed)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        if "allOf" in extra and "properties" in extra:  # a kind-dispatched entry (targets): each kind's keys
            yield from _rows({k: v for k, v in extra.items() if k != "allOf"}, f"{path}.NAME", False)
            for branch in extra["allOf"]:
                kind = branch["if"]["properties"]["kind"]["const"]
                then = branch["then"]
                for key, sub in then.get("properties", {}).items():
                    if key != "kind":
                        yield from _rows(sub, f"{path}.NAME.{key} ({kind})", key in set(then.get("required", [])))
        else:
            yield from _rows(extra, f"{path}.NAME", False)


def render_reference(title: str, schema: dict[str, Any], intro: str) -> str:
    """A Markdown section documenting every key of ``schema``."""
    lines = [f"## {title}", "", intro, "", "| key | type | default | description | example |",
             "|---|---|---|---|---|"]
    lines += [row for row in _rows(schema, "", True) if not row.startswith("| `` |")]
    return "\n".join(lines) + "\n"
