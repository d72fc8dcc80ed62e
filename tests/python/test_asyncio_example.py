"""The asyncio example: a connection driven through loop.add_reader."""

from __future__ import annotations

import subprocess
import sys
import threading

from conftest import REPO, WAIT, env_for_children

import tcpchat

EXAMPLE = REPO / "examples" / "python" / "asyncio_client.py"


def run_against_echo(args: list, stdin: str = "") -> subprocess.CompletedProcess:
    with tcpchat.Server(close_timeout=0.5) as server:
        service = threading.Thread(target=server.serve_echo)
        service.start()
        try:
            return subprocess.run(
                [sys.executable, str(EXAMPLE), "--port", str(server.port), *args],
                input=stdin, capture_output=True, text=True, timeout=3 * WAIT,
                env=env_for_children(),
            )
        finally:
            server.shutdown()
            service.join(WAIT)


def test_replies_come_back_in_order_through_the_event_loop() -> None:
    done = run_against_echo(["hello", "world", "third one"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["reply: hello", "reply: world", "reply: third one"]


def test_many_messages_from_stdin() -> None:
    lines = [f"line {i}" for i in range(3000)]
    done = run_against_echo([], stdin="\n".join(lines) + "\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"reply: {line}" for line in lines]


def test_a_refused_connection_is_reported() -> None:
    with tcpchat.Server() as server:
        port = server.port  # free once the block ends
    done = subprocess.run([sys.executable, str(EXAMPLE), "--port", str(port), "x"],
                          capture_output=True, text=True, timeout=WAIT, env=env_for_children())
    assert done.returncode == 1
    assert "refused" in done.stderr
