"""Benchmark: database backups with their manifest versus raw ``dump | restic backup --stdin``, side by side.

Creates a table of about 1.5 million rows (~200 MB) in the machine's PostgreSQL
and MariaDB, then for each, alternating the order, into fresh local repositories:

* raw:   ``pg_dump -Fc DB | restic backup --stdin`` (``mariadb-dump --single-transaction DB | …``);
* drill: ``drill-agent backup`` of a postgres / mysql target (dump streamed through the agent,
  table checksums in the same snapshot, manifest stored).

It prints the ratio, and the manifest's own throughput in rows per second (as the
agent computes it: MariaDB on two connections in one snapshot, the table summed
in two key ranges) next to the cheap, weak checksums of the issue
(``sum(hashtext(row::text))`` in PostgreSQL, ``BIT_XOR(CRC32(CONCAT_WS(...)))``
in MariaDB, one connection) and the earlier MD5-based MariaDB checksum.

Usage: python bench/bench_databases.py [--rows 1500000] [--repeat 3] [--restic PATH] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import psycopg
import pymysql
import yaml

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
MY = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}
DB = "drill_bench"
ROW = "owner text, balance numeric(14,2), note text, created timestamptz, flag boolean"


def setup_postgres(rows: int) -> None:
    with psycopg.connect(**PG, dbname="postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {DB}")
    with psycopg.connect(**PG, dbname=DB, autocommit=True) as c:
        c.execute(f"CREATE TABLE ledger (id bigserial PRIMARY KEY, {ROW})")
        c.execute(
            "INSERT INTO ledger (owner, balance, note, created, flag) SELECT 'owner ' || g, g * 1.25, "
            "repeat(md5(g::text), 2) || ' ' || g, timestamptz '2026-01-01' + g * interval '1 second', g %% 3 = 0 "
            "FROM generate_series(1, %s) g", (rows,))
        c.execute("VACUUM ANALYZE ledger")


def setup_mariadb(rows: int) -> None:
    connection = pymysql.connect(**MY, autocommit=True)
    with connection.cursor() as c:
        c.execute(f"DROP DATABASE IF EXISTS {DB}")
        c.execute(f"CREATE DATABASE {DB}")
        c.execute(f"USE {DB}")
        c.execute("CREATE TABLE ledger (id BIGINT AUTO_INCREMENT PRIMARY KEY, owner VARCHAR(40), "
                  "balance DECIMAL(14,2), note VARCHAR(80), created DATETIME, flag BOOLEAN) ENGINE=InnoDB")
        c.execute(f"INSERT INTO ledger (owner, balance, note, created, flag) SELECT CONCAT('owner ', seq), "
                  "seq * 1.25, CONCAT(REPEAT(MD5(seq), 2), ' ', seq), TIMESTAMP('2026-01-01') + INTERVAL seq SECOND, "
                  f"seq % 3 = 0 FROM seq_1_to_{rows}")
    connection.close()


def timed(argv_or_shell: list[str] | str, env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv_or_shell, env=env, check=True, shell=isinstance(argv_or_shell, str),
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - started


def checksum_throughput(rows: int) -> dict[str, float]:
    """Rows per second of drill's checksums (as the agent computes them) and of the weak reference checksums."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from targets.mysql import checksum as my_checksum  # noqa: PLC0415
    from targets.mysql.snapshot import compute_checksums  # noqa: PLC0415
    from targets.postgres.checksum import make_table_checksum_sql as pg_sql  # noqa: PLC0415

    result = {}
    with psycopg.connect(**PG, dbname=DB) as c:
        for name, sql in (("postgres drill", pg_sql("public", "ledger")),
                          ("postgres sum(hashtext)", "SELECT sum(hashtext(t::text)) FROM ledger t")):
            c.execute(sql).fetchall()  # warm the cache
            started = time.perf_counter()
            c.execute(sql).fetchall()  # type: ignore[call-overload]
            result[name] = rows / (time.perf_counter() - started)
    weak = ("SELECT BIT_XOR(CRC32(CONCAT_WS('#', id, owner, balance, note, created, flag, "
            "CONCAT(ISNULL(owner), ISNULL(balance), ISNULL(note), ISNULL(created), ISNULL(flag))))) FROM ledger")
    connections = [pymysql.connect(**MY, database=DB) for _ in range(2)]
    cursors = [connection.cursor() for connection in connections]
    for cursor in cursors:
        cursor.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
    cursors[0].execute(weak)
    cursors[0].fetchall()  # warm the buffer pool
    for name, method, used in (("mariadb drill (crc32+crc32c)", my_checksum.CRC_PAIR, cursors),
                               ("mariadb crc32+crc32c, 1 conn", my_checksum.CRC_PAIR, cursors[:1]),
                               ("mariadb earlier md5, 2 conns", my_checksum.MD5_PREFIX, cursors)):
        started = time.perf_counter()
        compute_checksums(used, DB, method)
        result[name] = rows / (time.perf_counter() - started)
    started = time.perf_counter()
    cursors[0].execute(weak)
    cursors[0].fetchall()
    result["mariadb bit_xor(crc32)"] = rows / (time.perf_counter() - started)
    for connection in connections:
        connection.close()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_500_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--restic", default=shutil.which("restic") or "restic")
    parser.add_argument("--keep", action="store_true", help="keep the bench databases afterwards")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    agent = shutil.which("drill-agent")
    if agent is None:
        raise SystemExit("drill-agent is not on PATH; run bash scripts/setup.sh and use .venv/bin/python")
    dump_tool = shutil.which("mariadb-dump") or "mysqldump"
    print(f"creating {args.rows} rows in PostgreSQL and MariaDB database {DB}", file=sys.stderr)
    setup_postgres(args.rows)
    setup_mariadb(args.rows)
    work = tempfile.mkdtemp(prefix="drill-dbbench-")
    password = os.path.join(work, "pw")
    with open(password, "w") as handle:
        handle.write(secrets.token_hex(16))
    env = {**os.environ, "RESTIC_PASSWORD_FILE": password}
    with psycopg.connect(**PG, dbname=DB) as c:
        size = c.execute("SELECT pg_total_relation_size('ledger')").fetchone()[0]  # type: ignore[index]
    seconds: dict[str, list[float]] = {k: [] for k in ("postgres raw", "postgres drill", "mariadb raw",
                                                       "mariadb drill")}
    # No cluster-wide globals for PostgreSQL: the raw side dumps the one database only.
    targets = {"postgres": {"kind": "postgres", "user": "postgres", "databases": [DB], "globals": False},
               "mariadb": {"kind": "mysql", "user": "root", "databases": [DB]}}
    raw_commands = {
        "postgres": f"pg_dump -Fc -h 127.0.0.1 -U postgres {DB}",
        "mariadb": f"{dump_tool} -h 127.0.0.1 -u root --single-transaction --quick --routines --triggers "
                   f"--events --hex-blob {DB}",
    }
    for number in range(args.repeat):
        for engine in ("postgres", "mariadb"):
            raw_repo = os.path.join(work, f"raw-{engine}-{number}")
            subprocess.run([args.restic, "-r", raw_repo, "init", "-q"], env=env, check=True)
            config = os.path.join(work, f"agent-{engine}-{number}.yaml")
            with open(config, "w") as handle:
                yaml.safe_dump({"host": "bench", "state_dir": os.path.join(work, f"state-{engine}-{number}"),
                                "restic": {"binary": args.restic},
                                "repositories": {"local": {"url": os.path.join(work, f"drill-{engine}-{number}"),
                                                           "password_file": password}},
                                "targets": {"db": targets[engine]},
                                "policies": {"bench": {"targets": ["db"], "repository": "local"}}}, handle)
            subprocess.run([agent, "init", "--config", config], env=env, check=True, stdout=subprocess.DEVNULL)
            raw = (f"set -o pipefail; {raw_commands[engine]} | {args.restic} -r {raw_repo} backup -q --host bench "
                   f"--stdin --stdin-filename {DB}.dump")
            drill = [agent, "backup", "--config", config, "--policy", "bench", "--level", "full", "--quiet"]
            runs = [("raw", ["bash", "-c", raw]), ("drill", drill)]
            for name, argv in runs if number % 2 == 0 else reversed(runs):
                seconds[f"{engine} {name}"].append(timed(argv, env))
        print(f"round {number + 1}/{args.repeat} done", file=sys.stderr)
    throughput = checksum_throughput(args.rows)
    medians = {k: round(statistics.median(v), 2) for k, v in seconds.items()}
    result = {
        "rows": args.rows,
        "postgres_table_mb": round(size / 2**20),
        "restic": subprocess.run(
            [args.restic, "version"], capture_output=True, text=True, check=True
        ).stdout.split()[1],
        "seconds": medians,
        "ratio_postgres": round(medians["postgres drill"] / medians["postgres raw"], 3),
        "ratio_mariadb": round(medians["mariadb drill"] / medians["mariadb raw"], 3),
        "checksum_rows_per_second": {k: round(v) for k, v in throughput.items()},
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"restic {result['restic']}, {args.rows} rows ({result['postgres_table_mb']} MB in PostgreSQL), "
              f"median of {args.repeat}")
        for key, value in medians.items():
            print(f"{key:16} {value:8.2f} s")
        print(f"ratio postgres   {result['ratio_postgres']:.3f}  (target <= 1.3)")
        print(f"ratio mariadb    {result['ratio_mariadb']:.3f}  (target <= 1.3)")
        for key, value in result["checksum_rows_per_second"].items():
            print(f"checksum {key:24} {value / 1e6:6.2f} M rows/s")
    shutil.rmtree(work, ignore_errors=True)
    if not args.keep:
        drop_bench_databases()
    return 0


def drop_bench_databases() -> None:
    """Remove the bench database from the machine's PostgreSQL and MariaDB."""
    with psycopg.connect(**PG, dbname="postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    connection = pymysql.connect(**MY, autocommit=True)
    with connection.cursor() as c:
        c.execute(f"DROP DATABASE IF EXISTS {DB}")
    connection.close()


if __name__ == "__main__":
    sys.exit(main())
