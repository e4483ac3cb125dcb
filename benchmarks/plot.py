"""Plot the latency distributions of a benchmark run (benchmarks/results/
latest.json by default, or a pytest-benchmark JSON file of the run) into
docs/benchmarks-latency.png (needs matplotlib; the benchmarks do not).
Besides the built-in panels, one panel per harness.record_samples() call.

Usage: python benchmarks/plot.py [results.json] [out.png]
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def main(argv) -> int:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import NullFormatter
    except ImportError:
        print("matplotlib is not installed (pip install matplotlib)", file=sys.stderr)
        return 1
    src = argv[1] if len(argv) > 1 else os.path.join(HERE, "results", "latest.json")
    dst = argv[2] if len(argv) > 2 else os.path.join(ROOT, "docs", "benchmarks-latency.png")
    sys.path.insert(0, HERE)
    import report
    data = report.load(src)
    res = data["results"]
    panels = []
    for section, op, title in (("sim", "tx5", "TRANSMIT 5 B, simulated reader"),
                               ("sim", "tx4k", "TRANSMIT 4 KiB, simulated reader"),
                               ("vpcd", "tx5", "TRANSMIT 5 B, vpcd + test card")):
        samples = res.get(section, {}).get(op, {}).get("_samples")
        if samples:
            panels.append((title, "µs per call (one point per round)",
                           {k: [x / 1000 for x in v] for k, v in samples.items()}))
    for section, title in (("events_sim", "card arrival, simulated reader"),
                           ("events_vpcd", "card arrival, vpcd")):
        lat = res.get(section, {}).get("latency_ms")
        if lat:
            panels.append((title, "ms from insertion to user code",
                           {k: v["_samples"]["insert"] for k, v in lat.items()}))
    for title, panel in data.get("samples", {}).items():
        panels.append((title, panel["unit"], panel["groups"]))
    if not panels:
        print("no samples in the results", file=sys.stderr)
        return 1
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 2.3 * len(panels) + 0.6))
    if len(panels) == 1:
        axes = [axes]
    for ax, (title, xlabel, groups) in zip(axes, panels):
        names = list(groups)
        kw = dict(whis=(5, 95), showfliers=True, flierprops={"markersize": 2})
        try:
            ax.boxplot([groups[n] for n in names], orientation="horizontal", **kw)
        except TypeError:  # matplotlib < 3.10
            ax.boxplot([groups[n] for n in names], vert=False, **kw)
        ax.set_yticks(range(1, len(names) + 1), names)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(True, axis="x", which="both", alpha=0.3)
    m = data["machine"]
    name = m.get("name") or f"{m['nproc']}-CPU {m['cpu_model']}"
    fig.suptitle(f"scardio latency distributions, {data['time']}\n({name}; "
                 "log scale; whiskers 5-95 %)", fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    fig.savefig(dst, dpi=110)
    print(f"wrote {dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
