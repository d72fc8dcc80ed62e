#!/usr/bin/env bash
# Install for C users, tested: `make -C examples/c install` into a temporary
# prefix, then build a small C program the way a C user would, with
# `pkg-config --cflags --libs tcpchat`, run it, and check it prints the
# version from Cargo.toml. The same against the static library with
# `pkg-config --static`. Run by `make -C tests/c check`.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cc=${CC:-cc}
want=$(sed -n '/^\[package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$root/Cargo.toml")

prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT

# The library is already built by the Makefile; do not run cargo again.
make -s -C "$root/examples/c" install PREFIX="$prefix" CARGO= >/dev/null

for f in include/tcpchat.h lib/libtcpchat.so lib/libtcpchat.a lib/pkgconfig/tcpchat.pc; do
    [[ -f $prefix/$f ]] || { echo "install: $prefix/$f is missing" >&2; exit 1; }
done
cmp -s "$root/include/tcpchat.h" "$prefix/include/tcpchat.h" || { echo "install: header differs" >&2; exit 1; }

export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
[[ $(pkg-config --modversion tcpchat) == "$want" ]] || { echo "install: pkg-config version is not $want" >&2; exit 1; }

cat >"$prefix/hello.c" <<'C'
#include <stdio.h>
#include <tcpchat.h>

int main(void)
{
    tcpchat_config *config = tcpchat_config_new();
    tcpchat_status st = tcpchat_config_set_framing(config, TCPCHAT_FRAMING_FRAME);
    tcpchat_config_free(config);
    printf("tcpchat %s %s\n", tcpchat_version(), tcpchat_status_name(st));
    return st == TCPCHAT_STATUS_OK ? 0 : 1;
}
C

# Shared library: found at run time through LD_LIBRARY_PATH.
# shellcheck disable=SC2046
"$cc" -Wall -Wextra -Werror -pedantic -std=c11 -o "$prefix/hello" "$prefix/hello.c" \
    $(pkg-config --cflags --libs tcpchat)
out=$(LD_LIBRARY_PATH="$prefix/lib" "$prefix/hello")
[[ $out == "tcpchat $want TCPCHAT_STATUS_OK" ]] || { echo "install: shared build printed '$out'" >&2; exit 1; }

# Static library: pkg-config --static adds what libtcpchat.a needs from the system.
# shellcheck disable=SC2046
"$cc" -Wall -Wextra -Werror -pedantic -std=c11 -o "$prefix/hello_static" "$prefix/hello.c" \
    $(pkg-config --cflags tcpchat) "$prefix/lib/libtcpchat.a" \
    $(pkg-config --static --libs tcpchat | sed 's/-ltcpchat//')
out=$(env -u LD_LIBRARY_PATH "$prefix/hello_static")
[[ $out == "tcpchat $want TCPCHAT_STATUS_OK" ]] || { echo "install: static build printed '$out'" >&2; exit 1; }
if ldd "$prefix/hello_static" | grep -q libtcpchat; then
    echo "install: the static build still needs libtcpchat.so" >&2
    exit 1
fi

make -s -C "$root/examples/c" uninstall PREFIX="$prefix" >/dev/null
[[ ! -e $prefix/lib/libtcpchat.so && ! -e $prefix/include/tcpchat.h ]] || { echo "install: uninstall left files" >&2; exit 1; }

echo "install: tcpchat $want installed, found by pkg-config, linked shared and static: 1 passed, 0 failed"
