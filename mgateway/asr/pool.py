# -*- test-case-name: tests.test_asr,tests.test_scheduler -*-
"""
The threads that run Vosk: model loading and decoding, off the reactor.
"""

from __future__ import annotations

from twisted.application.service import Service
from twisted.python.threadpool import ThreadPool


class ASRThreadPool(Service):
    """
    A fixed-size thread pool of its own, not the reactor's: decoding must not
    queue behind (or starve) DNS lookups and database calls, and Vosk scales
    with threads up to the number of cores because its C calls release the GIL.

    Work submitted before the service starts waits for it.

    @ivar threadpool: the L{ThreadPool} to hand to L{deferToThreadPool}.
    """

    def __init__(self, size: int):
        self.threadpool = ThreadPool(minthreads=size, maxthreads=size, name="asr")

    def startService(self):
        super().startService()
        self.threadpool.start()

    def stopService(self):
        """
        Blocks until the queued jobs ran and the threads exited: Twisted's
        pool finishes its queue before quitting. The gateway flushes every
        stream before stopping the pool, so the queue is empty and this is
        quick (a job is at most a few hundred milliseconds of decoding).
        """
        super().stopService()
        self.threadpool.stop()
