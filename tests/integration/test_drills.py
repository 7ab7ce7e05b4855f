"""DR drills end to end on real restic, a real throwaway PostgreSQL and a real ledger (both restic versions)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from typing import Any

import pypdf
import pytest

from agents import process
from agents.api import LocalAgent
from agents.contract import signing
from agents.contract.records import SignedRecord, VerifyRecord
from agents.keys import KeyStore
from agents.outbox import Outbox, read_envelope
from drill.config import load_drill_config
from drill.coordinator import ingest, open_ledger
from drill.drills import finish_drill, load_drill, run_drill, start_drill
from drill.reports.i18n import duration
from tests.support.configs import Workspace
from tests.support.databases import throwaway_database
from tests.support.drills import drillctl, make_estate


def _coordinator_fingerprint(drill_config: str) -> str:
    keys = json.loads(drillctl("keys", "list", "-c", drill_config, "--json", check=True).stdout)
    return next(k["keyid"] for k in keys if k["role"] == "coordinator")


def test_a_same_city_drill_passes_with_evidence_and_reports(workspace: Workspace, scratch_dir: str) -> None:
    with throwaway_database(rows=400) as db:
        estate = make_estate(workspace.root, workspace.restic, scratch_dir, db=db)
        # Both targets at once: two verifications in one repository, sharing one restic check (an exclusive lock).
        run = drillctl("drill", "run", "-c", estate.drill_config, "--site", "same-city", "--json", "--parallel", "2")
        assert run.returncode == 0, run.stdout + run.stderr
        drill = json.loads(run.stdout)
        assert drill["verdict"] == "passed" and drill["site"] == "same-city"
        rows = {r["target"]: r for r in drill["systems"]}
        assert set(rows) == {"documents", "appdb"}
        assert rows["documents"]["files"] == 30
        assert rows["appdb"]["rows"] == 400 + 800 and rows["appdb"]["tables"] == 2
        for row in rows.values():
            assert 0 < row["rpo_seconds"] < row["rpo_objective_seconds"]
            assert 0 < row["rto_seconds"] < row["rto_objective_seconds"]
            assert len(row["snapshot_ids"]) >= 1
        # One restic check of the repository for the drill: the other verification carries its result.
        agent_state = LocalAgent.open(estate.agent_config).state_dir
        verifications = [r for r in (SignedRecord.read_unverified(read_envelope(path)).record
                                     for path in Outbox(agent_state, KeyStore(agent_state)).list(sent=True))
                         if isinstance(r, VerifyRecord) and r.drill_id == drill["drill_id"]]
        assert len(verifications) == 2 and all(v.check and v.check.passed for v in verifications)
        assert sorted("check" in v.timings.phases for v in verifications) == [False, True]
        assert sorted(f.code for v in verifications for f in v.findings) == ["check_shared"]

        bundle = os.path.join(workspace.root, "evidence.zip")
        exported = drillctl("evidence", "export", "-c", estate.drill_config, "--drill", drill["drill_id"],
                            "--out", bundle)
        assert exported.returncode == 0, exported.stderr
        verified = drillctl("evidence", "verify", bundle, "--trust", _coordinator_fingerprint(estate.drill_config),
                            "--json")
        result = json.loads(verified.stdout)
        assert verified.returncode == 0 and result["intact"] and result["pinned"], result["problems"]
        assert result["records"] == 1 + 2 + 2 + 1  # started, two verifications, two steps, finished

        for lang in ("zh-CN", "en"):
            for kind in ("html", "pdf"):
                out = os.path.join(workspace.root, f"report.{lang}.{kind}")
                made = drillctl("report", "drill", drill["drill_id"], "-c", estate.drill_config, "--lang", lang,
                                "--format", kind, "--out", out)
                assert made.returncode == 0, made.stderr
                if kind == "html":
                    with open(out, encoding="utf-8") as handle:
                        text = handle.read()
                    assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")  # nothing fetched
                else:
                    text = "".join(page.extract_text() for page in pypdf.PdfReader(out).pages)
                text = " ".join(text.split())
                assert ("通过" if lang == "zh-CN" else "PASSED") in text
                for row in rows.values():
                    for seconds in (row["rpo_seconds"], row["rto_seconds"]):
                        assert duration(seconds, lang).replace(" ", "") in text.replace(" ", ""), (lang, kind)
                assert "1200" in text  # rows verified


def test_bad_drill_input_is_named(workspace_once: Workspace, scratch_dir: str) -> None:
    workspace = workspace_once
    extra = {"archive": {"kind": "files", "paths": [workspace.data]}}  # configured, never backed up
    estate = make_estate(workspace.root, workspace.restic, scratch_dir, extra_targets=extra)
    unknown_site = drillctl("drill", "run", "-c", estate.drill_config, "--site", "moon")
    assert unknown_site.returncode == 2 and "unknown site 'moon'" in unknown_site.stderr
    assert "local, same-city" in unknown_site.stderr
    unknown_system = drillctl("drill", "run", "-c", estate.drill_config, "--site", "local", "--systems", "db9")
    assert unknown_system.returncode == 2 and "unknown system 'db9'" in unknown_system.stderr
    too_many = drillctl("drill", "run", "-c", estate.drill_config, "--site", "local", "--parallel", "99")
    assert too_many.returncode == 2 and "--parallel: takes a number of steps from 1 to 16, not '99'" in too_many.stderr
    run = drillctl("drill", "run", "-c", estate.drill_config, "--site", "local", "--json")
    assert run.returncode == 1
    drill = json.loads(run.stdout)
    assert drill["verdict"] == "failed" and drill["failing"] == ["app01/archive"]
    archive = next(r for r in drill["systems"] if r["target"] == "archive")
    assert archive["rpo_seconds"] is None  # infinite
    assert "no_restorable_snapshot" in {f["code"] for f in archive["findings"]}
    with open(os.path.join(workspace.root, "broken.yaml"), "w") as handle:
        handle.write("state_dir: /tmp/x\nsystems:\n  app01:\n    agent_config: /nonexistent/agent.yaml\n")
    broken = drillctl("drill", "run", "-c", os.path.join(workspace.root, "broken.yaml"), "--site", "local")
    assert broken.returncode == 2 and "broken.yaml:4" in broken.stderr and "cannot read" in broken.stderr


def test_an_interrupted_drill_is_incomplete_until_resumed_or_closed(
    workspace_once: Workspace, scratch_dir: str
) -> None:
    workspace = workspace_once
    estate = make_estate(workspace.root, workspace.restic, scratch_dir)
    config = load_drill_config(estate.drill_config)
    with open_ledger(config) as ledger:
        first = start_drill(ledger, config, "same-city", None)
        process.CANCELLATION.cancel("test: operator pressed Ctrl-C")
        view = run_drill(ledger, config, first, lambda _: None)
        assert view.verdict == "incomplete" and view.finished is None and view.missing() == [("app01", "documents")]
        process.CANCELLATION.reset()
        assert run_drill(ledger, config, first, lambda _: None).verdict == "passed"  # resumed

        second = start_drill(ledger, config, "local", None)
        closed = finish_drill(ledger, config, second, closing=True)
        assert closed.verdict == "incomplete" and closed.finished is not None
        assert closed.finished.not_run == ["app01/documents"]
    shown = drillctl("drill", "show", second, "-c", estate.drill_config, "--json")
    assert shown.returncode == 1 and json.loads(shown.stdout)["verdict"] == "incomplete"


def test_ingest_takes_nothing_twice_and_refuses_replays_and_strangers(
    workspace_once: Workspace, scratch_dir: str
) -> None:
    workspace = workspace_once
    estate = make_estate(workspace.root, workspace.restic, scratch_dir)
    config = load_drill_config(estate.drill_config)
    agent = config.systems["app01"].agent
    keys = KeyStore(agent.state_dir)
    outbox = Outbox(agent.state_dir, keys)
    [waiting] = outbox.list()
    with open_ledger(config) as ledger:
        # An ingest that stopped after appending, before moving the file: the next one only moves it.
        ledger.add_key(keys.public_pem(), "app01", "agent")
        ledger.append(read_envelope(waiting))
        result = ingest(ledger, config)
        assert (len(result.taken), len(result.already), result.refused) == (0, 1, [])
        assert ledger.size() == 1 and outbox.list() == []

        # The same record, changed and re-signed by the agent: a replay. A record from an unknown key: refused.
        [sent] = outbox.list(sent=True)
        document = signing.envelope_payload(read_envelope(sent))
        document["outcome"] = "partial"
        with open(os.path.join(outbox.path, "replayed.json"), "w") as handle:
            json.dump(keys.key.sign_document(document), handle)
        stranger = signing.generate_key()
        with open(os.path.join(outbox.path, "stranger.json"), "w") as handle:
            json.dump(stranger.sign_document({**document, "record_id": "another"}), handle)
        result = ingest(ledger, config)
        assert sorted(code for _, code, _ in result.refused) == ["replay", "unknown_key"]
        assert ledger.size() == 1
    refused = os.path.join(outbox.path, "refused")
    assert sorted(os.listdir(refused)) == ["replayed.json", "replayed.json.reason", "stranger.json",
                                           "stranger.json.reason"]
    with open(os.path.join(refused, "replayed.json.reason")) as handle:
        assert handle.read().startswith("replay: record")
    audit = drillctl("ledger", "audit", "-c", estate.drill_config, "--json")
    assert audit.returncode == 0 and json.loads(audit.stdout)["intact"]


def test_a_verification_the_ledger_refuses_cannot_pass_its_step(
    workspace_once: Workspace, scratch_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The step is computed from the ledger's copy: a record altered on its way (here, after signing) is refused
    by the ledger, and the step fails although the agent's own copy says passed."""
    workspace = workspace_once
    estate = make_estate(workspace.root, workspace.restic, scratch_dir)
    config = load_drill_config(estate.drill_config)
    honest = LocalAgent.execute

    def tampered(agent: LocalAgent, job: Any, progress: Any = None) -> list[SignedRecord]:
        altered = []
        for signed in honest(agent, job, progress):
            document = signing.envelope_payload(signed.envelope)
            document["compared"]["files"] += 1  # the agent's copy still says passed; the signature no longer holds
            envelope = {**signed.envelope, "payload": base64.b64encode(json.dumps(document).encode()).decode()}
            altered.append(SignedRecord(envelope, signed.record, signed.keyid, signed.path))
        return altered

    monkeypatch.setattr(LocalAgent, "execute", tampered)
    with open_ledger(config) as ledger:
        drill_id = start_drill(ledger, config, "local", None)
        view = run_drill(ledger, config, drill_id, lambda _: None)
    [step] = view.steps
    assert view.verdict == "failed" and step.verdict == "failed" and step.verifications == []
    assert [f.code for f in step.findings][:1] == ["record_not_in_ledger"]
    assert "does not verify" in step.findings[0].message


def test_a_step_that_raises_stops_the_drill_after_the_running_steps_are_recorded(
    workspace_once: Workspace, scratch_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    workspace = workspace_once
    extra = {"archive": {"kind": "files", "paths": [workspace.data]}}
    estate = make_estate(workspace.root, workspace.restic, scratch_dir, extra_targets=extra)
    config = load_drill_config(estate.drill_config)
    honest = LocalAgent.execute

    def breaks_on_archive(agent: LocalAgent, job: Any, progress: Any = None) -> list[SignedRecord]:
        if job.target == "archive":  # a fault no real agent produces on demand: an exception out of the job
            raise RuntimeError("the agent broke")
        return honest(agent, job, progress)

    monkeypatch.setattr(LocalAgent, "execute", breaks_on_archive)
    with open_ledger(config) as ledger:
        drill_id = start_drill(ledger, config, "local", None)
        with pytest.raises(RuntimeError, match="the agent broke"):
            run_drill(ledger, config, drill_id, lambda _: None, parallel=2)
        view = load_drill(ledger, drill_id)
    assert [(s.target, s.verdict) for s in view.steps] == [("documents", "passed")]  # recorded before the raise
    assert view.finished is None and view.missing() == [("app01", "archive")]


def test_two_ingests_at_once_take_each_record_once_and_state_is_private(
    workspace_once: Workspace, scratch_dir: str
) -> None:
    workspace = workspace_once
    estate = make_estate(workspace.root, workspace.restic, scratch_dir)
    for _ in range(4):  # more records waiting
        subprocess.run(["drill-agent", "backup", "-c", estate.agent_config, "-p", "nightly", "-q"], check=True)
    runs = [subprocess.Popen(["drillctl", "ingest", "-c", estate.drill_config, "--json"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(run.communicate(timeout=120), run.returncode) for run in runs]
    assert [code for _, code in results] == [0, 0], results
    taken = [json.loads(out) for (out, _), _ in results]
    assert sum(t["taken"] for t in taken) == 5 and all(t["refused"] == [] for t in taken)
    audit = json.loads(drillctl("ledger", "audit", "-c", estate.drill_config, "--json", check=True).stdout)
    assert audit["intact"] and audit["checkpoint"]["tree_size"] == 5
    agent_state = os.path.join(workspace.root, "agent-state")
    assert os.listdir(os.path.join(agent_state, "outbox")) == ["sent"]
    # Everything the agent and the coordinator wrote is theirs alone: 0700 directories, 0600 files.
    for top in (agent_state, os.path.join(workspace.root, "coordinator")):
        for directory, dirs, files in os.walk(top):
            for name in (*dirs, *files):
                mode = os.lstat(os.path.join(directory, name)).st_mode
                assert mode & 0o077 == 0, f"{os.path.join(directory, name)} is {oct(mode & 0o777)}"
