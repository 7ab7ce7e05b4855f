#!/usr/bin/env bash
# Set up this checkout on a fresh Debian/Ubuntu machine: restic from the distro
# and the project with its test tools in ./.venv. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v restic >/dev/null 2>&1 || missing+=(restic)
command -v setpriv >/dev/null 2>&1 || missing+=(util-linux)
command -v dpkg-deb >/dev/null 2>&1 || missing+=(dpkg)
# Restores of untrusted data run in bubblewrap's sandbox.
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
# The Ansible test checks the units it installs with systemd-analyze verify.
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
# The Ansible test installs drill into a virtualenv of the distribution's Python, as on a real host.
/usr/bin/python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
# PDF reports: WeasyPrint needs Pango; zh-CN reports need a CJK font.
ldconfig -p 2>/dev/null | grep -q 'libpangoft2-1.0' || missing+=(libpango-1.0-0 libpangoft2-1.0-0)
fc-list :lang=zh 2>/dev/null | grep -q . || missing+=(fonts-wqy-microhei)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]} from the distribution"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The web view is tested in Debian's chromium (headless, through chromedriver).
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  echo "setup: installing chromium and chromium-driver from the distribution"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver \
    >/dev/null
fi
# promtool checks and unit-tests the alert rules (docs/alerts.yml); the Prometheus server itself is not started.
if ! command -v promtool >/dev/null 2>&1; then
  echo "setup: installing prometheus (for promtool) from the distribution"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

# The dedicated account throwaway database instances run as (scratch run_as): no login, no home.
if [ "$(id -u)" -eq 0 ] && ! id drill-sandbox >/dev/null 2>&1; then
  useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin drill-sandbox
  echo "setup: created the account drill-sandbox for throwaway database instances"
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e ".[test]" 2>&1 | grep -v -i -E "warning|editable|^ *!!|\*\*\*|careful|precedence|corresp|wheel_obj|^ *$" || true
# An editable install leaves the project's modules uncompiled, and where bytecode is not written on import
# (PYTHONDONTWRITEBYTECODE) every drill-agent command would compile them again: compile them once, as a wheel would.
.venv/bin/python -m compileall -q agents drill policies targets >/dev/null
echo "setup: ready ($(restic version | cut -d' ' -f1-2); .venv/bin/drill-agent, .venv/bin/drillctl)"
