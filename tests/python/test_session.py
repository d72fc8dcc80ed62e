"""The chat session and the serve loop, driven by Python callables."""

from __future__ import annotations

import threading
import traceback
from typing import Any, Iterator, List, Optional, Tuple, Union

import pytest
from conftest import FAST_CLOSE, WAIT, Background, close_pair, make_pair

import tcpchat


def script(*lines: Union[str, bytes, None]) -> Any:
    """A next_message callable returning ``lines`` in turn, then None."""
    it: Iterator[Union[str, bytes, None]] = iter(lines)
    return lambda: next(it, None)


class Recorder:
    def __init__(self) -> None:
        self.got: List[bytes] = []

    def __call__(self, msg: bytes) -> None:
        self.got.append(msg)


@pytest.mark.parametrize("framing", ["line", "frame", "raw"])
def test_session_both_roles(framing: str) -> None:
    srv, c, a = make_pair(framing=framing)
    with srv:
        heard_by_server, heard_by_client = Recorder(), Recorder()
        server_side = Background(
            lambda: a.run_session(tcpchat.Role.SERVER, script("hello client", "how are you?"), heard_by_server)
        )
        end = c.run_session(tcpchat.Role.CLIENT, script(b"hi server", b"fine"), heard_by_client)
        # The server's script ran out after "how are you?": it sent BYE.
        assert server_side.result() is tcpchat.SessionEnd.LOCAL_END
        assert end is tcpchat.SessionEnd.PEER_END
        assert heard_by_client.got == [b"hello client", b"how are you?"]
        assert heard_by_server.got == [b"hi server", b"fine"]
        close_pair(c, a)


def test_session_ends_when_the_peer_closes() -> None:
    srv, c, a = make_pair()
    with srv:
        c.close()
        assert a.run_session("server", script("anyone?"), Recorder()) is tcpchat.SessionEnd.PEER_CLOSED
        a.close()


def test_sending_the_end_word_ends_the_session() -> None:
    srv, c, a = make_pair()
    with srv:
        peer = Background(lambda: a.run_session("client", script("never sent"), Recorder()))
        assert c.run_session("server", script("BYE"), Recorder()) is tcpchat.SessionEnd.LOCAL_END
        assert peer.result() is tcpchat.SessionEnd.PEER_END
        close_pair(c, a)


def test_bad_role() -> None:
    srv, c, a = make_pair()
    with srv:
        with pytest.raises(ValueError, match="role"):
            c.run_session("referee", script(), Recorder())  # type: ignore[arg-type]
        close_pair(c, a)


class Boom(Exception):
    pass


def explode_in_next_message() -> Optional[bytes]:
    raise Boom("from next_message")


def test_exception_in_next_message_reaches_the_caller_with_its_traceback() -> None:
    srv, c, a = make_pair()
    with srv:
        with pytest.raises(Boom, match="from next_message") as info:
            a.run_session("server", explode_in_next_message, Recorder())
        frames = [f.name for f in traceback.extract_tb(info.value.__traceback__)]
        assert "explode_in_next_message" in frames
        # The connection is still usable afterwards.
        a.send("still here")
        assert c.recv() == b"still here"
        close_pair(c, a)


def test_exception_in_on_message_ends_the_session() -> None:
    srv, c, a = make_pair()
    with srv:
        def on_message(msg: bytes) -> None:
            raise KeyError(msg)

        server_side = Background(lambda: a.run_session("server", script("one", "two"), Recorder()))
        with pytest.raises(KeyError) as info:
            c.run_session("client", script("never"), on_message)
        assert info.value.args == (b"one",)
        assert "on_message" in [f.name for f in traceback.extract_tb(info.value.__traceback__)]
        c.close()
        assert server_side.result() is tcpchat.SessionEnd.PEER_CLOSED
        a.close()


def test_base_exceptions_from_callbacks_propagate_too() -> None:
    srv, c, a = make_pair()
    with srv:
        def interrupt() -> bytes:
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            a.run_session("server", interrupt, Recorder())
        close_pair(c, a)


def test_next_message_returning_a_wrong_type_raises_type_error() -> None:
    srv, c, a = make_pair()
    with srv:
        with pytest.raises(TypeError):
            a.run_session("server", lambda: 42, Recorder())  # type: ignore[arg-type,return-value]
        close_pair(c, a)


def chat_client(port: int, lines: List[str], **options: Any) -> Tuple[tcpchat.SessionEnd, List[bytes]]:
    heard = Recorder()
    with tcpchat.connect("127.0.0.1", port, read_timeout=WAIT, **options) as conn:
        end = conn.run_session(tcpchat.Role.CLIENT, script(*lines), heard)
    return end, heard.got


def test_serve_chat_once_with_callbacks() -> None:
    events: List[Any] = []
    heard = Recorder()
    with tcpchat.Server(read_timeout=WAIT) as srv:
        client = Background(lambda: chat_client(srv.port, ["hi", "bye bye"]))
        srv.serve_chat(
            script("welcome", "what's new?"),
            heard,
            once=True,
            on_connect=lambda peer: events.append(("connect", peer)),
            on_end=lambda peer, outcome: events.append(("end", peer, outcome)),
        )
        end, client_heard = client.result()
    assert client_heard == [b"welcome", b"what's new?"]
    assert heard.got == [b"hi", b"bye bye"]
    assert end is tcpchat.SessionEnd.PEER_END
    assert [e[0] for e in events] == ["connect", "end"]
    peer = events[0][1]
    assert isinstance(peer, tcpchat.Address) and peer.host == "127.0.0.1"
    assert events[1][1] == peer and events[1][2] is tcpchat.SessionEnd.LOCAL_END


def test_serve_chat_reports_a_failed_session_and_goes_on() -> None:
    outcomes: List[Any] = []
    with tcpchat.Server(read_timeout=WAIT, max_message_size=16) as srv:
        def clients() -> Tuple[Any, Any]:
            # A client breaking the size limit fails its own session only...
            with tcpchat.connect("127.0.0.1", srv.port, close_timeout=FAST_CLOSE) as bad:
                assert bad.recv() == b"first"
                bad.send(b"z" * 100)
                assert bad.recv() is None  # the server closed it
            # ... and the next client is served.
            result = chat_client(srv.port, ["ok"])
            srv.shutdown()
            return result

        job = Background(clients)
        srv.serve_chat(
            script("first", "second"), Recorder(), on_end=lambda peer, outcome: outcomes.append(outcome)
        )
        end, heard = job.result()
    assert isinstance(outcomes[0], tcpchat.MessageTooLargeError)
    assert "16" in str(outcomes[0])
    # The script has one message left for the second client, then BYE.
    assert heard == [b"second"]
    assert end is tcpchat.SessionEnd.PEER_END


def test_serve_chat_stopped_from_another_thread() -> None:
    with tcpchat.Server() as srv:
        ready = threading.Event()
        job = Background(lambda: (ready.set(), srv.serve_chat(script(), Recorder()))[1])
        assert ready.wait(WAIT)
        srv.shutdown()
        assert job.result() is None


@pytest.mark.parametrize("where", ["on_connect", "on_end"])
def test_exceptions_in_connect_and_end_hooks_stop_the_loop(where: str) -> None:
    def hook(*args: Any) -> None:
        raise Boom(where)

    with tcpchat.Server(read_timeout=WAIT) as srv:
        client = Background(lambda: chat_client(srv.port, ["x"], close_timeout=FAST_CLOSE))
        with pytest.raises(Boom, match=where):
            srv.serve_chat(script("hello"), Recorder(), **{where: hook})
        client.result()


def test_callback_objects_survive_garbage_collection_during_the_session() -> None:
    """The CFUNCTYPE objects live as long as the session, even when the
    Python callables passed in have no other reference."""
    import gc

    srv, c, a = make_pair()
    with srv:
        server_side = Background(lambda: a.run_session("server", script("a", "b", "c"), Recorder()))

        def collecting(msg: bytes) -> None:
            gc.collect()

        assert c.run_session("client", script("1", "2", "3"), collecting) is tcpchat.SessionEnd.PEER_END
        server_side.result()
        close_pair(c, a)
