"""The web view of ``drillctl serve`` over real HTTPS: log-in, roles, CSRF, sessions, the security headers, both
languages. (Its pages in a real browser are the next step of the ops view; this proves the rules.)"""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
from collections.abc import Iterator

import httpx
import pytest
import yaml

from agents.contract.inventory import Inventory
from tests.support.fleet import Coordinator, add_web_accounts, enrol_agent, free_port, serving, write_coordinator_config

CLIENTS: list[httpx.Client] = []  # closed before the server stops: an open keep-alive connection delays its exit
PASSWORDS = {"olga": "operator-" + os.urandom(6).hex(), "ada": "auditor-" + os.urandom(6).hex()}


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coordinator]:
    root = tmp_path_factory.mktemp("web")
    config = write_coordinator_config(str(root), free_port())
    add_web_accounts(config, {"olga": ("operator", PASSWORDS["olga"]), "ada": ("auditor", PASSWORDS["ada"])})
    with serving(config, str(root / "serve.log")) as running:
        enrol_agent(running, Inventory(host="app01", targets={"documents": {"kind": "files"}}))
        try:
            yield running
        finally:
            for client in CLIENTS:
                client.close()


def _client(coordinator: Coordinator, **headers: str) -> httpx.Client:
    client = httpx.Client(base_url=coordinator.url, verify=False, headers=headers, timeout=30)  # self-signed
    CLIENTS.append(client)
    return client


def _login(coordinator: Coordinator, name: str, **headers: str) -> httpx.Client:
    client = _client(coordinator, **headers)
    answer = client.post("/ui/login", data={"name": name, "password": PASSWORDS[name]})
    assert answer.status_code == 303 and answer.headers["location"] == "/ui/", answer.text
    cookie = answer.headers["set-cookie"]
    assert all(flag in cookie for flag in ("Secure", "HttpOnly", "SameSite=strict", "Path=/ui"))
    return client


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page
    return found[1]


def test_pages_need_a_session_and_carry_a_policy_that_allows_no_other_origin(coordinator: Coordinator) -> None:
    anonymous = _client(coordinator)
    assert anonymous.get("/ui/").headers["location"] == "/ui/login"
    operator = _login(coordinator, "olga")
    for path in ("/ui/", "/ui/agents", "/ui/login"):
        answer = operator.get(path)
        assert answer.status_code == 200, path
        policy = answer.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy and "script-src" not in policy
        assert answer.headers["x-frame-options"] == "DENY"
        assert not re.search(r'(src|href|action)="(https?:)?//', answer.text), path  # nothing from elsewhere
        assert "<script" not in answer.text
    overview = operator.get("/ui/")
    assert "app01" in overview.text and "documents" in overview.text and "rpo_breach" in overview.text
    assert operator.get("/ui/systems/no-such-system").status_code == 404


def test_the_auditor_reads_but_cannot_act_and_a_forged_form_is_refused(coordinator: Coordinator) -> None:
    auditor = _login(coordinator, "ada")
    agents = auditor.get("/ui/agents")
    assert "app01" in agents.text and "/revoke" not in agents.text  # no action offered
    agent_id = re.search(r"sha256:[0-9a-f]{64}", _login(coordinator, "olga").get("/ui/agents").text)
    assert agent_id
    refused = auditor.post(f"/ui/agents/{agent_id[0]}/revoke", data={"csrf": _csrf(agents.text)})
    assert refused.status_code == 403 and "role" in refused.text
    operator = _login(coordinator, "olga")
    page = operator.get("/ui/agents").text
    assert operator.post(f"/ui/agents/{agent_id[0]}/revoke", data={"csrf": "forged"}).status_code == 403
    assert operator.post(f"/ui/agents/{agent_id[0]}/revoke",
                         data={"csrf": _csrf(auditor.get("/ui/agents").text)}).status_code == 403  # another's
    done = operator.post(f"/ui/agents/{agent_id[0]}/revoke", data={"csrf": _csrf(page)})
    assert done.status_code == 303
    assert "revoked" in operator.get("/ui/agents").text


def test_a_session_cookie_from_another_server_is_no_session(coordinator: Coordinator, tmp_path: pathlib.Path) -> None:
    other = write_coordinator_config(str(tmp_path), free_port())
    add_web_accounts(other, {"olga": ("operator", PASSWORDS["olga"])})
    with serving(other, str(tmp_path / "serve.log")) as elsewhere, \
            contextlib.closing(_login(elsewhere, "olga")) as there:
        foreign = there.cookies["drill_session"]
    client = _client(coordinator)
    client.cookies.set("drill_session", foreign, path="/ui")
    assert client.get("/ui/").headers["location"] == "/ui/login"


def test_the_language_follows_the_browser_then_the_choice(coordinator: Coordinator) -> None:
    chinese = _login(coordinator, "olga", **{"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.5"})
    assert "总览" in chinese.get("/ui/").text
    chinese.get("/ui/lang/en")
    assert "Overview" in chinese.get("/ui/").text
    with open(coordinator.config) as handle:
        assert yaml.safe_load(handle)["listen"]  # a fleet coordinator: the web view lives beside the API


def test_a_wrong_password_is_refused_and_then_rate_limited(coordinator: Coordinator) -> None:
    """Last in this module: it leaves loopback blocked for log-ins (per account and per address)."""
    client = _client(coordinator)
    codes = [client.post("/ui/login", data={"name": "ada", "password": "not-her-password"}).status_code
             for _ in range(6)]
    assert codes == [401] * 5 + [429]
    assert "一分钟" in _client(coordinator, **{"Accept-Language": "zh-CN,zh;q=0.9"}).post(
        "/ui/login", data={"name": "ada", "password": "x"}).text
