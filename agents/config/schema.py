"""The one schema of the agent's configuration file.

Assembled from the fragments of ``policies`` and of every registered target
kind; every key has a description and an example, from which ``drill-agent
config example`` writes an annotated file.
"""

from __future__ import annotations

from typing import Any

from agents.scratch.config import SCHEMA as SCRATCH_SCHEMA
from policies.config import MAX_NAMES, NAME_PATTERN
from policies.config import SCHEMA as POLICY_SCHEMA
from targets.registry import KINDS

REPOSITORY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "A restic repository: an S3 bucket prefix, a local directory, or any restic backend.",
    "required": ["url"],
    "additionalProperties": False,
    "properties": {
        "url": {
            "type": "string",
            "minLength": 1,
            "maxLength": 4096,
            "description": "restic repository location ('s3:http://host:port/bucket/prefix' or a local path).",
            "examples": ["s3:http://127.0.0.1:9000/backups/app01"],
        },
        "password_file": {
            "type": "string",
            "pattern": "^/",
            "maxLength": 4096,
            "description": "File holding the repository password (mode 0600). Never put the password itself here.",
            "examples": ["/etc/drill-agent/restic.pw"],
        },
        "password_command": {
            "type": "string",
            "minLength": 1,
            "maxLength": 4096,
            "description": "Command printing the repository password, instead of password_file.",
            "examples": ["cat /run/secrets/restic"],
        },
        "env_file": {
            "type": "string",
            "pattern": "^/",
            "maxLength": 4096,
            "description": "KEY=value file with the backend's credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY).",
            "examples": ["/etc/drill-agent/s3-local.env"],
        },
        "site": {
            "type": "string",
            "pattern": NAME_PATTERN,
            "description": "Which site the repository is at; defaults to the repository's name.",
            "examples": ["local"],
        },
        "connect_timeout": {
            "type": "number",
            "minimum": 1,
            "maximum": 3600,
            "default": 60,
            "description": (
                "Seconds for restic to open the repository (and, in a backup, to load its index and report "
                "progress; in a verification's check, to lock it) before the repository counts as unreachable; "
                "restic itself would retry for minutes. 1 to 3600."
            ),
            "examples": [60],
        },
        "stall_timeout": {
            "type": "number",
            "minimum": 1,
            "maximum": 86400,
            "default": 300,
            "description": (
                "Seconds a running restic may make no progress before the job is stopped and failed; 1 to 86400."
            ),
            "examples": [300],
        },
        "lock_wait": {
            "type": "number",
            "minimum": 0,
            "maximum": 86400,
            "default": 600,
            "description": (
                "Seconds a restic command waits while another holds the repository's lock (a check or prune "
                "holds it alone; a backup or restore keeps them out) before the job fails as repository_locked; "
                "locks left by processes that are gone are removed before each new try. 0 to 86400."
            ),
            "examples": [600],
        },
    },
}

TARGET_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "What to back up; 'kind' selects the kind: " + ", ".join(sorted(KINDS)) + ".",
    "required": ["kind"],
    "properties": {
        "kind": {
            "enum": sorted(KINDS),
            "description": "The kind of data.",
            "examples": ["files"],
        }
    },
    "allOf": [
        {"if": {"properties": {"kind": {"const": name}}, "required": ["kind"]}, "then": kind.schema}
        for name, kind in sorted(KINDS.items())
    ],
}

FLEET_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "description": "How the agent works with a coordinator once enrolled (drill-agent enrol).",
    "properties": {
        "capacity": {"type": "integer", "minimum": 1, "maximum": 64, "default": 1,
                     "description": "How many of the coordinator's jobs this host runs at once.", "examples": [2]},
        "poll_seconds": {"type": "number", "minimum": 1, "maximum": 3600, "default": 30,
                         "description": "How often to ask the coordinator for jobs (with jitter) when it does not "
                         "say otherwise.", "examples": [30]},
        "source_address": {"type": "string", "format": "ipv4", "maxLength": 64,
                           "description": "The local address to reach the coordinator from (a host with several).",
                           "examples": ["127.0.0.2"]},
        "accept": {"type": "array", "uniqueItems": True, "items": {"enum": ["backup", "verify", "check"]},
                   "description": "The kinds of job this host runs for the coordinator; default: backup and check "
                   "for role agent, verify and check for role scratch.", "examples": [["verify", "check"]]},
    },
    "examples": [{"capacity": 2, "poll_seconds": 30}],
}

CONFIG_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "drill-agent configuration",
    "type": "object",
    "required": ["state_dir", "repositories"],
    "additionalProperties": False,
    "properties": {
        "role": {
            "enum": ["agent", "scratch"],
            "default": "agent",
            "description": "agent: backs up this host's targets on schedule. scratch: restores other hosts' backups "
            "for the coordinator (its targets and policies may be empty).",
            "examples": ["agent"],
        },
        "fleet": FLEET_SCHEMA,
        "host": {
            "type": "string",
            "pattern": NAME_PATTERN,
            "description": "Name of this host in snapshots and records; default: the machine's hostname.",
            "examples": ["app01"],
        },
        "state_dir": {
            "type": "string",
            "pattern": "^/",
            "maxLength": 4096,
            "description": "Directory of the agent's state: schedule, cache, manifests, outbox of result records.",
            "examples": ["/var/lib/drill-agent"],
        },
        "evidence_digest": {
            "enum": ["sha256", "sm3"],
            "default": "sha256",
            "description": "Digest of key fingerprints in signed records: sha256, or sm3 for GB/T 39786 deployments.",
            "examples": ["sha256"],
        },
        "restic": {
            "type": "object",
            "additionalProperties": False,
            "description": "Which restic to run.",
            "properties": {
                "binary": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 4096,
                    "description": "restic executable (0.14 or newer); default: $DRILL_RESTIC or 'restic' on PATH.",
                    "examples": ["/usr/bin/restic"],
                },
                "rclone_binary": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 4096,
                    "description": (
                        "rclone executable restic starts to copy between two S3 repositories whose credentials "
                        "differ (two providers or accounts); default: 'rclone' on PATH."
                    ),
                    "examples": ["/usr/bin/rclone"],
                },
                "agent_keys": {
                    "type": "boolean",
                    "description": (
                        "Add a key of the agent's own to each local or S3 repository (a random 256-bit password in "
                        "the state directory, cheap scrypt parameters: each restic command then starts in "
                        "milliseconds instead of half a second of key derivation; the configured password and "
                        "its key are unchanged; 'restic key list' shows it as user drill-agent); false: every "
                        "command opens the repository with the configured password. Default: true."
                    ),
                    "examples": [True],
                },
            },
            "examples": [{"binary": "/usr/bin/restic"}],
        },
        "repositories": {
            "type": "object",
            "minProperties": 1,
            "maxProperties": MAX_NAMES,
            "description": "Repositories by name.",
            "propertyNames": {"pattern": NAME_PATTERN},
            "additionalProperties": REPOSITORY_SCHEMA,
            "examples": [{
                "local": {
                    "url": "s3:http://127.0.0.1:9000/backups/app01",
                    "password_file": "/etc/drill-agent/restic.pw",
                    "env_file": "/etc/drill-agent/s3-local.env",
                },
                "same-city": {
                    "url": "s3:http://127.0.0.1:9001/backups/app01",
                    "password_file": "/etc/drill-agent/restic.pw",
                    "env_file": "/etc/drill-agent/s3-samecity.env",
                },
            }],
        },
        "targets": {
            "type": "object",
            "maxProperties": MAX_NAMES,
            "description": "Targets by name.",
            "propertyNames": {"pattern": NAME_PATTERN},
            "additionalProperties": TARGET_SCHEMA,
            "examples": [{"documents": {"kind": "files", "paths": ["/srv/documents", "/etc/app"],
                                        "exclude": ["*.tmp", "cache/"]}}],
        },
        "scratch": SCRATCH_SCHEMA,
        "policies": {
            "type": "object",
            "maxProperties": MAX_NAMES,
            "description": "Policies by name.",
            "propertyNames": {"pattern": NAME_PATTERN},
            "additionalProperties": POLICY_SCHEMA,
            "examples": [{"nightly": {
                "targets": ["documents"],
                "repository": "local",
                "replicate_to": ["same-city"],
                "schedule": {"full": "sun 01:00", "differential": "wed 01:00", "incremental": "daily 01:00"},
                "max_full_interval": "14d",
                "retention": {"full": 8, "differential": 4, "incremental": 14},
            }}],
        },
    },
}
