"""The raw layer (_ffi.py) matches include/tcpchat.h: every function, with
the same arity and argument/return types, and every constant, enum and
struct. The binding cannot drift from the header unnoticed."""

from __future__ import annotations

import ctypes
import re
from typing import Any, Dict, List, Tuple

import pytest
from conftest import REPO

import tcpchat
from tcpchat import _ffi

HEADER = (REPO / "include" / "tcpchat.h").read_text()


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


CODE = strip_comments(HEADER)


def prototypes() -> Dict[str, Tuple[str, List[str]]]:
    """name -> (return type, [parameter types]) of every tcpchat_* function."""
    out = {}
    for m in re.finditer(r"^([A-Za-z_][\w \*]*?)\s*\b(tcpchat_\w+)\(([^)]*)\);", CODE, re.M):
        ret, name, params = m.group(1).strip(), m.group(2), m.group(3).strip()
        types = []
        if params != "void":
            for p in params.split(","):
                p = " ".join(p.split())
                # Drop the parameter name: the last identifier.
                t = re.sub(r"\b\w+$", "", p).strip()
                types.append(" ".join(t.replace("*", " * ").split()))
        out[name] = (" ".join(ret.replace("*", " * ").split()), types)
    return out


PROTOS = prototypes()


def P(t: Any) -> Any:
    return ctypes.POINTER(t)


# What each C type in the header may be declared as in _ffi.py.
EXPECTED: Dict[str, Tuple[Any, ...]] = {
    "void": (None,),
    "bool": (ctypes.c_bool,),
    "int32_t": (ctypes.c_int32,),
    "int32_t *": (P(ctypes.c_int32),),
    "uint32_t": (ctypes.c_uint32,),
    "uint64_t": (ctypes.c_uint64,),
    "size_t": (ctypes.c_size_t,),
    "void *": (ctypes.c_void_p,),
    "const char *": (ctypes.c_char_p,),
    "char *": (ctypes.c_char_p, P(ctypes.c_char)),
    # Input bytes: c_char_p takes bytes without a copy.
    "const uint8_t *": (ctypes.c_char_p, P(ctypes.c_uint8), ctypes.c_void_p),
    "const uint8_t * const *": (P(ctypes.c_char_p), P(P(ctypes.c_uint8))),
    "uint8_t *": (P(ctypes.c_uint8), ctypes.c_void_p),
    "size_t *": (P(ctypes.c_size_t),),
    "const size_t *": (P(ctypes.c_size_t),),
    "uint16_t *": (P(ctypes.c_uint16),),
    "tcpchat_status": (ctypes.c_int,),
    "tcpchat_log_level": (ctypes.c_uint32,),
    "tcpchat_framing": (ctypes.c_uint32,),
    "tcpchat_role": (ctypes.c_uint32,),
    "tcpchat_log_callback": (_ffi.tcpchat_log_callback,),
    "tcpchat_config *": (P(_ffi.tcpchat_config),),
    "const tcpchat_config *": (P(_ffi.tcpchat_config),),
    "tcpchat_conn *": (P(_ffi.tcpchat_conn),),
    "tcpchat_conn * *": (P(P(_ffi.tcpchat_conn)),),
    "tcpchat_server *": (P(_ffi.tcpchat_server),),
    "const tcpchat_server *": (P(_ffi.tcpchat_server),),
    "tcpchat_server * *": (P(P(_ffi.tcpchat_server)),),
    "const tcpchat_chat_callbacks *": (P(_ffi.tcpchat_chat_callbacks),),
    "tcpchat_session_end *": (P(ctypes.c_int),),
    "tcpchat_echo_stats *": (P(_ffi.tcpchat_echo_stats),),
    "const tcpchat_room *": (P(_ffi.tcpchat_room),),
    "tcpchat_room *": (P(_ffi.tcpchat_room),),
    "tcpchat_room * *": (P(P(_ffi.tcpchat_room)),),
    "tcpchat_room_callback": (_ffi.tcpchat_room_callback,),
    "tcpchat_room_stats *": (P(_ffi.tcpchat_room_stats),),
}


def test_the_header_was_parsed() -> None:
    assert len(PROTOS) >= 40
    assert PROTOS["tcpchat_conn_recv"] == ("tcpchat_status", ["tcpchat_conn *", "uint8_t *", "size_t", "size_t *"])


def test_every_header_function_is_declared_with_the_same_arity() -> None:
    missing = [n for n in PROTOS if not hasattr(_ffi, n)]
    assert not missing, f"functions of the header missing from _ffi.py: {missing}"
    wrong = {
        n: (len(_ffi.__dict__[n].argtypes), len(params))
        for n, (_, params) in PROTOS.items()
        if len(_ffi.__dict__[n].argtypes) != len(params)
    }
    assert not wrong, f"arity (declared, header) differs: {wrong}"


@pytest.mark.parametrize("name", sorted(PROTOS))
def test_types_match(name: str) -> None:
    ret, params = PROTOS[name]
    fn = getattr(_ffi, name)
    assert ret in EXPECTED, f"{name}: no mapping for return type {ret!r} (add it to EXPECTED)"
    assert fn.restype in EXPECTED[ret], f"{name}: restype {fn.restype} for {ret!r}"
    for i, (c_type, declared) in enumerate(zip(params, fn.argtypes)):
        assert c_type in EXPECTED, f"{name}: no mapping for parameter type {c_type!r}"
        assert declared in EXPECTED[c_type], f"{name} argument {i}: {declared} for {c_type!r}"


def test_no_function_is_declared_that_the_header_lacks() -> None:
    declared = {
        n for n, v in vars(_ffi).items()
        if n.startswith("tcpchat_") and not isinstance(v, type) and hasattr(v, "argtypes")
    }
    assert declared - set(PROTOS) == set()


def test_each_declaration_appears_once_with_its_prototype_comment() -> None:
    source = (REPO / "bindings" / "python" / "tcpchat" / "_ffi.py").read_text()
    for name in PROTOS:
        assert len(re.findall(rf'_declare\(\s*"{name}"', source)) == 1, name
        assert re.search(rf"^# .*\b{name}\(", source, re.M), f"no prototype comment for {name}"


def header_defines() -> Dict[str, int]:
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^#define (TCPCHAT_\w+) (\d+)\s*$", CODE, re.M)}


def header_enum(name: str) -> Dict[str, int]:
    m = re.search(r"typedef enum \{([^}]*)\} " + name + ";", CODE)
    assert m, name
    return {k: int(v) for k, v in re.findall(r"(\w+) = (-?\d+)", m.group(1))}


def test_constants_match() -> None:
    defines = header_defines()
    assert defines, "no #define constants found"
    for k, v in defines.items():
        assert getattr(_ffi, k) == v, k
    for enum_name in ("tcpchat_status", "tcpchat_session_end", "tcpchat_leave_reason"):
        for k, v in header_enum(enum_name).items():
            assert getattr(_ffi, k) == v, k


def test_public_enums_match_the_header() -> None:
    statuses = header_enum("tcpchat_status")
    assert {f"TCPCHAT_STATUS_{s.name}": s.value for s in tcpchat.Status} == statuses
    ends = header_enum("tcpchat_session_end")
    assert {f"TCPCHAT_SESSION_END_{e.name}": e.value for e in tcpchat.SessionEnd} == ends
    defines = header_defines()
    assert {f"TCPCHAT_FRAMING_{f.name}": f.value for f in tcpchat.Framing} == {
        k: v for k, v in defines.items() if k.startswith("TCPCHAT_FRAMING_")
    }
    assert {f"TCPCHAT_ROLE_{r.name}": r.value for r in tcpchat.Role} == {
        k: v for k, v in defines.items() if k.startswith("TCPCHAT_ROLE_")
    }
    assert {f"TCPCHAT_LOG_{level.name}": level.value for level in tcpchat.LogLevel} == {
        k: v for k, v in defines.items() if k.startswith("TCPCHAT_LOG_")
    }
    reasons = header_enum("tcpchat_leave_reason")
    assert {f"TCPCHAT_LEAVE_REASON_{r.name}": r.value for r in tcpchat.LeaveReason} == reasons
    assert {f"TCPCHAT_ROOM_EVENT_{k.name}": k.value for k in tcpchat.RoomEventKind} == {
        k: v for k, v in defines.items() if k.startswith("TCPCHAT_ROOM_EVENT_")
    }


def header_struct(name: str) -> List[str]:
    m = re.search(r"typedef struct \{([^{}]*)\} " + name + ";", CODE)
    assert m, name
    fields = []
    for decl in m.group(1).split(";"):
        decl = " ".join(decl.split())
        if not decl:
            continue
        fn = re.search(r"\(\*(\w+)\)\((.*)\)$", decl)
        fields.append(f"{fn.group(1)}/{len(fn.group(2).split(','))}" if fn else decl.rsplit(" ", 1)[1].lstrip("*"))
    return fields


def test_structs_match() -> None:
    declared = []
    for fname, ftype in _ffi.tcpchat_chat_callbacks._fields_:
        argtypes = getattr(ftype, "_argtypes_", None)
        declared.append(f"{fname}/{len(argtypes)}" if argtypes is not None else fname)
    assert declared == header_struct("tcpchat_chat_callbacks")
    assert [f for f, _ in _ffi.tcpchat_echo_stats._fields_] == header_struct("tcpchat_echo_stats")
    assert all(t is ctypes.c_uint64 for _, t in _ffi.tcpchat_echo_stats._fields_)
    assert [f for f, _ in _ffi.tcpchat_room_stats._fields_] == header_struct("tcpchat_room_stats")
    assert all(t is ctypes.c_uint64 for _, t in _ffi.tcpchat_room_stats._fields_)
    assert [f for f, _ in _ffi.tcpchat_room_event._fields_] == header_struct("tcpchat_room_event")


def test_room_event_field_types() -> None:
    """Each field of tcpchat_room_event has the C type's size and a matching
    ctypes type, so the struct's layout is the library's."""
    m = re.search(r"typedef struct \{([^{}]*)\} tcpchat_room_event;", CODE)
    assert m
    c_types = {}
    for decl in m.group(1).split(";"):
        decl = " ".join(decl.split())
        if decl:
            c_type, name = decl.rsplit(" ", 1)
            if name.startswith("*"):
                c_type, name = c_type + " *", name[1:]
            c_types[name] = " ".join(c_type.replace("*", " * ").split())
    allowed = {
        "tcpchat_room_event_kind": (ctypes.c_uint32,),
        "uint64_t": (ctypes.c_uint64,),
        "const char *": (ctypes.c_char_p, ctypes.c_void_p),
        "tcpchat_leave_reason": (ctypes.c_int,),
        "size_t": (ctypes.c_size_t,),
    }
    for name, ctype in _ffi.tcpchat_room_event._fields_:
        assert ctype in allowed[c_types[name]], f"tcpchat_room_event.{name}: {ctype} for {c_types[name]!r}"


def test_room_callback_signature() -> None:
    m = re.search(r"typedef void \(\*tcpchat_room_callback\)\(([^)]*)\);", CODE)
    assert m
    assert len(_ffi.tcpchat_room_callback._argtypes_) == len(m.group(1).split(","))
    assert _ffi.tcpchat_room_callback._argtypes_[1] is ctypes.POINTER(_ffi.tcpchat_room_event)


def test_log_callback_signature() -> None:
    m = re.search(r"typedef void \(\*tcpchat_log_callback\)\(([^)]*)\);", CODE)
    assert m
    assert len(_ffi.tcpchat_log_callback._argtypes_) == len(m.group(1).split(","))
