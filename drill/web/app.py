"""The web view's routes under ``/ui`` of ``drillctl serve``.

Every page needs a session (else: the log-in page); every POST needs the form's
CSRF token; actions (approve, revoke) need the ``operator`` role. Failed log-ins
are limited per account and address. Every answer carries a Content-Security-Policy
that allows nothing from another origin and no script at all.
"""

from __future__ import annotations

import os
import tempfile
import time
import urllib.parse
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from agents.contract.errors import DrillError
from drill.drills import list_drills, load_drill
from drill.evidence.export import export_bundle, key_listing
from drill.fleet import enrolment, queue
from drill.fleet.drills import fleet_systems
from drill.fleet.server import FleetServer
from drill.fleet.status import fleet_status
from drill.reports.figures import drill_figures
from drill.reports.html import render_report
from drill.reports.i18n import LANGUAGES as REPORT_LANGUAGES
from drill.reports.pdf import html_to_pdf
from drill.web import accounts, pages
from drill.web.history import night_jobs, system_history
from drill.web.i18n import LANGUAGES, WORDS, choose
from drill.web.sessions import COOKIE, LIFETIME, Session, Sessions, load_secret

HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
MAX_FORM = 8192
# What a drill's page offers to download: the reports (language, format) and the evidence bundle.
DOWNLOADS = {
    **{f"report.{lang}.{fmt}": ("report", lang, fmt, "text/html; charset=utf-8" if fmt == "html"
                                else "application/pdf") for lang in REPORT_LANGUAGES for fmt in ("html", "pdf")},
    "bundle.zip": ("bundle", "", "zip", "application/zip"),
}
FAILURES_ALLOWED = 5
FAILURE_WINDOW = 300.0


class LoginThrottle:
    """At most :data:`FAILURES_ALLOWED` failed log-ins per account and per address within
    :data:`FAILURE_WINDOW` seconds."""

    def __init__(self) -> None:
        self.failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self.failures.setdefault(key, deque())
        while times and now - times[0] > FAILURE_WINDOW:
            times.popleft()
        return times

    def blocked(self, name: str, address: str, now: float) -> bool:
        return any(len(self._recent(key, now)) >= FAILURES_ALLOWED for key in (f"n:{name}", f"a:{address}"))

    def failed(self, name: str, address: str, now: float) -> None:
        for key in (f"n:{name}", f"a:{address}"):
            self._recent(key, now).append(now)


def _secured(response: Response) -> Response:
    response.headers.update(HEADERS)
    return response


def routes(server: FleetServer, limiter: anyio.CapacityLimiter) -> list[Route]:
    """The ``/ui`` routes of ``server``."""
    sessions = Sessions(load_secret(server.config.state_dir))
    throttle = LoginThrottle()
    with server.pool.borrow() as db:
        accounts.create_table(db.store)

    def lang_of(request: Request) -> str:
        return choose(request.cookies.get("drill_lang"), request.headers.get("accept-language"))

    def html(text: str, status: int = 200) -> Response:
        return _secured(HTMLResponse(text, status))

    def session_of(request: Request) -> Session | None:
        return sessions.read(request.cookies.get(COOKIE), time.time())

    async def form_of(request: Request) -> dict[str, str]:
        body = await request.body()
        if len(body) > MAX_FORM:
            return {}
        return {k: v[0] for k, v in urllib.parse.parse_qs(body.decode("utf-8", "replace")).items()}

    def page(handler: Callable[[Request, Session, str], Awaitable[Response]]) -> Callable[[Request], Any]:
        async def guarded(request: Request) -> Response:
            session = session_of(request)
            if session is None:
                return _secured(RedirectResponse("/ui/login", 303))
            return await handler(request, session, lang_of(request))
        return guarded

    async def style(_: Request) -> Response:
        return _secured(Response(pages.STYLE, media_type="text/css"))

    async def language(request: Request) -> Response:
        code = request.path_params["code"]
        response = RedirectResponse("/ui/", 303)
        if code in LANGUAGES:
            response.set_cookie("drill_lang", code, max_age=365 * 86400, secure=True, httponly=True,
                                samesite="strict", path="/ui")
        return _secured(response)

    async def login_form(request: Request) -> Response:
        return html(pages.login_page(lang_of(request)))

    async def login(request: Request) -> Response:
        lang = lang_of(request)
        form = await form_of(request)
        name, password = form.get("name", "")[:64], form.get("password", "")[:1024]
        address = request.client.host if request.client else "?"
        now = time.time()
        if throttle.blocked(name, address, now):
            response = html(pages.login_page(lang, WORDS[lang]["slow_down"]), 429)
            response.headers["Retry-After"] = "60"
            return response

        def check() -> accounts.Account | None:
            with server.pool.borrow() as db:
                return accounts.authenticate(db.store, name, password)
        account = await anyio.to_thread.run_sync(check, limiter=limiter)
        if account is None:
            throttle.failed(name, address, now)
            return html(pages.login_page(lang, WORDS[lang]["wrong"]), 401)
        cookie, _ = sessions.issue(account.name, account.role, now)
        response = RedirectResponse("/ui/", 303)
        response.set_cookie(COOKIE, cookie, max_age=int(LIFETIME), secure=True, httponly=True, samesite="strict",
                            path="/ui")
        return _secured(response)

    async def logout(request: Request) -> Response:
        session = session_of(request)
        form = await form_of(request)
        if session is None or not sessions.csrf_ok(session, form.get("csrf")):
            return html(pages.message_page(lang_of(request), "bad_form"), 403)
        response = RedirectResponse("/ui/login", 303)
        response.delete_cookie(COOKIE, path="/ui", secure=True, httponly=True, samesite="strict")
        return _secured(response)

    async def overview(request: Request, session: Session, lang: str) -> Response:
        def make() -> str:
            with server.pool.borrow() as db:
                status = fleet_status(db.ledger, db.store, server.config, datetime.now(UTC))
            return pages.overview_page(lang, status, request.query_params.get("q", "")[:100], session.name,
                                       sessions.csrf(session))
        return html(await anyio.to_thread.run_sync(make, limiter=limiter))

    async def agents(request: Request, session: Session, lang: str) -> Response:
        def make() -> str:
            with server.pool.borrow() as db:
                rows = enrolment.list_agents(db.store)
            return pages.agents_page(lang, rows, datetime.now(UTC), session.role == "operator", session.name,
                                     sessions.csrf(session))
        return html(await anyio.to_thread.run_sync(make, limiter=limiter))

    async def agent_action(request: Request, session: Session, lang: str) -> Response:
        form = await form_of(request)
        csrf = sessions.csrf(session)
        if not sessions.csrf_ok(session, form.get("csrf")):
            return html(pages.message_page(lang, "bad_form", session.name, csrf), 403)
        if session.role != "operator":
            return html(pages.message_page(lang, "forbidden", session.name, csrf), 403)
        agent_id, action = request.path_params["agent_id"], request.path_params["action"]

        def act() -> bool:
            with server.pool.borrow() as db:
                if agent_id not in {a.agent_id for a in enrolment.list_agents(db.store)}:
                    return False
                if action == "approve":
                    enrolment.approve(db.store, agent_id)
                else:
                    enrolment.revoke(db.store, agent_id, time.time())
                return True
        if action not in ("approve", "revoke") or not await anyio.to_thread.run_sync(act, limiter=limiter):
            return html(pages.message_page(lang, "not_found", session.name, csrf), 404)
        return _secured(RedirectResponse("/ui/agents", 303))

    async def system(request: Request, session: Session, lang: str) -> Response:
        name = request.path_params["name"]

        def make() -> str | None:
            with server.pool.borrow() as db:
                systems = fleet_systems(server.config, db.store)
                if name not in systems:
                    return None
                records = [e.record for e in db.ledger.entries() if e.kind in ("backup", "verify")]
            return pages.system_page(lang, name, system_history(systems[name].host, records), session.name,
                                     sessions.csrf(session))
        text = await anyio.to_thread.run_sync(make, limiter=limiter)
        if text is None:
            return html(pages.message_page(lang, "not_found", session.name, sessions.csrf(session)), 404)
        return html(text)

    async def drills(request: Request, session: Session, lang: str) -> Response:
        def make() -> str:
            with server.pool.borrow() as db:
                views = list_drills(db.ledger)
            return pages.drills_page(lang, list(reversed(views)), session.name, sessions.csrf(session))
        return html(await anyio.to_thread.run_sync(make, limiter=limiter))

    async def night(request: Request, session: Session, lang: str) -> Response:
        def make() -> str:
            with server.pool.borrow() as db:
                planned = db.store.query("SELECT MAX(planned) FROM fleet_nights")[0][0]
                since = (float(planned) - 60) if planned is not None else time.time() - 86400
                jobs = [j for j in queue.list_jobs(db.store) if j.created >= since]
                hosts = {a.agent_id: a.host for a in enrolment.list_agents(db.store)}
                records = [e.record for e in db.ledger.entries() if e.kind in ("verify", "check", "refused")]
            return pages.night_page(lang, night_jobs(jobs, records, hosts), session.name, sessions.csrf(session))
        return html(await anyio.to_thread.run_sync(make, limiter=limiter))

    async def download(request: Request, session: Session, lang: str) -> Response:
        drill_id, what = request.path_params["drill_id"], request.path_params["what"]
        wanted = DOWNLOADS.get(what)
        if wanted is None:
            return html(pages.message_page(lang, "not_found", session.name, sessions.csrf(session)), 404)

        def make() -> bytes | None:
            with server.pool.borrow() as db:
                try:
                    view = load_drill(db.ledger, drill_id)
                except DrillError:
                    return None
                if wanted[0] == "bundle":
                    with tempfile.TemporaryDirectory(prefix="drill-bundle-") as directory:
                        out = os.path.join(directory, "bundle.zip")
                        export_bundle(db.ledger, out, drill_id=view.drill_id)
                        with open(out, "rb") as handle:
                            return handle.read()
                page = render_report(drill_figures(view.started, view.steps, view.finished),
                                     key_listing(db.ledger), wanted[1])
            return page.encode() if wanted[2] == "html" else html_to_pdf(page)
        data = await anyio.to_thread.run_sync(make, limiter=limiter)
        if data is None:
            return html(pages.message_page(lang, "not_found", session.name, sessions.csrf(session)), 404)
        filename = f"drill-{drill_id}-{what}"
        return _secured(Response(data, media_type=wanted[3], headers={
            "Content-Disposition": f'attachment; filename="{filename}"'}))

    async def not_found(request: Request) -> Response:
        session = session_of(request)
        lang = lang_of(request)
        return html(pages.message_page(lang, "not_found", session.name if session else None,
                                       sessions.csrf(session) if session else None), 404)

    return [
        Route("/ui/static/drill.css", style, methods=["GET"]),
        Route("/ui/lang/{code}", language, methods=["GET"]),
        Route("/ui/login", login_form, methods=["GET"]),
        Route("/ui/login", login, methods=["POST"]),
        Route("/ui/logout", logout, methods=["POST"]),
        Route("/ui/", page(overview), methods=["GET"]),
        Route("/ui/agents", page(agents), methods=["GET"]),
        Route("/ui/systems/{name}", page(system), methods=["GET"]),
        Route("/ui/drills", page(drills), methods=["GET"]),
        Route("/ui/drills/{drill_id}/{what}", page(download), methods=["GET"]),
        Route("/ui/night", page(night), methods=["GET"]),
        Route("/ui/agents/{agent_id}/{action}", page(agent_action), methods=["POST"]),
        Route("/ui/{rest:path}", not_found, methods=["GET", "POST"]),
    ]
