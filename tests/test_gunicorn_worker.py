"""What the scoring server's gunicorn worker asks before it answers a request in its main thread, and
its logger's access line, formatted only when written."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from gunicorn.config import Config
from gunicorn.glogging import Logger
from gunicorn.workers.gthread import TConn

from mnist_mlops.serving.gunicorn_worker import (
    INLINE_BYTES,
    ScoringLogger,
    ScoringWorker,
    listen_queue,
    nothing_unread,
    whole_request_buffered,
)

HEADERS = b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"


@contextmanager
def received(data: bytes) -> Iterator[socket.socket]:
    """The server's end of a connection whose client sent `data` (and keeps the connection open)."""
    server, client = socket.socketpair()
    with server, client:
        client.sendall(data)
        yield server


@pytest.mark.parametrize(
    ("sent", "whole"),
    [
        (HEADERS + b"Content-Length: 5\r\n\r\nabcde", True),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", True),
        (HEADERS + b"content-length:  5 \r\n\r\nabcde", True),
        (HEADERS + b"Content-Length: 5\r\n\r\nabc", False),  # the body still on its way
        (HEADERS + b"Content-Length: 5\r\n", False),  # the headers too
        (b"", False),
        (HEADERS + b"Content-Length: 5\r\n\r\nabcdeGET", False),  # more than one request
        (HEADERS + b"Transfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n0\r\n\r\n", False),
        (HEADERS + b"Content-Length: 5\r\nContent-Length: 0\r\n\r\nabcde", False),
        (HEADERS + b"Content-Length: -5\r\n\r\n", False),
        (HEADERS + b"Expect: 100-continue\r\nContent-Length: 5\r\n\r\n", False),
    ],
)
def test_a_request_is_answered_inline_only_when_it_is_all_there(sent, whole):
    with received(sent) as connection:
        assert whole_request_buffered(connection) is whole
        connection.settimeout(1)
        assert not sent or connection.recv(len(sent) + 1) == sent  # only peeked at: gunicorn reads it all


def test_a_request_larger_than_the_inline_limit_goes_to_the_threads():
    body = bytes(INLINE_BYTES)
    request = HEADERS + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
    with received(request) as connection:
        assert not whole_request_buffered(connection)
    small = HEADERS + b"Content-Length: 1000\r\n\r\n" + bytes(1000)
    with received(small) as connection:
        assert whole_request_buffered(connection)


def queued(listener: socket.socket, count: int) -> None:
    """Wait until `count` connections wait in `listener`'s accept queue (the kernel's handshake)."""
    deadline = time.monotonic() + 5
    while listen_queue(listener) != count and time.monotonic() < deadline:
        time.sleep(0.01)
    assert listen_queue(listener) == count


@contextmanager
def listening() -> Iterator[socket.socket]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)  # as gunicorn's listeners are
        yield listener


def test_the_listen_queue_counts_connections_not_yet_accepted():
    with listening() as listener:
        assert listen_queue(listener) == 0
        clients = [socket.create_connection(listener.getsockname()) for _ in range(2)]
        queued(listener, 2)
        accepted, _ = listener.accept()
        assert listen_queue(listener) == 1
        for connection in [accepted, *clients]:
            connection.close()
    first, second = socket.socketpair()
    with first, second:
        assert listen_queue(first) is None  # cannot tell: the worker does not answer inline


def test_a_connection_with_unread_bytes_is_not_closed_at_once():
    server, client = socket.socketpair()
    with server, client:
        server.settimeout(5)  # as the request's body reader leaves it: the check must still not wait
        started = time.monotonic()
        assert nothing_unread(server)
        assert time.monotonic() - started < 1
        client.sendall(b"left over")
        assert not nothing_unread(server)
        server.setblocking(True)
        server.recv(64)
        client.shutdown(socket.SHUT_WR)
        assert nothing_unread(server)


class Recorded(ScoringWorker):
    """A worker whose request handling and thread pool only record what they were given."""

    def __init__(self) -> None:
        config = Config()
        super().__init__(0, os.getpid(), [], None, 30, config, Logger(config))
        self.handled_in: list[threading.Thread] = []
        self.queued: list[TConn] = []

    def handle(self, connection: TConn) -> bool:
        self.handled_in.append(threading.current_thread())
        connection.sock.setblocking(True)
        connection.sock.recv(INLINE_BYTES)  # the whole request, as gunicorn reads it
        connection.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        return False

    def enqueue_req(self, connection: TConn) -> None:
        self.queued.append(connection)


def sent_to(listener: socket.socket, data: bytes) -> socket.socket:
    client = socket.create_connection(listener.getsockname(), timeout=5)
    client.sendall(data)
    return client


def test_an_idle_worker_answers_a_whole_small_request_in_its_main_thread_and_closes_it():
    worker = Recorded()
    with listening() as listener:
        client = sent_to(listener, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        queued(listener, 1)
        time.sleep(0.05)  # the request's bytes reach the server's socket
        started = time.monotonic()
        worker.accept(listener)
        assert time.monotonic() - started < 1  # closed at once, not after the client closes
        with client:
            assert client.recv(1024).startswith(b"HTTP/1.1 200")
            assert client.recv(1024) == b""  # closed
    assert worker.handled_in == [threading.current_thread()] and worker.queued == []
    assert worker.nr_conns == 0


@pytest.mark.parametrize("case", ["another connection waits", "the body is on its way", "a timeout is set"])
def test_otherwise_the_connection_goes_to_the_threads(case, monkeypatch):
    if case == "a timeout is set":
        monkeypatch.setenv("SCORING_TIMEOUT_MS", "5000")
    worker = Recorded()
    body = b"ab" if case == "the body is on its way" else b"abcde"
    request = HEADERS + b"Content-Length: 5\r\n\r\n" + body
    with listening() as listener:
        clients = [sent_to(listener, request) for _ in range(2 if case == "another connection waits" else 1)]
        queued(listener, len(clients))
        time.sleep(0.05)
        worker.accept(listener)
        for client in clients:
            client.close()
    assert worker.handled_in == [] and len(worker.queued) == 1
    assert worker.nr_conns == 1  # the threads' until gthread's finish_request
    worker.queued[0].close()


def test_the_access_line_is_formatted_only_when_it_is_written(monkeypatch):
    logger = ScoringLogger(Config())
    formatted = []
    monkeypatch.setattr(logger, "atoms", lambda *args: formatted.append(args) or {})
    monkeypatch.setattr(type(logger), "access_log_enabled", property(lambda self: True))
    logger.access_log.setLevel(logging.WARNING)  # as the server's logging.json sets it
    logger.access(None, None, {}, None)
    assert formatted == []
    logger.access_log.setLevel(logging.INFO)
    logger.access(None, None, {}, None)
    assert len(formatted) == 1
