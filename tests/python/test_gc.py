"""Handles are freed when their Python objects are collected: no leaked
descriptors, no finalizer keeping its object alive."""

from __future__ import annotations

import gc
import os
import sys
import weakref
from typing import Any, List

import pytest
from conftest import PY_EXAMPLES, WAIT, env_for_children, start_server_process

import tcpchat


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_dropped_connection_is_collected_and_its_descriptor_closed() -> None:
    with tcpchat.Server(close_timeout=0) as srv:
        gc.collect()
        baseline = open_fds()
        c = tcpchat.connect("127.0.0.1", srv.port, close_timeout=0)
        a = srv.accept(timeout=WAIT)
        assert open_fds() > baseline  # sockets (and the library's wake-up descriptors)
        refs = [weakref.ref(c), weakref.ref(a)]
        del c, a  # no close(): the finalizers do it
        assert [r() for r in refs] == [None, None]
        assert open_fds() == baseline


def test_many_collected_connections_leave_no_descriptor_behind() -> None:
    with tcpchat.Server(close_timeout=0, read_timeout=WAIT) as srv:
        gc.collect()
        baseline = open_fds()
        for i in range(300):
            c = tcpchat.connect("127.0.0.1", srv.port, close_timeout=0)
            a = srv.accept(timeout=WAIT)
            c.send(f"{i}")
            assert a.recv() == f"{i}".encode()
            if i % 2:
                # Garbage in a reference cycle: only the cycle collector frees it.
                cycle: List[Any] = [c, a]
                cycle.append(cycle)
                del cycle
            del c, a
        gc.collect()
        assert open_fds() == baseline


def test_collected_clients_of_a_separate_echo_server() -> None:
    """Default close settings: each finalizer closes gracefully (the echo
    server, another process, closes its end in turn)."""
    proc, err, port = start_server_process(
        [sys.executable, str(PY_EXAMPLES / "echo_server.py"), "--port", "0"]
    )
    try:
        gc.collect()
        baseline = open_fds()
        for i in range(100):
            c = tcpchat.connect("127.0.0.1", port, read_timeout=WAIT)
            c.send(str(i))
            assert c.recv() == str(i).encode()
            del c
        gc.collect()
        assert open_fds() == baseline
    finally:
        proc.terminate()
        proc.wait(WAIT)
    assert proc.returncode == 0


def test_collected_server_stops_listening() -> None:
    srv = tcpchat.Server()
    port = srv.port
    ref = weakref.ref(srv)
    del srv
    assert ref() is None
    # The port is free again: bind it.
    with tcpchat.Server("127.0.0.1", port) as again:
        assert again.port == port


def test_finalizer_holds_no_reference_to_its_object() -> None:
    with tcpchat.Server(close_timeout=0) as srv:
        c = tcpchat.connect("127.0.0.1", srv.port, close_timeout=0)
        finalizer = c._handle._finalizer
        assert finalizer.alive
        func, args, kwargs = finalizer.peek()[1:]
        held = [func, getattr(func, "__self__", None), *args, *kwargs.values()]
        assert all(not isinstance(x, tcpchat.Connection) for x in held)
        c.close()
        assert not finalizer.alive  # close() freed it: nothing left for the GC
        srv.accept(timeout=WAIT).close()


def test_a_handle_in_use_is_freed_by_the_last_call_out() -> None:
    from tcpchat._handle import Handle

    class Owner:
        pass

    owner, freed = Owner(), []
    h = Handle(owner, "ptr", freed.append, "thing")
    with h as ptr:
        assert ptr == "ptr"
        assert h.close() is True and h.close() is False
        assert freed == []  # a call is using it
        with pytest.raises(tcpchat.ClosedError, match="thing is closed"):
            h.__enter__()
    assert freed == ["ptr"]  # the last call out freed it
    del owner
    gc.collect()
    assert freed == ["ptr"]  # once only: the finalizer was detached

    owner2, freed2 = Owner(), []
    Handle(owner2, "p2", freed2.append, "thing")
    del owner2  # never closed: the finalizer frees it
    assert freed2 == ["p2"]


def test_close_racing_a_blocked_call() -> None:
    """close() from another thread while a call is blocked: the pointer stays
    valid until that call returns, then is freed."""
    import threading

    from conftest import Background

    with tcpchat.Server(close_timeout=0, read_timeout=WAIT) as srv:
        c = tcpchat.connect("127.0.0.1", srv.port, close_timeout=0)
        a = srv.accept(timeout=WAIT)
        started = threading.Event()
        job = Background(lambda: (started.set(), a.recv())[1])
        assert started.wait(WAIT)
        a.cancel()  # the recv raises CancelledError...
        a._handle.close()  # ...and a close racing with it never frees under it
        try:
            job.result()
        except tcpchat.CancelledError:
            pass
        assert a._handle._ptr is None  # freed once the call was out
        c.close()


def test_children_do_not_need_the_package_installed() -> None:
    # (Used by the other process-based tests: PYTHONPATH points at bindings/python.)
    assert "PYTHONPATH" in env_for_children()
