"""A gunicorn threaded worker that leaves a new connection to an idle worker while it is scoring.

Every gthread worker watches the one listening socket, and whichever calls accept() first takes the
connection, busy or not. With two workers and two clients sending batches, a third of the time both
requests sat in one worker, one scored and one waiting its turn, while the other worker had nothing to
do (measured from the request log). A worker with a request in hand now waits ACCEPT_DEFER_SECONDS
before it accepts: an idle worker, woken by the same connection, takes it meanwhile, and when every
worker is busy the connection is accepted a moment later and queued as before (`AdmissionGate`).
Imports nothing heavy: gunicorn's master loads this class before it forks the workers.
"""

from __future__ import annotations

import socket
import time

from gunicorn.workers.gthread import ThreadWorker

ACCEPT_DEFER_SECONDS = 0.001


class IdleFirstWorker(ThreadWorker):
    def accept(self, listener: socket.socket) -> None:
        from mnist_mlops.serving.scorer import requests_in_process  # loaded with the app by then

        if requests_in_process():
            time.sleep(ACCEPT_DEFER_SECONDS)
        super().accept(listener)
