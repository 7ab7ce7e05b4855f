"""The web view in a real browser (Debian's chromium, headless, driven through chromedriver): each role logs in,
walks every page at desktop and phone width (screenshots under the test's folder), sees the ledger's figures, and
no request leaves the coordinator's origin."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from agents.contract.documents import format_time
from agents.contract.inventory import Inventory
from agents.fleet.link import Link
from drill.config import load_drill_config
from drill.coordinator import open_ledger
from tests.support.fleet import Coordinator, add_web_accounts, enrol_agent, free_port, serving, write_coordinator_config
from tests.support.records import backup_document, drill_started, drill_step

PAGES = ("/ui/", "/ui/night", "/ui/drills", "/ui/systems/app01", "/ui/agents")
PASSWORDS = {"olga": "operator-" + os.urandom(6).hex(), "ada": "auditor-" + os.urandom(6).hex()}
WIDTHS = {"desktop": (1280, 900), "phone": (390, 844)}


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coordinator]:
    """A coordinator with two accounts, an enrolled agent and one backup record it pushed (signed, over HTTPS)."""
    root = tmp_path_factory.mktemp("browser")
    config = write_coordinator_config(str(root), free_port())
    add_web_accounts(config, {"olga": ("operator", PASSWORDS["olga"]), "ada": ("auditor", PASSWORDS["ada"])})
    with serving(config, str(root / "serve.log")) as running:
        row, key = enrol_agent(running, Inventory(host="app01", targets={"documents": {"kind": "files"}},
                                                  repositories={"local": {"site": "local", "id": "ab" * 32}}))
        finished = datetime.now(UTC) - timedelta(hours=2)
        record = backup_document("r-browser", timings={
            "started": format_time(finished - timedelta(seconds=30)), "finished": format_time(finished),
            "duration_seconds": 30.0, "phases": {}})
        answer = Link(running.url, running.fingerprint, key, row.agent_id).post(
            "/v1/records", {"records": [key.sign_document(record)]})
        assert answer["results"][0]["status"] == "taken", answer
        with open_ledger(load_drill_config(config)) as ledger:  # a drill of the coordinator's, as it signs them
            ledger.append_signed(drill_started("D-browser", "d-browser"))
            ledger.append_signed(drill_step("D-browser", "s-browser"))
        yield running


@pytest.fixture
def browser(tmp_path: pathlib.Path) -> Iterator[webdriver.Chrome]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.fail("chromium and chromedriver are missing: bash scripts/setup.sh installs Debian's chromium and "
                    "chromium-driver", pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-extensions", "--disable-default-apps", f"--user-data-dir={tmp_path / 'profile'}",
                 # Nothing but loopback resolves: even a page that tried could not reach out.
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"):
        options.add_argument(flag)
    options.set_capability("acceptInsecureCerts", True)  # the coordinator's self-signed certificate
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    chrome = webdriver.Chrome(options=options, service=Service(driver, log_output=os.devnull))
    try:
        yield chrome
    finally:
        chrome.quit()


def _requests(chrome: webdriver.Chrome) -> list[str]:
    """Every URL the browser asked for since the last call (from its DevTools network log)."""
    urls = []
    for entry in chrome.get_log("performance"):  # type: ignore[no-untyped-call]
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def _walk(chrome: webdriver.Chrome, coordinator: Coordinator, name: str, shots: pathlib.Path) -> dict[str, str]:
    """Log in as ``name`` and visit every page at each width; each page's text, by path."""
    chrome.get(f"{coordinator.url}/ui/login")
    chrome.find_element(By.NAME, "name").send_keys(name)
    chrome.find_element(By.NAME, "password").send_keys(PASSWORDS[name])
    chrome.find_element(By.CSS_SELECTOR, "form.login button").click()
    WebDriverWait(chrome, 20).until(expected_conditions.url_to_be(f"{coordinator.url}/ui/"))
    texts = {}
    for path in PAGES:
        chrome.get(f"{coordinator.url}{path}")
        texts[path] = chrome.find_element(By.TAG_NAME, "body").text
        for width, (x, y) in WIDTHS.items():
            chrome.set_window_size(x, y)
            page = path.strip("/").replace("/", "-") or "ui"
            assert chrome.save_screenshot(str(shots / f"{name}-{page}-{width}.png"))
            # Usable at that width: nothing wider than the window.
            overflow = chrome.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 1, (path, width, overflow)
    return texts


@pytest.mark.parametrize("name", ["olga", "ada"])
def test_each_role_walks_every_page_sees_the_ledger_and_stays_on_the_origin(
    coordinator: Coordinator, browser: webdriver.Chrome, name: str, tmp_path: pathlib.Path
) -> None:
    shots = tmp_path / "screenshots"
    shots.mkdir()
    texts = _walk(browser, coordinator, name, shots)
    overview = texts["/ui/"]
    assert "app01" in overview and "documents" in overview
    assert "full success 2.0 h ago" in overview  # the record pushed two hours ago, as the ledger has it
    assert "all well" not in overview.lower() and "coverage_overdue" in overview  # never verified
    actions = browser.find_elements(By.CSS_SELECTOR, "form[action*='/revoke']")
    assert (len(actions) == 1) if name == "olga" else not actions  # the auditor is offered no action
    assert len(list(shots.glob("*.png"))) == 2 * len(PAGES)
    assert "D-browser" in texts["/ui/drills"] and "incomplete" in texts["/ui/drills"]
    history = texts["/ui/systems/app01"]
    assert "documents" in history and "30.0 s" in history  # the backup's duration, from its record
    browser.get(f"{coordinator.url}/ui/systems/app01")
    assert browser.find_elements(By.CSS_SELECTOR, "svg circle")  # the charts, drawn
    # The evidence bundle downloads (it is what an auditor takes away) and is a ZIP.
    browser.get(f"{coordinator.url}/ui/drills")
    link = browser.find_element(By.CSS_SELECTOR, "a[href$='/bundle.zip']").get_attribute("href")
    assert link == f"{coordinator.url}/ui/drills/D-browser/bundle.zip"
    cookie = browser.get_cookie("drill_session")
    assert cookie is not None
    with httpx.Client(verify=False, cookies={"drill_session": cookie["value"]}) as client:  # the browser's session
        bundle = client.get(link)
    assert bundle.status_code == 200 and bundle.content[:2] == b"PK", bundle.text[:300]
    assert "attachment" in bundle.headers["content-disposition"]
    # What went over the network (the browser's own chrome:// pages do not): all of it to the coordinator.
    requested = [url for url in _requests(browser) if url.split(":")[0] in ("http", "https", "ws", "wss")]
    assert f"{coordinator.url}/ui/static/drill.css" in requested
    assert all(url.startswith(f"{coordinator.url}/") for url in requested), requested
