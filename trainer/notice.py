"""After the trainer moves a store's pointer, it tells the workers on Redis.

The notice is only a nudge: the pointer in the store is the truth, and a worker that
misses the notice (Redis down, not yet subscribed) finds the new version by polling.
So a notice that cannot be sent is a warning, never a failed command.
"""

from __future__ import annotations

import sys

from digits.protocol import MODEL_CHANNEL, model_notice
from models.store import Store


def announce(store: Store, redis_url: str, say=print):
    """``store.on_pointer_moved``: publish the new current version on MODEL_CHANNEL."""
    import redis

    def moved(pointer: dict) -> None:
        try:
            client = redis.Redis.from_url(redis_url, socket_timeout=2,
                                          socket_connect_timeout=2)
            try:
                heard = client.publish(
                    MODEL_CHANNEL, model_notice(store.location, store.name, pointer["version"]))
            finally:
                client.close()
        except redis.RedisError as exc:
            say(f"warning: could not tell the workers on Redis ({exc}); they find "
                f"version {pointer['version']} when they next poll the store", file=sys.stderr)
            return
        say(f"told {heard} worker(s) on {MODEL_CHANNEL} that version {pointer['version']} "
            "is current", flush=True)

    return moved
