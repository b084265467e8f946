"""What ``tools.bench`` prints and draws from its results: the table (req/s and
latency per system and concurrency), our req/s over theirs, the raw model's images/s,
RSS and accuracy; the one-line summary; bench.png."""

from __future__ import annotations

from pathlib import Path

from tools.procs import max_rss

HTTP_SYSTEMS = ("baseline", "noop", "ours", "ours_s3")
LABELS = {
    "ours": "our stack",
    "ours_s3": "our stack, models from S3",
    "baseline": "baseline (gunicorn -w {workers}, predict per request)",
    "noop": "no-op Celery round trip",
}


def report(results: dict, concurrency: list[int]) -> tuple[str, dict]:
    lines = []
    http_systems = [s for s in HTTP_SYSTEMS if s in results]
    if http_systems:
        lines.append(
            f"{'system':10s} {'conc':>5s} {'req/s':>9s} {'p50 ms':>9s} {'p90 ms':>9s} "
            f"{'p99 ms':>9s} {'errors':>7s}"
        )
        for s in http_systems:
            for c in concurrency:
                r = results[s]["levels"].get(str(c))
                if r:
                    lines.append(
                        f"{s:10s} {c:5d} {r['rps']:9.1f} {r['p50_ms']:9.1f} "
                        f"{r['p90_ms']:9.1f} {r['p99_ms']:9.1f} {r['errors']:7d}"
                    )
    ratios = {}
    if "ours" in results:
        ours = results["ours"]["levels"]
        for other in ("baseline", "noop", "ours_s3"):
            if other not in results:
                continue
            theirs = results[other]["levels"]
            ratios[other] = {}
            for c in concurrency:
                mine, their = ours.get(str(c), {}).get("rps"), theirs.get(str(c), {}).get("rps")
                ratios[other][str(c)] = round(mine / their, 2) if mine and their else None
        if ratios:
            lines.append("")
            lines.append("our req/s divided by theirs, per concurrency:")
            for other, per in ratios.items():
                shown = "  ".join(f"c{c}: {v if v is not None else '-'}" for c, v in per.items())
                lines.append(f"  vs {other:9s} {shown}")
    if "model" in results:
        lines.append("")
        best = results["model"]["batches"]
        lines.append(
            "raw model (traced graph, 2 TF threads): "
            + ", ".join(f"batch {b}: {r['images_per_s']:.0f} images/s" for b, r in best.items())
        )
    rss_lines = []
    for s in http_systems:
        rss = results[s]["rss"]
        if s == "baseline":
            rss_lines.append(
                f"  baseline: max {rss['max_mb']} MB per process "
                f"({len(rss['processes'])} processes)"
            )
        else:
            rss_lines.append(
                f"  {s}: API max {rss['api_max_mb']} MB per process "
                f"({len(rss['api'])} processes), Celery worker max "
                f"{rss['worker_max_mb']} MB ({len(rss['workers'])} processes); RssAnon max: "
                f"API {max_rss(rss['api'], 'anon_mb')} MB, "
                f"worker {max_rss(rss['workers'], 'anon_mb')} MB"
            )
    if rss_lines:
        lines += ["", "RSS after the load:", *rss_lines]
    for s in ("baseline", "ours", "ours_s3"):
        if s in results:
            a = results[s]["accuracy"]
            lines.append(
                f"accuracy on {a['n']} canvas drawings, {s}: {a['accuracy']} "
                f"(statuses {a['statuses']})"
            )
    return "\n".join(lines), ratios


def summary(results: dict, concurrency: list[int]) -> dict:
    ours = results.get("ours", {}).get("levels", {})

    def level(c, key):
        return ours.get(str(c), {}).get(key)

    def best(system):
        levels = results.get(system, {}).get("levels", {})
        return max((r["rps"] for r in levels.values()), default=None)

    baseline_best = best("baseline")
    c32 = level(32, "rps") if 32 in concurrency else best("ours")
    model = results.get("model", {}).get("batches", {})
    ours_rss = results.get("ours", {}).get("rss", {})
    return {
        "c32_rps": level(32, "rps"),
        "c32_p99_ms": level(32, "p99_ms"),
        "c32_errors": level(32, "errors"),
        "c1_p50_ms": level(1, "p50_ms"),
        "c64_rps": level(64, "rps"),
        "baseline_best_rps": baseline_best,
        "ratio_vs_baseline": round(c32 / baseline_best, 2) if c32 and baseline_best else None,
        "noop_ceiling_rps": best("noop"),
        "model_images_per_s": max((r["images_per_s"] for r in model.values()), default=None),
        "c32_rps_s3": results.get("ours_s3", {}).get("levels", {}).get("32", {}).get("rps"),
        "api_rss_mb": ours_rss.get("api_max_mb"),
        "worker_rss_mb": ours_rss.get("worker_max_mb"),
    }


def plot(results: dict, concurrency: list[int], path: Path) -> bool:
    systems = [s for s in HTTP_SYSTEMS if s in results]
    if not systems:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for s in systems:
        cs = [c for c in concurrency if str(c) in results[s]["levels"]]
        rows = [results[s]["levels"][str(c)] for c in cs]
        label = LABELS[s].format(workers=results[s].get("workers"))
        left.plot(cs, [r["rps"] for r in rows], marker="o", label=label)
        right.plot(cs, [max(r["p99_ms"], 0.01) for r in rows], marker="o", label=label)
    for ax, title, ylabel in (
        (left, "Throughput", "requests/s"),
        (right, "Tail latency", "p99 latency (ms)"),
    ):
        ax.set_xscale("log", base=2)
        ax.set_xticks(concurrency, [str(c) for c in concurrency])
        ax.set_xlabel("concurrent connections (wrk)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
    right.set_yscale("log")
    left.legend(fontsize=8)
    left.set_ylim(bottom=0)
    title = "POST /predict with canvas-drawing PNGs (wrk)"
    model = results.get("model", {}).get("batches")
    if model:  # a line on the axis would flatten the curves: say it in the title
        best = max(model.items(), key=lambda kv: kv[1]["images_per_s"])
        title += f"; raw model alone: {best[1]['images_per_s']:.0f} images/s at batch {best[0]}"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True

