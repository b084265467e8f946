"""Every setting of every role: its name, type, default and meaning, read from the environment.

This is the one module that reads ``os.environ``. Each role asks for its values here::

    from digits.settings import load
    settings = load()
    settings.REDIS_URL

``docs/configuration.md`` and ``.env.example`` are generated from the table below
(``python -m digits.settings docs`` / ``env``), and a test fails when they drift.

It is a small table of our own rather than pydantic-settings or environs: the API's
image gains no dependency, a bad value is reported with the variable's name in one line
(no validation traceback), and the same entries produce the docs and ``.env.example``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROLES = ("api", "worker", "trainer", "make up")
TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


class SettingsError(ValueError):
    """A variable holds a value its setting cannot take; the message names it."""


@dataclass(frozen=True)
class Setting:
    name: str
    kind: type  # str, int, float or bool
    default: object
    help: str
    roles: tuple[str, ...]
    minimum: float | None = None
    choices: tuple[str, ...] | None = None
    # Shown in the docs instead of the default when the default depends on the machine.
    shown: str | None = None

    def parse(self, raw: str):
        text = raw.strip()
        if self.kind is bool:
            if text.lower() in TRUE:
                return True
            if text.lower() in FALSE:
                return False
            raise SettingsError(f"{self.name} must be true or false (got {raw!r})")
        if self.kind in (int, float):
            try:
                value = self.kind(text)
            except ValueError:
                noun = "an integer" if self.kind is int else "a number"
                raise SettingsError(f"{self.name} must be {noun} (got {raw!r})") from None
            if self.minimum is not None and value < self.minimum:
                raise SettingsError(f"{self.name} must be at least {self.minimum} (got {raw!r})")
            return value
        if self.choices and text.upper() not in self.choices:
            raise SettingsError(f"{self.name} must be one of {', '.join(self.choices)} "
                                f"(got {raw!r})")
        return text.upper() if self.choices else raw

    def check(self, value):
        """A value given in code (an override): parsed if text, else type-checked."""
        if isinstance(value, str) and self.kind is not str:
            return self.parse(value)
        if self.kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not isinstance(value, self.kind) or (self.kind is int and isinstance(value, bool)):
            raise SettingsError(f"{self.name} must be {self.kind.__name__} (got {value!r})")
        return value

    @property
    def default_text(self) -> str:
        if self.shown is not None:
            return self.shown
        if isinstance(self.default, bool):
            return "true" if self.default else "false"
        return str(self.default)


A, W, T, U = ("api",), ("worker",), ("trainer",), ("make up",)
AW = ("api", "worker")
WT = ("worker", "trainer")

SETTINGS: tuple[Setting, ...] = (
    # -- shared ------------------------------------------------------------------------
    Setting("REDIS_URL", str, "redis://127.0.0.1:6379/0",
            "Redis, the broker and result backend; the trainer announces new current "
            "versions on it.", ("api", "worker", "trainer")),
    Setting("RESULT_EXPIRES", int, 120,
            "Seconds Redis keeps a task result nobody fetched.", AW, minimum=1),
    Setting("LOG_LEVEL", str, "INFO", "Log level of gunicorn and the Celery workers.",
            ("api", "worker", "trainer"),
            choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")),
    # -- API ---------------------------------------------------------------------------
    Setting("HOST", str, "0.0.0.0", "Interface gunicorn binds (`make up` uses 127.0.0.1).",
            A),
    Setting("PORT", int, 8000, "Port of the API and the page.", ("api", "make up"),
            minimum=0),
    Setting("WEB_CONCURRENCY", int, 2, "gunicorn worker processes (gthread).", A, minimum=1),
    Setting("GUNICORN_THREADS", int, 32, "Request threads per gunicorn process.", A,
            minimum=1),
    Setting("GRACEFUL_TIMEOUT", int, 8,
            "Seconds in-flight requests may take to finish after SIGTERM.", A, minimum=0),
    Setting("ACCESS_LOG", str, "",
            "gunicorn access log: empty for none, `-` for stdout, or a file path.", A),
    Setting("PREDICT_TIMEOUT", float, 5.0,
            "Seconds `/predict` waits for a worker before answering 504.", A, minimum=0.1),
    Setting("HEDGE_AFTER", float, 1.0,
            "Seconds without an answer before the same task is sent once more.", A,
            minimum=0.05),
    Setting("COALESCE", bool, True,
            "Concurrent requests in one API process travel as one task.", A),
    Setting("COALESCE_MAX", int, 64,
            "Most images in one task (requests coalesced, or one request cut in parts).", A,
            minimum=1),
    Setting("COALESCE_WAIT_MS", float, 2.0,
            "Milliseconds a task waits for requests its process is still preprocessing.", A,
            minimum=0),
    Setting("DISPATCH_WINDOW", int, 1,
            "Tasks one API process keeps in flight; requests arriving meanwhile travel in "
            "the next one.", A, minimum=1),
    Setting("MAX_CONTENT_LENGTH", int, 2 * 1024 * 1024,
            "Largest request body in bytes (413 above it).", A, minimum=1024),
    Setting("MAX_IMAGE_PIXELS", int, 4_000_000,
            "Largest decoded image, width x height (413 above it).", A, minimum=784),
    Setting("NOT_A_DIGIT_THRESHOLD", float, 0.5,
            "`/predict` answers `is_digit: false` when the model's `not_a_digit` score is "
            "at or over this (over 1: never). The default refuses under 1% of real digits "
            "(docs/model.md).", A, minimum=0.0),
    Setting("MAX_DIGITS", int, 12,
            "Most digits `POST /predict/number` reads in one drawing (422 `too_many_digits` "
            "above it).", A, minimum=1),
    Setting("BATCH_MAX_IMAGES", int, 64,
            "Most images in one `POST /predict/batch` (413 above it); the body must also "
            "fit MAX_CONTENT_LENGTH.", A, minimum=1),
    Setting("RATE_LIMIT", str, "",
            "Rate limit of `/predict` and `/predict/batch` (a batch is one request) per client "
            "address in flask-limiter syntax, e.g. "
            "`50/second;1000/minute`. Empty: off.", A),
    Setting("CORS_ORIGINS", str, "",
            "Comma-separated origins allowed to call the API from other sites. Empty: none.",
            A),
    Setting("TRUSTED_PROXIES", int, 0,
            "Proxies in front that set X-Forwarded-For (0: use the peer address).", A,
            minimum=0),
    Setting("WEB_DIR", str, str(ROOT / "web"), "Folder of the page served at `/`.", A,
            shown="`web/` of the checkout"),
    Setting("PROMETHEUS_MULTIPROC_DIR", str, "",
            "Folder of prometheus-client's multiprocess files. Empty: a new temporary "
            "folder per server run.", A),
    # -- workers -----------------------------------------------------------------------
    Setting("WORKER_THREADS", int, 8, "Threads per worker (Celery threads pool).", W,
            minimum=1),
    Setting("WORKER_PREFETCH", int, 2, "Celery prefetch multiplier.", W, minimum=1),
    Setting("BATCH_MAX", int, 128, "Most images in one model call.", W, minimum=1),
    Setting("BATCH_WAIT_MS", float, 2.0, "Milliseconds a micro-batch waits to fill.", W,
            minimum=0),
    Setting("MODEL_POLL_SECONDS", float, 0.5,
            "How often a worker checks the store for a new current version.", W,
            minimum=0.05),
    Setting("WORKER_DRAIN_SECONDS", float, 2.5,
            "After SIGTERM, seconds a worker keeps taking tasks before it stops.", W,
            minimum=0),
    Setting("TF_NUM_INTRAOP_THREADS", int, 1, "TensorFlow intra-op threads of a worker.", W,
            minimum=1),
    Setting("TF_NUM_INTEROP_THREADS", int, 1, "TensorFlow inter-op threads of a worker.", W,
            minimum=1),
    Setting("WORKER_ALIVE_DIR", str, tempfile.gettempdir(),
            "Folder of the alive files that `python -m worker.probe` checks.", W,
            shown="the system temporary folder"),
    # -- model store -------------------------------------------------------------------
    Setting("MODEL_DIR", str, str(ROOT / "var" / "models"),
            "Root of the folder model store (when MODEL_STORE is empty).", WT,
            shown="`var/models` of the checkout"),
    Setting("MODEL_NAME", str, "digits",
            "Versions live in `<store>/$MODEL_NAME/<n>/`.", WT),
    Setting("MODEL_STORE", str, "",
            "Where versions live: a folder (`file://` optional) or `s3://bucket/prefix` "
            "on any S3-compatible server (docs/registry.md). Wins over MODEL_DIR. "
            "Empty: MODEL_DIR.", WT + U),
    Setting("MODEL_CACHE", str, str(ROOT / "var" / "model-cache"),
            "Folder where versions fetched from an S3 store are kept and verified.", WT,
            shown="`var/model-cache` of the checkout"),
    Setting("AWS_ENDPOINT_URL", str, "",
            "S3 endpoint of an S3-compatible server, e.g. `http://minio:9000`. Empty: AWS.",
            WT),
    Setting("AWS_ACCESS_KEY_ID", str, "",
            "Access key of the S3 store. Empty: boto3's own chain (instance role, ~/.aws).",
            WT),
    Setting("AWS_SECRET_ACCESS_KEY", str, "", "Secret key of the S3 store.", WT),
    Setting("AWS_REGION", str, "us-east-1", "Region of the S3 store.", WT),
    # -- trainer -----------------------------------------------------------------------
    Setting("TRAINER_THREADS", int, 0,
            "TensorFlow intra-op threads of the trainer (0: one per core).", T, minimum=0),
    Setting("MNIST_DIR", str, str(ROOT.parent / "shared" / "data" / "mnist"),
            "Folder of the MNIST IDX files (compose mounts it into the trainer).",
            ("trainer", "make up"), shown="`../shared/data/mnist` beside the checkout"),
    # -- feedback and fine-tuning (docs/feedback.md) -----------------------------------
    Setting("DATABASE_URL", str, "sqlite:///" + str(ROOT / "var" / "feedback.db"),
            "Feedback database: `sqlite:///path` (WAL) or "
            "`postgresql://user:password@host:5432/db` (psycopg 3).", ("api", "trainer"),
            shown="SQLite in `var/feedback.db` of the checkout"),
    Setting("FEEDBACK_RATE_LIMIT", str, "3/second;600/hour",
            "Rate limit of `POST /feedback` per client address (flask-limiter syntax). "
            "Empty: off.", A),
    Setting("FEEDBACK_MAX_IMAGE_BYTES", int, 256 * 1024,
            "Largest original image `POST /feedback` keeps, in bytes (413 above it).", A,
            minimum=1024),
    Setting("FEEDBACK_SALT", str, "",
            "Salt of the client-address hashes. Empty: a random salt the first migration "
            "stores in the database.", A),
    Setting("FEEDBACK_HOLDOUT_PERCENT", int, 20,
            "Percent of feedback rows (chosen by a hash of the id) kept out of training "
            "for the gate.", T, minimum=1),
    Setting("FEEDBACK_CLIENT_SHARE", float, 0.1,
            "Largest share of a fine-tune's feedback one client may supply (1: no cap).", T,
            minimum=0.001),
    Setting("FINETUNE_AFTER", int, 500,
            "New labels that make `python -m trainer watch` fine-tune.", T, minimum=1),
    Setting("WATCH_POLL_SECONDS", float, 60.0,
            "How often `python -m trainer watch` counts new labels.", T, minimum=0.1),
    # -- make up -----------------------------------------------------------------------
    Setting("WORKERS", int, 2, "Worker processes `make up` starts (compose: `--scale`).", U,
            minimum=0),
)

BY_NAME = {s.name: s for s in SETTINGS}


class Settings:
    """Resolved values, by variable name: ``settings.REDIS_URL``."""

    def __init__(self, values: dict):
        object.__setattr__(self, "_values", values)

    def __getattr__(self, name: str):
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"no setting named {name}") from None

    def __setattr__(self, name, value):
        raise AttributeError("settings are read-only")

    def __getitem__(self, name: str):
        return self._values[name]

    def as_dict(self) -> dict:
        return dict(self._values)


def load(overrides: dict | None = None, environ=None) -> Settings:
    """Every setting from ``environ`` (default: this process's environment), defaults for
    the unset ones, then ``overrides``. Raises SettingsError naming each bad variable."""
    env = os.environ if environ is None else environ
    values, errors = {}, []
    for setting in SETTINGS:
        raw = env.get(setting.name)
        try:
            if raw is None or (raw.strip() == "" and setting.kind is not str):
                values[setting.name] = setting.default
            else:
                values[setting.name] = setting.parse(raw)
        except SettingsError as exc:
            errors.append(str(exc))
    for name, value in (overrides or {}).items():
        if name not in BY_NAME:
            errors.append(f"{name} is not a setting")
            continue
        try:
            values[name] = BY_NAME[name].check(value)
        except SettingsError as exc:
            errors.append(str(exc))
    if errors:
        raise SettingsError("; ".join(errors))
    return Settings(values)


def is_set(name: str, environ=None) -> bool:
    """Whether the environment gives ``name`` a value (rather than leaving the default)."""
    return bool((os.environ if environ is None else environ).get(name, "").strip())


def load_or_exit(overrides: dict | None = None) -> Settings:
    """For entry points: a bad value ends the process with one plain line, exit code 2."""
    try:
        return load(overrides)
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


# -- what the processes themselves pass on through the environment ------------------------
def prometheus_dir(settings: Settings) -> tuple[str, bool]:
    """prometheus-client's multiprocess folder, exported for the library (it reads the
    variable at import). Returns (folder, made here: remove it on exit)."""
    folder = settings.PROMETHEUS_MULTIPROC_DIR or os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    own = not folder
    if own:
        folder = tempfile.mkdtemp(prefix="digits-prom-")
    os.makedirs(folder, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    return folder, own


def quiet_tensorflow() -> None:
    """TensorFlow's C++ INFO and WARNING lines, before it is imported (it reads the
    variable at import)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def child_environment(**values) -> dict:
    """This process's environment plus ``values``, for a child process."""
    env = dict(os.environ)
    env.update({k: str(v) for k, v in values.items()})
    return env


# -- generated documents ----------------------------------------------------------------------
DOCS_FILE = ROOT / "docs" / "configuration.md"
ENV_FILE = ROOT / ".env.example"
DOCS_BEGIN = "<!-- settings table: generated by `python -m digits.settings docs` -->"
DOCS_END = "<!-- end of settings table -->"


def markdown_table() -> str:
    rows = ["| Variable | Default | Used by | Meaning |", "|---|---|---|---|"]
    for s in SETTINGS:
        default = s.default_text
        if s.shown is None:
            default = f"`{default}`" if default else "empty"
        rows.append(f"| `{s.name}` | {default} | {', '.join(s.roles)} | {s.help} |")
    return "\n".join(rows)


def env_example() -> str:
    lines = [
        "# Every setting with its default (generated by `python -m digits.settings env`).",
        "# Compose: `cp .env.example .env`, uncomment and edit what you change; compose",
        "# passes .env to every service. Local runs: export the variables you change.",
    ]
    for s in SETTINGS:
        lines += ["", f"# {s.help} ({', '.join(s.roles)})"]
        lines.append(f"# {s.name}={'' if s.shown else s.default_text}"
                     + (f"  # default: {s.shown.replace('`', '')}" if s.shown else ""))
    return "\n".join(lines) + "\n"


def docs_with_table(text: str) -> str:
    head, rest = text.split(DOCS_BEGIN, 1)
    _, tail = rest.split(DOCS_END, 1)
    return f"{head}{DOCS_BEGIN}\n{markdown_table()}\n{DOCS_END}{tail}"


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["env"]:
        ENV_FILE.write_text(env_example())
    elif args == ["docs"]:
        DOCS_FILE.write_text(docs_with_table(DOCS_FILE.read_text()))
    elif args == ["check"]:
        load_or_exit()
        print("settings: ok")
    else:
        print("usage: python -m digits.settings env|docs|check", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
