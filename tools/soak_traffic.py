"""The soak's clients: ~85% valid canvas drawings (with their labels), ~10% bad inputs,
~5% probes, each client on its own keep-alive session, every request recorded."""

from __future__ import annotations

import base64
import io
import json
import random
import time
from dataclasses import dataclass

import requests

from tools.load import Clients, image_body

CLIENT_TIMEOUT = 30.0  # the clients give up here (a hang)
PROBES = ("/ready", "/health", "/metrics")


@dataclass(slots=True)
class Rec:
    t: float  # seconds since the load started, when the request was sent
    kind: str  # "valid" | "bad:<name>" | "probe:<path>"
    status: int | None  # None: no HTTP answer
    latency: float  # seconds
    code: str = ""  # the error code, or the exception's name when there was no answer
    detail: str = ""
    label: int | None = None
    digit: int | None = None
    version: int | None = None
    shape_ok: bool = True  # an error body in the API's JSON shape
    after: str = ""  # the previous request on this client's keep-alive session
    cls: str = ""
    reason: str = ""
    fault: int | None = None  # index of the fault that explains it


def _png(mode: str, size: tuple[int, int], colour) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, size, colour).save(buf, "PNG")
    return buf.getvalue()


def bad_inputs(max_content_length: int) -> dict[str, tuple[str, bytes | None, int, str]]:
    """name -> (method, body, expected status, expected error code); all to /predict."""
    b64 = base64.b64encode
    blank = "data:image/png;base64," + b64(_png("RGBA", (280, 280), (0, 0, 0, 0))).decode()
    return {
        "invalid_base64": ("POST", image_body("this is *not* base64!"), 400, "invalid_base64"),
        "not_json": ("POST", b'{"image": this is not JSON', 400, "invalid_json"),
        "blank_canvas": ("POST", image_body(blank), 422, "blank_image"),
        "non_image": (
            "POST",
            image_body(b64(b"hello, I am not an image at all").decode()),
            400,
            "invalid_image",
        ),
        "oversized_json": (
            "POST",
            b'{"image": "' + b"A" * (max_content_length + 100) + b'"}',
            413,
            "request_entity_too_large",
        ),
        "get_predict": ("GET", None, 405, "method_not_allowed"),
    }


class Traffic:
    """``n`` clients against ``url`` from ``t0`` (monotonic) on; ``records`` fills as
    requests finish. ``valid``: [(body, label)]; ``bad``: as bad_inputs()."""

    def __init__(self, url: str, valid: list, bad: dict, n: int, t0: float, seed: int = 0,
                 think: float = 0.0):
        self.url, self.valid, self.bad, self.t0, self.seed = url, valid, bad, t0, seed
        self.clients = Clients(n, self.sender, pause=lambda rec: think)

    @property
    def records(self) -> list[Rec]:
        return self.clients.records

    def sender(self, index: int):
        """Client ``index``'s sender: its own random mix, and what it sent last."""
        rng = random.Random(self.seed * 1000 + index)
        json_headers = {"Content-Type": "application/json"}
        bad_names = sorted(self.bad)
        previous = ""

        def one(session) -> Rec:
            nonlocal previous
            roll = rng.random()
            if roll < 0.85:
                body, label = self.valid[rng.randrange(len(self.valid))]
                rec = self.send(session, "valid", "POST", "/predict", body, json_headers)
                rec.label = label
            elif roll < 0.95:
                name = rng.choice(bad_names)
                method, body, _, _ = self.bad[name]
                rec = self.send(session, f"bad:{name}", method, "/predict", body,
                                json_headers if body is not None else {})
            else:
                path = rng.choice(PROBES)
                rec = self.send(session, f"probe:{path}", "GET", path, None, {})
            rec.after = previous
            previous = f"{rec.kind} {rec.status}"
            return rec

        return one

    def send(self, session, kind, method, path, body, headers) -> Rec:
        started = time.monotonic()
        t = started - self.t0
        try:
            r = session.request(method, self.url + path, data=body, headers=headers,
                                timeout=CLIENT_TIMEOUT)
            content = r.content
        except requests.Timeout as exc:
            return Rec(t, kind, None, time.monotonic() - started, "client_timeout", repr(exc)[:300])
        except requests.RequestException as exc:
            return Rec(
                t, kind, None, time.monotonic() - started, type(exc).__name__, repr(exc)[:300]
            )
        rec = Rec(t, kind, r.status_code, time.monotonic() - started)
        if kind.startswith("probe:") and r.status_code == 200:
            return rec
        try:
            data = json.loads(content)
        except ValueError:
            data = None
        if r.status_code == 200:
            if kind == "valid":
                if isinstance(data, dict) and isinstance(data.get("digit"), int):
                    rec.digit, rec.version = data["digit"], data.get("model_version")
                else:
                    rec.shape_ok, rec.detail = False, content[:300].decode(errors="replace")
            return rec
        error = data.get("error") if isinstance(data, dict) else None
        content_type = (r.headers.get("Content-Type") or "").split(";")[0].strip()
        if (
            content_type == "application/json"
            and isinstance(error, dict)
            and isinstance(error.get("code"), str)
            and isinstance(error.get("message"), str)
        ):
            rec.code, rec.detail = error["code"], error["message"][:300]
        else:
            rec.shape_ok = False
            rec.detail = f"{content_type}: {content[:300].decode(errors='replace')}"
        return rec
