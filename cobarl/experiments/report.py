"""Turn the runs of a comparison into ``summary.json``, ``metrics.csv``, PNG plots and ``report.md``.

Every file is written atomically (a temporary file in the same folder, then ``os.replace``), so a
reader never sees half a report. Numbers across seeds are ``mean`` with a 95 % Student-t
confidence interval; gaps against the baseline are *paired* (same seed, same task, same prompt
order and, in the simulator, the same random draws), so their intervals are per-seed differences.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from cobarl.experiments.compare import CompareOptions, RunResult
from cobarl.experiments.simulator import BUCKETS, PASS_RATE_BINS, PHASES

ACCURACY_KEYS = ("eval/heldout_accuracy", "eval/accuracy")
FILES = ("summary.json", "metrics.csv", "report.md")
PLOTS = (
    "accuracy_vs_rollouts.png",
    "effective_ratio.png",
    "capability.png",
    "budget_vs_pass_rate.png",
    "transitions.png",
)


_UMASK = os.umask(0)
os.umask(_UMASK)

# --- atomic writes -------------------------------------------------------------------------------


def write_atomic(path: Path, write: Callable[[Any], None], *, binary: bool = False) -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, then rename it over ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8", "newline": ""})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file normal permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text(path: Path, text: str) -> None:
    write_atomic(path, lambda f: f.write(text))


# --- statistics ----------------------------------------------------------------------------------


def _clean(x: Any) -> Any:
    """JSON-safe: NaN/inf become None, numpy scalars become Python numbers."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> dict[str, Any]:
    """Mean and Student-t confidence interval of the finite values (interval None for n < 2).

    >>> r = mean_ci([1.0, 2.0, 3.0]); r["mean"], round(r["half_width"], 3)
    (2.0, 2.484)
    """
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    n = int(v.size)
    mean = float(v.mean()) if n else math.nan
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * v.std(ddof=1) / math.sqrt(n)) if n >= 2 else math.nan
    return {"mean": mean, "ci95": [mean - half, mean + half], "half_width": half, "n": n, "values": v.tolist()}


def _series(run: RunResult, key: str) -> np.ndarray:
    return np.array([float(r.get(key, math.nan)) if r.get(key) is not None else math.nan for r in run.rows])


def accuracy_key(runs: Sequence[RunResult]) -> str | None:
    for key in ACCURACY_KEYS:
        if any(key in r for run in runs for r in run.rows):
            return key
    return None


def _final(run: RunResult, key: str) -> float:
    s = _series(run, key)
    s = s[np.isfinite(s)]
    return float(s[-1]) if s.size else math.nan


def _rollouts_to(run: RunResult, key: str, target: float) -> float:
    acc, roll = _series(run, key), _series(run, "rollouts")
    hit = np.flatnonzero(np.isfinite(acc) & (acc >= target))
    return float(roll[hit[0]]) if hit.size else math.nan


def summarise(runs: Sequence[RunResult], options: CompareOptions, *, command: str = "") -> dict[str, Any]:
    """Per-strategy means and CIs, and paired gaps against the baseline; JSON-ready."""
    labels = [s.label for s in options.strategies]
    by = {label: [r for r in runs if r.label == label] for label in labels}
    acc = accuracy_key(runs)
    base = options.baseline_label
    target = options.target_accuracy
    if target is None and acc is not None:
        initial = mean_ci([r.summary.get("initial_heldout_accuracy", math.nan) for r in by[base]])["mean"]
        final = mean_ci([_final(r, acc) for r in by[base]])["mean"]
        target = float(initial + 0.9 * (final - initial)) if math.isfinite(initial) else final

    def metrics_of(run: RunResult) -> dict[str, float]:
        eff = _series(run, "rollout/effective_ratio")
        out = {
            "final_heldout_accuracy": _final(run, acc) if acc else math.nan,
            "final_train_solved": _final(run, "eval/train_solved"),
            "final_train_accuracy": _final(run, "eval/train_accuracy"),
            "effective_ratio": float(np.nanmean(eff)) if np.isfinite(eff).any() else math.nan,
            "effective_ratio_last_third": float(np.nanmean(eff[2 * eff.size // 3 :])) if np.isfinite(eff).any() else math.nan,
            "rollouts": _final(run, "rollouts"),
            "rollouts_to_target": _rollouts_to(run, acc, target) if acc and target is not None else math.nan,
        }
        return out

    per_run = {label: [metrics_of(r) for r in by[label]] for label in labels}
    strategies: dict[str, Any] = {}
    for spec in options.strategies:
        label = spec.label
        rows = per_run[label]
        entry: dict[str, Any] = {
            "description": spec.describe(),
            "allocator": spec.strategy if isinstance(spec.strategy, str) else getattr(spec.strategy, "__name__", "callable"),
            "overrides": spec.overrides,
            "budget_multiplier": spec.budget_multiplier * options.budget_multiplier,
            "seeds": [r.seed for r in by[label]],
        }
        for key in rows[0] if rows else ():
            entry[key] = mean_ci([m[key] for m in rows])
        entry["rollouts_to_target"]["reached"] = int(sum(math.isfinite(m["rollouts_to_target"]) for m in rows))
        entry["rollouts_to_target"]["runs"] = len(rows)
        trans = [np.asarray(r.summary["transitions"], dtype=np.float64) for r in by[label] if "transitions" in r.summary]
        if trans:
            total = np.sum(trans, axis=0)
            entry["transitions_percent"] = (100 * total / np.maximum(total.sum(axis=1, keepdims=True), 1)).round(2).tolist()
            entry["transitions_initial_counts"] = total.sum(axis=1).astype(int).tolist()
        strategies[label] = entry

    gaps: dict[str, Any] = {}
    base_by_seed = {r.seed: m for r, m in zip(by[base], per_run[base])}
    for label in labels:
        if label == base:
            continue
        pairs = [(m, base_by_seed[r.seed]) for r, m in zip(by[label], per_run[label]) if r.seed in base_by_seed]
        if not pairs:
            continue
        gaps[label] = {
            "final_heldout_accuracy": mean_ci([a["final_heldout_accuracy"] - b["final_heldout_accuracy"] for a, b in pairs]),
            "final_train_solved": mean_ci([a["final_train_solved"] - b["final_train_solved"] for a, b in pairs]),
            "effective_ratio": mean_ci([a["effective_ratio"] - b["effective_ratio"] for a, b in pairs]),
            "effective_ratio_relative_percent": mean_ci(
                [100 * (a["effective_ratio"] / b["effective_ratio"] - 1) for a, b in pairs]
            ),
            "rollouts_ratio": mean_ci([a["rollouts"] / b["rollouts"] for a, b in pairs]),
        }

    return _clean(
        {
            "command": command,
            "backend": options.backend,
            "seeds": list(options.seeds),
            "steps": options.steps,
            "prompts_per_step": options.prompts_per_step,
            "rollouts_per_prompt": options.rollouts_per_prompt,
            "budget_multiplier": options.budget_multiplier,
            "budget_per_step": options.prompts_per_step * options.rollouts_per_prompt * options.budget_multiplier,
            "simulator": asdict(options.sim) if options.backend == "simulated" else None,
            "accuracy_metric": acc,
            "baseline": base,
            "target_accuracy": target,
            "strategies": strategies,
            "gaps_vs_baseline": gaps,
        }
    )


# --- metrics.csv ---------------------------------------------------------------------------------


def metrics_csv(runs: Sequence[RunResult]) -> str:
    columns: dict[str, None] = {"strategy": None, "seed": None}
    for run in runs:
        for row in run.rows:
            columns.update(dict.fromkeys(row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for run in runs:
        for row in run.rows:
            writer.writerow({"strategy": run.label, "seed": run.seed, **{k: _fmt(v) for k, v in row.items()}})
    return buf.getvalue()


def _fmt(v: Any) -> Any:
    return f"{v:.6g}" if isinstance(v, float) else v


# --- plots ---------------------------------------------------------------------------------------


def _smooth(x: np.ndarray, w: int) -> np.ndarray:
    """Trailing moving average over ``w`` steps (NaN-aware; the first steps average what exists)."""
    if w <= 1 or x.size == 0:
        return x
    ok = np.isfinite(x)
    c = np.concatenate([[0.0], np.cumsum(np.where(ok, x, 0.0))])
    k = np.concatenate([[0], np.cumsum(ok)])
    lo = np.maximum(np.arange(1, x.size + 1) - w, 0)
    hi = np.arange(1, x.size + 1)
    n = k[hi] - k[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (c[hi] - c[lo]) / np.maximum(n, 1), np.nan)


def _band(runs: Sequence[RunResult], key: str, smooth: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and 95 % CI half-width over seeds, step by step (each seed smoothed first; runs
    truncated to the shortest). The half-width is 0 with fewer than 3 seeds, where a t interval
    is too wide to draw."""
    series = [_smooth(_series(r, key), smooth) for r in runs]
    n = min(s.size for s in series)
    a = np.stack([s[:n] for s in series])
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN steps (sparse real-backend evals)
        mean = np.nanmean(a, axis=0)
        k = np.isfinite(a).sum(axis=0)
        sd = np.nanstd(a, axis=0, ddof=1) if a.shape[0] > 1 else np.zeros(n)
        half = np.where(k > 2, stats.t.ppf(0.975, np.maximum(k - 1, 1)) * sd / np.sqrt(np.maximum(k, 1)), 0.0)
    return mean, np.nan_to_num(half), np.arange(1, n + 1)


def _colors(n: int) -> list:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _save(fig, path: Path) -> None:
    write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=100), binary=True)


def plot_all(runs: Sequence[RunResult], options: CompareOptions, out: Path) -> list[str]:
    """Write the PNG plots; returns the file names written (plots without data are skipped)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [s.label for s in options.strategies]
    by = {label: [r for r in runs if r.label == label and r.rows] for label in labels}
    labels = [label for label in labels if by[label]]
    colors = dict(zip(labels, _colors(len(labels))))
    written: list[str] = []
    acc = accuracy_key(runs)
    smooth = max(1, options.steps // 40)

    # 1. accuracy vs rollouts consumed
    panels = [k for k in (acc, "eval/train_solved") if k and any(k in r for run in runs for r in run.rows)]
    if panels:
        fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False, layout="constrained")
        for ax, key in zip(axes[0], panels):
            for label in labels:
                mean, half, _ = _band(by[label], key)
                x, _, _ = _band(by[label], "rollouts")
                ok = np.isfinite(mean)
                ax.plot(x[ok], mean[ok], color=colors[label], label=label, lw=1.4)
                ax.fill_between(x[ok], (mean - half)[ok], (mean + half)[ok], color=colors[label], alpha=0.15, lw=0)
            ax.set_xlabel("rollouts consumed")
            ax.set_ylabel(key)
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=7)
        fig.suptitle("Accuracy vs rollouts (mean over seeds, 95 % CI band)")
        _save(fig, out / PLOTS[0])
        plt.close(fig)
        written.append(PLOTS[0])

    # 2. effective-gradient ratio over steps
    if any("rollout/effective_ratio" in r for run in runs for r in run.rows):
        fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
        for label in labels:
            mean, half, steps = _band(by[label], "rollout/effective_ratio", smooth)
            ax.plot(steps, mean, color=colors[label], label=label, lw=1.4)
            ax.fill_between(steps, mean - half, mean + half, color=colors[label], alpha=0.12, lw=0)
        ax.set_xlabel("step")
        ax.set_ylabel("share of rollouts in mixed groups")
        ax.set_title(f"Effective-gradient ratio (moving average over {smooth} steps)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        _save(fig, out / PLOTS[1])
        plt.close(fig)
        written.append(PLOTS[1])

    # 3. alpha_t, beta_t, F_t
    keys = [k for k in ("capability/alpha", "capability/beta", "capability/failure_rate") if any(k in r for run in runs for r in run.rows)]
    if keys:
        fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 4), squeeze=False, layout="constrained")
        for ax, key in zip(axes[0], keys):
            for label in labels:
                mean, half, steps = _band(by[label], key, smooth)
                ax.plot(steps, mean, color=colors[label], label=label, lw=1.2)
                ax.fill_between(steps, mean - half, mean + half, color=colors[label], alpha=0.12, lw=0)
            ax.set_xlabel("step")
            name = {"alpha": "alpha_t", "beta": "beta_t", "failure_rate": "failure rate F_t"}[key.split("/")[-1]]
            ax.set_title(f"{name} (moving average over {smooth} steps)", fontsize=10)
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=7)
        _save(fig, out / PLOTS[2])
        plt.close(fig)
        written.append(PLOTS[2])

    # 4. budget vs estimated pass rate, per phase
    have = [label for label in labels if all("budget_by_pass_rate" in r.summary for r in by[label])]
    if have:
        fig, axes = plt.subplots(1, len(PHASES), figsize=(5.2 * len(PHASES), 4), sharey=True, layout="constrained")
        x = np.arange(len(PASS_RATE_BINS))
        for label in have:
            s = np.sum([r.summary["budget_by_pass_rate"]["sum"] for r in by[label]], axis=0)
            c = np.sum([r.summary["budget_by_pass_rate"]["count"] for r in by[label]], axis=0)
            for k, ax in enumerate(axes):
                ok = c[k] > 0
                ax.plot(x[ok], s[k][ok] / c[k][ok], marker="o", ms=3, color=colors[label], label=label, lw=1.2)
        for k, ax in enumerate(axes):
            ax.set_xticks(x, PASS_RATE_BINS, rotation=60, fontsize=7)
            ax.set_xlabel("estimated pass rate of the prompt (previous appearance)")
            ax.set_title(f"{PHASES[k]} third of training")
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("mean rollouts given")
        axes[0].legend(fontsize=7)
        _save(fig, out / PLOTS[3])
        plt.close(fig)
        written.append(PLOTS[3])

    # 5. difficulty transitions
    have = [label for label in labels if all("transitions" in r.summary for r in by[label])]
    if have:
        cols = min(4, len(have))
        rows_ = math.ceil(len(have) / cols)
        fig, axes = plt.subplots(rows_, cols, figsize=(3.6 * cols, 3.4 * rows_), squeeze=False, layout="constrained")
        short = ["x-hard", "hard", "medium", "easy", "x-easy"]
        for ax, label in zip(axes.flat, have):
            total = np.sum([r.summary["transitions"] for r in by[label]], axis=0).astype(np.float64)
            pct = 100 * total / np.maximum(total.sum(axis=1, keepdims=True), 1)
            ax.imshow(pct, vmin=0, vmax=100, cmap="Blues")
            for i in range(len(BUCKETS)):
                for j in range(len(BUCKETS)):
                    ax.text(j, i, f"{pct[i, j]:.0f}", ha="center", va="center", fontsize=7, color="white" if pct[i, j] > 60 else "black")
            ax.set_xticks(range(len(BUCKETS)), short, rotation=45, fontsize=7)
            ax.set_yticks(range(len(BUCKETS)), short, fontsize=7)
            ax.set_title(label, fontsize=9)
        for ax in list(axes.flat)[len(have) :]:
            ax.axis("off")
        fig.supxlabel("final bucket")
        fig.supylabel("initial bucket")
        fig.suptitle("Difficulty transitions of train prompts, % of each initial bucket (cf. CoBA-RL Fig. 7)")
        _save(fig, out / PLOTS[4])
        plt.close(fig)
        written.append(PLOTS[4])
    return written


# --- report.md -----------------------------------------------------------------------------------


def _pm(entry: dict | None, scale: float = 1.0, digits: int = 3) -> str:
    if not entry or entry.get("mean") is None:
        return "n/a"
    m = entry["mean"] * scale
    h = entry.get("half_width")
    return f"{m:.{digits}f}" if h is None else f"{m:.{digits}f} ± {h * scale:.{digits}f}"


def report_markdown(summary: dict[str, Any], plots: Sequence[str]) -> str:
    s = summary
    lines = [
        "# cobarl compare",
        "",
        f"Command: `{s['command']}`" if s["command"] else "",
        "",
        f"Backend **{s['backend']}**; seeds {s['seeds']}; {s['steps']} steps of {s['prompts_per_step']} prompts; "
        f"{s['rollouts_per_prompt']:g} rollouts per prompt on average x budget multiplier {s['budget_multiplier']:g} "
        f"= {s['budget_per_step']:g} rollouts per step (before per-strategy `@` multipliers).",
        "",
        "Strategies:",
        "",
    ]
    for label, e in s["strategies"].items():
        lines.append(f"- `{label}`: {e['description']}")
    if s["backend"] == "simulated":
        sim = s["simulator"]
        lines += [
            "",
            "Simulated task: "
            + ", ".join(f"{k}={v}" for k, v in sim.items())
            + ". This is an LLM-free model of GRPO learning dynamics, not an LLM result; see the README "
            "section *Simulator: what it captures and what it does not*.",
        ]
    acc = s["accuracy_metric"] or "accuracy"
    target = s["target_accuracy"]
    lines += [
        "",
        "## Results (mean ± 95 % CI half-width over seeds)",
        "",
        f"Target for *rollouts to target*: {acc} >= {target:.4f}" if target is not None else "",
        "",
        "| strategy | final held-out acc | final train solved | effective ratio | eff. ratio, last third | rollouts | rollouts to target (reached) |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, e in s["strategies"].items():
        rt = e.get("rollouts_to_target", {})
        lines.append(
            f"| `{label}` | {_pm(e.get('final_heldout_accuracy'))} | {_pm(e.get('final_train_solved'))} | "
            f"{_pm(e.get('effective_ratio'))} | {_pm(e.get('effective_ratio_last_third'))} | "
            f"{_pm(e.get('rollouts'), digits=0)} | {_pm(rt, digits=0)} ({rt.get('reached', 0)}/{rt.get('runs', 0)}) |"
        )
    base = s["baseline"]
    if s["gaps_vs_baseline"]:
        lines += [
            "",
            f"## Paired gaps against `{base}` (same seeds; mean ± 95 % CI)",
            "",
            "| strategy | Δ held-out acc (points) | Δ train solved (points) | Δ effective ratio (relative %) | rollouts / baseline |",
            "|---|---|---|---|---|",
        ]
        for label, g in s["gaps_vs_baseline"].items():
            lines.append(
                f"| `{label}` | {_pm(g['final_heldout_accuracy'], 100, 2)} | {_pm(g['final_train_solved'], 100, 2)} | "
                f"{_pm(g['effective_ratio_relative_percent'], 1, 1)} | {_pm(g['rollouts_ratio'], 1, 2)} |"
            )
        lines += ["", "A CI that contains 0 means no detectable difference at this number of seeds."]
    captions = {
        PLOTS[0]: "Accuracy against rollouts consumed.",
        PLOTS[1]: "Effective-gradient ratio: share of the step's rollouts that sit in groups with both outcomes.",
        PLOTS[2]: "alpha_t and beta_t used by each step's allocation, and the step's failure rate F_t.",
        PLOTS[3]: "Mean budget by the prompt's estimated pass rate, per third of training (pooled over seeds).",
        PLOTS[4]: "Difficulty transitions of train prompts by empirical pass rate over 16 samples: extremely-hard "
        "= 0/16, hard <= 4/16, medium < 12/16, easy < 16/16, extremely-easy = 16/16.",
    }
    lines += ["", "## Figures", ""]
    for name in plots:
        lines += [f"![{name}]({name})", "", captions.get(name, ""), ""]
    return "\n".join(line for line in lines if line is not None) + "\n"


def report_html(markdown: str) -> str:
    """A minimal self-contained HTML page for the report (tables and images, no dependencies)."""
    import html

    out = ["<!doctype html><meta charset='utf-8'><title>cobarl compare</title>",
           "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}td,th{border:1px solid #ccc;padding:3px 6px}"
           "table{border-collapse:collapse}img{max-width:100%}</style>"]
    in_table = False
    for line in markdown.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if set("".join(cells)) <= set("-"):
                continue
            if not in_table:
                out.append("<table>")
                in_table = True
                out.append("<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in cells) + "</tr>")
            else:
                out.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
            continue
        if in_table:
            out.append("</table>")
            in_table = False
        if line.startswith("!["):
            src = line[line.index("(") + 1 : -1]
            out.append(f"<p><img src='{html.escape(src)}'></p>")
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{html.escape(line.lstrip('# '))}</h{level}>")
        elif line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    if in_table:
        out.append("</table>")
    return "\n".join(out) + "\n"


def write_report(
    runs: Sequence[RunResult], options: CompareOptions, out_dir: str | os.PathLike, *, command: str = "", plots: bool = True, html: bool = True
) -> dict[str, Any]:
    """Write every report file into ``out_dir`` (created if needed); returns the summary."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarise(runs, options, command=command)
    write_text(out / "metrics.csv", metrics_csv(runs))
    write_text(out / "summary.json", json.dumps(summary, indent=2, allow_nan=False) + "\n")
    written = plot_all(runs, options, out) if plots else []
    md = report_markdown(summary, written)
    write_text(out / "report.md", md)
    if html:
        write_text(out / "report.html", report_html(md))
    return summary
