"""The gunicorn worker and logger the scoring server runs: gunicorn's threaded worker (`gthread`), with
two changes that keep a request's time near what scoring it costs, and an access log that costs nothing
while it is off.

Idle first: every gthread worker watches the one listening socket, and whichever calls accept() first
takes the connection, busy or not. With two workers and two clients sending batches, a third of the
time both requests sat in one worker, one scored and one waiting its turn, while the other worker had
nothing to do (measured from the request log). A worker with a request in hand waits
ACCEPT_DEFER_SECONDS before it accepts: an idle worker, woken by the same connection, takes it
meanwhile, and when every worker is busy the connection is accepted a moment later and queued as
before (`AdmissionGate`).

Inline when idle: gthread hands each connection from its main thread to a pool thread, and back to
close it: thread switches that cost a single-PNG request about a fifth of its time (against gunicorn's
sync worker, measured side by side). A worker with no connection in hand that accepts one whose whole
request is already in the socket (at most INLINE_BYTES, headers and body), while no other connection
waits in the listen queue, answers it in its main thread, as the sync worker would. Reading it cannot
wait on the client, and its answer is small (sending it gives up after INLINE_SEND_SECONDS), so the
main thread is held only for the request's own time; a connection that arrives meanwhile waits in the
listen queue (an idle worker takes it first) for at most that long. The connection is then closed at
once when the client sent nothing more (gunicorn's graceful close would hold the main thread until the
client closes too), else gracefully. Anything else goes to the threads as before: a body still on its
way, a large one, a busy worker, or a queue, where the admission gate queues or sheds it with 503. So
does every request when SCORING_TIMEOUT_MS is set: azmlinfsrv arms that timeout (SIGALRM) only in a
process's main thread, so answering inline would apply it to some requests and not others; gunicorn
with TLS too, whose handshake would run in the main thread.

Imports nothing heavy: gunicorn's master loads these classes before it forks the workers.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import struct
import time
from concurrent import futures
from datetime import timedelta
from typing import Any

from gunicorn.glogging import Logger
from gunicorn.workers.gthread import TConn, ThreadWorker

ACCEPT_DEFER_SECONDS = 0.001
INLINE_BYTES = 64 * 1024
"""The largest request a worker answers in its main thread: one image, or a batch of a couple of
hundred MNIST PNGs."""
INLINE_SEND_SECONDS = 10
"""How long the main thread may wait to send an inline answer to a client that does not read it."""
SCORING_TIMEOUT_VARIABLE = "SCORING_TIMEOUT_MS"
_LISTEN_QUEUE = struct.Struct("=I")
"""`tcp_info.tcpi_unacked`, which a listening socket's TCP_INFO fills with its accept queue's length."""
_LISTEN_QUEUE_OFFSET = 24


class ScoringWorker(ThreadWorker):
    """gthread, idle first and answering small requests inline when idle (see the module's text)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.answers_inline = not self.cfg.is_ssl and SCORING_TIMEOUT_VARIABLE not in os.environ

    def accept(self, listener: socket.socket) -> None:
        from mnist_mlops.serving.scorer import requests_in_process  # loaded with the app by then

        busy = requests_in_process()
        if busy:
            time.sleep(ACCEPT_DEFER_SECONDS)
        if busy or self.nr_conns or not self.answers_inline:
            super().accept(listener)
            return
        try:
            client, address = listener.accept()
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return  # another worker took it
        self.nr_conns += 1
        connection = TConn(self.cfg, client, address, listener.getsockname())  # leaves it non-blocking
        if listen_queue(listener) != 0 or not whole_request_buffered(client):
            self.enqueue_req(connection)
            return
        client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", INLINE_SEND_SECONDS, 0))
        connection.data_ready = True  # gthread's wait for the first bytes: they are here
        keep_alive = self.handle(connection)
        if keep_alive:  # back to the poller, as gthread does (the server runs with keep-alive off)
            answered: futures.Future = futures.Future()
            answered.set_result(keep_alive)
            self.finish_request(connection, answered)
            return
        self.nr_conns -= 1
        connection.close(graceful=not nothing_unread(client))


def listen_queue(listener: socket.socket) -> int | None:
    """Connections waiting in `listener`'s accept queue (Linux TCP); None when it cannot tell."""
    try:
        info = listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _LISTEN_QUEUE_OFFSET + 4)
    except (OSError, AttributeError):  # not TCP, or no TCP_INFO on this system
        return None
    if len(info) < _LISTEN_QUEUE_OFFSET + 4:
        return None
    return _LISTEN_QUEUE.unpack_from(info, _LISTEN_QUEUE_OFFSET)[0]


def whole_request_buffered(connection: socket.socket) -> bool:
    """Whether exactly one whole HTTP/1 request of at most INLINE_BYTES, its headers and the body its
    one Content-Length announces (never a chunked one), is in the socket's receive buffer already."""
    try:
        head = connection.recv(INLINE_BYTES + 1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except OSError:  # nothing yet (EAGAIN), or a connection already gone
        return False
    end = head.find(b"\r\n\r\n")
    if end < 0 or len(head) > INLINE_BYTES:
        return False
    lengths = []
    for line in head[:end].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"transfer-encoding":
            return False
        if name == b"content-length":
            lengths.append(value.strip())
    if len(lengths) > 1 or not all(length.isdigit() for length in lengths):
        return False
    return len(head) == end + 4 + (int(lengths[0]) if lengths else 0)


def nothing_unread(connection: socket.socket) -> bool:
    """Whether the socket holds no byte the server has not read: closing it with unread bytes makes the
    kernel reset the connection, which can cost the client the answer it was sent. Leaves the socket
    non-blocking (it must not wait: the request's body reader may have set a timeout on it)."""
    connection.setblocking(False)
    try:
        return not connection.recv(1, socket.MSG_PEEK)  # b"": the client closed
    except BlockingIOError:
        return True
    except OSError:  # already reset or gone: nothing to lose
        return True


class ScoringLogger(Logger):
    """gunicorn's logger, formatting a request's access line only when the access logger writes it:
    the server's `logging.json` sets it to WARNING, and gunicorn formats the line before it asks."""

    def access(self, resp: object, req: object, environ: dict, request_time: timedelta) -> None:
        if self.access_log.isEnabledFor(logging.INFO):
            super().access(resp, req, environ, request_time)
