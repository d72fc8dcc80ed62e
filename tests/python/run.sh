#!/usr/bin/env bash
# The Python binding's checks, in one command:
#   1. a venv at target/pyvenv (created if absent) with pytest, pytest-timeout,
#      mypy and setuptools from PyPI, and the package installed editable
#      (pip install -e bindings/python), which loads target/release's library;
#   2. the wheel (tests/python/wheel_test.sh): `pip wheel ./bindings/python`
#      builds it with the library inside, and installed into a throwaway venv
#      in a temporary directory it runs an echo round trip and a room session
#      with no TCPCHAT_LIB;
#   3. mypy --strict on the package and the examples;
#   4. pytest on tests/python.
#
#   cargo build --release --examples   # first: the library and Rust examples
#   bash tests/python/run.sh [pytest args...]
#
# Needs python3 (3.9 or later) and PyPI. Works as root. Set PYTHON to use
# another interpreter.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
PYTHON=${PYTHON:-python3}
VENV=$REPO/target/pyvenv
LIB=$REPO/target/release/libtcpchat.so
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PYTHONDONTWRITEBYTECODE=1

say() { printf '\n--> %s\n' "$*"; }

if [ ! -e "$LIB" ]; then
    echo "run.sh: $LIB is missing; run \`cargo build --release --examples\` first" >&2
    exit 1
fi

# make_venv DIR: a venv with a working pip. Where ensurepip is missing
# (Debian/Ubuntu without python3-venv), bootstrap pip from its PyPI wheel.
make_venv() {
    local dir=$1
    if "$PYTHON" -m venv "$dir" 2>/dev/null && "$dir/bin/python" -m pip --version >/dev/null 2>&1; then
        return
    fi
    rm -rf "$dir"
    "$PYTHON" -m venv --without-pip "$dir"
    "$dir/bin/python" - <<'PY'
import json, os, subprocess, sys, tempfile, urllib.parse, urllib.request
api = "https://pypi.org/pypi/pip/json"
meta = json.load(urllib.request.urlopen(api, timeout=60))
wheel = next(f for f in meta["urls"] if f["packagetype"] == "bdist_wheel")
path = os.path.join(tempfile.mkdtemp(), wheel["filename"])
urllib.request.urlretrieve(urllib.parse.urljoin(api, wheel["url"]), path)
# A pip wheel runs itself: install pip from its own wheel.
subprocess.check_call([sys.executable, os.path.join(path, "pip"), "install", "-q", "--no-index", path])
PY
}

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    say "creating $VENV"
    rm -rf "$VENV"
    make_venv "$VENV"
fi
PY="$VENV/bin/python"

say "installing pytest, pytest-timeout, mypy, setuptools and the package (editable) into $VENV"
# setuptools here lets the package builds below run without build isolation,
# so that they download nothing after the first run.
"$PY" -m pip install -q pytest pytest-timeout mypy "setuptools>=77"
# uvloop: tests/python/test_aio.py runs under it too (skipped where it does not install).
"$PY" -m pip install -q uvloop || echo "run.sh: uvloop could not be installed; the uvloop variants of test_aio.py are skipped" >&2
"$PY" -m pip install -q --no-build-isolation -e bindings/python
(cd /tmp && env -u TCPCHAT_LIB "$PY" -c 'import tcpchat, os; p = os.path.realpath(tcpchat.__file__); assert p.startswith(os.path.realpath("'"$REPO"'/bindings/python")), p; assert tcpchat.library_path() == "'"$LIB"'", tcpchat.library_path()')

say "the wheel: pip wheel ./bindings/python, installed into a throwaway venv"
PY="$PY" PYTHON="$PYTHON" bash tests/python/wheel_test.sh

say "mypy --strict (package and examples)"
"$PY" -m mypy --strict --cache-dir target/mypy_cache bindings/python/tcpchat
MYPYPATH=bindings/python "$PY" -m mypy --strict --cache-dir target/mypy_cache examples/python

say "pytest tests/python"
"$PY" -m pytest -q -p no:cacheprovider --timeout 120 tests/python "$@"
