"""The soak's report as text, from soak.json's content."""

from __future__ import annotations

from tools.soak_analysis import CLASSES
from tools.soak_faults import outcome


def report(doc: dict) -> str:
    s, cfg, lat = doc["summary"], doc["config"], doc["latency"]
    lines = [
        f"soak: {s['duration_s']} s, {cfg['workers']} workers, {cfg['clients']} clients, "
        f"{s['faults']} faults; {doc['machine']['cpus']} CPUs, load average "
        f"{doc['machine']['load_before'][0]} -> {doc['machine']['load_after'][0]}"
        + ("  (INTERRUPTED)" if doc["interrupted"] else ""),
        f"requests: {s['requests']} ({s['rps']}/s): "
        + ", ".join(f"{g} {n}" for g, n in doc["requests"]["by_group"].items()),
        "",
        "valid drawings",
    ]
    cv = doc["classes"]["valid"]
    lines += [f"  {cls:22s} {cv.get(cls, 0):7d}" for cls in CLASSES]
    a = doc["accuracy"]
    lines.append(
        f"  {'accuracy':22s} {a['accuracy']} ({a['correct']}/{a['answered']}); "
        f"versions answering {a['model_versions_answering']}"
    )
    for key, label in (
        ("valid_all", "latency, all"),
        ("valid_outside_faults", "latency, outside faults"),
        ("valid_in_faults", "latency, in fault windows"),
    ):
        r = lat[key]
        lines.append(
            f"  {label:22s} p50 {r['p50_ms']} ms, p90 {r['p90_ms']} ms, p99 "
            f"{r['p99_ms']} ms, max {r['max_ms']} ms (n={r['n']})"
        )
    lines += ["", "bad inputs and probes (ok = the expected answer)"]
    for kind, counts in doc["by_kind"].items():
        if kind != "valid":
            shown = ", ".join(f"{c} {n}" for c, n in sorted(counts.items()))
            lines.append(f"  {kind:22s} {shown}")
    lines += ["", "by status and error code"]
    lines += [f"  {k:45s} {n:7d}" for k, n in doc["by_status"].items()]
    lines += ["", f"faults ({len(doc['faults'])})"]
    for f in doc["faults"]:
        lines.append(
            f"  [{f['start_s']:6.1f}s-{f['end_s']:6.1f}s] {f['n']:2d} {f['kind']:15s} "
            f"{f.get('detail', '')}"
        )
        lines.append(
            f"      valid requests overlapping: {f.get('valid_during', {})}{outcome(f)}"
        )
    if doc["events"]:
        lines += ["", "events"]
        lines += [
            f"  [{e['t_s']:6.1f}s] {'UNEXPECTED ' if e['unexpected'] else ''}"
            f"{e['kind']}: {e['message']}"
            for e in doc["events"]
        ]
    lines += ["", "memory: RSS per process (MB): first, after warm-up -> last (growth), max"]
    for pid, r in doc["rss"].items():
        growth = "-" if r["growth_mb"] is None else f"{r['growth_mb']:+.1f}"
        lines.append(
            f"  {r['role']:12s} pid {pid:>7s} [{r['first_seen_s']:6.1f}s-"
            f"{r['last_seen_s']:6.1f}s] {r['first_mb']:7.1f}, {r['base_mb'] or '-'}"
            f" -> {r['last_mb']:.1f} ({growth}), max {r['max_mb']:.1f}"
        )
    fin = doc["final"]
    lines += [
        "",
        f"at the end: {'healthy' if fin.get('healthy') else 'NOT HEALTHY'}; "
        f"/ready {fin.get('ready_status')}, predict {fin.get('predict_statuses')},"
        f" Redis keys {fin.get('redis_keys')}, used_memory "
        f"{fin.get('redis_used_memory')}",
    ]
    if doc["strays_at_exit"]:
        lines.append(f"STRAY processes killed at exit: {doc['strays_at_exit']}")
    if doc["logs"]:
        lines += ["", "log lines (counts per log)"]
        for name, found in doc["logs"].items():
            lines.append(f"  {name}: {found['counts']}")
            serious = ("traceback", "unhandled", "worker_timeout", "critical", "cannot_start")
            if any(found["counts"].get(k) for k in serious):
                for excerpt in found["excerpts"][:3]:
                    lines += ["    | " + ln for ln in excerpt.splitlines()[:25]]
    if doc["unexpected_reasons"]:
        lines += ["", "UNEXPECTED requests by reason"]
        lines += [f"  {n:6d}  {r}" for r, n in doc["unexpected_reasons"].items()]
        lines += ["  first ones:"]
        lines += [
            f"    t={r['t']:.2f}s {r['kind']} {r['status']} {r['code']} "
            f"{r['latency'] * 1000:.0f} ms (after {r['after'] or '-'}): {r['reason'][:160]}"
            for r in doc["unexpected_examples"][:10]
        ]
    if doc["unexplained_examples"]:
        lines += ["", "503/504 outside fault windows (first ones)"]
        lines += [
            f"    t={r['t']:.2f}s {r['kind']} {r['status']} {r['code']} "
            f"{r['latency'] * 1000:.0f} ms"
            for r in doc["unexplained_examples"][:10]
        ]
    lines += ["", f"unexpected: {s['unexpected']}; errors by class: {s['errors_by_class']}"]
    return "\n".join(lines)


