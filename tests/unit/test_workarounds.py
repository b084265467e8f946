"""Guards for the code that works around Celery and kombu behaviour.

Each workaround names the version it was written for. An upgrade fails here with
"<package> X.Y: check whether <workaround> is still needed", so the workaround is
re-examined rather than carried on forever. Where the upstream behaviour can be
checked without servers, it is checked too: that test fails when upstream changes,
even without a version bump. tests/integration/test_workarounds.py checks the
behaviour that needs a real Redis.
"""

from __future__ import annotations

import inspect
from importlib.metadata import version

import pytest
from celery.worker import consumer as celery_consumer
from kombu import Connection
from kombu.common import ignore_errors
from kombu.transport import redis as kombu_redis

# (package, version written for, workaround: where it lives)
WORKAROUNDS = [
    ("celery", "5.7.0", "worker.app.Consumer.on_connection_error_after_connected "
                        "(cleanup after a lost broker raising AttributeError)"),
    ("celery", "5.7.0", "worker.app.Consumer.ensure_connected "
                        "(reconnect intervals Celery does not expose)"),
    ("kombu", "5.7.0", "worker.app.Consumer.ensure_connected "
                       "(kombu's 2-30 s reconnect back-off)"),
    ("kombu", "5.7.0", "worker/transport.py (a non-message queue entry ends the worker)"),
    ("celery", "5.7.0", "digits.protocol.task_message (the API writes kombu's envelope "
                        "itself; tests/integration/test_protocol.py compares it)"),
    ("kombu", "5.7.0", "digits.protocol.task_message (kombu's Redis envelope)"),
    ("celery", "5.7.0", "api/dispatch.py's result listener (the Redis backend PUBLISHes "
                        "each result on its key)"),
    ("celery", "5.7.0", "worker.app._drain_on_sigterm (wraps Celery's SIGTERM handler; "
                        "Celery has no drain setting)"),
]


def _major_minor(text: str) -> str:
    return ".".join(text.split(".")[:2])


@pytest.mark.parametrize("package, written_for, workaround", WORKAROUNDS)
def test_workaround_is_for_the_installed_version(package, written_for, workaround):
    installed = version(package)
    assert _major_minor(installed) == _major_minor(written_for), (
        f"{package} {_major_minor(installed)}: check whether {workaround} is still needed "
        f"(written for {package} {written_for}), then update WORKAROUNDS here")


def test_lost_broker_cleanup_still_closes_after_collect():
    """worker.app.Consumer: Celery closes the connection after collect() dropped its
    transport, and the close runs under kombu's ignore_errors, which lets anything but
    connection and channel errors through (AttributeError included)."""
    source = inspect.getsource(celery_consumer.Consumer.on_connection_error_after_connected)
    assert "self.connection.collect(" in source and "connection.close" in source, (
        "celery: Consumer.on_connection_error_after_connected changed: check whether "
        "worker.app.Consumer.on_connection_error_after_connected is still needed")
    conn = Connection("redis://127.0.0.1:1/0")  # never connects: only its error classes

    def fails():
        raise AttributeError("'NoneType' object has no attribute 'client'")

    with pytest.raises(AttributeError):
        ignore_errors(conn, fails)


def test_reconnect_intervals_are_still_kombus_defaults():
    """worker.app.Consumer.ensure_connected: Celery passes no intervals to kombu's
    ensure_connection, whose defaults back off 2, 4, 6... up to 30 s."""
    celery_source = inspect.getsource(celery_consumer.Consumer.ensure_connected)
    assert not any(f"interval_{k}" in celery_source for k in ("start", "step", "max")), (
        "celery: Consumer.ensure_connected now passes reconnect intervals: check whether "
        "worker.app.Consumer.ensure_connected is still needed (a setting may exist now)")
    params = inspect.signature(Connection._ensure_connection).parameters
    defaults = {name: params[name].default
                for name in ("interval_start", "interval_step", "interval_max")}
    assert defaults == {"interval_start": 2, "interval_step": 2, "interval_max": 30}, (
        f"kombu: ensure_connection's back-off is now {defaults}: check whether "
        "worker.app.Consumer.ensure_connected is still needed")


def test_kombu_redis_channel_still_has_the_hooks_we_use():
    """worker/transport.py overrides Channel._brpop_read; protocol.celery_config turns
    ack emulation off. Both must still exist under these names."""
    assert callable(getattr(kombu_redis.Channel, "_brpop_read", None)), (
        "kombu: redis Channel._brpop_read is gone: worker/transport.py overrides nothing")
    assert "ack_emulation" in kombu_redis.Channel.from_transport_options, (
        "kombu: the Redis transport option ack_emulation is gone: check "
        "digits.protocol.celery_config's broker_transport_options")


def test_celery_still_installs_its_sigterm_handler_where_the_drain_wraps_it():
    """worker.app._drain_on_sigterm reads and replaces platforms.signals["SIGTERM"]."""
    from celery import platforms
    from celery.apps import worker as celery_worker

    assert callable(getattr(platforms.signals, "__getitem__", None)) and callable(
        getattr(platforms.signals, "__setitem__", None))
    assert "install_worker_term_handler" in inspect.getsource(celery_worker), (
        "celery: the worker's SIGTERM handler moved: check whether "
        "worker.app._drain_on_sigterm still wraps it (or a drain setting now exists)")
