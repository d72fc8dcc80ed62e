"""Where the package looks for libtcpchat, and what it says when it finds
nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import BINDINGS, WAIT

import tcpchat


def run_python(code: str, cwd: Path, **env_changes: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TCPCHAT_LIB")}
    env.update(env_changes)
    return subprocess.run(
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=WAIT, env=env, cwd=str(cwd)
    )


def copy_package(dest: Path) -> Path:
    """A copy of the package outside the repository (no target/ near it)."""
    pkg = dest / "site" / "tcpchat"
    shutil.copytree(BINDINGS / "tcpchat", pkg, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    return pkg.parent


def test_the_repository_build_is_found() -> None:
    lib = Path(tcpchat.library_path())
    if not os.environ.get("TCPCHAT_LIB"):
        assert lib.parent.parent.name == "target" and lib.parent.name in ("release", "debug")


def test_tcpchat_lib_overrides(tmp_path: Path) -> None:
    site = copy_package(tmp_path)
    r = run_python("import tcpchat; print(tcpchat.library_path())", site,
                   TCPCHAT_LIB=tcpchat.library_path())
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == tcpchat.library_path()


def test_a_bad_tcpchat_lib_is_an_import_error(tmp_path: Path) -> None:
    site = copy_package(tmp_path)
    r = run_python("import tcpchat", site, TCPCHAT_LIB=str(tmp_path / "nope.so"))
    assert r.returncode != 0
    assert "ImportError" in r.stderr and "nope.so" in r.stderr and "TCPCHAT_LIB" in r.stderr


def test_a_copy_shipped_in_the_package_is_used(tmp_path: Path) -> None:
    site = copy_package(tmp_path)
    shutil.copy(tcpchat.library_path(), site / "tcpchat" / "libtcpchat.so")
    r = run_python("import tcpchat; print(tcpchat.library_path())", site)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(site / "tcpchat" / "libtcpchat.so")


def test_not_found_lists_every_place_and_the_build_command(tmp_path: Path) -> None:
    site = copy_package(tmp_path)
    r = run_python("import tcpchat", site)
    if r.returncode == 0:
        return  # a system-wide libtcpchat exists here: find_library found it
    err = r.stderr
    assert "ImportError" in err
    assert "TCPCHAT_LIB" in err
    assert str(site / "tcpchat" / "libtcpchat.so") in err
    assert os.path.join("target", "release", "libtcpchat.so") in err
    assert os.path.join("target", "debug", "libtcpchat.so") in err
    assert "find_library" in err
    assert "cargo build --release" in err
