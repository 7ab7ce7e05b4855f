"""Pure parts of the mysql target: checksum SQL, dump command, config."""

from __future__ import annotations

import pathlib

import pytest

from agents.config.model import validate_config
from agents.secretfiles import private_file
from agents.state import StateDir
from targets.mysql import checksum
from targets.mysql.commands import make_client_defaults, make_dump_command


def _columns(*described: tuple[str, str, str]) -> list[checksum.Column]:
    return [checksum.Column(name, kind, charset, f"{charset}_general_ci" if charset else "")
            for name, kind, charset in described]


def test_checksum_sql_is_canonical_and_quotes_identifiers() -> None:
    columns = _columns(("id", "bigint", ""), ("photo", "blob", ""), ("name", "varchar", "latin1"))
    sql = checksum.make_table_checksum_sql("c`rm", "t", columns)
    assert "FROM `c``rm`.`t`" in sql
    assert "HEX(`photo`)" in sql  # binary as hex
    assert "CONVERT(`name` USING utf8mb4)" in sql  # text in one charset whatever the column's
    assert "CONCAT(ISNULL(`id`), ISNULL(`photo`), ISNULL(`name`))" in sql  # NULL is not ''
    assert "(CRC32(CONCAT_WS(0x1f, `id`, " in sql and "CRC32C(CONCAT_WS(" in sql  # numbers as they are; 64 bits
    assert "SUM(" in sql and str(2**64) in sql  # order independent
    assert checksum.is_transactional("InnoDB") and not checksum.is_transactional("MyISAM")


def test_a_table_with_too_long_rows_is_summed_with_each_column_digested_by_the_methods_own_hash() -> None:
    columns = _columns(("id", "bigint", ""), ("photo", "longblob", ""), ("name", "varchar", "latin1"))
    sql = checksum.make_table_checksum_sql("db", "t", columns, columns_digested=True)
    assert "HEX(" not in sql  # binary enters its digest as it is: hex would double the text
    assert "CONCAT(CRC32(`photo`), ':', CRC32C(`photo`))" in sql
    assert "CONCAT(CRC32(CONVERT(`name` USING utf8mb4)), ':', CRC32C(CONVERT(`name` USING utf8mb4)))" in sql
    assert "CONCAT(ISNULL(`id`), ISNULL(`photo`), ISNULL(`name`))" in sql  # NULL still told from ''
    legacy = checksum.make_table_checksum_sql("db", "t", columns, checksum.MD5_PREFIX, columns_digested=True)
    assert "MD5(`photo`)" in legacy and "CRC32" not in legacy
    assert sql != checksum.make_table_checksum_sql("db", "t", columns)
    with pytest.raises(ValueError, match="unknown checksum method"):
        checksum.make_table_checksum_sql("db", "t", columns, "sum(whatever)")


def test_text_enters_unconverted_only_when_converting_could_not_change_it() -> None:
    same = _columns(("a", "varchar", "utf8mb4"), ("b", "text", "utf8mb4"))
    assert "CONVERT" not in checksum.make_table_checksum_sql("d", "t", same)
    mixed = [*same, checksum.Column("c", "varchar", "utf8mb4", "utf8mb4_bin")]  # two collations would clash
    assert checksum.make_table_checksum_sql("d", "t", mixed).count("USING utf8mb4") == 2 * 3  # in both CRCs


def test_the_earlier_md5_checksum_is_computed_exactly_as_before() -> None:
    # Manifests of earlier backups name this method; their verification must recompute the very same SQL.
    columns = _columns(("id", "bigint", ""), ("photo", "blob", ""), ("name", "varchar", "utf8mb4"))
    assert checksum.make_table_checksum_sql("crm", "t", columns, checksum.MD5_PREFIX) == (
        "SELECT COUNT(*), CAST(COALESCE(MOD(SUM(CAST(CONV(LEFT(MD5(CONCAT_WS(0x1f, CONVERT(`id` USING utf8mb4), "
        "HEX(`photo`), CONVERT(`name` USING utf8mb4), CONCAT(ISNULL(`id`), ISNULL(`photo`), ISNULL(`name`)))), "
        "16), 16, 10) AS UNSIGNED)), 18446744073709551616), 0) AS CHAR) FROM `crm`.`t`")
    with pytest.raises(ValueError, match="unknown checksum method"):
        checksum.make_table_checksum_sql("crm", "t", columns, "sum(crc16)")


def test_key_ranges_cover_every_row_once() -> None:
    ranges = checksum.make_key_ranges("id", 1, 1000, 3)
    assert ranges == ["`id` <= 334", "`id` > 334 AND `id` <= 667", "`id` > 667"]
    for key in (-(2**63), 0, 1, 334, 335, 667, 668, 1000, 2**64 - 1):  # also outside the bounds: open-ended
        assert sum(_holds(r, key) for r in ranges) == 1
    assert checksum.make_key_ranges("id", None, None, 2) == [""]  # empty table
    assert checksum.make_key_ranges("id", 5, 6, 2) == [""]  # too few keys to split
    primary = [checksum.Column("id", "bigint", primary=True), checksum.Column("v", "text", "utf8mb4")]
    assert checksum.split_key(primary) == "id"
    assert checksum.split_key([checksum.Column("k", "varchar", "utf8mb4", primary=True)]) is None
    composite = [checksum.Column("a", "int", primary=True), checksum.Column("b", "int", primary=True)]
    assert checksum.split_key(composite) is None


def _holds(predicate: str, key: int) -> bool:
    clauses = predicate.replace("`id` ", "").split(" AND ")
    return all((key <= int(c[3:])) if c.startswith("<=") else (key > int(c[2:])) for c in clauses)


def test_dump_command_reads_credentials_from_a_private_file(tmp_path: pathlib.Path) -> None:
    defaults = make_client_defaults("127.0.0.1", 3306, "backup", 'se"cret')
    with private_file(StateDir(str(tmp_path)), "my-", defaults) as secrets:
        assert (pathlib.Path(secrets).stat().st_mode & 0o777) == 0o600
        assert 'password="se\\"cret"' in pathlib.Path(secrets).read_text()
        argv = make_dump_command("mysqldump", "crm", defaults_file=secrets)
    assert not pathlib.Path(secrets).exists()
    assert argv[:2] == ("mysqldump", f"--defaults-extra-file={secrets}")
    assert "--single-transaction" in argv and argv[-1] == "crm"
    assert not any("secret" in a for a in argv)


def test_mysql_target_config(tmp_path: pathlib.Path) -> None:
    (tmp_path / "pw").write_text("x\n")
    config = validate_config("a.yaml", f"""
state_dir: /s
repositories: {{local: {{url: /r, password_file: {tmp_path}/pw}}}}
targets: {{crm: {{kind: mysql, user: backup, password_file: /etc/my.pw, databases: [crm]}}}}
policies: {{p: {{targets: [crm], repository: local}}}}
""")
    assert config.targets["crm"].databases == ("crm",)  # type: ignore[union-attr]


def test_client_defaults_quote_the_password() -> None:
    text = make_client_defaults("127.0.0.1", 3306, "backup", 'p"w\\x')
    assert text == '[client]\nhost=127.0.0.1\nport=3306\nuser="backup"\npassword="p\\"w\\\\x"\n'
    assert "password" not in make_client_defaults("h", 1, "u", None)
