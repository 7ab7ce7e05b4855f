#!/usr/bin/env bash
# Lint, type-check and run every test tier. Restic-dependent tests run twice:
# against the distro restic (0.14) and against restic 0.18 (Debian's build,
# extracted from its .deb into .cache/, never installed over the distro one).
# A missing component fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"

if [ -z "${DRILL_TEST_RESTIC_018:-}" ]; then
  deb="${DRILL_RESTIC_018_DEB:-}"
  if [ -z "$deb" ]; then
    deb=$(ls ../shared/tools/restic_0.18*.deb 2>/dev/null | head -n 1 || true)
  fi
  if [ -z "$deb" ] || [ ! -f "$deb" ]; then
    echo "test: restic 0.18 is needed: set DRILL_RESTIC_018_DEB to restic_0.18.0-1+b4_amd64.deb" >&2
    echo "      (or DRILL_TEST_RESTIC_018 to a restic 0.18 binary)" >&2
    exit 1
  fi
  rm -rf .cache/restic-0.18 && mkdir -p .cache/restic-0.18
  dpkg-deb -x "$deb" .cache/restic-0.18
  export DRILL_TEST_RESTIC_018="$PWD/.cache/restic-0.18/usr/bin/restic"
fi
echo "test: restic $(restic version | cut -d' ' -f2) and $("$DRILL_TEST_RESTIC_018" version | cut -d' ' -f2)"

ruff check .
mypy
python -m pytest -q -p no:cacheprovider "$@"
