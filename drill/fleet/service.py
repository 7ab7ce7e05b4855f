"""``drillctl serve``: the fleet's HTTPS API on uvicorn (Starlette), and its housekeeping loop.

Endpoints (docs/fleet.md has the protocol):

* ``GET /healthz``: ``{"status": "ok"}`` when the database answers (unauthenticated; for load balancers);
* ``POST /v1/enrol``: redeem a token (signed by the key it enrols);
* ``POST /v1/poll``: heartbeat, lease renewal, claim jobs (signed);
* ``POST /v1/records``: push signed records (signed).

Database work runs in worker threads, at most one per pooled connection. The
housekeeping loop puts back jobs whose host went silent. SIGTERM/SIGINT stop
the server gracefully: requests in flight finish, then connections close.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agents.contract import httpsig
from drill.fleet import enrolment, queue
from drill.fleet.drills import advance_fleet_drill, running_drills
from drill.fleet.metrics import CONTENT_TYPE, MetricsCache
from drill.fleet.planner import claim_night, note_night
from drill.fleet.server import MAX_BODY, Answer, FleetServer
from drill.fleet.status import fleet_status
from drill.notify.messages import Event
from drill.notify.sender import Notifier
from drill.notify.transitions import problems_of, transitions
from drill.web.app import routes as web_routes

log = logging.getLogger(__name__)

HOUSEKEEPING_SECONDS = 5.0
Handler = Callable[[dict[str, str], bytes, str | None], Answer]


async def _body(request: Request) -> bytes | None:
    """The body, or None when it is larger than :data:`MAX_BODY` (never read whole)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def build_app(server: FleetServer) -> Starlette:
    """The ASGI application of ``server``."""
    limiter = anyio.CapacityLimiter(server.settings.connections)

    def endpoint(handler: Handler) -> Callable[[Request], Any]:
        async def handle(request: Request) -> JSONResponse:
            body = await _body(request)
            if body is None:
                return JSONResponse({"error": "body_too_large", "message": f"over {MAX_BODY} bytes"}, 413)
            headers = {name.lower(): value for name, value in request.headers.items()}
            address = request.client.host if request.client else None
            status, answer = await anyio.to_thread.run_sync(handler, headers, body, address, limiter=limiter)
            return JSONResponse(answer, status)
        return handle

    async def health(_: Request) -> JSONResponse:
        def check() -> bool:
            with server.pool.borrow() as db:
                return bool(db.store.query("SELECT 1"))
        try:
            ok = await anyio.to_thread.run_sync(check, limiter=limiter)
        except Exception as error:  # the database's own words, for the operator
            return JSONResponse({"status": "unavailable", "message": str(error)[:500]}, 503)
        return JSONResponse({"status": "ok" if ok else "unavailable", "coordinator": server.config.coordinator})

    metrics_cache = MetricsCache()

    async def metrics(_: Request) -> Response:
        def make() -> bytes:
            with server.pool.borrow() as db:
                return metrics_cache.get(db.ledger, db.store, server.config)
        return Response(await anyio.to_thread.run_sync(make, limiter=limiter), media_type=CONTENT_TYPE)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        stop = threading.Event()
        worker = threading.Thread(target=_housekeeping, args=(server, stop), name="housekeeping", daemon=True)
        worker.start()
        try:
            yield
        finally:
            stop.set()
            worker.join(30)

    return Starlette(routes=[
        *web_routes(server, limiter),
        Route("/healthz", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/v1/enrol", endpoint(server.enrol), methods=["POST"]),
        Route("/v1/poll", endpoint(server.poll), methods=["POST"]),
        Route("/v1/records", endpoint(server.records), methods=["POST"]),
    ], lifespan=lifespan)


def _housekeeping(server: FleetServer, stop: threading.Event) -> None:
    """Put back the jobs of hosts gone silent, forget old nonces, plan the night, advance drills and notify what
    opened or closed, until ``stop``. A failure is logged, and tried again next round."""
    notifier = Notifier(server.config.notifications) if server.config.notifications else None
    looked = 0.0
    while not stop.wait(HOUSEKEEPING_SECONDS):
        night = None
        try:
            with server.pool.borrow() as db:
                back = queue.requeue_stale(db.store, now=server.clock(), backoff=server.settings.retry_backoff)
                enrolment.forget_old_nonces(db.store, server.clock(), httpsig.WINDOW_SECONDS)
                night = claim_night(db.store, server.settings, datetime.now(UTC))
                for drill_id in running_drills(db.store):
                    view = advance_fleet_drill(db.ledger, db.store, server.config, drill_id, now=server.clock())
                    if view.finished is not None:
                        log.info("drill %s finished: %s", drill_id, view.verdict)
                        db.ledger.checkpoint()
            for job_id in back:
                log.warning("job %s: its host went silent; queued again", job_id)
            if night is not None:
                _plan_night(server, night, notifier)
            if notifier is not None and server.config.notifications is not None \
                    and time.monotonic() - looked >= server.config.notifications.every:
                looked = time.monotonic()
                _notify_changes(server, notifier)
        except Exception:
            log.exception("housekeeping failed; trying again in %.0fs", HOUSEKEEPING_SECONDS)
    if notifier is not None:
        notifier.close()


def _notify_changes(server: FleetServer, notifier: Notifier) -> None:
    """Send a failure for each problem of the status that opened since the last look, a recovery for each that
    closed (once across coordinators: :mod:`drill.notify.transitions`)."""
    now = datetime.now(UTC)
    with server.pool.borrow() as db:
        status = fleet_status(db.ledger, db.store, server.config, now)
        opened, closed = transitions(db.store, problems_of(status), now.timestamp())
    for (subject, code), message in opened:
        notifier.send(Event("failure", code, subject, message, now, server.config.coordinator))
    for (subject, code), message in closed:
        notifier.send(Event("recovery", code, subject, message, now, server.config.coordinator))


PLANNER_NICENESS = 10


def _plan_night(server: FleetServer, night: str, notifier: Notifier | None = None) -> None:
    """Make and queue the night's plan in a process of its own: over thousands of agents it is seconds of work
    that, in this one, would hold the interpreter while agents wait for their answers. It runs at a lower CPU
    priority (nice 10): a plan may take a few seconds longer, an agent's poll should not wait on it."""
    try:
        with subprocess.Popen([sys.executable, "-m", "drill.cli", "plan", "run", "-c", server.config.source,
                               "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as planner:
            with contextlib.suppress(OSError):  # a priority not lowered costs latency, not correctness
                os.setpriority(os.PRIO_PROCESS, planner.pid, PLANNER_NICENESS)
            try:
                stdout, stderr = planner.communicate(timeout=3600)
            except subprocess.TimeoutExpired:
                planner.kill()
                raise
        done = subprocess.CompletedProcess(planner.args, planner.returncode, stdout, stderr)
        queued = len(json.loads(done.stdout).get("queued", [])) if done.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError) as error:
        log.error("the plan of the night %s could not be made: %s", night, error)
        return
    if queued is None:
        log.error("the plan of the night %s failed: %s", night, done.stderr.strip()[-500:])
        return
    with server.pool.borrow() as db:
        note_night(db.store, night, queued)
    log.info("the plan of the night %s: %d job(s) queued", night, queued)
    if notifier is not None:  # the dead-man's switch: silence there means no plan was made
        notifier.send(Event("heartbeat", "nightly_plan", night, f"the plan of the night {night}: {queued} job(s) "
                            "queued", datetime.now(UTC), server.config.coordinator))


def serve(server: FleetServer, certificate: str, key: str) -> None:
    """Run the service until SIGTERM/SIGINT (requests in flight finish first)."""
    settings = server.settings
    config = uvicorn.Config(build_app(server), host=settings.listen_host, port=settings.listen_port,
                            ssl_certfile=certificate, ssl_keyfile=key, log_level="warning", access_log=False,
                            lifespan="on", timeout_graceful_shutdown=30)
    uvicorn.Server(config).run()
