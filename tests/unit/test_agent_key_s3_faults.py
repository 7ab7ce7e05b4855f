"""The agent key's S3 requests against answers a real S3 server does not give on demand (a fake HTTP server on
loopback injects them): each one leaves the repository opened with its configured password, promptly."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agents.restic.agentkey import with_agent_key
from agents.restic.repository import Repository
from agents.state import StateDir

Handler = Callable[[http.server.BaseHTTPRequestHandler], None]


@pytest.fixture
def serve() -> Iterator[Callable[[str, Handler], tuple[str, list[str]]]]:
    """Start a server on a loopback address answering with a handler; its URL and the requests it saw."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(host: str, answer: Handler) -> tuple[str, list[str]]:
        seen: list[str] = []

        class _Handler(http.server.BaseHTTPRequestHandler):
            def _any(self) -> None:
                seen.append(f"{self.command} {self.path}")
                answer(self)

            do_GET = do_HEAD = do_PUT = do_DELETE = _any

            def log_message(self, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer((host, 0), _Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://{host}:{server.server_address[1]}", seen

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _opened(tmp_path: Path, endpoint: str, connect_timeout: float = 10.0) -> Repository:
    (tmp_path / "pw").write_text("the configured password\n")
    repository = Repository(name="far", url=f"s3:{endpoint}/backups/app01", password_file=str(tmp_path / "pw"),
                            env={"AWS_ACCESS_KEY_ID": "key", "AWS_SECRET_ACCESS_KEY": "secret"},
                            connect_timeout=connect_timeout)
    opened = with_agent_key(repository, StateDir(str(tmp_path / "state")), "app01")
    assert opened == repository  # the configured password, no agent key
    return opened


def _status(code: int, headers: dict[str, str] | None = None) -> Handler:
    def answer(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(code)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", "0")
        handler.end_headers()
    return answer


def test_a_server_error_leaves_the_configured_password(tmp_path: Path, serve: Callable[..., tuple[str, list[str]]],
                                                       caplog: pytest.LogCaptureFixture) -> None:
    endpoint, seen = serve("127.0.0.1", _status(500))
    _opened(tmp_path, endpoint)
    assert seen and seen[0].startswith("GET /backups?")  # the listing of keys/ was asked for, signed
    assert "S3 answered 500" in caplog.text


def test_a_redirect_is_not_followed(tmp_path: Path, serve: Callable[..., tuple[str, list[str]]]) -> None:
    elsewhere, reached = serve("127.0.0.2", _status(200))
    endpoint, _ = serve("127.0.0.1", _status(301, {"Location": f"{elsewhere}/backups?list-type=2"}))
    _opened(tmp_path, endpoint)
    assert reached == []  # the signed request went nowhere else


def test_a_server_that_never_answers_is_given_up_within_connect_timeout(
        tmp_path: Path, serve: Callable[..., tuple[str, list[str]]]) -> None:
    endpoint, _ = serve("127.0.0.1", lambda handler: time.sleep(30))
    started = time.monotonic()
    _opened(tmp_path, endpoint, connect_timeout=2)
    assert time.monotonic() - started < 5
