"""kombu's Redis transport, minus one way to stop a worker.

Workaround for kombu 5.7.0: ``kombu.transport.redis.Channel._brpop_read`` parses a
queue entry with no guard, so one that is not a kombu message (not JSON, or fields
missing) raises out of the read, and Celery treats errors there as unrecoverable:
the worker exits. The same failure is reported as celery/celery#1113 (Redis
transport, closed) and celery/kombu#2421 (SQS transport, open). Only the API writes the
queue, but another client, a version skew or a bug could push one. Such an entry
is logged and dropped, and the worker reads on. Entries that are kombu messages but
not tasks Celery can run are Celery's to reject, and it does.
tests/integration/test_workarounds.py fails once kombu stops raising on such an
entry; tests/unit/test_workarounds.py once kombu moves on from 5.7.
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
