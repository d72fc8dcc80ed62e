"""Build hooks for the tcpchat wheel: put the Rust library inside the package.

The metadata is in pyproject.toml; this file only adds the build hooks:

- ``build_py`` runs ``cargo build --release --lib`` on the tcpchat crate and
  copies ``libtcpchat.so`` (``.dylib``, ``.dll``) into the built package,
  stripped of its debug info where ``strip`` exists. The crate is the
  repository this directory lives in (``../..``) or, in a source
  distribution, the copy in ``rust/``. ``cargo`` is ``$CARGO`` if set, and
  the library is taken from cargo's own target directory (``cargo metadata``:
  ``$CARGO_TARGET_DIR`` is honoured), so a build from a clone whose
  ``target/release`` is fresh compiles nothing. An editable install
  (``pip install -e``) skips all this: the package then loads the
  repository's ``target/release`` library, as built by the developer.
- ``bdist_wheel`` makes a platform wheel (see ``DistributionWithLibrary``)
  tagged ``py3-none-<platform>``: it holds a native library, but ctypes
  loads it from any Python 3, so no interpreter or ABI tag.
- ``sdist`` copies the crate (the files ``cargo build --lib`` needs) into
  ``rust/`` of the source distribution, so that it builds without the
  repository.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist
from setuptools.dist import Distribution

try:
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # setuptools older than 70.1
    from wheel.bdist_wheel import bdist_wheel  # type: ignore[no-redef]

HERE = Path(__file__).resolve().parent

# What `cargo build --release --lib` needs of the crate, relative to its root:
# the manifest, the lock file (the exact dependency versions), the build
# script and its cbindgen configuration, the sources, the committed header,
# and every target the manifest declares by name (cargo refuses a manifest
# whose declared [[bench]] file is missing).
CRATE_FILES = ["Cargo.toml", "Cargo.lock", "build.rs", "cbindgen.toml", "include/tcpchat.h", "benches/throughput.rs"]
CRATE_DIRS = ["src"]


def library_file_name() -> str:
    if sys.platform == "darwin":
        return "libtcpchat.dylib"
    if sys.platform == "win32":
        return "tcpchat.dll"
    return "libtcpchat.so"


def is_tcpchat_crate(path: Path) -> bool:
    try:
        manifest = (path / "Cargo.toml").read_text(encoding="utf-8")
    except OSError:
        return False
    return any(line.replace(" ", "") == 'name="tcpchat"' for line in manifest.splitlines())


def find_crate() -> Path:
    """The crate to build: ``rust/`` in a source distribution, else the
    repository this directory belongs to."""
    for candidate in (HERE / "rust", HERE.parent.parent):
        if is_tcpchat_crate(candidate):
            return candidate
    raise SystemExit(
        f"tcpchat: no Rust crate to build the library from: looked for {HERE / 'rust' / 'Cargo.toml'} "
        f"(a source distribution) and {HERE.parent.parent / 'Cargo.toml'} (a tcpchat repository). "
        "Build from a clone of the repository (pip wheel ./bindings/python) or from the sdist."
    )


def run(cmd: List[str], cwd: Path) -> str:
    print("tcpchat: running " + " ".join(cmd) + f" in {cwd}", flush=True)
    try:
        done = subprocess.run(cmd, cwd=str(cwd), check=True, stdout=subprocess.PIPE, text=True)
    except FileNotFoundError:
        raise SystemExit(
            f"tcpchat: {cmd[0]} is not installed: building the wheel compiles the Rust library, "
            "which needs a Rust toolchain (https://rustup.rs; or set CARGO to cargo's path)."
        ) from None
    except subprocess.CalledProcessError as e:
        raise SystemExit(f"tcpchat: {' '.join(cmd)} failed with exit status {e.returncode}") from None
    return done.stdout


def build_library(crate: Path) -> Path:
    """Build the release library with cargo; return the file cargo wrote."""
    cargo = os.environ.get("CARGO", "cargo")
    run([cargo, "build", "--release", "--lib"], crate)
    meta = json.loads(run([cargo, "metadata", "--format-version", "1", "--no-deps"], crate))
    lib = Path(meta["target_directory"]) / "release" / library_file_name()
    if not lib.is_file():
        raise SystemExit(f"tcpchat: cargo finished but {lib} does not exist")
    return lib


class build_py_with_library(build_py):
    """build_py, then the Rust library into the built package."""

    def run(self) -> None:
        editable = bool(getattr(self, "editable_mode", False))
        if not editable:
            # A fresh copy every time: setuptools leaves files of earlier
            # builds in build/lib, which would end up in this wheel.
            shutil.rmtree(Path(self.build_lib) / "tcpchat", ignore_errors=True)
        super().run()
        if editable:
            return
        lib = build_library(find_crate())
        dest = Path(self.build_lib) / "tcpchat" / library_file_name()
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(lib, dest)
        os.chmod(dest, 0o755)
        strip = shutil.which("strip")
        if strip and sys.platform.startswith("linux"):
            # target/release keeps debug info for profilers; the wheel does not.
            subprocess.run([strip, "--strip-debug", str(dest)], check=True)
        print(f"tcpchat: {lib} -> {dest} ({dest.stat().st_size} bytes)", flush=True)


class DistributionWithLibrary(Distribution):
    """The package carries a native library: setuptools then builds into
    build/lib.<platform>, installs into platlib and makes a platform wheel
    (with the package at the wheel's root, as auditwheel expects)."""

    def has_ext_modules(self) -> bool:
        return True


class bdist_wheel_py3_platform(bdist_wheel):
    """A platform wheel for any Python 3: py3-none-<platform>."""

    def get_tag(self) -> Tuple[str, str, str]:
        _, _, platform = super().get_tag()
        return "py3", "none", platform


class sdist_with_crate(sdist):
    """sdist, with the Rust crate copied into rust/."""

    def make_release_tree(self, base_dir: str, files: List[str]) -> None:
        super().make_release_tree(base_dir, files)
        crate = find_crate()
        if crate == HERE / "rust":
            return  # an sdist of an sdist: rust/ is among the files already
        dest = Path(base_dir) / "rust"
        for name in CRATE_FILES:
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(crate / name, dest / name)
        ignore = shutil.ignore_patterns("__pycache__", "*.orig", "*.rej")
        for name in CRATE_DIRS:
            shutil.copytree(crate / name, dest / name, ignore=ignore)


setup(
    distclass=DistributionWithLibrary,
    cmdclass={
        "build_py": build_py_with_library,
        "bdist_wheel": bdist_wheel_py3_platform,
        "sdist": sdist_with_crate,
    }
)
