"""The web view's pages as HTML text: every value escaped, no script, no external origin (the style sheet is
served by drillctl serve itself), usable from a phone's width up."""

from __future__ import annotations

from datetime import datetime
from html import escape

from drill.drills import DrillView
from drill.fleet.enrolment import AgentRow
from drill.fleet.status import Status, TargetStatus
from drill.web.charts import line_chart
from drill.web.history import NightJob, SystemHistory
from drill.web.i18n import LANGUAGES, WORDS

STYLE = """
body{font-family:system-ui,"Noto Sans CJK SC","WenQuanYi Micro Hei",sans-serif;margin:0;color:#1d2330;
background:#f5f6f8}
header{display:flex;flex-wrap:wrap;gap:.5rem 1.5rem;align-items:center;padding:.75rem 1rem;background:#1d2330;
color:#fff}
header a{color:#fff}header .who{margin-left:auto}
main{padding:1rem;max-width:1280px;margin:auto}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{padding:.4rem .5rem;border-bottom:1px solid #dde;text-align:left;vertical-align:top}
tr.ok td:first-child{border-left:6px solid #2e8540}tr.bad td:first-child{border-left:6px solid #c62828}
.problem{color:#c62828;font-size:.9em}.muted{color:#667}
form.inline{display:inline}button{padding:.3rem .8rem}
input{padding:.35rem;margin:.2rem 0}
.login{max-width:22rem;margin:3rem auto;background:#fff;padding:1.5rem}
.error{color:#c62828}
figure{margin:1rem 0;background:#fff;padding:.5rem}figcaption{font-weight:bold}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(300px,1fr));gap:1rem}
@media (max-width:700px){thead{display:none}tr{display:block;margin-bottom:.75rem;background:#fff}
td{display:block;border:none;padding:.2rem .5rem}td[data-label]::before{content:attr(data-label) ": ";font-weight:bold}}
""".strip()


def _t(lang: str, key: str) -> str:
    return WORDS[lang][key]


def _age(now: datetime, then: datetime | None, lang: str) -> str:
    if then is None:
        return _t(lang, "never")
    seconds = (now - then).total_seconds()
    text = f"{seconds / 3600:.1f} h" if seconds < 172800 else f"{seconds / 86400:.1f} d"
    return f"{text} {_t(lang, 'ago')}"


def layout(lang: str, title: str, body: str, who: str | None = None, csrf: str | None = None) -> str:
    languages = " ".join(f'<a href="/ui/lang/{code}" lang="{code}">{"中文" if code == "zh-CN" else "English"}</a>'
                         for code in LANGUAGES)
    nav = ""
    if who is not None:
        nav = (f'<a href="/ui/">{_t(lang, "overview")}</a> <a href="/ui/night">{_t(lang, "night")}</a> '
               f'<a href="/ui/drills">{_t(lang, "drills")}</a> <a href="/ui/agents">{_t(lang, "agents")}</a>'
               f'<span class="who">{_t(lang, "signed_in_as")} {escape(who)} '
               f'<form class="inline" method="post" action="/ui/logout"><input type="hidden" name="csrf" '
               f'value="{escape(csrf or "")}"><button>{_t(lang, "logout")}</button></form></span>')
    return (f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{escape(title)} · drill</title><link rel="stylesheet" href="/ui/static/drill.css"></head>'
            f'<body><header><strong>drill</strong>{nav}<span>{languages}</span></header>'
            f'<main>{body}</main></body></html>')


def login_page(lang: str, message: str | None = None) -> str:
    error = f'<p class="error" role="alert">{escape(message)}</p>' if message else ""
    body = (f'<form class="login" method="post" action="/ui/login"><h1>{_t(lang, "login")}</h1>{error}'
            f'<label>{_t(lang, "account")}<br><input name="name" autocomplete="username" required></label><br>'
            f'<label>{_t(lang, "password")}<br><input name="password" type="password" '
            f'autocomplete="current-password" required></label><br><button>{_t(lang, "login")}</button></form>')
    return layout(lang, _t(lang, "login"), body)


def _target_row(target: TargetStatus, now: datetime, lang: str) -> str:
    backup, verified = target.backup, target.verification
    backup_text = "-" if backup is None else (
        f"{escape(backup.level)} {escape(backup.outcome)} {_age(now, backup.finished, lang)}"
        + ("" if backup.bytes is None else f" · {backup.bytes / 1e6:.1f} MB"))
    verified_text = "-" if verified is None else (
        f"{escape(verified.verdict)} {_age(now, verified.finished, lang)} · {escape(verified.site)}/"
        f"{escape(verified.scratch_host)}")
    rpo = target.rpo_seconds(now)
    rpo_text = f"{'-' if rpo is None else f'{rpo / 3600:.1f} h'} ({target.rpo_objective_seconds / 3600:.0f} h)"
    problems = "".join(f'<div class="problem">{escape(p.code)}: {escape(p.message)}</div>' for p in target.problems)
    state = "ok" if not target.problems else "bad"
    return (f'<tr class="{state}" data-state="{state}"><td data-label="{_t(lang, "system")}">'
            f'<a href="/ui/systems/{escape(target.system)}">{escape(target.system)}</a></td>'
            f'<td data-label="{_t(lang, "target")}">{escape(target.target)}</td>'
            f'<td data-label="{_t(lang, "backup")}">{backup_text}</td>'
            f'<td data-label="{_t(lang, "verification")}">{verified_text}</td>'
            f'<td data-label="{_t(lang, "rpo")}">{rpo_text}</td>'
            f'<td data-label="{_t(lang, "problems")}">{problems or _t(lang, "all_well")}</td></tr>')


def overview_page(lang: str, status: Status, query: str, who: str, csrf: str) -> str:
    now = status.made
    shown = [t for t in status.targets if query.lower() in f"{t.system}/{t.target}".lower()]
    # The worst first: what needs a look is at the top.
    shown.sort(key=lambda t: (not t.problems, t.system, t.target))
    rows = "".join(_target_row(t, now, lang) for t in shown)
    flags = "".join(f'<li class="problem">{escape(f.code)} {escape(f.subject)}: {escape(f.message)}</li>'
                    for f in status.flags)
    body = (f'<h1>{_t(lang, "overview")}</h1>'
            f'<form method="get" action="/ui/"><input name="q" value="{escape(query)}" '
            f'aria-label="{_t(lang, "filter")}"><button>{_t(lang, "filter")}</button></form>'
            f'<table><thead><tr><th>{_t(lang, "system")}</th><th>{_t(lang, "target")}</th>'
            f'<th>{_t(lang, "backup")}</th><th>{_t(lang, "verification")}</th><th>{_t(lang, "rpo")}</th>'
            f'<th>{_t(lang, "problems")}</th></tr></thead><tbody>{rows}</tbody></table>'
            + (f'<h2>{_t(lang, "fleet")}</h2><ul>{flags}</ul>' if flags else ""))
    return layout(lang, _t(lang, "overview"), body, who, csrf)


def agents_page(lang: str, agents: list[AgentRow], now: datetime, operator: bool, who: str, csrf: str) -> str:
    rows = []
    for agent in agents:
        seen = None if agent.last_seen is None else datetime.fromtimestamp(agent.last_seen, now.tzinfo)
        actions = ""
        if operator and agent.status != "revoked":
            for action in (("approve",) if agent.status == "pending" else ()) + ("revoke",):
                actions += (f'<form class="inline" method="post" action="/ui/agents/{escape(agent.agent_id)}/'
                            f'{action}"><input type="hidden" name="csrf" value="{escape(csrf)}">'
                            f'<button>{_t(lang, action)}</button></form> ')
        rows.append(f'<tr class="{"bad" if agent.status == "revoked" else "ok"}">'
                    f'<td data-label="{_t(lang, "host")}">{escape(agent.host)}</td>'
                    f'<td data-label="{_t(lang, "role")}">{escape(agent.role)}</td>'
                    f'<td data-label="{_t(lang, "site")}">{escape(agent.site)}</td>'
                    f'<td data-label="{_t(lang, "status")}">{escape(agent.status)}</td>'
                    f'<td data-label="{_t(lang, "heartbeat")}">{_age(now, seen, lang)}</td>'
                    f'<td data-label="{_t(lang, "version")}">{escape(agent.version)}</td><td>{actions}</td></tr>')
    body = (f'<h1>{_t(lang, "agents")}</h1><table><thead><tr><th>{_t(lang, "host")}</th><th>{_t(lang, "role")}'
            f'</th><th>{_t(lang, "site")}</th><th>{_t(lang, "status")}</th><th>{_t(lang, "heartbeat")}</th>'
            f'<th>{_t(lang, "version")}</th><th></th></tr></thead><tbody>{"".join(rows)}</tbody></table>')
    return layout(lang, _t(lang, "agents"), body, who, csrf)


def message_page(lang: str, key: str, who: str | None = None, csrf: str | None = None) -> str:
    return layout(lang, _t(lang, key), f'<p class="error">{_t(lang, key)}</p>', who, csrf)


def _table(lang: str, headers: list[str], rows: list[list[str]]) -> str:
    """A table whose cells are already escaped HTML; each cell labelled for the phone layout."""
    head = "".join(f"<th>{_t(lang, h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f'<td data-label="{_t(lang, h)}">{cell}</td>' for h, cell in zip(
        headers, row, strict=True)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def system_page(lang: str, name: str, history: SystemHistory, who: str, csrf: str) -> str:
    def when(moment: datetime) -> str:
        return escape(moment.strftime("%Y-%m-%d %H:%M"))

    charts = "".join((
        line_chart(_t(lang, "backup_duration"), _t(lang, "seconds"), history.backup_seconds),
        line_chart(_t(lang, "backup_size"), "MB", history.backup_megabytes),
        line_chart(_t(lang, "verify_duration"), _t(lang, "seconds"), history.verify_seconds),
        line_chart(_t(lang, "rpo_achieved"), "h", history.rpo_hours)))
    backups = _table(lang, ["finished", "target", "level", "outcome", "took"], [
        [when(b.timings.finished), escape(b.target.name), escape((b.level.effective or b.level.requested).value),
         escape(b.outcome), f"{b.timings.duration_seconds:.1f} {_t(lang, 'seconds')}"]
        for b in history.backups[:30]])
    verifications = _table(lang, ["finished", "target", "site", "verdict", "took"], [
        [when(v.timings.finished), escape(v.target), escape(v.repository.site), escape(v.verdict),
         f"{v.timings.duration_seconds:.1f} {_t(lang, 'seconds')}"] for v in history.verifications[:30]])
    body = (f'<h1>{escape(name)} · {_t(lang, "history")}</h1>'
            f'<p>{_t(lang, "pass_streak")}: <strong id="streak">{history.pass_streak}</strong></p>'
            f'<div class="charts">{charts}</div><h2>{_t(lang, "backups")}</h2>{backups}'
            f'<h2>{_t(lang, "verifications")}</h2>{verifications}')
    return layout(lang, name, body, who, csrf)


def drills_page(lang: str, drills: list[DrillView], who: str, csrf: str) -> str:
    rows = []
    for view in drills:
        rto = max((s.rto_seconds for s in view.steps if s.rto_seconds is not None), default=None)
        base = f"/ui/drills/{escape(view.drill_id)}"
        links = " ".join(f'<a href="{base}/report.{code}.{fmt}" download>{fmt.upper()} {label}</a>'
                         for code, label in (("en", "EN"), ("zh-CN", "中文")) for fmt in ("html", "pdf"))
        rows.append([escape(view.drill_id), escape(view.started.site),
                     escape(view.started.started.strftime("%Y-%m-%d %H:%M")), escape(view.verdict),
                     "-" if rto is None else f"{rto:.0f} {_t(lang, 'seconds')}", links,
                     f'<a href="{base}/bundle.zip" download>{_t(lang, "bundle")}</a>'])
    body = f'<h1>{_t(lang, "drills")}</h1>' + _table(
        lang, ["subject", "site", "started", "verdict", "rto", "report", "bundle"], rows)
    return layout(lang, _t(lang, "drills"), body, who, csrf)


def night_page(lang: str, jobs: list[NightJob], who: str, csrf: str) -> str:
    rows = []
    for item in jobs:
        job, record = item.job, item.record
        what = "/".join(x for x in (job.system, job.spec.get("target")) if x) or "-"
        took = "-"
        verdict = escape(job.outcome or job.state)
        findings = ""
        if record is not None and hasattr(record, "timings"):
            took = f"{record.timings.duration_seconds:.1f} {_t(lang, 'seconds')}"
            findings = "".join(f'<div class="problem">{escape(f.code)}: {escape(f.message[:300])}</div>'
                               for f in getattr(record, "findings", []))
        rows.append([escape(job.kind), escape(what), escape(f"{job.site or '-'} / {item.host or '-'}"),
                     escape(job.state), verdict, took, findings])
    body = f'<h1>{_t(lang, "night")}</h1>' + _table(
        lang, ["kind", "subject", "where", "state", "verdict", "took", "findings"], rows)
    return layout(lang, _t(lang, "night"), body, who, csrf)
