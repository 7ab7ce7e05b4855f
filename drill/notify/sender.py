"""Sending notifications without ever holding up the coordinator.

:meth:`Notifier.send` only puts the event on the queue of each destination (a
webhook, the mail server, the dead-man's switch); one thread per destination
delivers it, with a timeout on every attempt and retries after
:data:`RETRY_WAITS`. A destination that is down or hangs delays its own messages
only; after the last attempt the event is logged as lost -- the problem itself is
still in ``drillctl status`` and ``/metrics``. Secrets (webhook URLs with their
tokens, the DingTalk secret, the SMTP password) are read from their files at send
time and never logged: a destination is named by its host.
"""

from __future__ import annotations

import logging
import queue
import smtplib
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agents.contract.configfile import MAX_SECRET_BYTES, FileRefusedError, read_text_file
from drill.notify.messages import Event, body, dingtalk_signed, email

log = logging.getLogger(__name__)

RETRY_WAITS = (2.0, 10.0, 60.0)  # after the first attempt, the second and the third
TIMEOUT = 10.0
QUEUE_LIMIT = 1000  # beyond this a destination is far behind: new events are dropped (and logged)


class DeliveryError(Exception):
    """One attempt failed; the message says why, without secrets."""


@dataclass(frozen=True)
class Webhook:
    format: str  # json, dingtalk, wecom
    url: str | None = None
    url_file: str | None = None  # a URL holding a token (DingTalk, WeCom) belongs in a 0600 file
    secret_file: str | None = None  # DingTalk robot's signing secret


@dataclass(frozen=True)
class Mail:
    server: str  # host:port
    sender: str
    recipients: tuple[str, ...]
    starttls: bool = True
    username: str | None = None
    password_file: str | None = None


@dataclass(frozen=True)
class NotificationSettings:
    webhooks: tuple[Webhook, ...] = ()
    mail: Mail | None = None
    deadman_url: str | None = None
    deadman_url_file: str | None = None
    every: float = 60.0  # how often problems are compared with the last time


def _secret(path: str) -> str:
    try:
        return read_text_file(path, MAX_SECRET_BYTES).strip()
    except (OSError, FileRefusedError) as error:
        raise DeliveryError(f"cannot read {path}: {error}") from None


def _post(url: str, data: bytes, content_type: str = "application/json") -> None:
    parts = urllib.parse.urlsplit(url)
    where = parts.netloc or "?"
    if parts.scheme not in ("http", "https"):  # a URL read from a file was not checked by the config's schema
        raise DeliveryError(f"{where}: not an http(s) URL")
    headers = {"Content-Type": content_type, "User-Agent": "drill-notify"}
    request = urllib.request.Request(url, data=data, method="POST", headers=headers)  # noqa: S310 -- http(s) above
    context = ssl.create_default_context()
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT, context=context) as answer:  # noqa: S310 -- as above
            answer.read(65536)
    except urllib.error.HTTPError as error:
        raise DeliveryError(f"{where} answered {error.code}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise DeliveryError(f"{where}: {reason}") from None


def webhook_sender(hook: Webhook) -> tuple[str, Callable[[Event], None]]:
    """A name for the log and the function that posts an event to ``hook``."""
    def send(event: Event) -> None:
        url = hook.url or _secret(str(hook.url_file))
        if hook.format == "dingtalk" and hook.secret_file:
            url = dingtalk_signed(url, _secret(hook.secret_file), int(time.time() * 1000))
        _post(url, body(event, hook.format))
    name = f"{hook.format} webhook {urllib.parse.urlsplit(hook.url).netloc if hook.url else hook.url_file}"
    return name, send


def mail_sender(mail: Mail) -> tuple[str, Callable[[Event], None]]:
    def send(event: Event) -> None:
        host, _, port = mail.server.rpartition(":")
        try:
            with smtplib.SMTP(host, int(port), timeout=TIMEOUT) as smtp:
                if mail.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if mail.username:
                    smtp.login(mail.username, _secret(str(mail.password_file)))
                smtp.send_message(email(event, mail.sender, list(mail.recipients)))
        except (smtplib.SMTPException, OSError) as error:
            raise DeliveryError(f"mail server {mail.server}: {error}") from None
    return f"mail via {mail.server}", send


def deadman_sender(url: str | None, url_file: str | None) -> tuple[str, Callable[[Event], None]]:
    def send(event: Event) -> None:
        _post(url or _secret(str(url_file)), body(event, "json"))
    return f"dead-man's switch {urllib.parse.urlsplit(url).netloc if url else url_file}", send


class Destination:
    """One destination's queue and the thread that empties it."""

    def __init__(self, name: str, deliver: Callable[[Event], None], waits: Sequence[float]) -> None:
        self.name = name
        self.deliver = deliver
        self.waits = tuple(waits)
        self.queue: queue.Queue[Event | None] = queue.Queue(QUEUE_LIMIT)
        self.thread = threading.Thread(target=self._run, name=f"notify {name}", daemon=True)
        self.thread.start()

    def put(self, event: Event) -> None:
        try:
            self.queue.put_nowait(event)
        except queue.Full:
            log.error("%s is %d events behind; %s %s %s dropped", self.name, QUEUE_LIMIT, event.kind, event.code,
                      event.subject)

    def _run(self) -> None:
        while (event := self.queue.get()) is not None:
            for attempt, wait in enumerate((*self.waits, None), start=1):
                try:
                    self.deliver(event)
                    log.info("%s: %s %s %s sent", self.name, event.kind, event.code, event.subject)
                    break
                except DeliveryError as error:
                    if wait is None:
                        log.error("%s: %s %s %s lost after %d attempts: %s", self.name, event.kind, event.code,
                                  event.subject, attempt, error)
                    else:
                        log.warning("%s: attempt %d failed (%s); again in %.0fs", self.name, attempt, error, wait)
                        time.sleep(wait)
                except Exception:  # a bug here must not stop the destination's thread
                    log.exception("%s: %s %s %s not sent", self.name, event.kind, event.code, event.subject)
                    break

    def close(self, timeout: float) -> None:
        self.queue.put(None)
        self.thread.join(timeout)


class Notifier:
    """Every destination of ``settings``; :meth:`send` never blocks and never raises."""

    def __init__(self, settings: NotificationSettings, waits: Sequence[float] = RETRY_WAITS) -> None:
        senders = [webhook_sender(hook) for hook in settings.webhooks]
        if settings.mail is not None:
            senders.append(mail_sender(settings.mail))
        self.destinations = [Destination(name, deliver, waits) for name, deliver in senders]
        self.deadman = (Destination(*deadman_sender(settings.deadman_url, settings.deadman_url_file), waits)
                        if settings.deadman_url or settings.deadman_url_file else None)

    def send(self, event: Event) -> None:
        """Queue ``event`` for every destination: failures and recoveries for the webhooks and the mail, the
        nightly heartbeat for the dead-man's switch."""
        if event.kind == "heartbeat":
            if self.deadman is not None:
                self.deadman.put(event)
            return
        for destination in self.destinations:
            destination.put(event)

    def close(self, timeout: float = 5.0) -> None:
        for destination in [*self.destinations, *([self.deadman] if self.deadman else [])]:
            destination.close(timeout)
