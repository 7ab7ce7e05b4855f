"""A TCP path on loopback between one agent and the coordinator, which a test can cut and mend.

The fault it injects is a link that goes down: while cut, every connection on it
is reset and new ones are refused at once (as a router answers "no route to host"),
so the agent sees the coordinator as unreachable while everything else -- the S3
server, the other hosts -- goes on as before. Mended, it forwards bytes again.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterator


class Relay:
    """Forwards connections made to ``host``:``port`` (a free port) to ``upstream``; see :meth:`cut`."""

    def __init__(self, upstream: tuple[str, int], host: str = "127.0.0.1") -> None:
        self.upstream = upstream
        self.listener = socket.create_server((host, 0))
        self.host, self.port = host, int(self.listener.getsockname()[1])
        self.is_cut = threading.Event()
        self.open: set[socket.socket] = set()
        self.lock = threading.Lock()
        self.refused = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def cut(self) -> None:
        """Reset every connection on the link; refuse new ones until :meth:`mend`."""
        self.is_cut.set()
        with self.lock:
            for sock in self.open:
                _reset(sock)
            self.open.clear()

    def mend(self) -> None:
        self.is_cut.clear()

    def close(self) -> None:
        self.cut()
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            if self.is_cut.is_set():
                self.refused += 1
                _reset(client)
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                _reset(client)
                continue
            server.settimeout(None)
            with self.lock:
                self.open.update((client, server))
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
        with self.lock:
            self.open.discard(source)
        with contextlib.suppress(OSError):
            source.close()


def _reset(sock: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a dead link does, rather than an orderly FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()


@contextlib.contextmanager
def relay_to(upstream: tuple[str, int]) -> Iterator[Relay]:
    relay = Relay(upstream)
    try:
        yield relay
    finally:
        relay.close()
