"""Pure parts of the mysql target: checksum SQL, dump command, config."""

from __future__ import annotations

import pathlib

from agents.config.model import validate_config
from agents.secretfiles import private_file
from agents.state import StateDir
from targets.mysql import checksum
from targets.mysql.commands import make_client_defaults, make_dump_command


def test_checksum_sql_is_canonical_and_quotes_identifiers() -> None:
    sql = checksum.make_table_checksum_sql("c`rm", "t", [("id", "bigint"), ("photo", "blob"), ("name", "varchar")])
    assert "FROM `c``rm`.`t`" in sql
    assert "HEX(`photo`)" in sql  # binary as hex
    assert "CONVERT(`name` USING utf8mb4)" in sql  # text in one charset whatever the column's
    assert "CONCAT(ISNULL(`id`), ISNULL(`photo`), ISNULL(`name`))" in sql  # NULL is not ''
    assert "SUM(" in sql and str(2**64) in sql  # order independent
    assert checksum.is_transactional("InnoDB") and not checksum.is_transactional("MyISAM")


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
