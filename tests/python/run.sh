#!/usr/bin/env bash
# The Python binding's checks, in one command:
#   1. a venv at target/pyvenv (created if absent) with pytest, pytest-timeout
#      and mypy from PyPI, and the package installed editable
#      (pip install -e bindings/python);
#   2. a plain (non-editable) install into a throwaway venv, imported from
#      outside the repository (proves the wheel path);
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

say "installing pytest, pytest-timeout, mypy and the package (editable) into $VENV"
"$PY" -m pip install -q pytest pytest-timeout mypy
"$PY" -m pip install -q -e bindings/python
(cd /tmp && "$PY" -c 'import tcpchat, os; p = os.path.realpath(tcpchat.__file__); assert p.startswith(os.path.realpath("'"$REPO"'/bindings/python")), p')

say "plain install (pip install bindings/python) into a throwaway venv"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
make_venv "$tmp/venv"
# A copy of the source: a non-editable build must not write into the tree.
cp -r bindings/python "$tmp/src"
rm -rf "$tmp/src/build" "$tmp/src"/*.egg-info
"$tmp/venv/bin/python" -m pip install -q "$tmp/src"
(cd "$tmp" && TCPCHAT_LIB=$LIB "$tmp/venv/bin/python" - <<'PY'
import os, tcpchat
assert "site-packages" in tcpchat.__file__, tcpchat.__file__
assert os.path.exists(os.path.join(os.path.dirname(tcpchat.__file__), "py.typed"))
with tcpchat.Server() as srv, tcpchat.connect("127.0.0.1", srv.port, close_timeout=0) as c:
    with srv.accept() as a:
        c.send("installed")
        assert a.recv() == b"installed"
        c.shutdown_write()
print("installed package works:", tcpchat.__file__, "->", tcpchat.library_path())
PY
)

say "mypy --strict (package and examples)"
"$PY" -m mypy --strict --cache-dir target/mypy_cache bindings/python/tcpchat
MYPYPATH=bindings/python "$PY" -m mypy --strict --cache-dir target/mypy_cache examples/python

say "pytest tests/python"
"$PY" -m pytest -q -p no:cacheprovider --timeout 120 tests/python "$@"
