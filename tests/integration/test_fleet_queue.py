"""The fleet's enrolment and job queue on SQLite and on the machine's PostgreSQL: tokens, claims, leases, and the
agent's checks of a signed job (signature, expiry, replay, kind)."""

from __future__ import annotations

import pathlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from agents.contract import signing
from agents.contract.inventory import Inventory
from agents.fleet.accept import JobRefused, open_job
from drill.fleet import enrolment, queue
from drill.fleet.tables import create_fleet_tables
from drill.ledger.store import Store, open_store
from tests.support.databases import empty_database

REPO = "ab" * 32
OTHER_REPO = "cd" * 32


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/fleet.db"
        return
    with empty_database("drill_fleet") as url:
        yield url


def _store(url: str) -> Store:
    store = open_store(url)
    create_fleet_tables(store)
    return store


def _enrol(store: Store, host: str, role: str, site: str, repositories: dict[str, str], *, capacity: int = 1,
           approval: bool = False) -> tuple[enrolment.AgentRow, signing.SigningKey]:
    key = signing.generate_key()
    token = enrolment.issue_token(store, role, site, 600, time.time())
    inventory = Inventory(host=host, repositories={name: {"site": site, "id": rid}
                                                   for name, rid in repositories.items()})
    row = enrolment.enrol(store, token, enrolment.Enrolment(signing.public_pem(key.public), host, role, site,
                                                            inventory, "test", capacity),
                          digest="sha256", approval=approval, now=time.time())
    return row, key


def _verify_spec(target: str = "documents") -> dict[str, Any]:
    return {"kind": "verify", "target": target, "target_kind": "files", "backup_host": "app01",
            "snapshot": "latest"}


BOTH = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)


@BOTH
def test_a_token_enrols_once_before_it_expires_and_only_for_its_role_and_site(database_url: str) -> None:
    store = _store(database_url)
    now = time.time()
    token = enrolment.issue_token(store, "scratch", "same-city", 60, now)
    request = enrolment.Enrolment(signing.public_pem(signing.generate_key().public), "scratch02", "scratch",
                                  "same-city", Inventory(host="scratch02"), "test")
    for changed, code in ((dict(role="agent"), "role_mismatch"), (dict(site="local"), "site_mismatch")):
        with pytest.raises(enrolment.EnrolmentRefused) as refused:
            enrolment.enrol(store, token, enrolment.Enrolment(**{**request.__dict__, **changed}), digest="sha256",
                            approval=False, now=now)
        assert refused.value.code == code
    row = enrolment.enrol(store, token, request, digest="sha256", approval=True, now=now)
    assert row.status == "pending" and row.role == "scratch"
    with pytest.raises(enrolment.EnrolmentRefused) as used:
        enrolment.enrol(store, token, request, digest="sha256", approval=False, now=now)
    assert used.value.code == "token_used"
    late = enrolment.issue_token(store, "agent", None, 60, now)
    with pytest.raises(enrolment.EnrolmentRefused) as expired:
        enrolment.enrol(store, late, request, digest="sha256", approval=False, now=now + 61)
    assert expired.value.code == "token_expired"
    with pytest.raises(enrolment.EnrolmentRefused) as unknown:
        enrolment.enrol(store, "drill-enrol-guess", request, digest="sha256", approval=False, now=now)
    assert unknown.value.code == "token_unknown"
    assert enrolment.approve(store, row.agent_id).status == "approved"


@BOTH
def test_an_open_job_goes_to_a_scratch_host_of_its_site_that_reads_its_repository(
    database_url: str, tmp_path: pathlib.Path
) -> None:
    store = _store(database_url)
    coordinator = signing.generate_key()
    elsewhere, _ = _enrol(store, "scratch-local", "scratch", "local", {"main": REPO})
    unrelated, _ = _enrol(store, "scratch-other", "scratch", "same-city", {"other": OTHER_REPO})
    pending, _ = _enrol(store, "scratch-new", "scratch", "same-city", {"copy": REPO}, approval=True)
    right, _ = _enrol(store, "scratch-city", "scratch", "same-city", {"copy-of-app01": REPO}, capacity=2)
    now = time.time()
    first = queue.enqueue(store, _verify_spec("documents"), reason="test", now=now, lifetime=3600,
                          site="same-city", repository_id=REPO)
    queue.enqueue(store, _verify_spec("appdb"), reason="test", now=now + 0.1, lifetime=3600, site="same-city",
                  repository_id=REPO)
    queue.enqueue(store, _verify_spec("mail"), reason="test", now=now + 0.2, lifetime=3600, site="same-city",
                  repository_id=REPO)
    now += 1
    for other in (elsewhere, unrelated, pending):
        assert queue.claim(store, other, coordinator, now=now, lease=60, coordinator="c") == []
    claimed = queue.claim(store, right, coordinator, now=now, lease=60, coordinator="c")
    assert len(claimed) == 2  # its capacity
    assert queue.claim(store, right, coordinator, now=now, lease=60, coordinator="c") == []
    job = open_job(claimed[0], coordinator.public, str(tmp_path / "nonces"), ("verify", "check"))
    assert job.id == first and job.repository == "copy-of-app01"  # named as that host names it
    assert queue.finish(store, first, right.agent_id, "passed", now=now)
    assert not queue.finish(store, first, right.agent_id, "passed", now=now)  # once
    [third] = queue.claim(store, right, coordinator, now=now, lease=60, coordinator="c")
    assert signing.envelope_payload(third)["target"] == "mail"


@BOTH
def test_the_agent_refuses_a_replayed_expired_foreign_or_unexpected_job(
    database_url: str, tmp_path: pathlib.Path
) -> None:
    store = _store(database_url)
    coordinator = signing.generate_key()
    scratch, _ = _enrol(store, "scratch-city", "scratch", "same-city", {"copy": REPO}, capacity=3)
    now = time.time()
    for offset, target in enumerate(("a", "b")):
        queue.enqueue(store, _verify_spec(target), reason="test", now=now + offset / 10, lifetime=3600,
                      site="same-city", repository_id=REPO)
    queue.enqueue(store, {"kind": "check", "repository": "copy"}, reason="test", now=now + 0.3, lifetime=3600,
                  agent_id=scratch.agent_id)
    now += 1
    first, second, check = queue.claim(store, scratch, coordinator, now=now, lease=60, coordinator="c")
    nonces = str(tmp_path / "nonces")

    def refusal(envelope: Any, key: Any = coordinator.public, kinds: tuple[str, ...] = ("verify", "check")) -> str:
        with pytest.raises(JobRefused) as refused:
            open_job(envelope, key, nonces, kinds)
        return refused.value.code

    assert open_job(first, coordinator.public, nonces, ("verify",)).kind == "verify"
    assert refusal(first) == "job_replayed"
    assert refusal(second, key=signing.generate_key().public) == "bad_job_signature"
    assert refusal(check, kinds=("verify",)) == "kind_not_allowed"
    stale = coordinator.sign_document({**signing.envelope_payload(second), "expires": "2020-01-01T00:00:00Z"},
                                      "application/vnd.drill.job+json")
    assert refusal(stale) == "job_expired"
    record = coordinator.sign_document(signing.envelope_payload(second))  # a job signed as a record
    assert refusal(record) == "bad_job_signature"


@BOTH
def test_a_job_whose_host_died_goes_back_to_the_queue_with_a_backoff_then_fails(database_url: str) -> None:
    store = _store(database_url)
    coordinator = signing.generate_key()
    dead, _ = _enrol(store, "scratch-a", "scratch", "local", {"main": REPO})
    alive, _ = _enrol(store, "scratch-b", "scratch", "local", {"main": REPO})
    now = time.time()
    job_id = queue.enqueue(store, _verify_spec(), reason="test", now=now, lifetime=3600, site="local",
                           repository_id=REPO, max_attempts=2)
    assert queue.claim(store, dead, coordinator, now=now, lease=30, coordinator="c")
    queue.renew(store, dead.agent_id, [job_id], now=now + 20, lease=30)
    assert queue.requeue_stale(store, now=now + 40) == []  # renewed until now + 50
    assert queue.requeue_stale(store, now=now + 60, backoff=10) == [job_id]
    assert queue.claim(store, alive, coordinator, now=now + 65, lease=30, coordinator="c") == []  # backoff
    assert queue.claim(store, alive, coordinator, now=now + 71, lease=30, coordinator="c")
    assert queue.requeue_stale(store, now=now + 200) == []
    [failed] = queue.list_jobs(store, state="failed")
    assert failed.job_id == job_id and failed.attempts == 2 and "lease expired" in (failed.outcome or "")


@BOTH
def test_revoking_an_agent_cancels_its_jobs_and_request_nonces_are_single_use(database_url: str) -> None:
    store = _store(database_url)
    agent, _ = _enrol(store, "app01", "agent", "local", {"local": REPO})
    now = time.time()
    queue.enqueue(store, {"kind": "backup", "policy": "nightly"}, reason="test", now=now, lifetime=60,
                  agent_id=agent.agent_id)
    assert enrolment.remember_nonce(store, agent.agent_id, "n" * 32, now, 300)
    assert not enrolment.remember_nonce(store, agent.agent_id, "n" * 32, now + 1, 300)
    enrolment.forget_old_nonces(store, now + 601, 300)  # older than twice the window: a stale request anyway
    assert enrolment.remember_nonce(store, agent.agent_id, "n" * 32, now + 601, 300)
    revoked = enrolment.revoke(store, agent.agent_id, now)
    assert revoked.status == "revoked" and revoked.revoked == pytest.approx(now)
    assert [job.state for job in queue.list_jobs(store)] == ["cancelled"]
    assert queue.claim(store, revoked, signing.generate_key(), now=now, lease=60, coordinator="c") == []
    with pytest.raises(enrolment.EnrolmentRefused):
        enrolment.approve(store, agent.agent_id)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # SQLite: a single writer by design
def test_two_coordinators_never_hand_out_one_job_twice(database_url: str) -> None:
    """Many concurrent claims from scratch hosts through two connections (two coordinators) on one database."""
    stores = [_store(database_url) for _ in range(2)]
    coordinator = signing.generate_key()
    hosts = [_enrol(stores[0], f"scratch{i}", "scratch", "local", {"main": REPO}, capacity=400)[0]
             for i in range(6)]
    now = time.time()
    jobs = {queue.enqueue(stores[0], _verify_spec(f"t{i}"), reason="test", now=now, lifetime=3600, site="local",
                          repository_id=REPO) for i in range(120)}
    claimed: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def claimer(index: int) -> None:
        store = _store(database_url)  # a connection of its own, as a request of either coordinator would have
        try:
            while True:
                got = queue.claim(store, hosts[index % len(hosts)], coordinator, now=now, lease=60,
                                  coordinator=f"c{index % 2}")
                if not got:
                    return
                with lock:
                    claimed.extend(signing.envelope_payload(e)["id"] for e in got)
        except BaseException as error:
            errors.append(error)
        finally:
            store.close()

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert sorted(claimed) == sorted(jobs)  # every job once, none twice
