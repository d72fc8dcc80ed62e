"""Where the package looks for libtcpchat, and what it says when it finds
nothing: the repository's build directories are looked at (and named in the
error) only when the package is the one in a repository checkout, never for
an installed copy."""

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


def fake_checkout(dest: Path) -> Path:
    """A copy of the package laid out as in a repository checkout
    (ROOT/Cargo.toml, ROOT/bindings/python/tcpchat) with no library built;
    returns ROOT."""
    root = dest / "repo"
    shutil.copytree(
        BINDINGS / "tcpchat", root / "bindings" / "python" / "tcpchat",
        ignore=shutil.ignore_patterns("__pycache__", "*.so"),
    )
    (root / "Cargo.toml").write_text('[package]\nname = "tcpchat"\n')
    return root


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


def test_an_installed_copy_that_finds_nothing_names_only_its_own_places(tmp_path: Path) -> None:
    site = copy_package(tmp_path)
    r = run_python("import tcpchat", site)
    if r.returncode == 0:
        return  # a system-wide libtcpchat exists here: find_library found it
    err = r.stderr
    assert "ImportError" in err
    assert "TCPCHAT_LIB" in err
    assert str(site / "tcpchat" / "libtcpchat.so") in err
    assert "find_library" in err
    # No repository next to an installed copy: none of its paths, no
    # "build it in the repository root", but how to get a package that has it.
    assert os.path.join("target", "release") not in err
    assert os.path.join("target", "debug") not in err
    assert "installed without its library" in err
    assert "pip wheel ./bindings/python" in err


def test_a_checkout_that_finds_nothing_lists_its_builds_and_the_build_command(tmp_path: Path) -> None:
    root = fake_checkout(tmp_path)
    r = run_python("import tcpchat", root / "bindings" / "python")
    if r.returncode == 0:
        return  # a system-wide libtcpchat exists here: find_library found it
    err = r.stderr
    assert "ImportError" in err
    assert "TCPCHAT_LIB" in err
    assert str(root / "bindings" / "python" / "tcpchat" / "libtcpchat.so") in err
    assert str(root / "target" / "release" / "libtcpchat.so") in err
    assert str(root / "target" / "debug" / "libtcpchat.so") in err
    assert "find_library" in err
    assert "cargo build --release" in err and str(root) in err


def test_a_checkout_loads_its_release_build(tmp_path: Path) -> None:
    root = fake_checkout(tmp_path)
    lib = root / "target" / "release" / "libtcpchat.so"
    lib.parent.mkdir(parents=True)
    shutil.copy(tcpchat.library_path(), lib)
    r = run_python("import tcpchat; print(tcpchat.library_path())", root / "bindings" / "python")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(lib)
