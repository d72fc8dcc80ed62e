"""Text that reaches a terminal: :func:`escape_text`."""

from __future__ import annotations

import ctypes
from typing import Union

from . import _ffi
from ._errors import check


def escape_text(text: Union[bytes, str]) -> str:
    """``text`` made safe to print on a terminal, as the room relays it.

    C0 controls other than TAB, DEL, C1 controls and the invisible format
    characters that reorder or hide text (U+200B-U+200F, U+2028-U+202E,
    U+2060-U+2069, U+FEFF) are replaced by a visible notation: ``\\x1b``
    for C0 and DEL, ``\\u{202e}`` for the others, and ``\\xff`` for a byte
    that is not UTF-8. Everything else is kept. Use it for any text from a
    peer that you print::

        >>> tcpchat.escape_text(b"hi\\x1b[2J")
        'hi\\\\x1b[2J'
    """
    data = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else bytes(text)
    if data.isascii() and all(32 <= b < 127 or b == 9 for b in data):
        return data.decode("ascii")  # nothing to escape: no library call
    cap = 4 * len(data) + 1
    buf = ctypes.create_string_buffer(cap)
    n = ctypes.c_size_t(0)
    check(_ffi.tcpchat_escape_text(data, len(data), buf, cap, ctypes.byref(n)))
    return buf.raw[: n.value].decode("utf-8")
