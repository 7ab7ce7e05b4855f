"""The coordinator's fleet tables, beside the ledger's in the same database (SQLite or PostgreSQL).

* ``fleet_tokens``: enrolment tokens, by the SHA-256 of the token (the token itself is shown once and never stored);
* ``fleet_agents``: every enrolled agent or scratch host, by the id of its Ed25519 key;
* ``fleet_jobs``: the job queue: what to run, where it may run, its state and lease;
* ``fleet_drills``: the drills being dispatched (the ledger holds what they found);
* ``fleet_nights``: the nights already planned (one coordinator plans each night);
* ``fleet_nonces``: the request nonces seen inside the signature window (replays are refused);
* ``fleet_alerts``: the problems notified as open (their recovery is notified when they close).

Times are Unix seconds (floats) so that both databases compare them the same way.
"""

from __future__ import annotations

from drill.ledger.store import Store, StoreError

TABLES = (
    "CREATE TABLE IF NOT EXISTS fleet_tokens (token_hash TEXT PRIMARY KEY, role TEXT NOT NULL, site TEXT, "
    "created DOUBLE PRECISION NOT NULL, expires DOUBLE PRECISION NOT NULL, used_by TEXT, used DOUBLE PRECISION)",
    "CREATE TABLE IF NOT EXISTS fleet_agents (agent_id TEXT PRIMARY KEY, host TEXT NOT NULL, role TEXT NOT NULL, "
    "site TEXT NOT NULL, public_pem TEXT NOT NULL, inventory TEXT NOT NULL, version TEXT NOT NULL, "
    "capacity INTEGER NOT NULL, status TEXT NOT NULL, enrolled DOUBLE PRECISION NOT NULL, "
    "revoked DOUBLE PRECISION, last_seen DOUBLE PRECISION, last_address TEXT)",
    "CREATE TABLE IF NOT EXISTS fleet_jobs (job_id TEXT PRIMARY KEY, kind TEXT NOT NULL, agent_id TEXT, "
    "site TEXT, repository_id TEXT, reason TEXT NOT NULL, drill_id TEXT, system TEXT, spec TEXT NOT NULL, "
    "state TEXT NOT NULL, "
    "attempts INTEGER NOT NULL, max_attempts INTEGER NOT NULL, not_before DOUBLE PRECISION NOT NULL, "
    "expires DOUBLE PRECISION NOT NULL, claimed_by TEXT, lease_until DOUBLE PRECISION, envelope TEXT, "
    "outcome TEXT, created DOUBLE PRECISION NOT NULL, updated DOUBLE PRECISION NOT NULL)",
    "CREATE INDEX IF NOT EXISTS fleet_jobs_state ON fleet_jobs (state, not_before)",
    "CREATE INDEX IF NOT EXISTS fleet_jobs_drill ON fleet_jobs (drill_id)",
    "CREATE TABLE IF NOT EXISTS fleet_drills (drill_id TEXT PRIMARY KEY, site TEXT NOT NULL, state TEXT NOT NULL, "
    "started DOUBLE PRECISION NOT NULL)",
    "CREATE TABLE IF NOT EXISTS fleet_nights (night TEXT PRIMARY KEY, planned DOUBLE PRECISION NOT NULL, "
    "jobs INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS fleet_alerts (subject TEXT NOT NULL, code TEXT NOT NULL, message TEXT NOT NULL, "
    "since DOUBLE PRECISION NOT NULL, PRIMARY KEY (subject, code))",
    "CREATE TABLE IF NOT EXISTS fleet_nonces (agent_id TEXT NOT NULL, nonce TEXT NOT NULL, "
    "seen DOUBLE PRECISION NOT NULL, PRIMARY KEY (agent_id, nonce))",
)


def create_fleet_tables(store: Store) -> None:
    """Create the fleet's tables in ``store`` when missing. Raises :class:`StoreError`."""
    try:
        for statement in TABLES:
            store.execute(statement)
    except Exception as exc:  # sqlite3.Error or psycopg.Error: the driver's own words
        raise StoreError(f"cannot create the fleet's tables: {exc}") from exc
