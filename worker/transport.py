"""kombu's Redis transport, minus one way to stop a worker.

A queue entry that is not a kombu message (not JSON, or fields missing) raised out
of kombu's read and ended the worker: Celery treats errors there as unrecoverable.
Only the API writes the queue, but another client, a version skew or a bug could
push one. Such an entry is logged and dropped, and the worker reads on. Entries that
are kombu messages but not tasks Celery can run are Celery's to reject, and it does.
"""

from __future__ import annotations

import logging
from queue import Empty

from kombu.transport import redis as kombu_redis

log = logging.getLogger("worker.transport")


class Channel(kombu_redis.Channel):
    def _brpop_read(self, **options):
        try:
            return super()._brpop_read(**options)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.error("dropped a queue entry that is not a task message: %s: %s",
                      type(exc).__name__, exc)
            raise Empty() from None  # as if nothing had arrived: read the next one


class Transport(kombu_redis.Transport):
    Channel = Channel
