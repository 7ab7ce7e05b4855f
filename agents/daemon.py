"""``drill-agent run``: back up on schedule, from persisted state.

What is due comes from ``state_dir/schedule.json`` and the clock
(:func:`policies.due.find_due_run`); the ``schedule`` package only wakes the
agent every ``tick`` seconds. A run missed while the agent was down is made once
at start; a run that completed is never repeated after a restart; a run that
was interrupted is made again.

On first start of a policy (no state yet) the agent records "now" as its
baseline and waits for the next scheduled instant rather than backing up at
once; ``drill-agent backup`` is the way to take a first backup immediately.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import datetime

import schedule

from agents import process
from agents.config.model import AgentConfig
from agents.contract.jobs import BackupJob
from agents.contract.records import BackupRecord, SignedRecord
from agents.execute import execute
from agents.jobs.backup import ProgressCallback
from agents.jobs.leftovers import clean_up_killed_jobs
from agents.scratch.reaper import reap
from agents.state import PolicyBusy, StateDir
from policies.due import find_due_run, next_slot

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def local_now() -> datetime:
    return datetime.now().astimezone()


def run_due_policies(
    config: AgentConfig, *, clock: Clock = local_now, progress: ProgressCallback | None = None
) -> list[SignedRecord]:
    """Run every policy that is due now, once each; return their records.

    The slot is recorded as handled only after its run finished (whatever its
    outcome); an interrupted run stays due.
    """
    state = StateDir(config.state_dir)
    records: list[SignedRecord] = []
    for name, policy in config.policies.items():
        if not policy.calendars or process.CANCELLATION.is_cancelled:
            continue
        now = clock()
        last = state.last_handled_slot(name)
        if last is None:
            state.set_last_handled_slot(name, now, "baseline")
            upcoming = next_slot(policy.calendars, now)
            if upcoming:
                log.info("policy %s: first start; next %s backup at %s", name, upcoming[0].value, upcoming[1])
            continue
        due = find_due_run(policy.calendars, last, now)
        if due is None:
            continue
        if due.missed_slots > 1 or (now - due.slot).total_seconds() > 3600:
            log.warning("policy %s: catching up a run missed at %s (%s)", name, due.slot, due.level.value)
        try:
            ran = execute(config, BackupJob(policy=name, level=due.level, requested_by="schedule"),
                          progress=progress)
        except PolicyBusy as busy:
            log.warning("%s; will try again at the next tick", busy)
            continue
        records += ran
        if process.CANCELLATION.is_cancelled:
            break
        outcomes = {r.record.outcome for r in ran if isinstance(r.record, BackupRecord)}
        worst = "failed" if "failed" in outcomes or not outcomes else ("partial" if "partial" in outcomes
                                                                        else "success")
        state.set_last_handled_slot(name, due.slot, worst)
    return records


def run_forever(config: AgentConfig, *, tick_seconds: float = 30.0, clock: Clock = local_now,
                beside: Callable[[threading.Event], None] | None = None) -> None:
    """Run due policies now and then at every tick until SIGINT/SIGTERM; ``beside`` (the fleet worker) runs in a
    thread of its own meanwhile, and is stopped and waited for at the end.

    At start, what a killed predecessor left is undone first: scratch directories and throwaway instances of
    verifications that died, snapshots of backups killed before their record was written.
    """
    reap(config.scratch.directory or os.path.join(config.state_dir, "scratch"))
    clean_up_killed_jobs(config)
    stop = threading.Event()
    companion = threading.Thread(target=beside, args=(stop,), name="fleet") if beside is not None else None
    if companion is not None:
        companion.start()
    try:
        _schedule_loop(config, tick_seconds, clock)
    finally:
        stop.set()
        if companion is not None:
            companion.join()
    log.info("drill-agent stopping: %s", process.CANCELLATION.reason)


def _schedule_loop(config: AgentConfig, tick_seconds: float, clock: Clock) -> None:
    run_due_policies(config, clock=clock)
    schedule.every(max(1, round(tick_seconds))).seconds.do(run_due_policies, config, clock=clock)
    log.info("drill-agent running for host %s; checking every %.0fs", config.host, tick_seconds)
    try:
        while not process.CANCELLATION.is_cancelled:
            schedule.run_pending()
            time.sleep(min(1.0, tick_seconds))
    finally:
        schedule.clear()
