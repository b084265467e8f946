"""The soak's faults, one at a time, cycling, each followed until the stack is verifiably
whole again: a worker killed (-9) or SIGTERMed and restarted, Redis killed and started
again after 2 s, a model flip between two good versions, and a corrupt version made
current (the workers must reject it and keep serving) and rolled back.

Each fault is ``fault(soak, entry)``: it fills ``entry`` (the fault's record in
soak.json: detail, recovered, recovery_s, ...) and returns once the stack has recovered
or RECOVERY_TIMEOUT has passed.
"""

from __future__ import annotations

import time
from functools import partial

from tools import faults

RECOVERY_TIMEOUT = 120.0  # a fault the stack has not recovered from by then: a finding
log = partial(print, flush=True)


def run_faults(soak) -> None:
    """The fault thread: one fault every --fault-every s from --first-fault on, none in
    the last --quiet s, and each at least --min-gap s after the last one's recovery."""
    args = soak.args
    next_at = args.first_fault
    n = 0
    while not soak.stop_faults.wait(max(0.0, next_at - soak.now())):
        if args.duration - soak.now() < args.quiet:
            break  # no fault so near the end that its recovery cannot be watched
        heal(soak)
        cycle = args.faults or list(FAULTS)
        kind = cycle[n % len(cycle)]
        n += 1
        entry = {"n": len(soak.faults) + 1, "kind": kind, "start_s": round(soak.now(), 2)}
        log(f"[{entry['start_s']:6.1f}s] fault {entry['n']} {kind}: starting")
        try:
            FAULTS[kind](soak, entry)
        except Exception as exc:  # noqa: BLE001 - reported as a fault gone wrong
            entry["error"] = f"{type(exc).__name__}: {exc}"[:2000]
            entry["recovered"] = False
        if soak.stop.is_set() and not entry.get("recovered"):
            entry["interrupted"] = True  # cut short by the shutdown: no verdict
        entry["end_s"] = round(soak.now(), 2)
        entry["window_s"] = round(entry["end_s"] - entry["start_s"], 2)
        soak.faults.append(entry)
        log(
            f"[{entry['end_s']:6.1f}s] fault {entry['n']} {kind} over "
            f"({entry['window_s']} s): {entry.get('detail', '')}{outcome(entry)}"
        )
        next_at = max(entry["start_s"] + args.fault_every, soak.now() + args.min_gap)


def heal(soak) -> None:
    """Restart whatever died on its own (already reported as an event)."""
    for name, proc in soak.stack.snapshot().items():
        if proc.poll() is None:
            continue
        soak.record_death(name, proc)  # unless the sampler already did
        soak.event(
            "restarted_by_soak",
            name,
            f"{name} pid {proc.pid} was dead "
            f"(code {proc.returncode}): restarted before the next fault",
            unexpected=False,
        )
        if name == "redis":
            soak.stack.redis = None
            soak.stack.start_redis()
        elif name == "api":
            soak.stack.api = None
            soak.stack.start_api()
        else:
            index = int(name[len("worker") :])
            soak.stack.workers.pop(index, None)
            soak.stack.start_worker(index)
        soak.wait_for(soak.whole, RECOVERY_TIMEOUT)


def outcome(fault: dict) -> str:
    """How a fault ended, for the log and the report: nothing when it recovered."""
    text = ""
    if not fault.get("recovered"):
        text = "  (interrupted)" if fault.get("interrupted") else "  NOT RECOVERED"
    if fault.get("error"):
        text += f"  (error: {fault['error']})"
    return text


def _restart_worker(soak, entry: dict, kill: bool) -> None:
    index = soak.next_worker()
    name = f"worker{index}"
    old = soak.stack.workers.get(index)
    soak.expect_down.add(name)
    try:
        began = time.monotonic()
        soak.stack.stop_worker(index, kill=kill)
        exit_s = time.monotonic() - began
        code = old.returncode if old else None
        if not kill:
            entry["exit_s"] = round(exit_s, 2)
            entry["exit_code"] = code
            if exit_s > 10:  # the stack's contract: out within 10 s of SIGTERM
                soak.event("slow_sigterm_exit", name, f"{name} pid {old.pid} took "
                           f"{exit_s:.1f} s to exit after SIGTERM (code {code})")
        soak.stop.wait(1.0)  # the load meets one worker fewer for a moment
        if soak.stop.is_set():
            return
        restarted = time.time()
        mark = soak.progress_mark()
        proc = soak.stack.start_worker(index)
    finally:
        soak.expect_down.discard(name)
    how = "kill -9" if kill else "SIGTERM"
    entry["target"] = name
    entry["detail"] = (
        f"{name} pid {old.pid if old else '?'} {how}"
        f"{'' if kill else f' (exited in {exit_s:.1f} s, code {code})'}, "
        f"restarted as pid {proc.pid}"
    )
    ok = soak.wait_for(
        lambda: str(index) in soak.serving(restarted) and soak.whole(mark), RECOVERY_TIMEOUT
    )
    entry["recovered"] = ok
    entry["recovery_s"] = round(time.monotonic() - began, 2)
    entry["detail"] += f"; whole again after {entry['recovery_s']} s"
    if not ok:
        entry["log"] = soak.stack.tail(name, 40) + "\n" + soak.stack.tail("api", 20)


def kill9_worker(soak, entry: dict) -> None:
    _restart_worker(soak, entry, kill=True)


def sigterm_worker(soak, entry: dict) -> None:
    _restart_worker(soak, entry, kill=False)


def redis_restart(soak, entry: dict) -> None:
    old = soak.stack.redis
    soak.expect_down.add("redis")
    try:
        began = time.monotonic()
        soak.stack.stop_redis(kill=True)
        entry["down_s"] = round(soak.now(), 2)
        soak.stop.wait(2.0)
        if soak.stop.is_set():
            return
        soak.stack.start_redis()
        entry["up_s"] = round(soak.now(), 2)
    finally:
        soak.expect_down.discard("redis")
    # Heartbeats (their own Redis client) and Celery's consumers reconnect separately.
    beating = soak.wait_for(lambda: len(soak.serving()) == soak.args.workers, 60)
    entry["heartbeats_back_s"] = round(soak.now() - entry["up_s"], 2)
    mark = soak.progress_mark()
    ok = beating and soak.wait_for(lambda: soak.whole(mark), RECOVERY_TIMEOUT)
    entry["consuming_again_s"] = round(soak.now() - entry["up_s"], 2)
    entry["recovered"] = ok
    entry["recovery_s"] = round(time.monotonic() - began, 2)
    entry["detail"] = (
        f"redis pid {old.pid if old else '?'} kill -9, down "
        f"{entry['up_s'] - entry['down_s']:.1f} s, now pid {soak.stack.redis.pid}; after "
        f"the restart every worker heartbeating in {entry['heartbeats_back_s']} s, "
        f"every worker doing batches in {entry['consuming_again_s']} s"
    )
    if not ok:
        entry["log"] = "\n".join(soak.stack.tail(n, 30) for n in soak.names())


def model_flip(soak, entry: dict) -> None:
    began = time.monotonic()
    store = soak.store
    current = store.current()
    target = soak.versions[1] if current != soak.versions[1] else soak.versions[0]
    history = store.pointer().get("history", [])
    if history and history[-1] == target:
        store.rollback()
        how = "rollback"
    else:
        store.set_current(target)
        how = "set_current"
    ok = soak.wait_for(
        lambda: (
            len(soak.serving()) == soak.args.workers
            and all(b.get("model_version") == target for b in soak.serving().values())
        ),
        RECOVERY_TIMEOUT,
    )
    entry.update(
        target=f"v{current} -> v{target}",
        recovered=ok,
        recovery_s=round(time.monotonic() - began, 2),
    )
    entry["detail"] = (
        f"{how} v{current} -> v{target}; every worker serving v{target} "
        f"after {entry['recovery_s']} s"
    )
    if not ok:
        entry["log"] = "\n".join(soak.stack.tail(n, 30) for n in soak.names()[1:])


def corrupt_model(soak, entry: dict) -> None:
    began = time.monotonic()
    store = soak.store
    serving = store.current()
    good = store.get(serving).model_path.read_bytes()
    # Garbage and a truncated copy, in turn.
    variant = faults.CORRUPTIONS[sum(f["kind"] == "corrupt_model" for f in soak.faults) % 2]
    before = {i: b.get("rejections", 0) for i, b in soak.serving().items()}
    bad = faults.publish_file(store, faults.corrupted(good, variant),
                              f"soak: a corrupt model ({variant})")
    soak.corrupt_versions.add(bad.number)
    try:
        store.set_current(bad.number)  # the sha256 matches: only loading it fails
        rejected = soak.wait_for(
            lambda: (
                len(soak.serving()) == soak.args.workers
                and all(
                    b.get("rejections", 0) > before.get(i, 0)
                    and b.get("model_version") == serving
                    for i, b in soak.serving().items()
                )
            ),
            RECOVERY_TIMEOUT,
        )
        rejected_s = round(time.monotonic() - began, 2)
    finally:
        if store.current() == bad.number:
            store.rollback()
    back = store.current() == serving
    intact = soak.wait_for(soak.whole, RECOVERY_TIMEOUT)
    entry.update(
        target=f"v{bad.number}",
        variant=variant,
        rejected=rejected,
        recovered=rejected and back and intact,
        recovery_s=round(time.monotonic() - began, 2),
    )
    entry["detail"] = (
        f"published v{bad.number} ({variant} model file) and made it current; "
        + (
            f"every worker rejected it within {rejected_s} s, still serving v{serving}"
            if rejected
            else f"NOT rejected by every worker within {rejected_s} s"
        )
        + f"; rolled back to v{store.current()}"
    )
    if not entry["recovered"]:
        entry["log"] = "\n".join(soak.stack.tail(n, 30) for n in soak.names()[1:])


FAULTS = {
    "kill9_worker": kill9_worker,
    "redis_restart": redis_restart,
    "model_flip": model_flip,
    "sigterm_worker": sigterm_worker,
    "corrupt_model": corrupt_model,
}
