"""Notifications to real endpoints on loopback: webhooks in drill's JSON, DingTalk's and WeCom's formats, mail
through an SMTP server, the dead-man's switch; retries; a destination that hangs holds up nothing else; each
change notified once however many coordinators look."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import pathlib
import time
from datetime import UTC, datetime

import pytest

from drill.fleet.tables import create_fleet_tables
from drill.ledger.store import open_store
from drill.notify.messages import Event
from drill.notify.sender import Mail, NotificationSettings, Notifier, Webhook
from drill.notify.transitions import transitions
from tests.support.receivers import http_receiver, silent_port, smtp_server, wait_until

NOW = datetime(2026, 11, 30, 7, 0, tzinfo=UTC)
FAILURE = Event("failure", "coverage_overdue", "app01/documents@same-city",
                "last passed verification: never; at most every 7 days", NOW, "coordinator-1")


def _secret_file(tmp_path: pathlib.Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text + "\n")
    os.chmod(path, 0o600)
    return str(path)


def test_every_destination_gets_the_event_in_its_format_and_a_hanging_one_holds_up_nothing(
    tmp_path: pathlib.Path,
) -> None:
    with http_receiver() as web, smtp_server() as mail, silent_port() as hang:
        secret = "SEC" + "x" * 20
        settings = NotificationSettings(
            webhooks=(Webhook("json", url=hang),  # first in line, and never answers
                      Webhook("json", url=f"{web.url}/flaky"),
                      Webhook("dingtalk", url_file=_secret_file(tmp_path, "ding.url",
                                                                f"{web.url}/ding?access_token=T0KEN"),
                              secret_file=_secret_file(tmp_path, "ding.secret", secret)),
                      Webhook("wecom", url=f"{web.url}/wecom?key=K")),
            mail=Mail(mail.server, "drill@example.com", ("ops@example.com",), starttls=False),
            deadman_url=f"{web.url}/deadman")
        notifier = Notifier(settings, waits=(0.2, 0.2))
        started = time.monotonic()
        notifier.send(FAILURE)
        notifier.send(Event("heartbeat", "nightly_plan", "2026-11-30", "3 job(s) queued", NOW))
        assert time.monotonic() - started < 0.1  # queued, not sent, by the caller

        assert wait_until(lambda: web.on("/flaky") and web.on("/ding") and web.on("/wecom") and mail.messages
                          and web.on("/deadman"), timeout=8)  # long before the silent one's 10 s timeout
        [flaky] = web.on("/flaky")  # the first attempt got a 500; the retry went through, once
        assert json.loads(flaky.body) | {"at": None} == {
            "schema": "drill.notification/v1", "event": "failure", "code": "coverage_overdue",
            "subject": "app01/documents@same-city", "message": FAILURE.message, "at": None,
            "coordinator": "coordinator-1"}
        [ding] = web.on("/ding")
        signed = hmac.new(secret.encode(), f"{ding.query['timestamp']}\n{secret}".encode(), hashlib.sha256).digest()
        assert ding.query["access_token"] == "T0KEN" and ding.query["sign"] == base64.b64encode(signed).decode()
        message = json.loads(ding.body)
        assert message["msgtype"] == "markdown" and "故障 FAILURE" in message["markdown"]["title"]
        assert FAILURE.message in message["markdown"]["text"]
        [wecom] = web.on("/wecom")
        assert "app01/documents@same-city" in json.loads(wecom.body)["markdown"]["content"]
        [letter] = mail.messages
        assert letter["Subject"] == "[drill] 故障 FAILURE: coverage_overdue app01/documents@same-city"
        assert letter["To"] == "ops@example.com" and FAILURE.message in letter.get_content()
        [ping] = web.on("/deadman")  # the heartbeat goes to the dead-man's switch only
        assert json.loads(ping.body)["event"] == "heartbeat" and len(web.on("/wecom")) == 1
        notifier.close(timeout=0.5)


def test_a_destination_that_stays_down_is_given_up_after_its_retries(caplog: pytest.LogCaptureFixture) -> None:
    with http_receiver() as web:
        notifier = Notifier(NotificationSettings(webhooks=(Webhook("json", url=f"{web.url}/flaky?token=SECRET"),)),
                            waits=())  # one attempt: the 500 is final
        notifier.send(FAILURE)
        notifier.close(timeout=5)
        assert web.on("/flaky") == []
    assert "coverage_overdue app01/documents@same-city lost after 1 attempts" in caplog.text
    assert "answered 500" in caplog.text and "SECRET" not in caplog.text  # named by its host, not its URL


def test_each_change_is_notified_once_across_coordinators(tmp_path: pathlib.Path) -> None:
    url = f"sqlite:///{tmp_path}/ledger.db"
    first, second = open_store(url), open_store(url)
    create_fleet_tables(first)
    problem = {("app01/documents", "rpo_breach"): "newest successful backup 30.0 h ago"}
    assert transitions(first, problem, 1.0) == ([(("app01/documents", "rpo_breach"), problem[
        ("app01/documents", "rpo_breach")])], [])
    assert transitions(second, problem, 2.0) == ([], [])  # the other coordinator: already told
    assert transitions(first, problem, 3.0) == ([], [])
    assert transitions(second, {}, 4.0) == ([], [(("app01/documents", "rpo_breach"),
                                                  "newest successful backup 30.0 h ago")])
    assert transitions(first, {}, 5.0) == ([], [])
    first.close()
    second.close()
