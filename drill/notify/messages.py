"""What a notification says, in each format a destination takes.

An :class:`Event` is a problem that opened (``failure``), one that closed
(``recovery``), or the dead-man's ping after a completed nightly plan
(``heartbeat``). Each formatter returns the HTTP body (and, for DingTalk's signed
robots, the query to add); the e-mail gets a subject and a text body. Titles are in
Chinese and English: the ops teams who read them are mostly Chinese, the
messages themselves (from ``drillctl status``) are English.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import urllib.parse
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from typing import Any, Literal

EventKind = Literal["failure", "recovery", "heartbeat"]
FORMATS = ("json", "dingtalk", "wecom")
TITLES = {"failure": ("故障", "FAILURE"), "recovery": ("恢复", "RECOVERED"), "heartbeat": ("心跳", "HEARTBEAT")}


@dataclass(frozen=True)
class Event:
    kind: EventKind
    code: str  # a problem code (rpo_breach, ...), or "nightly_plan" for a heartbeat
    subject: str  # system/target[@site], a host, or the night
    message: str
    at: datetime
    coordinator: str = ""

    @property
    def title(self) -> str:
        chinese, english = TITLES[self.kind]
        return f"[drill] {chinese} {english}: {self.code} {self.subject}"

    def to_json(self) -> dict[str, Any]:
        return {"schema": "drill.notification/v1", "event": self.kind, "code": self.code, "subject": self.subject,
                "message": self.message, "at": self.at.isoformat(), "coordinator": self.coordinator}


def _markdown(event: Event) -> str:
    return (f"### {event.title}\n\n{event.message}\n\n"
            f"- {event.at.strftime('%Y-%m-%d %H:%M:%S %Z')}\n- coordinator {event.coordinator}\n")


def body(event: Event, fmt: str) -> bytes:
    """The JSON body for a webhook of format ``fmt`` (one of :data:`FORMATS`)."""
    document: dict[str, Any]
    if fmt == "dingtalk":
        document = {"msgtype": "markdown", "markdown": {"title": event.title[:64], "text": _markdown(event)}}
    elif fmt == "wecom":
        document = {"msgtype": "markdown", "markdown": {"content": _markdown(event)[:4096]}}
    else:
        document = event.to_json()
    return json.dumps(document, ensure_ascii=False).encode()


def dingtalk_signed(url: str, secret: str, now_ms: int) -> str:
    """``url`` with DingTalk's signature for a robot that has one: ``timestamp`` and ``sign`` (HMAC-SHA256 of
    "timestamp\\nsecret" under the secret, base64) added to its query."""
    digest = hmac.new(secret.encode(), f"{now_ms}\n{secret}".encode(), hashlib.sha256).digest()
    query = urllib.parse.urlencode({"timestamp": now_ms, "sign": base64.b64encode(digest).decode()})
    return f"{url}{'&' if '?' in url else '?'}{query}"


def email(event: Event, sender: str, recipients: list[str]) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = event.title
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message.set_content(f"{event.title}\n\n{event.message}\n\n{event.at.isoformat()}\n"
                        f"coordinator: {event.coordinator}\n")
    return message
