#!/usr/bin/env bash
# The wheel, tested as a user gets it:
#   1. `pip wheel ./bindings/python` from this clone (setup.py runs cargo,
#      which finds target/release fresh and compiles nothing);
#   2. the wheel is py3-none-<platform> with tcpchat/libtcpchat.so inside,
#      SONAME libtcpchat.so.0, no debug info;
#   3. installed into a fresh virtualenv in a temporary directory, run from
#      there with no TCPCHAT_LIB and no PYTHONPATH: it loads its own library,
#      does an echo round trip and a room session.
#   TCPCHAT_TEST_SDIST=1 also builds the source distribution, then a wheel
#   from it (a full cargo build of its rust/ copy: about a minute), and
#   installs and runs that one the same way.
#
#   PY=target/pyvenv/bin/python bash tests/python/wheel_test.sh
#
# PY: a Python with pip and setuptools>=77 (the build runs without build
# isolation: nothing downloaded). PYTHON: the interpreter the throwaway venv
# is made from (python3). Run by tests/python/run.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
PY=${PY:-$REPO/target/pyvenv/bin/python}
PYTHON=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PYTHONDONTWRITEBYTECODE=1
version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' bindings/python/pyproject.toml)
checks=0

fail() { echo "wheel: $*" >&2; exit 1; }
ok() { checks=$((checks + 1)); }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# check_wheel WHEEL: its name, its files, the library inside it.
check_wheel() {
    local wheel=$1 name
    name=$(basename "$wheel")
    [[ $name == "tcpchat-$version-py3-none-"*.whl && $name != *-any.whl ]] ||
        fail "$name is not a py3-none-<platform> wheel"
    "$PY" - "$wheel" "$tmp/lib-from-wheel.so" <<'PY' || fail "$name: wrong contents"
import os, sys, zipfile
wheel, out = sys.argv[1:]
dist_info = "-".join(os.path.basename(wheel).split("-")[:2]) + ".dist-info"
with zipfile.ZipFile(wheel) as z:
    names = z.namelist()
    for need in ("tcpchat/__init__.py", "tcpchat/_ffi.py", "tcpchat/py.typed", "tcpchat/libtcpchat.so"):
        assert need in names, f"{need} is not in the wheel: {names}"
    assert not [n for n in names if ".data/" in n or n.endswith(".pyc")], names
    assert "Root-Is-Purelib: false" in z.read(f"{dist_info}/WHEEL").decode()
    with open(out, "wb") as f:
        f.write(z.read("tcpchat/libtcpchat.so"))
PY
    if command -v readelf >/dev/null 2>&1; then
        readelf -d "$tmp/lib-from-wheel.so" | grep -q '(SONAME).*\[libtcpchat\.so\.0\]' ||
            fail "$name: the library's SONAME is not libtcpchat.so.0"
        if readelf -S -W "$tmp/lib-from-wheel.so" | grep -q '\.debug_'; then
            fail "$name: the library still has debug sections"
        fi
    fi
    ok
}

# run_installed WHEEL DIR: a fresh venv in DIR with the wheel, used from DIR.
run_installed() {
    local wheel=$1 dir=$2
    # --without-pip: the build venv's pip installs into it (pip --python),
    # which works where ensurepip is missing, and downloads nothing.
    "$PYTHON" -m venv --without-pip "$dir/venv"
    "$PY" -m pip --python "$dir/venv/bin/python" install -q --no-index --no-deps "$wheel"
    (cd "$dir" && env -u TCPCHAT_LIB -u PYTHONPATH "$dir/venv/bin/python" - <<'PY'
import os, queue, socket, sys, threading
import tcpchat

pkg = os.path.dirname(os.path.abspath(tcpchat.__file__))
assert pkg.startswith(sys.prefix) and "site-packages" in pkg, pkg
assert tcpchat.library_path() == os.path.join(pkg, "libtcpchat.so"), tcpchat.library_path()
assert os.path.exists(os.path.join(pkg, "py.typed"))

# An echo round trip.
with tcpchat.Server(port=0) as server:
    service = threading.Thread(target=server.serve_echo)
    service.start()
    with tcpchat.connect("127.0.0.1", server.port, read_timeout=10, close_timeout=0) as conn:
        conn.send("from the wheel")
        assert conn.recv() == b"from the wheel"
        conn.send_many([b"one", b"two"])
        got = []
        while len(got) < 2:
            got += conn.recv_many()
        assert got == [b"one", b"two"], got
    server.shutdown()
    service.join(10)
    assert not service.is_alive()

# A room session: two clients (plain sockets, as nc would be) and the events.
def lines(sock):
    buf = b""
    while True:
        while b"\n" not in buf:
            chunk = sock.recv(4096)
            if not chunk:
                return
            buf += chunk
        line, buf = buf.split(b"\n", 1)
        yield line.decode()

events = queue.Queue()
with tcpchat.Room(close_timeout=0.5) as room:
    room.on_event(events.put)
    room.start()
    a = socket.create_connection(("127.0.0.1", room.port), timeout=10)
    a_lines = lines(a)
    assert next(a_lines).startswith("* welcome, you are guest1")
    b = socket.create_connection(("127.0.0.1", room.port), timeout=10)
    b_lines = lines(b)
    assert next(b_lines).startswith("* welcome, you are guest2")
    assert next(a_lines) == "* guest2 joined"
    a.sendall(b"hello from the wheel\n")
    assert next(b_lines) == "guest1: hello from the wheel"
    room.post("posted")
    assert next(a_lines) == "* posted" and next(b_lines) == "* posted"
    kinds = [events.get(timeout=10).kind for _ in range(3)]
    assert kinds == [tcpchat.RoomEventKind.JOIN, tcpchat.RoomEventKind.JOIN, tcpchat.RoomEventKind.MESSAGE], kinds
    room.shutdown()
    assert list(a_lines) == ["* server shutting down"]
    a.close()
    b.close()
print("installed wheel works:", tcpchat.__file__, "->", tcpchat.library_path())
PY
    ) || fail "the installed $(basename "$wheel") does not work"
    ok
}

# 1-3: the wheel from this clone.
"$PY" -m pip wheel -q --no-build-isolation --no-deps -w "$tmp/dist" ./bindings/python >"$tmp/build.log" 2>&1 ||
    { cat "$tmp/build.log" >&2; fail "pip wheel ./bindings/python failed"; }
wheels=("$tmp"/dist/tcpchat-*.whl)
[[ ${#wheels[@]} == 1 && -f ${wheels[0]} ]] || fail "pip wheel made ${wheels[*]}"
wheel=${wheels[0]}
check_wheel "$wheel"
mkdir "$tmp/user"
run_installed "$wheel" "$tmp/user"

# The source distribution, on request: it must build without the repository.
if [[ ${TCPCHAT_TEST_SDIST:-0} == 1 ]]; then
    (cd bindings/python && "$PY" -c 'import sys, setuptools.build_meta as b; print(b.build_sdist(sys.argv[1]))' "$tmp/sdist") \
        >"$tmp/sdist.log" 2>&1 || { cat "$tmp/sdist.log" >&2; fail "building the sdist failed"; }
    sdist=("$tmp"/sdist/tcpchat-*.tar.gz)
    tar -tzf "${sdist[0]}" >"$tmp/sdist.txt"
    grep -qx "tcpchat-$version/rust/src/lib.rs" "$tmp/sdist.txt" || fail "the sdist has no rust/src/lib.rs"
    grep -qx "tcpchat-$version/tcpchat/_ffi.py" "$tmp/sdist.txt" || fail "the sdist has no tcpchat/_ffi.py"
    if grep -E '\.so$|/target/' "$tmp/sdist.txt"; then fail "the sdist carries built files"; fi
    # Built where the repository is out of sight, and into its own target dir.
    (cd "$tmp" && env -u CARGO_TARGET_DIR "$PY" -m pip wheel -q --no-build-isolation --no-deps \
        -w "$tmp/sdist-dist" "${sdist[0]}") >"$tmp/sdist-build.log" 2>&1 ||
        { cat "$tmp/sdist-build.log" >&2; fail "pip wheel of the sdist failed"; }
    check_wheel "$(ls "$tmp"/sdist-dist/tcpchat-*.whl)"
    mkdir "$tmp/user-sdist"
    run_installed "$(ls "$tmp"/sdist-dist/tcpchat-*.whl)" "$tmp/user-sdist"
fi

echo "wheel: $(basename "$wheel") built by cargo, installed into a fresh venv, echo and room: $checks passed, 0 failed"
