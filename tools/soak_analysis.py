"""What the soak makes of what it recorded: every request classified against the fault
windows, latency inside and outside them, accuracy, RSS growth per process, the
findings in the stack's logs; soak.json and its one-line summary."""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from dataclasses import asdict

from tools.procs import log_texts
from tools.soak_traffic import CLIENT_TIMEOUT, Rec

HANG_MARGIN = 2.0  # an answer slower than PREDICT_TIMEOUT + this is a hang
FAULT_GRACE = 2.0  # after a fault's recovery is confirmed, its errors may still arrive
# Which (status, error code) answers to a valid drawing each fault explains.
EXPECTED = {
    "kill9_worker": {(503, "no_workers"), (504, "timeout")},
    "sigterm_worker": {(503, "no_workers"), (504, "timeout")},
    "redis_restart": {(503, "broker_unavailable"), (503, "no_workers"), (504, "timeout")},
    "model_flip": {(504, "timeout")},
    "corrupt_model": {(504, "timeout")},
}
READY_503_FAULTS = {"kill9_worker", "sigterm_worker", "redis_restart"}
CLASSES = ("ok", "expected_fault", "unexplained_503_504", "unexpected")
LOG_PATTERNS = {
    "traceback": "Traceback",
    "error": " ERROR",
    "critical": "CRITICAL",
    "warning": " WARNING",
    "unhandled": "unhandled error",
    "worker_timeout": "WORKER TIMEOUT",
    "hedged": "sending it again",
    "model_rejected": "rejected model version",
    "cannot_start": "cannot start",
}


def pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def classify(soak, rec: Rec, windows: list[tuple[float, float, int, str]]) -> None:
    end = rec.t + rec.latency
    overlapping = [
        (i, kind) for start, stop, i, kind in windows if rec.t <= stop and end >= start
    ]

    def unexpected(reason: str) -> None:
        rec.cls, rec.reason = "unexpected", reason

    if rec.status is None:
        if rec.code == "client_timeout":
            return unexpected(f"hang: no answer within {CLIENT_TIMEOUT:.0f} s")
        if "RemoteDisconnected" in rec.detail and rec.after.endswith(" 413"):
            return unexpected(
                "connection closed without a response, right after a 413 on the same "
                "keep-alive connection"
            )
        return unexpected(f"connection error: {rec.detail[:200]}")
    if rec.latency > soak.hang_after:
        return unexpected(
            f"hang: {rec.status} after {rec.latency:.1f} s "
            f"(> PREDICT_TIMEOUT + {HANG_MARGIN:.0f} s)"
        )
    if not rec.shape_ok:
        return unexpected(f"{rec.status} without the API's JSON shape: {rec.detail[:200]}")
    group, _, name = rec.kind.partition(":")
    if group == "bad":
        _, _, status, code = soak.bad[name]
        if (rec.status, rec.code) == (status, code):
            rec.cls = "ok"
        else:
            unexpected(f"bad input {name}: {rec.status} {rec.code}, expected {status} {code}")
        return None
    if group == "probe":
        if rec.status == 200:
            rec.cls = "ok"
        elif name == "/ready" and rec.status == 503 and rec.code == "not_ready":
            explained = [i for i, kind in overlapping if kind in READY_503_FAULTS]
            if explained:
                rec.cls, rec.fault = "expected_fault", explained[0]
            else:
                rec.cls, rec.reason = "unexplained_503_504", "/ready 503 outside a fault"
        else:
            unexpected(f"{name}: {rec.status} {rec.code}")
        return None
    # a valid drawing
    if rec.status == 200:
        if rec.version in soak.corrupt_versions:
            return unexpected(f"answered by the rejected model version {rec.version}")
        rec.cls = "ok"
        return None
    if rec.status in (503, 504):
        explained = [i for i, kind in overlapping if (rec.status, rec.code) in EXPECTED[kind]]
        if explained:
            rec.cls, rec.fault = "expected_fault", explained[0]
        else:
            rec.cls = "unexplained_503_504"
            rec.reason = f"{rec.status} {rec.code} outside any fault that explains it"
        return None
    return unexpected(f"{rec.status} {rec.code}: {rec.detail[:200]}")


def analyse(soak, load_s, final, load_before, started_wall, interrupted):
    """soak.json (as a dict) and its summary, from everything the soak recorded."""
    args = soak.args
    recs = sorted(soak.records, key=lambda r: r.t)
    windows = [
        (f["start_s"], f["end_s"] + FAULT_GRACE, i, f["kind"])
        for i, f in enumerate(soak.faults)
    ]
    for rec in recs:
        classify(soak, rec, windows)

    def groups(rec):
        return rec.kind.partition(":")[0]

    by_class = {
        g: Counter(r.cls for r in recs if groups(r) == g) for g in ("valid", "bad", "probe")
    }
    by_kind = {}
    for rec in recs:
        row = by_kind.setdefault(rec.kind, Counter())
        row[rec.cls] += 1
    by_status = Counter(
        f"{groups(r)} {r.status if r.status is not None else 'no-answer'}"
        + (f" {r.code}" if r.code else "")
        for r in recs
    )
    valid = [r for r in recs if r.kind == "valid"]
    answered = [r for r in valid if r.status is not None]
    in_window = [
        r
        for r in answered
        if any(r.t <= stop and r.t + r.latency >= start for start, stop, _, _ in windows)
    ]
    in_ids = {id(r) for r in in_window}
    outside = [r for r in answered if id(r) not in in_ids]
    ok = [r for r in valid if r.cls == "ok"]
    correct = sum(r.digit == r.label for r in ok)

    def lat(rs):
        values = [r.latency for r in rs]
        return {
            "n": len(values),
            "p50_ms": ms(pct(values, 50)),
            "p90_ms": ms(pct(values, 90)),
            "p99_ms": ms(pct(values, 99)),
            "max_ms": ms(max(values, default=None)),
        }

    latency = {
        "valid_all": lat(answered),
        "valid_outside_faults": lat(outside),
        "valid_in_faults": lat(in_window),
        "valid_ok": lat(ok),
    }
    for fault_index, fault in enumerate(soak.faults):
        during = [
            r
            for r in valid
            if any(
                i == fault_index for s, e, i, _ in windows if r.t <= e and r.t + r.latency >= s
            )
        ]
        fault["valid_during"] = dict(
            Counter(
                f"{r.status if r.status is not None else 'no-answer'}"
                + (f" {r.code}" if r.code else "")
                for r in during
            )
        )
        fault["unexpected_during"] = sum(r.cls == "unexpected" for r in during)
        fault["non_200_examples"] = [
            {
                "t": round(r.t, 2),
                "status": r.status,
                "code": r.code,
                "latency_ms": ms(r.latency),
                "class": r.cls,
            }
            for r in during
            if r.status != 200
        ][:12]
    versions = Counter(str(r.version) for r in ok)
    errors_by_class = Counter()
    for g in by_class.values():
        for cls, n in g.items():
            if cls != "ok":
                errors_by_class[cls] += n
    unexpected_recs = [r for r in recs if r.cls == "unexpected"]
    unexpected_events = [e for e in soak.events if e.get("unexpected")]
    not_recovered = [
        f for f in soak.faults if not f.get("recovered") and not f.get("interrupted")
    ]
    unexplained = errors_by_class.get("unexplained_503_504", 0)
    unexpected_total = (
        len(unexpected_recs)
        + len(unexpected_events)
        + len(not_recovered)
        + len(soak.strays)
        + (unexplained if args.strict else 0)
    )
    rss = rss_report(soak)
    growth: dict[str, float] = {}
    for info in rss.values():
        if info["growth_mb"] is None:
            continue
        role = info["role"]
        growth[role] = max(growth.get(role, float("-inf")), info["growth_mb"])
    reasons = Counter(
        r.reason if r.reason.startswith("connection closed") else r.reason[:120]
        for r in unexpected_recs
    )
    timeline = {}
    for rec in valid:
        bucket = str(int(rec.t // 5) * 5)
        timeline.setdefault(bucket, Counter())[rec.cls] += 1
    summary = {
        "requests": len(recs),
        "duration_s": round(load_s, 1),
        "ok": len(ok),
        "valid": len(valid),
        "errors_by_class": {c: errors_by_class.get(c, 0) for c in CLASSES[1:]},
        "p99_ms": latency["valid_all"]["p99_ms"],
        "p99_outside_faults_ms": latency["valid_outside_faults"]["p99_ms"],
        "rps": round(len(recs) / load_s, 1) if load_s else None,
        "accuracy": round(correct / len(ok), 4) if ok else None,
        "unexpected": unexpected_total,
        "rss_growth_mb": {k: round(v, 1) for k, v in sorted(growth.items())},
        "faults": len(soak.faults),
    }
    doc = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started_wall)),
        "interrupted": interrupted,
        "machine": {
            "cpus": os.cpu_count(),
            "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in os.getloadavg()],
        },
        "config": {
            "duration_s": args.duration,
            "workers": args.workers,
            "clients": args.clients,
            "fault_every_s": args.fault_every,
            "first_fault_s": args.first_fault,
            "warmup_s": args.warmup,
            "sample_every_s": args.sample_every,
            "think_s": args.think,
            "env": soak.env,
            "bodies": len(soak.valid),
            "predict_timeout_s": soak.predict_timeout,
            "hang_after_s": soak.hang_after,
            "fault_grace_s": FAULT_GRACE,
            "strict": args.strict,
            "model_versions": list(soak.versions),
        },
        "definitions": {
            "classes": "see the module docstring of tools/soak.py",
            "fault window": (
                f"from a fault's start until the stack was verified whole "
                f"again, plus {FAULT_GRACE} s; a request is in it if they "
                f"overlap"
            ),
            "latency": "valid drawings that got an HTTP answer, whatever the status",
            "accuracy": "right digits / valid drawings answered 200",
            "rss growth": (
                "per pid: last sample minus the first sample taken at least "
                "warmup_s after the load started and after the pid appeared; "
                "rss_growth_mb is the largest per role"
            ),
            "unexpected": (
                "unexpected requests + unexpected events + faults not "
                "recovered + stray processes at exit (+ unexplained 503/504 "
                "with --strict)"
            ),
        },
        "summary": summary,
        "requests": {
            "total": len(recs),
            "by_group": {g: sum(c.values()) for g, c in by_class.items()},
        },
        "classes": {g: dict(c) for g, c in by_class.items()},
        "by_kind": {k: dict(c) for k, c in sorted(by_kind.items())},
        "by_status": dict(sorted(by_status.items())),
        "latency": latency,
        "accuracy": {
            "answered": len(ok),
            "correct": correct,
            "accuracy": summary["accuracy"],
            "model_versions_answering": dict(versions),
        },
        "faults": soak.faults,
        "events": soak.events,
        "not_recovered": [f["n"] for f in not_recovered],
        "unexpected_reasons": dict(reasons.most_common()),
        "unexpected_examples": [asdict(r) for r in unexpected_recs[:30]],
        "unexplained_examples": [asdict(r) for r in recs if r.cls == "unexplained_503_504"][
            :30
        ],
        "rss": rss,
        "final": final,
        "strays_at_exit": soak.strays,
        "logs": log_findings(soak.stack),
        "timeline_valid_5s": {k: dict(v) for k, v in timeline.items()},
    }
    return doc, summary


def rss_report(soak) -> dict:
    """Per pid: first, after warm-up (the base), last and max RSS, and the growth."""
    out = {}
    for pid, info in sorted(soak.rss.items()):
        samples = info["samples"]
        start = max(soak.args.warmup, info["first_seen_s"] + soak.args.warmup)
        base = next((s for s in samples if s[0] >= start), None)
        last = samples[-1]
        growth = round(last[1] - base[1], 1) if base and last[0] > base[0] else None
        out[str(pid)] = {
            "role": info["role"],
            "name": info["name"],
            "first_seen_s": round(info["first_seen_s"], 1),
            "last_seen_s": last[0],
            "first_mb": samples[0][1],
            "base_mb": base[1] if base else None,
            "base_s": base[0] if base else None,
            "last_mb": last[1],
            "max_mb": max(s[1] for s in samples),
            "growth_mb": growth,
            "samples": samples,
        }
    return out


def log_findings(stack) -> dict:
    """Per log of the stack: counts of LOG_PATTERNS and excerpts of the serious lines
    (tracebacks with their stack), the expected rejections of corrupt_model aside."""
    found = {}
    if stack is None:
        return found
    for name, text in log_texts(stack.log_dir).items():
        counts = {k: text.count(p) for k, p in LOG_PATTERNS.items() if p in text}
        excerpts = []
        lines = text.splitlines()
        i = 0
        while i < len(lines) and len(excerpts) < 8:
            line = lines[i]
            if any(
                p in line
                for p in (
                    "Traceback",
                    "CRITICAL",
                    "WORKER TIMEOUT",
                    "unhandled error",
                    " ERROR",
                )
            ):
                if "rejected model version" in line:  # expected from corrupt_model
                    i += 1
                    continue
                block = [line]
                j = i + 1
                while (
                    j < len(lines)
                    and len(block) < 25
                    and (
                        lines[j].startswith((" ", "\t", "Traceback"))
                        or not lines[j][:1]
                        or re.match(r"^\w+(\.\w+)*(Error|Exception)\b", lines[j])
                    )
                ):
                    block.append(lines[j])
                    j += 1
                excerpts.append("\n".join(block))
                i = j
                continue
            i += 1
        if counts or excerpts:
            found[name] = {"counts": counts, "excerpts": excerpts}
    return found

# -- report -----------------------------------------------------------------------
