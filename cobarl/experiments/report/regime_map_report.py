"""The regime map's figure and Markdown (`cobarl.experiments.report.regime_map` builds the numbers and calls them).

``cells`` map (preset, budget) to label -> entry, an entry having ``label``, ``arm`` (`ArmResult`) and
``gap`` (`MeanCI`; None for the baseline); ``gains`` map the same keys to the baseline's gain (`mean_ci`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from cobarl.io import write_atomic, write_text

FILES = ("regime_map.png", "regime_map.md", "regime_map.json")
BUDGET_ORDER = ("generated", "steps")
"""Panels and columns in this order; any other budget mode a report names follows (a third panel)."""
BUDGET_TITLES = {"generated": "equal generated rollouts", "steps": "equal steps"}
Cells = dict[tuple[str, str], dict[str, Any]]

JITTER = 0.012
"""x offset between neighbouring policies (share units), so their intervals do not overlap."""


def budgets(cells: dict[tuple[str, str], Any]) -> list[str]:
    """The budget modes of ``cells``' keys, `BUDGET_ORDER` first."""
    found = {b for _, b in cells}
    return [b for b in BUDGET_ORDER if b in found] + sorted(found - set(BUDGET_ORDER))


def unreachable(regime: dict[str, Any]) -> float:
    """x of the map: the share of the 0/k prompts that no sample reached (NaN: no 0/k prompts)."""
    r = regime.get("reachable_of_zero")
    return math.nan if r is None else 1.0 - r


def _policies(cells: Cells, *, baseline: bool = False) -> list[str]:
    """Labels in the order the reports list them (the baseline only when asked)."""
    seen: dict[str, None] = {}
    for cell in cells.values():
        seen.update({e.label: None for e in cell.values() if baseline or e.gap is not None})
    return list(seen)


def _title(budget: str) -> str:
    return BUDGET_TITLES.get(budget, f"budget: {budget}")


def _x_label(data: dict[str, Any]) -> str:
    r = data["regimes"][0]
    return (f"unreachable share of the 0/{r['k']} prompts (no success within {r['max_samples']} samples; "
            "cobarl diagnose, mean over seeds)")


def _panel(ax, data: dict[str, Any], budget: str, styles: dict[str, dict[str, Any]]) -> None:
    """One budget mode: per policy, its deltas (points) against the regimes' unreachable share."""
    xs = {r["name"]: unreachable(r) for r in data["regimes"]}
    labels = [p for p in styles if any(p in r["deltas"].get(budget, {}) for r in data["regimes"])]
    for k, label in enumerate(labels):
        shift = (k - (len(labels) - 1) / 2) * JITTER
        pts = sorted((xs[r["name"]] + shift, r["deltas"][budget][label]) for r in data["regimes"]
                     if label in r["deltas"].get(budget, {}) and r["deltas"][budget][label]["mean"] is not None)
        x = [p[0] for p in pts]
        y = [100 * p[1]["mean"] for p in pts]
        err = [[100 * (d["mean"] - d["ci"][0]) if d["ci"][0] is not None else 0.0 for _, d in pts],
               [100 * (d["ci"][1] - d["mean"]) if d["ci"][1] is not None else 0.0 for _, d in pts]]
        ax.errorbar(x, y, yerr=err, ms=4, lw=1.2, capsize=3, label=label, **styles[label])
    ax.axhline(0.0, color="black", lw=0.8, ls="--")
    ax.set_xticks(list(xs.values()), [f"{name}\n{x:.2f}" for name, x in xs.items()], fontsize=8)
    ax.set_xlim(min(0.0, *xs.values()) - 0.05, max(1.0, *xs.values()) + 0.05)
    ax.set_title(_title(budget), fontsize=10)
    ax.grid(alpha=0.3)


def plot(data: dict[str, Any], cells: Cells, path: Path) -> None:
    """regime_map.png: one panel per budget mode (generated, steps, then any other), one line per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = budgets(cells)
    labels = _policies(cells)
    cmap = plt.get_cmap("tab10")  # past ten policies the marker changes, so no two look alike
    styles = {label: {"color": cmap(k % 10), "marker": "os^D"[k // 10 % 4]} for k, label in enumerate(labels)}
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels) + 1.8, 4.8), sharey=True, squeeze=False)
    for ax, budget in zip(axes[0], panels):
        _panel(ax, data, budget, styles)
    axes[0][0].set_ylabel("Δ held-out accuracy vs uniform GRPO (points)")
    fig.suptitle("Each policy against uniform GRPO by regime (error bars: 95 % CI over seeds)", fontsize=11)
    fig.supxlabel(_x_label(data), fontsize=9)
    handles = {h.get_label(): h for ax in axes[0] for h in ax.get_legend_handles_labels()[0]}
    fig.legend([handles[k] for k in labels if k in handles], [k for k in labels if k in handles],
               loc="center right", fontsize=8)
    fig.tight_layout(rect=(0, 0, 1 - 1.8 / (5.5 * len(panels) + 1.8), 1))
    write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=100), binary=True)
    plt.close(fig)


def _pm(mean: float | None, half: float | None, scale: float = 100.0) -> str:
    if mean is None or not math.isfinite(mean):
        return "n/a"
    text = f"{scale * mean:+.1f}"
    return text if half is None or not math.isfinite(half) else f"{text} ± {scale * half:.1f}"


def _delta_cell(entry: Any) -> str:
    if entry is None:
        return "—"
    g = entry.gap
    text = _pm(g.mean, g.half_width)
    resolved = g.n >= 2 and math.isfinite(g.half_width) and (g.ci95[0] > 0 or g.ci95[1] < 0)
    return f"**{text}**" if resolved else text


def _count(v: float, digits: int = 0) -> str:
    if not math.isfinite(v):
        return "n/a"
    return f"{v / 1e3:.1f}k" if v >= 1e3 else f"{v:.{digits}f}"


def _spend_cell(entry: Any) -> str:
    """Generated / trained rollouts per step x steps = total generated (older reports: the total only)."""
    if entry is None:
        return "—"
    m = entry.arm.metrics
    total = _count(m["rollouts"].mean, 0) if "rollouts" in m else "n/a"
    if "rollouts_generated_per_step" not in m:
        return f"{total} generated"
    return (f"{_count(m['rollouts_generated_per_step'].mean)} / {_count(m['rollouts_trained_per_step'].mean)} "
            f"× {_count(m['steps'].mean)} steps = {total}")


def _regime_rows(data: dict[str, Any], gains: dict[tuple[str, str], dict], columns: list[tuple[str, str]]) -> list[str]:
    by = {r["name"]: r for r in data["regimes"]}

    def share(key: str) -> list[str]:
        return [f"{by[p][key]:.2f}" if by[p][key] is not None else "n/a" for p, _ in columns]

    def reach(p: str) -> str:
        r, ci = by[p]["reachable_of_zero"], by[p]["reachable_of_zero_ci"]
        return "n/a" if r is None else f"{r:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")

    k = data["regimes"][0]["k"]
    rows = [("**regime**", [""] * len(columns)), (f"share at 0/{k}", share("share_zero")),
            (f"share at {k}/{k}", share("share_solved")), ("share mixed", share("share_mixed")),
            (f"reachable share of the 0/{k} [95 % CI]", [reach(p) for p, _ in columns]),
            ("uniform GRPO gain, final − initial (points)", [_pm(gains[c]["mean"], gains[c]["half_width"]) for c in columns])]
    return [f"| {name} | " + " | ".join(values) + " |" for name, values in rows]


def markdown(data: dict[str, Any], cells: Cells, gains: dict[tuple[str, str], dict],
             commands: list[str], diagnose: dict[str, list[str]]) -> str:
    """regime_map.md: the deltas and regime statistics table, what each policy spent, and the commands."""
    order = [r["name"] for r in data["regimes"]]
    columns = [(p, b) for p in order for b in budgets(cells) if (p, b) in cells]
    head = "| policy | " + " | ".join(f"{p} ({b})" for p, b in columns) + " |"
    rule = "|---|" + "---|" * len(columns)
    k = data["regimes"][0]["k"]
    lines = ["# Regime map: held-out accuracy against uniform GRPO", "", f"Measured on: {data['measured_on']}.", "",
             "![regime map](regime_map.png)", "",
             "Δ: a policy's final held-out accuracy minus uniform GRPO's on the same seed, in points: mean ± 95 % "
             "Student-t half-width over seeds (**bold**: the interval excludes 0); as each report computed it. "
             "(generated): at equal generated rollouts; (steps): at equal steps. —: not run there.", "",
             head, rule, *(f"| {label} | " + " | ".join(_delta_cell(cells[c].get(label)) for c in columns) + " |"
                           for label in _policies(cells)),
             *_regime_rows(data, gains, columns), "",
             f"Regime statistics are strategy-neutral (cobarl diagnose, means over seeds; the reachable share's "
             f"interval is Clopper-Pearson's on the counts pooled over seeds): shares of the train prompts at 0/{k}, at "
             f"{k}/{k} and in between, and the share of the 0/{k} prompts that some sample solved.", "",
             "## What each policy spent", "",
             "Generated / trained rollouts per step (mean over steps, then seeds) × steps = generated in total "
             "(mean over seeds). At equal generated rollouts every policy's total is the same; at equal steps a "
             "policy that generates more than it trains on spends more.", "", head, rule,
             *(f"| {label} | " + " | ".join(_spend_cell(cells[c].get(label)) for c in columns) + " |"
               for label in _policies(cells, baseline=True)),
             "", "## Commands", ""]
    lines += commands
    lines += [f"- {p} regime: `cobarl diagnose --task {p} --json`, {len(files)} seed(s): "
              + ", ".join(f"`{f}`" for f in files) for p, files in diagnose.items()]
    return "\n".join(lines) + "\n"


def write_outputs(data: dict[str, Any], cells: Cells, md: str, out: Path, install: str | None) -> list[Path]:
    """The three files under ``out`` (and the JSON at ``install``); each written whole or not at all."""
    text = json.dumps(data, indent=1, allow_nan=False) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    png, md_path, json_path = (out / name for name in FILES)
    plot(data, cells, png)
    written = [png, write_text(md_path, md), write_text(json_path, text)]
    if install:
        Path(install).parent.mkdir(parents=True, exist_ok=True)
        written.append(write_text(install, text))
    return written
