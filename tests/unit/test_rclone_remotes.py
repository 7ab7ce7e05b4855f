"""Pure: S3 repositories re-addressed as rclone remotes for a copy between two providers."""

from __future__ import annotations

import pytest

from agents.restic import rclone
from agents.restic.repository import Repository

SOURCE = Repository("local", "s3:http://127.0.0.1:9000/backups/app01", password_file="/etc/a.pw",
                    env={"AWS_ACCESS_KEY_ID": "ka", "AWS_SECRET_ACCESS_KEY": "sa", "AWS_DEFAULT_REGION": "cn-1"})
DESTINATION = Repository("same-city", "s3:https://oss.example/dr/app01/", password_file="/etc/b.pw",
                         env={"AWS_ACCESS_KEY_ID": "kb", "AWS_SECRET_ACCESS_KEY": "sb"})


def test_each_repository_becomes_a_remote_of_its_own() -> None:
    source, destination = rclone.copy_pair(SOURCE, DESTINATION)
    assert source.url == "rclone:DRILL_FROM:backups/app01"
    assert destination.url == "rclone:DRILL_TO:dr/app01"
    assert source.password_file == "/etc/a.pw" and destination.password_file == "/etc/b.pw"
    assert source.env == {
        "RCLONE_CONFIG_DRILL_FROM_TYPE": "s3", "RCLONE_CONFIG_DRILL_FROM_PROVIDER": "Other",
        "RCLONE_CONFIG_DRILL_FROM_ENV_AUTH": "false", "RCLONE_CONFIG_DRILL_FROM_FORCE_PATH_STYLE": "true",
        "RCLONE_CONFIG_DRILL_FROM_ENDPOINT": "http://127.0.0.1:9000",
        "RCLONE_CONFIG_DRILL_FROM_ACCESS_KEY_ID": "ka", "RCLONE_CONFIG_DRILL_FROM_SECRET_ACCESS_KEY": "sa",
        "RCLONE_CONFIG_DRILL_FROM_REGION": "cn-1",
    }
    # the destination's rclone sees both remotes, no AWS_* variable, and no operator rclone.conf
    assert destination.env["RCLONE_CONFIG_DRILL_TO_ENDPOINT"] == "https://oss.example"
    assert destination.env["RCLONE_CONFIG_DRILL_TO_ACCESS_KEY_ID"] == "kb"
    assert destination.env["RCLONE_CONFIG_DRILL_FROM_SECRET_ACCESS_KEY"] == "sa"
    assert destination.env["RCLONE_CONFIG"] == "/dev/null"
    assert not any(key.startswith("AWS_") for key in destination.env)


def test_an_s3_url_without_a_scheme_means_https() -> None:
    remote = rclone.s3_remote(Repository("r", "s3:s3.amazonaws.com/bucket/prefix"), "X")
    assert remote.url == "rclone:X:bucket/prefix"
    assert remote.env["RCLONE_CONFIG_X_ENDPOINT"] == "https://s3.amazonaws.com"


@pytest.mark.parametrize("url", ["/srv/restic", "rest:http://127.0.0.1:8000/", "s3:http://127.0.0.1:9000/"])
def test_what_is_not_an_s3_bucket_cannot_be_translated(url: str) -> None:
    with pytest.raises(rclone.NotTranslatable):
        rclone.s3_remote(Repository("r", url), "X")


def test_a_clash_names_variables_never_values() -> None:
    assert rclone.credentials_clash(SOURCE, DESTINATION) == ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
    assert rclone.credentials_clash(SOURCE, SOURCE) == []
