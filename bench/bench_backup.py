"""Benchmark: ``drill-agent backup`` versus raw ``restic backup`` of the same data, side by side.

Generates about 1 GB in a few thousand files, then, each into its own fresh local
repository of the same kind:

1. full: ``restic backup DATA`` versus ``drill-agent backup --level full``;
2. 1 % of the files changed;
3. incremental: ``restic backup DATA`` (restic picks the parent) versus
   ``drill-agent backup --level incremental``.

raw restic and ``drill-agent backup`` are measured as whole command-line
processes (start-up included), in the same run, alternating, and the ratios
printed; so is the agent's job run in-process ("drill job"), as the schedule
daemon runs it, without the interpreter's start-up. Peak RSS is per process
tree (the agent's or restic's, whichever is larger); the agent's own peak (VmHWM, without restic) is reported
beside it.

Usage: python bench/bench_backup.py [--size-mb 1024] [--files 3000] [--repeat 3] [--restic PATH]
                                    [--workdir DIR [--keep-data]] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import yaml


@dataclass
class Timing:
    seconds: float
    peak_rss_mb: float  # the largest of the process and what it ran (for drill-agent: usually restic)
    own_peak_mb: float = float("nan")  # the process itself (VmHWM), without restic


def high_water_mb(pid: int) -> float | None:
    """The process's peak resident memory so far (VmHWM), or None once it has exited."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return None


def run_timed(argv: list[str], env: dict[str, str]) -> Timing:
    started = time.perf_counter()
    child = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    own = 0.0
    while True:  # the peak only grows: its last reading before the exit is (within 50 ms) the process's own
        own = max(own, high_water_mb(child.pid) or 0.0)
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    stderr = child.stderr.read().decode() if child.stderr else ""
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({child.returncode}): {stderr[-500:]}")
    return Timing(elapsed, usage.ru_maxrss / 1024, own)


def read_text(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def data_path(root: str, index: int) -> str:
    return os.path.join(root, f"d{index % 20:02d}", f"s{index % 7}", f"f{index:05d}.bin")


def make_data(root: str, size_mb: int, files: int, seed: int = 1) -> list[str]:
    """Write ``files`` files totalling about ``size_mb`` MiB (sizes skewed like real documents)."""
    rng = random.Random(seed)
    weights = [rng.paretovariate(1.2) for _ in range(files)]
    scale = size_mb * 1024 * 1024 / sum(weights)
    paths = []
    for index, weight in enumerate(weights):
        path = data_path(root, index)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(os.urandom(max(1, int(weight * scale))))
        paths.append(path)
    return paths


def change_files(paths: list[str], fraction: float, seed: int) -> int:
    rng = random.Random(seed)
    chosen = rng.sample(paths, max(1, int(len(paths) * fraction)))
    for path in chosen:
        with open(path, "r+b") as handle:
            handle.seek(0)
            handle.write(os.urandom(4096))
    return len(chosen)


def read_once(paths: list[str]) -> None:
    """Read every file once: whichever side is timed first would otherwise read from the disk what the other then
    finds in the page cache (after a ``--keep-data`` start, raw restic 0.18's first full of a million files took
    199 s, where it takes 41-63 s on a warm cache)."""
    for path in paths:
        with open(path, "rb") as handle:
            while handle.read(1 << 20):
                pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--files", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=3, help="fresh repositories per round; medians reported")
    parser.add_argument("--restic", default=shutil.which("restic") or "restic")
    parser.add_argument("--workdir", help="where to put data and repositories (default: a temporary folder)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--keep-data", action="store_true",
                        help="with --workdir: reuse the data of an earlier run of the same shape (1,000,000 files "
                             "take minutes to write)")
    args = parser.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

    agent = shutil.which("drill-agent")
    if agent is None:
        raise SystemExit("drill-agent is not on PATH; run bash scripts/setup.sh and use .venv/bin/python")
    work = args.workdir or tempfile.mkdtemp(prefix="drill-bench-")
    os.makedirs(work, exist_ok=True)
    data = os.path.join(work, "data")
    password = os.path.join(work, "pw")
    with open(password, "w") as handle:
        handle.write(secrets.token_hex(16))
    shape = os.path.join(work, "data-shape")
    wanted = f"{args.files} files, {args.size_mb} MiB\n"
    if args.keep_data and read_text(shape) == wanted:
        print(f"reusing {wanted.strip()} under {data}", file=sys.stderr)
        paths = [data_path(data, index) for index in range(args.files)]
        for name in os.listdir(work):  # the repositories and state of an earlier run
            if name not in ("data", "data-shape", "pw"):
                shutil.rmtree(os.path.join(work, name), ignore_errors=True)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(work, name))
    else:
        print(f"generating {args.size_mb} MiB in {args.files} files under {data}", file=sys.stderr)
        shutil.rmtree(data, ignore_errors=True)
        paths = make_data(data, args.size_mb, args.files)
        with open(shape, "w") as handle:
            handle.write(wanted)
    read_once(paths)
    version = subprocess.run([args.restic, "version"], capture_output=True, text=True, check=True).stdout.split()[1]

    from agents.config.model import load_config  # noqa: PLC0415 -- after sys.path is set
    from agents.contract.jobs import BackupJob  # noqa: PLC0415
    from agents.contract.records import FilesManifestInfo  # noqa: PLC0415
    from agents.execute import execute  # noqa: PLC0415
    from policies.levels import Level  # noqa: PLC0415

    keys = ("raw full", "drill full", "drill job full", "raw incremental", "drill incremental", "drill job incremental")
    rows: dict[str, list[Timing]] = {k: [] for k in keys}
    manifest_bytes: dict[str, tuple[int, int]] = {}  # level: (manifest bytes, entries), of the last round

    def run_job(config_path: str, level: Level) -> Timing:
        config = load_config(config_path)
        started = time.perf_counter()
        [signed] = execute(config, BackupJob(policy="bench", level=level))
        elapsed = time.perf_counter() - started
        if signed.record.outcome != "success":  # type: ignore[union-attr]
            raise SystemExit(f"in-process backup failed: {signed.record.findings}")  # type: ignore[union-attr]
        manifest = signed.record.manifest  # type: ignore[union-attr]
        if not isinstance(manifest, FilesManifestInfo) or manifest.size is None:
            raise SystemExit(f"the record has no files manifest: {manifest}")
        manifest_bytes[level.value] = (manifest.size, manifest.entries)
        return Timing(elapsed, float("nan"))

    for round_number in range(args.repeat):
        raw_repo = os.path.join(work, f"raw-{round_number}")
        state = os.path.join(work, f"state-{round_number}")
        env = {**os.environ, "RESTIC_PASSWORD_FILE": password}
        configs = []
        for kind in ("cli", "job"):
            config_path = os.path.join(work, f"agent-{kind}-{round_number}.yaml")
            with open(config_path, "w") as handle:
                yaml.safe_dump({
                    "host": "bench",
                    "state_dir": f"{state}-{kind}",
                    "restic": {"binary": args.restic},
                    "repositories": {"local": {"url": os.path.join(work, f"drill-{kind}-{round_number}"),
                                               "password_file": password}},
                    "targets": {"data": {"kind": "files", "paths": [data]}},
                    "policies": {"bench": {"targets": ["data"], "repository": "local"}},
                }, handle)
            subprocess.run([agent, "init", "--config", config_path], env=env, check=True, stdout=subprocess.DEVNULL)
            configs.append(config_path)
        config_path, job_config = configs
        subprocess.run([args.restic, "-r", raw_repo, "init", "-q"], env=env, check=True)
        raw = [args.restic, "-r", raw_repo, "backup", "-q", "--host", "bench", data]
        drill = [agent, "backup", "--config", config_path, "--policy", "bench", "--quiet"]
        # Alternate which goes first so page-cache warmth does not favour one side.
        order = [("raw", raw), ("drill", drill)] if round_number % 2 == 0 else [("drill", drill), ("raw", raw)]
        for name, argv in order:
            rows[f"{name} full"].append(run_timed([*argv, *(["--level", "full"] if name == "drill" else [])], env))
        rows["drill job full"].append(run_job(job_config, Level.FULL))
        change_files(paths, 0.01, seed=round_number)
        for name, argv in order:
            extra = ["--level", "incremental"] if name == "drill" else []
            rows[f"{name} incremental"].append(run_timed([*argv, *extra], env))
        rows["drill job incremental"].append(run_job(job_config, Level.INCREMENTAL))
        print(f"round {round_number + 1}/{args.repeat} done", file=sys.stderr)

    def median(key: str) -> float:
        return statistics.median(t.seconds for t in rows[key])

    result = {
        "restic": version,
        "size_mb": args.size_mb,
        "files": args.files,
        "repeat": args.repeat,
        "seconds": {key: round(median(key), 3) for key in rows},
        "peak_rss_mb": {key: round(max(t.peak_rss_mb for t in rows[key]), 1) for key in rows if "job" not in key},
        "agent_own_peak_mb": {key: round(max(t.own_peak_mb for t in rows[key]), 1) for key in rows
                              if key.startswith("drill ") and "job" not in key},
        "manifest_bytes_per_entry": {level: round(size / max(1, entries), 1)
                                     for level, (size, entries) in manifest_bytes.items()},
        "ratio_full": round(median("drill full") / median("raw full"), 3),
        "ratio_incremental": round(median("drill incremental") / median("raw incremental"), 3),
        "ratio_job_full": round(median("drill job full") / median("raw full"), 3),
        "ratio_job_incremental": round(median("drill job incremental") / median("raw incremental"), 3),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"restic {version}, {args.size_mb} MiB in {args.files} files, median of {args.repeat}")
        print(f"{'':20} {'seconds':>9} {'peak RSS MiB':>13}")
        for key in rows:
            rss = result["peak_rss_mb"].get(key)
            print(f"{key:22} {result['seconds'][key]:9.2f} {'' if rss is None else f'{rss:13.1f}'}")
        print(f"drill-agent's own peak   {result['agent_own_peak_mb']} MiB  (without restic)")
        print(f"manifest bytes a file    {result['manifest_bytes_per_entry']}  (as stored)")
        print(f"ratio full, CLI          {result['ratio_full']:.3f}  (target <= 1.15)")
        print(f"ratio incremental, CLI   {result['ratio_incremental']:.3f}  (target <= 1.5; 1.05 on 1,000,000 files)")
        print(f"ratio full, daemon job   {result['ratio_job_full']:.3f}")
        print(f"ratio incremental, job   {result['ratio_job_incremental']:.3f}  (target <= 1.10)")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
