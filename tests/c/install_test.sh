#!/usr/bin/env bash
# Install for C users, tested: `make -C examples/c install` into a temporary
# prefix, then build a small C program the way README's C section says, with
# `pkg-config --cflags --libs tcpchat`:
#   - the installed files: libtcpchat.so.X.Y.Z with the libtcpchat.so.X and
#     libtcpchat.so links, libtcpchat.a, the header, tcpchat.pc; the SONAME is
#     libtcpchat.so.X; no installed library carries debug info;
#   - the program linked with -Wl,-rpath,$PREFIX/lib runs with no
#     LD_LIBRARY_PATH and loads the installed library; linked without an
#     rpath, it runs with LD_LIBRARY_PATH=$PREFIX/lib;
#   - it prints tcpchat_version(), which is Cargo.toml's version and agrees
#     with TCPCHAT_VERSION_MAJOR/_MINOR/_PATCH from the header;
#   - the same against the static library with `pkg-config --static`;
#   - DESTDIR staging, and uninstall removing everything.
# Run by `make -C tests/c check`.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cc=${CC:-cc}
want=$(sed -n '/^\[package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$root/Cargo.toml")
major=${want%%.*}
checks=0

fail() { echo "install: $*" >&2; exit 1; }
ok() { checks=$((checks + 1)); }

prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
lib=$prefix/lib

# The library is already built by the Makefile; do not run cargo again.
make -s -C "$root/examples/c" install PREFIX="$prefix" CARGO= >/dev/null

for f in include/tcpchat.h lib/libtcpchat.so.$want lib/libtcpchat.a lib/pkgconfig/tcpchat.pc; do
    [[ -f $prefix/$f && ! -L $prefix/$f ]] || fail "$prefix/$f is missing (or not a regular file)"
done
[[ $(readlink "$lib/libtcpchat.so.$major") == "libtcpchat.so.$want" ]] ||
    fail "lib/libtcpchat.so.$major is not a link to libtcpchat.so.$want"
[[ $(readlink "$lib/libtcpchat.so") == "libtcpchat.so.$major" ]] ||
    fail "lib/libtcpchat.so is not a link to libtcpchat.so.$major"
ok
cmp -s "$root/include/tcpchat.h" "$prefix/include/tcpchat.h" || fail "header differs"
ok

soname=$(readelf -d "$lib/libtcpchat.so.$want" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[[ $soname == "libtcpchat.so.$major" ]] || fail "SONAME is '$soname', not libtcpchat.so.$major"
ok
for f in "$lib/libtcpchat.so.$want" "$lib/libtcpchat.a"; do
    if readelf -S -W "$f" | grep -q '\.debug_'; then
        fail "$f still has debug sections: $(readelf -S -W "$f" | grep -o '\.debug_[a-z_]*' | sort -u | tr '\n' ' ')"
    fi
done
ok

export PKG_CONFIG_PATH="$lib/pkgconfig"
[[ $(pkg-config --modversion tcpchat) == "$want" ]] || fail "pkg-config version is not $want"
ok

cat >"$prefix/hello.c" <<'C'
#include <stdio.h>
#include <string.h>
#include <tcpchat.h>

int main(void)
{
    /* The header's version (compile time) against the library's (run time). */
    char header_version[32];
    snprintf(header_version, sizeof header_version, "%d.%d.%d", TCPCHAT_VERSION_MAJOR,
             TCPCHAT_VERSION_MINOR, TCPCHAT_VERSION_PATCH);
    if (strcmp(header_version, tcpchat_version()) != 0) {
        printf("header %s, library %s\n", header_version, tcpchat_version());
        return 1;
    }
    tcpchat_config *config = tcpchat_config_new();
    tcpchat_status st = tcpchat_config_set_framing(config, TCPCHAT_FRAMING_FRAME);
    tcpchat_config_free(config);
    printf("tcpchat %s %s\n", tcpchat_version(), tcpchat_status_name(st));
    return st == TCPCHAT_STATUS_OK ? 0 : 1;
}
C

# Shared library, found at run time through the rpath (README's first way).
# shellcheck disable=SC2046
"$cc" -Wall -Wextra -Werror -pedantic -std=c11 -o "$prefix/hello" "$prefix/hello.c" \
    $(pkg-config --cflags --libs tcpchat) -Wl,-rpath,"$lib"
readelf -d "$prefix/hello" | grep -q "(NEEDED).*\[libtcpchat.so.$major\]" ||
    fail "the program does not need libtcpchat.so.$major"
out=$(env -u LD_LIBRARY_PATH "$prefix/hello") || fail "the rpath build failed: '$out'"
[[ $out == "tcpchat $want TCPCHAT_STATUS_OK" ]] || fail "the rpath build printed '$out'"
loaded=$(env -u LD_LIBRARY_PATH ldd "$prefix/hello" | awk '/libtcpchat/ { print $3 }')
[[ $loaded == "$lib/libtcpchat.so.$major" ]] || fail "the rpath build loads '$loaded'"
ok

# Shared library without an rpath, found through LD_LIBRARY_PATH (the second way).
# shellcheck disable=SC2046
"$cc" -Wall -Wextra -Werror -pedantic -std=c11 -o "$prefix/hello_env" "$prefix/hello.c" \
    $(pkg-config --cflags --libs tcpchat)
out=$(LD_LIBRARY_PATH="$lib" "$prefix/hello_env") || fail "the LD_LIBRARY_PATH build failed: '$out'"
[[ $out == "tcpchat $want TCPCHAT_STATUS_OK" ]] || fail "the LD_LIBRARY_PATH build printed '$out'"
ok

# Static library: pkg-config --static adds what libtcpchat.a needs from the system.
# shellcheck disable=SC2046
"$cc" -Wall -Wextra -Werror -pedantic -std=c11 -o "$prefix/hello_static" "$prefix/hello.c" \
    $(pkg-config --cflags tcpchat) "$lib/libtcpchat.a" \
    $(pkg-config --static --libs tcpchat | sed 's/-ltcpchat//')
out=$(env -u LD_LIBRARY_PATH "$prefix/hello_static") || fail "the static build failed: '$out'"
[[ $out == "tcpchat $want TCPCHAT_STATUS_OK" ]] || fail "static build printed '$out'"
if ldd "$prefix/hello_static" | grep -q libtcpchat; then
    fail "the static build still needs libtcpchat.so"
fi
ok

# A staged install (DESTDIR) for packagers: files under DESTDIR, paths without it.
make -s -C "$root/examples/c" install PREFIX=/usr DESTDIR="$prefix/stage" CARGO= >/dev/null
[[ -f $prefix/stage/usr/lib/libtcpchat.so.$want && -L $prefix/stage/usr/lib/libtcpchat.so ]] ||
    fail "DESTDIR install: the libraries are not under $prefix/stage/usr/lib"
grep -qx 'prefix=/usr' "$prefix/stage/usr/lib/pkgconfig/tcpchat.pc" || fail "DESTDIR install: tcpchat.pc's prefix is not /usr"
ok

make -s -C "$root/examples/c" uninstall PREFIX="$prefix" >/dev/null
left=$(cd "$prefix" && find include lib \( -type f -o -type l \) 2>/dev/null)
[[ -z $left ]] || fail "uninstall left: $left"
ok

echo "install: tcpchat $want (SONAME libtcpchat.so.$major, no debug info) installed, found by pkg-config," \
    "run through rpath and LD_LIBRARY_PATH, linked static: $checks passed, 0 failed"
