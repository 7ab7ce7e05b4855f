"""``drill-agent config example``: an annotated config written from the schema itself.

Every key is preceded by its description, so the example and the reference can
never drift apart.
"""

from __future__ import annotations

import json
from typing import Any

from agents.config.schema import CONFIG_SCHEMA


def _subschema(schema: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    properties = schema.get("properties", {})
    if key in properties:
        found: dict[str, Any] = properties[key]
    elif isinstance(schema.get("additionalProperties"), dict):
        found = schema["additionalProperties"]
    else:
        return {}
    # Resolve a kind-dispatched schema (targets) to the branch the value selects.
    if isinstance(value, dict) and "allOf" in found:
        for branch in found["allOf"]:
            wanted = branch.get("if", {}).get("properties", {}).get("kind", {}).get("const")
            if wanted == value.get("kind"):
                return dict(branch["then"])
    return found


def example_value(schema: dict[str, Any]) -> Any:
    """The example of ``schema``: its own, or one built from its properties' examples."""
    if "properties" in schema and not isinstance(schema.get("additionalProperties"), dict) and "examples" not in schema:
        return {k: example_value(s) for k, s in schema["properties"].items() if "examples" in s or "properties" in s}
    return schema["examples"][0]


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False) if any(c in value for c in ":#{}[],&*!|>'\"%@`") else value
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, ensure_ascii=False)


def _render(schema: dict[str, Any], value: dict[str, Any], indent: int, lines: list[str]) -> None:
    pad = "  " * indent
    for key, item in value.items():
        sub = _subschema(schema, key, item)
        description = sub.get("description")
        if description:
            lines.append(f"{pad}# {description}")
        if isinstance(item, dict):
            lines.append(f"{pad}{key}:")
            _render(sub, item, indent + 1, lines)
        elif isinstance(item, list) and all(not isinstance(i, dict | list) for i in item):
            lines.append(f"{pad}{key}: [{', '.join(_scalar(i) for i in item)}]")
        else:
            lines.append(f"{pad}{key}: {_scalar(item)}")


def render_example() -> str:
    """The annotated example configuration as YAML text."""
    lines = [
        "# drill-agent configuration. Validate with: drill-agent config validate FILE",
        "",
    ]
    example = example_value(CONFIG_SCHEMA)
    _render(CONFIG_SCHEMA, example, 0, lines)
    return "\n".join(lines) + "\n"
