"""Configuration: defaults here, overridden by environment variables of the same name.

The README's configuration table lists each one; tests check that every variable
docker-compose.yml sets is read here or by the worker.
"""

from __future__ import annotations

import os

DEFAULTS = {
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    # Seconds /predict waits for a worker before answering 504.
    "PREDICT_TIMEOUT": 5.0,
    # Seconds without an answer before the same task is sent once more (a hedge:
    # predictions are idempotent, and the first answer wins).
    "HEDGE_AFTER": 1.0,
    # Concurrent requests in one API process travel as one task (up to COALESCE_MAX).
    "COALESCE": True,
    "COALESCE_MAX": 64,
    # Milliseconds a freed window waits for requests still being preprocessed in
    # this process before sending the next task (never at concurrency 1).
    "COALESCE_WAIT_MS": 2.0,
    # Tasks one API process keeps in flight; requests arriving meanwhile queue and
    # travel together in the next task.
    "DISPATCH_WINDOW": 1,
    "MAX_CONTENT_LENGTH": 2 * 1024 * 1024,
    "MAX_IMAGE_PIXELS": 4_000_000,
    # flask-limiter syntax, per client address, e.g. "50/second;1000/minute". Empty: off.
    "RATE_LIMIT": "",
    # Comma-separated origins allowed to call the API from other sites. Empty: none.
    "CORS_ORIGINS": "",
    # How many proxies in front set X-Forwarded-For (for rate limiting by client).
    "TRUSTED_PROXIES": 0,
    # Where the page lives (served at /).
    "WEB_DIR": os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "web"),
}


def _coerce(default, raw: str):
    if isinstance(default, bool):
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    return raw


def from_env(overrides: dict | None = None) -> dict:
    config = {}
    for key, default in DEFAULTS.items():
        raw = os.environ.get(key)
        config[key] = default if raw is None else _coerce(default, raw)
    config.update(overrides or {})
    return config
