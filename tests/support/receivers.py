"""Real endpoints on loopback for notifications: an HTTP receiver (webhooks, the dead-man's switch), an SMTP
server (aiosmtpd), and a port that takes connections and never answers."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller


@dataclass
class Received:
    path: str
    query: dict[str, str]
    body: bytes


@dataclass
class HttpReceiver:
    """POSTs received, by path; ``/flaky`` answers 500 to its first request and 200 after."""

    url: str
    posts: list[Received] = field(default_factory=list)

    def on(self, path: str) -> list[Received]:
        return [p for p in self.posts if p.path == path]


@contextlib.contextmanager
def http_receiver() -> Iterator[HttpReceiver]:
    received: list[Received] = []
    flaky = {"failures": 1}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            parts = urllib.parse.urlsplit(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if parts.path == "/flaky" and flaky["failures"] > 0:
                flaky["failures"] -= 1
                self.send_response(500)
            else:
                received.append(Received(parts.path, dict(urllib.parse.parse_qsl(parts.query)), body))
                self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield HttpReceiver(f"http://127.0.0.1:{server.server_address[1]}", received)
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Mailbox:
    server: str
    messages: list[EmailMessage] = field(default_factory=list)


@contextlib.contextmanager
def smtp_server() -> Iterator[Mailbox]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mailbox = Mailbox(f"127.0.0.1:{port}")

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            mailbox.messages.append(BytesParser(policy=default).parsebytes(envelope.content))
            return "250 OK"

    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield mailbox
    finally:
        controller.stop()


@contextlib.contextmanager
def silent_port() -> Iterator[str]:
    """An http URL whose server takes the connection and never says a word."""
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/hang"
    finally:
        listener.close()


def wait_until(condition: Any, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False
