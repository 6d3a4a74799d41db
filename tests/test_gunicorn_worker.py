"""What the scoring server's gunicorn worker asks before it answers a request in its main thread, and
its logger's access line, formatted only when written."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from gunicorn.config import Config

from mnist_mlops.serving.gunicorn_worker import (
    INLINE_BYTES,
    ScoringLogger,
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


def test_the_listen_queue_counts_connections_not_yet_accepted():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        assert listen_queue(listener) == 0
        clients = [socket.create_connection(listener.getsockname()) for _ in range(2)]
        assert listen_queue(listener) == 2
        accepted, _ = listener.accept()
        assert listen_queue(listener) == 1
        for connection in [accepted, *clients]:
            connection.close()
    unix, _ = socket.socketpair()
    with unix, _:
        assert listen_queue(unix) is None  # cannot tell: the worker does not answer inline


def test_a_connection_with_unread_bytes_is_not_closed_at_once():
    server, client = socket.socketpair()
    with server, client:
        assert nothing_unread(server)
        client.sendall(b"left over")
        assert not nothing_unread(server)
        server.recv(64)
        client.shutdown(socket.SHUT_WR)
        assert nothing_unread(server)


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
