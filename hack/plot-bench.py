"""Draws the side-by-side benchmark (benches/versus.rs) as a PNG.

Reads the CSV the benchmark writes (one row per N, scenario and controller, medians over the
runs) and draws, per scenario, the time until all N objects are done and the p99 per object,
for batch/v1 Jobs and for DataJobs, against N; a last panel shows controller writes per object.
The dedicated scenario (one size) is left to the table.

    plot-bench.py RESULTS.csv OUT.png [TITLE]
"""

import csv
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SCENARIOS = ["stream", "backlog", "complete", "cancel storm"]
STYLE = {"Job": ("tab:gray", "o", "batch/v1 Job (kube-controller-manager)"),
         "DataJob": ("tab:blue", "s", "DataJob (datajob-operator)")}


def load(path):
    rows = defaultdict(dict)
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            key = (r["scenario"], r["kind"])
            rows[key][int(r["n"])] = {k: float(v) for k, v in r.items()
                                      if k not in ("scenario", "kind", "n")}
    return rows


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    rows = load(sys.argv[1])
    title = sys.argv[3] if len(sys.argv) > 3 else "Jobs and DataJobs side by side"
    fig, axes = plt.subplots(1, len(SCENARIOS) + 1, figsize=(22, 4.6))
    for ax, scenario in zip(axes, SCENARIOS):
        for kind, (color, marker, label) in STYLE.items():
            data = rows.get((scenario, kind), {})
            sizes = sorted(data)
            if not sizes:
                continue
            ax.plot(sizes, [data[n]["wall_s"] for n in sizes], color=color, marker=marker,
                    label=f"{label}: all done")
            ax.plot(sizes, [data[n]["p99_ms"] / 1000 for n in sizes], color=color,
                    marker=marker, linestyle="--", label=f"{kind}: p99 per object")
        ax.set_title(scenario)
        ax.set_xlabel("N objects")
        ax.set_ylabel("seconds (median of runs)")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
    ax = axes[len(SCENARIOS)]
    width = 0.38
    labels = []
    for i, scenario in enumerate(SCENARIOS):
        for j, kind in enumerate(STYLE):
            data = rows.get((scenario, kind), {})
            if data:
                n = max(data)
                ax.bar(i + (j - 0.5) * width, data[n]["writes"], width, color=STYLE[kind][0])
        labels.append(scenario)
    ax.set_xticks(range(len(SCENARIOS)), labels)
    ax.set_title("controller writes per object (largest N)")
    ax.grid(True, axis="y", alpha=0.3)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=4, fontsize="small")
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    fig.savefig(sys.argv[2], dpi=110)


if __name__ == "__main__":
    main()
