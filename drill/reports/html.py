"""A drill report as one self-contained HTML page: no scripts, fonts or images fetched from anywhere.

Verdict first; then scope, site and time; a table per system and target
(snapshot, its age, RPO and RTO against the objectives, what was verified,
findings); a timeline of the drill's steps (inline SVG); the signing keys and
how to verify. The figures are also embedded as JSON (``#drill-figures``) so
that ``drillctl evidence verify`` can check them against the signed records.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from drill.reports.i18n import TEXT, duration

STYLE = """
body { font-family: "Noto Sans CJK SC", "WenQuanYi Micro Hei", "Microsoft YaHei", "PingFang SC", sans-serif;
       margin: 2em; color: #1d1d1f; font-size: 11pt; }
h1 { font-size: 18pt; margin-bottom: 0.2em; }
h2 { font-size: 13pt; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
.verdict { font-size: 16pt; font-weight: bold; padding: 0.4em 0.8em; display: inline-block; border-radius: 4px; }
.passed { background: #e3f5e1; color: #1b5e20; } .failed { background: #fde2e1; color: #b71c1c; }
.incomplete { background: #fff4d6; color: #8a5a00; }
table { border-collapse: collapse; width: 100%; margin-top: 0.5em; }
th, td { border: 1px solid #bbb; padding: 4px 6px; text-align: left; vertical-align: top; font-size: 9.5pt; }
th { background: #f2f2f2; }
.miss { color: #b71c1c; font-weight: bold; }
.nowrap { white-space: nowrap; }
code { font-family: monospace; font-size: 9pt; word-break: break-all; }
"""


def _e(value: object) -> str:
    return html.escape(str(value))


def _parse(moment: str | None) -> datetime | None:
    return datetime.fromisoformat(moment.replace("Z", "+00:00")) if moment else None


def _timeline(figures: dict[str, Any], lang: str) -> str:
    """An inline SVG: one bar per step, from the drill's start."""
    start = _parse(figures["started"])
    rows = [r for r in figures["systems"] if r["step_started"] and r["step_finished"]]
    if start is None or not rows:
        return f"<p>{_e(TEXT[lang]['none'])}</p>"
    ends = [(_parse(r["step_finished"]) or start) for r in rows]
    total = max([1.0, *((end - start).total_seconds() for end in ends)])
    width, label, height = 420, 170, 22
    total_width, total_height = width + label + 70, height * len(rows) + 20
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {total_width} {total_height}" '
             f'width="100%" style="max-width: {total_width * 1.2:.0f}px" role="img">']
    for number, row in enumerate(rows):
        begin = ((_parse(row["step_started"]) or start) - start).total_seconds()
        end = ((_parse(row["step_finished"]) or start) - start).total_seconds()
        x = label + width * begin / total
        w = max(2.0, width * (end - begin) / total)
        y = 10 + number * height
        colour = "#43a047" if row["verdict"] == "passed" else "#e53935"
        parts.append(f'<text x="0" y="{y + 14}" font-size="10">{_e(row["system"])}/{_e(row["target"])}</text>')
        parts.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{height - 6}" fill="{colour}"/>')
        parts.append(f'<text x="{x + w + 4:.1f}" y="{y + 14}" font-size="10">{_e(duration(end, lang))}</text>')
    parts.append("</svg>")
    return "".join(parts)


def render_report(figures: dict[str, Any], keys: Sequence[dict[str, str]], lang: str) -> str:
    """The report page for ``figures`` (see ``figures.drill_figures``) in ``lang`` (zh-CN or en)."""
    t = TEXT[lang]
    verdict = figures["verdict"]
    out = [f'<!DOCTYPE html><html lang="{lang}"><head><meta charset="utf-8"><title>{_e(t["title"])}</title>',
           f"<style>{STYLE}</style></head><body>",
           f"<h1>{_e(t['title'])}</h1>",
           f'<p><span class="verdict {_e(verdict)}">{_e(t["verdict"])}: {_e(t.get(verdict, verdict))}</span></p>']
    if figures["failing"]:
        out.append(f"<p>{_e(t['failing'])}: {_e(', '.join(figures['failing']))}</p>")
    elif verdict == "passed":
        out.append(f"<p>{_e(t['all_passed'])}</p>")
    out.append(f"<h2>{_e(t['scope'])}</h2><table>"
               f"<tr><th>{_e(t['drill'])}</th><td><code>{_e(figures['drill_id'])}</code></td></tr>"
               f"<tr><th>{_e(t['site'])}</th><td>{_e(figures['site'])}</td></tr>"
               f"<tr><th>{_e(t['started'])}</th><td>{_e(figures['started'])}</td></tr>"
               f"<tr><th>{_e(t['finished'])}</th><td>{_e(figures['finished'] or '-')}</td></tr></table>")
    out.append(f"<h2>{_e(t['system'])}</h2><table><tr><th>{_e(t['system'])}</th><th>{_e(t['target'])}</th>"
               f"<th>{_e(t['snapshot'])}</th><th>{_e(t['rpo'])}</th><th>{_e(t['rto'])}</th>"
               f"<th>{_e(t['verified'])}</th><th>{_e(t['verdict'])}</th><th>{_e(t['findings'])}</th></tr>")
    for row in figures["systems"]:
        rpo_miss = row["rpo_seconds"] is None or row["rpo_seconds"] > row["rpo_objective_seconds"]
        rto_miss = row["rto_seconds"] is None or row["rto_seconds"] > row["rto_objective_seconds"]
        snapshots = "<br>".join(f"<code>{_e(s[:12])}</code>" for s in row["snapshot_ids"]) or "-"
        counts = [(row["files"], t["files"]), (row["bytes"], t["bytes"]), (row["tables"], t["tables"]),
                  (row["rows"], t["rows"])]
        verified = ", ".join(f"{n} {word}" for n, word in counts if n) or "-"
        findings = "<br>".join(f"{_e(f['code'])}: {_e(f['message'])}" for f in row["findings"]) or _e(t["none"])
        out.append(
            f"<tr><td>{_e(row['system'])}</td><td>{_e(row['target'])}</td>"
            f"<td>{snapshots}<br>{_e(row['snapshot_time'] or '-')}</td>"
            f'<td class="{"miss" if rpo_miss else ""}">{_e(duration(row["rpo_seconds"], lang))}<br>'
            f'({_e(t["objective"])} {_e(duration(row["rpo_objective_seconds"], lang))})</td>'
            f'<td class="{"miss" if rto_miss else ""}">{_e(duration(row["rto_seconds"], lang))}<br>'
            f'({_e(t["objective"])} {_e(duration(row["rto_objective_seconds"], lang))})</td>'
            f"<td>{_e(verified)}</td><td class=\"nowrap\">{_e(t.get(row['verdict'], row['verdict']))}</td>"
            f"<td>{findings}</td></tr>")
    out.append("</table>")
    out.append(f"<h2>{_e(t['timeline'])}</h2>{_timeline(figures, lang)}")
    out.append(f"<h2>{_e(t['keys'])}</h2><table><tr><th>{_e(t['owner'])}</th><th>{_e(t['role'])}</th>"
               f"<th>{_e(t['fingerprint'])}</th></tr>")
    for key in keys:
        out.append(f"<tr><td>{_e(key['owner'])}</td><td>{_e(key['role'])}</td><td><code>{_e(key['keyid'])}</code>"
                   "</td></tr>")
    out.append(f"</table><h2>{_e(t['how_to_verify'])}</h2><p>{t['verify_text']}</p>")
    embedded = json.dumps(figures, sort_keys=True, ensure_ascii=False).replace("</", "<\\/")
    out.append(f'<script type="application/json" id="drill-figures">{embedded}</script></body></html>')
    return "\n".join(out)


def embedded_figures(page: str) -> dict[str, Any] | None:
    """The figures embedded in a report page, or None when there are none (or they are not JSON)."""
    marker = '<script type="application/json" id="drill-figures">'
    start = page.find(marker)
    if start < 0:
        return None
    end = page.find("</script>", start)
    try:
        value = json.loads(page[start + len(marker):end].replace("<\\/", "</"))
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None
