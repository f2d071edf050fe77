"""``report.md``: the setting, a sweep's choice, the results table, the paired gaps, the simulator
check and the figures, from the summary (`cobarl.experiments.report.report_stats.summarise_comparison`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from cobarl.experiments.simulation import sim_trust
from cobarl.experiments.comparison.specs import format_value
from cobarl.experiments.report.figures import GRID_HEATMAP, PLOTS, values_text
from cobarl.experiments.simulation.sim_map import cell_check_md

def _pm(entry: dict | None, scale: float = 1.0, digits: int = 3) -> str:
    if not entry or entry.get("mean") is None:
        return "n/a"
    m = entry["mean"] * scale
    h = entry.get("half_width")
    return f"{m:.{digits}f}" if h is None else f"{m:.{digits}f} ± {h * scale:.{digits}f}"


_CAPTIONS = {
    PLOTS[0]: "Accuracy against cumulative rollouts GENERATED (for policies that train on a subset, more than "
    "they trained on).",
    PLOTS[1]: "Effective-gradient ratio: share of the step's trained rollouts that sit in groups with both outcomes.",
    PLOTS[2]: "alpha_t and beta_t used by each step's allocation, and the step's failure rate F_t.",
    PLOTS[3]: "Mean budget by the prompt's estimated pass rate, per third of training (pooled over seeds).",
    PLOTS[4]: "Difficulty transitions of train prompts by empirical pass rate over 16 samples: extremely-hard "
    "= 0/16, hard <= 4/16, medium < 12/16, easy < 16/16, extremely-easy = 16/16.",
}


def report_markdown(summary: dict[str, Any], plots: Sequence[str]) -> str:
    """report.md: the setting, the sweep's choice (for a sweep), the results table, the paired
    gaps and the figures."""
    grid_plots = [name for name in plots if name.startswith("grid_")]
    shown = accuracy_shown(summary)
    lines = [*_setting_md(summary)]
    if summary.get("grid"):
        lines += _grid_md(summary, grid_plots)
    lines += [*_results_md(summary, shown), *_spending_md(summary)]
    lines += [*(_equal_generated_md(summary) if shown else []), *_gaps_md(summary, shown)]
    if summary.get("simulator_check"):
        lines += _check_md(summary["simulator_check"])
    lines += ["", "## Figures", ""]
    for name in plots:
        if name not in grid_plots:
            lines += [f"![{name}]({name})", "", _CAPTIONS.get(name, ""), ""]
    return "\n".join(lines) + "\n"


def accuracy_shown(s: dict[str, Any]) -> bool:
    """Whether a report shows its accuracy: the real back-end's always, a simulated one's as its summary
    records (`sim_trust`; absent, as in every summary written before it: shown)."""
    return s["backend"] != "simulated" or s.get("accuracy_shown", True)


def arm_budget(s: dict[str, Any], label: str) -> float:
    """Rollouts per step an arm's allocator distributes (what trains): the comparison's budget times the
    arm's own ``@`` multiplier."""
    return s["budget_per_step"] * s["strategies"][label]["budget_multiplier"]


def _fresh_seeds(seeds: Sequence[int], n: int = 10) -> str:
    start = max(seeds, default=-1) + 1
    return ",".join(str(k) for k in range(start, start + n))


def _grid_md(s: dict[str, Any], plots: Sequence[str]) -> list[str]:
    """The sweep: the choice by validation accuracy, then its held-out accuracy, the table of every
    configuration and the per-option figures."""
    g = s["grid"]
    lines = _grid_intro_md(s)
    if g["missing_metric"] or g["chosen"] is None:
        return [*lines, f"**No configuration logged `{g['selection_metric']}`: nothing was chosen.**"]
    return [*lines, *_grid_choice_md(s), *_grid_table_md(g), *_grid_figures_md(g, plots)]


def _grid_intro_md(s: dict[str, Any]) -> list[str]:
    """The grid, its seeds and base configuration, and the selection rule."""
    g = s["grid"]
    sim = s.get("simulator") or {}
    n_val = sim.get("validation_prompts")
    planned = math.prod(len(v) for v in g["options"].values())
    finished = sum(e["on_grid"] for e in g["configs"].values())
    lines = ["", "## Tuning sweep: chosen configuration", ""]
    lines += [
        f"Grid: {'; '.join(f'{k} = ' + ', '.join(map(format_value, v)) for k, v in g['options'].items())} "
        f"({planned} configuration{'s' * (planned != 1)}"
        + (f", {finished} of them finished" if finished < planned else "")
        + (", plus the base configuration" if g["base_ran"] and not g["configs"][g["base"]]["on_grid"] else "")
        + f"), every one on the same seeds {s['seeds']}. Base configuration: `{g['base']}`.",
        "",
        f"Selection: the highest mean final **validation accuracy** (`{g['selection_metric']}`) over seeds, measured on "
        + (f"{n_val} " if n_val else "")
        + "validation prompts that are neither trained on nor part of the held-out set. The held-out accuracy "
        "played no part in the choice; it is reported after it.",
        "",
    ]
    if not sim_trust.is_a_prediction(s["backend"]):
        lines += [sim_trust.sweep_text(), ""]
    return lines


def _grid_choice_md(s: dict[str, Any]) -> list[str]:
    """The chosen configuration, its paired gaps against the base and how to confirm it."""
    g = s["grid"]
    c = g["configs"][g["chosen"]]
    gap_v, gap_h = c.get("validation_gap_vs_base"), c.get("heldout_gap_vs_base")
    if g["chosen_is_base"]:
        verdict = "The base configuration is the best on validation."
    elif gap_v is None:
        verdict = "The base configuration did not finish; no paired gap."
    elif g["chosen_beats_base"]:
        verdict = (f"Paired against the base on validation: {_pm(gap_v, 100, 2)} points; the 95 % CI excludes 0.")
    else:
        verdict = (f"Paired against the base on validation: {_pm(gap_v, 100, 2)} points; the 95 % CI contains 0, "
                   "so at this number of seeds the chosen configuration is not distinguishable from the base.")
    return [
        f"**Chosen: `{g['chosen']}`** ({values_text(c['values'])}): validation accuracy "
        f"{_pm(c['validation_accuracy'], digits=4)}. {verdict}",
        "",
        f"Held-out accuracy of the chosen configuration (reported after the choice): {_pm(c['heldout_accuracy'], digits=4)}"
        + (f"; paired against the base: {_pm(gap_h, 100, 2)} points." if gap_h is not None and not g["chosen_is_base"] else "."),
        "",
        "The best of several configurations on validation is biased upwards (it was picked for being high). The "
        "held-out prompts played no part in the choice, but the seeds did: validation and held-out measure the same "
        "trained runs, so luck in a run's training draws favours both. To confirm a choice, run it against the base "
        f"on fresh seeds: `cobarl compare --strategies '{g['base']},{g['chosen']}' --baseline '{g['base']}' "
        f"--seed-list {_fresh_seeds(s['seeds'])}` (with the same other options).",
        "",
    ]


def _grid_table_md(g: dict[str, Any]) -> list[str]:
    """One row per configuration: its values, accuracies, paired gaps and validation rank."""
    lines = [
        "| configuration | " + " | ".join(g["options"]) + " | validation acc | Δ validation vs base (points) | "
        "held-out acc | Δ held-out vs base (points) | rank (validation) |",
        "|---|" + "---|" * len(g["options"]) + "---|---|---|---|---|",
    ]
    for label, e in g["configs"].items():
        name = f"`{label}`" + (" (base)" if e["is_base"] else "")
        if label == g["chosen"]:
            name = f"**{name}** ★"
        values = [format_value(e["values"][k]) for k in g["options"]]
        gap = (lambda key: "—") if e["is_base"] else (lambda key: _pm(e.get(key), 100, 2))
        lines.append(
            f"| {name} | " + " | ".join(values) + f" | {_pm(e['validation_accuracy'], digits=4)} | "
            f"{gap('validation_gap_vs_base')} | {_pm(e['heldout_accuracy'], digits=4)} | "
            f"{gap('heldout_gap_vs_base')} | {e.get('validation_rank', 'n/a')} |"
        )
    return [*lines, "", "Accuracies: mean ± 95 % CI half-width over seeds; Δ: paired by seed against the base configuration."]


def _grid_figures_md(g: dict[str, Any], plots: Sequence[str]) -> list[str]:
    lines: list[str] = []
    for name in plots:
        option = name[len("grid_"):-len(".png")]
        caption = ("Validation accuracy (mean over seeds) over the two options; red box: the chosen configuration."
                   if name == GRID_HEATMAP else
                   f"Validation accuracy against {option}, the other options at the values of the best grid configuration "
                   f"(`{g['plot_anchor']}`); a dashed line marks the base configuration when it is not a grid point. The band "
                   "is the spread over seeds, most of which every configuration shares (same task per seed): the paired "
                   "Δ columns above are the sharper comparison.")
        lines += ["", f"![{name}]({name})", "", caption]
    return lines


def _setting_md(s: dict[str, Any]) -> list[str]:
    lines = ["# cobarl compare", ""]
    if sim_trust.warns(s["backend"], accuracy_shown(s)):
        lines += [f"**{sim_trust.warning_text()}**", ""]
    if s["command"]:
        lines += [f"Command: `{s['command']}`", ""]
    if s.get("incomplete"):
        inc = s["incomplete"]
        lines += [f"**Interrupted: {inc['finished_runs']} of {inc['planned_runs']} runs finished.** Only those are "
                  f"reported; missing: {', '.join(inc['missing'])}.", ""]
    lines += _runs_md(s.get("runs"))
    lines += [
        f"Backend **{s['backend']}**; seeds {s['seeds']}; {s['steps']} steps of {s['prompts_per_step']} prompts; "
        f"{s['rollouts_per_prompt']:g} rollouts per prompt on average x budget multiplier {s['budget_multiplier']:g} "
        f"= {s['budget_per_step']:g} rollouts per step (before per-strategy `@` multipliers).",
        "",
        _budget_line(s),
        "",
        "Strategies:",
        "",
    ]
    lines += [f"- `{label}`: {e['description']}" for label, e in s["strategies"].items()]
    if s["backend"] == "simulated":
        lines += [
            "",
            "Simulated task: " + ", ".join(f"{k}={v}" for k, v in s["simulator"].items())
            + ". This is an LLM-free model of GRPO learning dynamics, not an LLM result; see the README "
            "section *Simulator: what it captures and what it does not*.",
        ]
        if not accuracy_shown(s):
            lines += ["", sim_trust.withheld_text(sweep=bool(s.get("grid")))]
    return lines


def _runs_md(runs: list[dict[str, Any]] | None) -> list[str]:
    """Which runs were reused from the folder's run store and which this command ran, with the command
    that first produced them and when."""
    if not runs or not any(r["reused"] for r in runs):
        return []
    now = sum(not r["reused"] for r in runs)
    lines = [f"Runs: {len(runs) - now} reused from earlier commands into this folder (`runs/`), {now} run by this "
             "command:", "", "| runs | run by | finished | strategy seed |", "|---|---|---|---|"]
    by: dict[tuple[bool, str], list[dict[str, Any]]] = {}
    for r in runs:
        by.setdefault((r["reused"], r["command"]), []).append(r)
    for (reused, command), rs in sorted(by.items(), key=lambda kv: not kv[0][0]):
        times = sorted(r["finished_at"] for r in rs)
        when = times[0] if times[0] == times[-1] else f"{times[0]} to {times[-1]}"
        command = "`" + command.replace("|", "\\|") + "`" if reused else "this command"
        lines.append(f"| {'reused' if reused else 'run now'} | {command} | {when} | "
                     + ", ".join(f"`{r['label']}` {r['seed']}" for r in rs) + " |")
    return lines + [""]


def _results_md(s: dict[str, Any], shown: bool = True) -> list[str]:
    if not shown:
        return _results_without_accuracy_md(s)
    acc, target = s["accuracy_metric"] or "accuracy", s["target_accuracy"]
    lines = ["", "## Results (mean ± 95 % CI half-width over seeds)", ""]
    lines += [f"*Rollouts* are the ones GENERATED. *Rollouts to target*: cumulative generated rollouts until {acc} first reaches "
              + (f"{target:.4f}" if target is not None else f"`{s['baseline']}`'s final accuracy on the same seed")
              + " (reached: runs that got there)", ""]
    greedy = _has_greedy(s)
    lines += [
        "| strategy | initial held-out acc | final held-out acc |" + (" final greedy acc |" if greedy else "")
        + " final train solved | effective ratio | eff. ratio, last third | rollouts generated | rollouts to target (reached) |",
        "|---|---|---|" + ("---|" if greedy else "") + "---|---|---|---|---|",
    ]
    for label, e in s["strategies"].items():
        rt = e.get("rollouts_to_target", {})
        lines.append(
            f"| `{label}` | {_pm(e.get('initial_heldout_accuracy'))} | {_pm(e.get('final_heldout_accuracy'))} | "
            + (f"{_pm(e.get('final_heldout_greedy_accuracy'))} | " if greedy else "")
            + f"{_pm(e.get('final_train_solved'))} | "
            f"{_pm(e.get('effective_ratio'))} | {_pm(e.get('effective_ratio_last_third'))} | "
            f"{_pm(e.get('rollouts'), digits=0)} | {_pm(rt, digits=0)} ({rt.get('reached', 0)}/{rt.get('runs', 0)}) |"
        )
    return lines


def _results_without_accuracy_md(s: dict[str, Any]) -> list[str]:
    """The results a simulated report shows while its accuracy is no prediction (`sim_trust`)."""
    lines = ["", "## Results (mean ± 95 % CI half-width over seeds)", "",
             "*Budget per step*: the rollouts each arm's allocator distributes over a step's prompts (what trains; "
             "the next table has what each generates). *Rollouts generated*: per run.", "",
             "| strategy | budget per step | effective ratio | eff. ratio, last third | rollouts generated |",
             "|---|---|---|---|---|"]
    for label, e in s["strategies"].items():
        lines.append(f"| `{label}` | {arm_budget(s, label):g} | {_pm(e.get('effective_ratio'))} | "
                     f"{_pm(e.get('effective_ratio_last_third'))} | {_pm(e.get('rollouts'), digits=0)} |")
    return lines


_SPENDING_COLUMNS = {"rollouts_generated_per_step": "rollouts generated", "rollouts_trained_per_step": "rollouts trained",
                     "rounds_per_step": "generation rounds", "prompts_consumed_per_step": "prompts consumed",
                     "completion_tokens_per_step": "completion tokens", "steps": "steps per run"}


def _spending_md(s: dict[str, Any]) -> list[str]:
    """How each arm spends a step: what it generated against what it trained on, its generation calls
    and the prompts it consumed (summary.json from before version 2: nothing)."""
    arms = {label: e for label, e in s["strategies"].items() if any(k in e for k in _SPENDING_COLUMNS)}
    if not arms:
        return []
    lines = ["", "## How each strategy spends a step (mean per step ± 95 % CI over seeds)", "",
             "| strategy | " + " | ".join(_SPENDING_COLUMNS.values()) + " | trained / generated |",
             "|---|" + "---|" * (len(_SPENDING_COLUMNS) + 1)]
    for label, e in arms.items():
        made, used = (e.get(k, {}).get("mean") for k in ("rollouts_generated_per_step", "rollouts_trained_per_step"))
        share = f"{used / made:.2f}" if made and used is not None else "n/a"
        lines.append(f"| `{label}` | " + " | ".join(_pm(e.get(k), digits=1) for k in _SPENDING_COLUMNS) + f" | {share} |")
    return [*lines, "", "Generated rollouts are the cost (the budget the comparison is fair on); trained ones enter the "
            "loss. Prompts consumed: distinct prompts rolled out (DAPO draws more than a step trains on). Completion "
            "tokens: generated, real back-end only. Steps per run: optimizer steps (fewer for a policy that generates "
            "more, when every run ends at the same generated rollouts)."]


def _equal_generated_md(s: dict[str, Any]) -> list[str]:
    """Held-out accuracy of every arm at the same number of generated rollouts, paired against the baseline."""
    g = s.get("equal_generated_rollouts")
    if g is None:
        return []
    gaps = s["gaps_vs_baseline"]
    lines = ["", f"## Held-out accuracy at equal generated rollouts (G = {g:,.0f})", "",
             "Each run's accuracy interpolated on its curve against cumulative generated rollouts at G, the smallest "
             "final generated total of any run (so every run reaches it); Δ paired by seed against "
             f"`{s['baseline']}` (mean ± 95 % CI).", "",
             "| strategy | held-out acc at G | Δ vs baseline at G (points) |", "|---|---|---|"]
    for label, e in s["strategies"].items():
        gap = "—" if label == s["baseline"] else _pm((gaps.get(label) or {}).get("heldout_accuracy_at_equal_generated"), 100, 2)
        lines.append(f"| `{label}` | {_pm(e.get('heldout_accuracy_at_equal_generated'), digits=4)} | {gap} |")
    return lines


def _has_greedy(s: dict[str, Any]) -> bool:
    """Whether the runs measured greedy accuracy (the real back-end does, the simulator cannot)."""
    return any((e.get("final_heldout_greedy_accuracy") or {}).get("mean") is not None for e in s["strategies"].values())


def _gap_columns(s: dict[str, Any], shown: bool) -> list[tuple[str, str, float, int]]:
    """(header, gap metric, scale, digits) of the gaps table; the accuracy ones only where accuracy is shown."""
    accuracy = [("Δ held-out acc (points)", "final_heldout_accuracy", 100, 2)]
    if _has_greedy(s):
        accuracy.append(("Δ greedy acc (points)", "final_heldout_greedy_accuracy", 100, 2))
    accuracy.append(("Δ train solved (points)", "final_train_solved", 100, 2))
    return [*(accuracy if shown else []), ("Δ effective ratio (relative %)", "effective_ratio_relative_percent", 1, 1),
            ("rollouts generated / baseline", "rollouts_ratio", 1, 2)]


def _gaps_md(s: dict[str, Any], shown: bool = True) -> list[str]:
    if not s["gaps_vs_baseline"]:
        return []
    columns = _gap_columns(s, shown)
    lines = ["", f"## Paired gaps against `{s['baseline']}` (same seeds; mean ± 95 % CI)", "",
             "| strategy | " + " | ".join(c[0] for c in columns) + " |", "|---|" + "---|" * len(columns)]
    for label, g in s["gaps_vs_baseline"].items():
        lines.append(f"| `{label}` | " + " | ".join(_pm(g.get(key), scale, digits) for _, key, scale, digits in columns) + " |")
    return [*lines, "", "A CI that contains 0 means no detectable difference at this number of seeds."]


def _points(share: float | None) -> float | None:
    return None if share is None else 100 * share  # a gain of 0 is a gain, not a missing one


def _check_md(check: dict[str, Any]) -> list[str]:
    """The simulator-vs-real section (`cobarl.experiments.simulation.sim_vs_real.simulator_check`)."""
    rc, gains, base = check["rank_correlation"], check["baseline_gain"], check["baseline"]

    def num(x: float | None, fmt: str) -> str:
        return "n/a" if x is None or not math.isfinite(x) else format(x, fmt)

    lines = [
        "",
        f"## Simulator vs real back-end (`--against {check['real_report']}`)",
        "",
        "Same strategies, seeds, steps and budgets as the real comparison. The accuracies are on different tasks: "
        "compare the order of the arms and their gaps relative to the baseline's own gain.",
        "",
        f"- Spearman rank correlation across the {len(check['arms'])} arms: final held-out accuracy "
        f"**{num(rc['final_heldout_accuracy'], '+.2f')}**, effective-gradient ratio **{num(rc['effective_ratio'], '+.2f')}**",
        f"- order by final held-out accuracy, simulated: {' > '.join(check['order']['simulated'])}; "
        f"real: {' > '.join(check['order']['real'])}",
        f"- sign agreement of the held-out gaps against `{base}`: {check['heldout_gap_sign_agreement']}; real gaps "
        f"whose CI excludes 0: {', '.join(f'`{a}`' for a in check['real_gaps_resolved']) or 'none'}",
        f"- `{base}`'s own RL gain in held-out accuracy: simulated {num(_points(gains['simulated']), '+.2f')} "
        f"points, real {num(_points(gains['real']), '+.2f')} points",
        "",
        "| strategy | Δ held-out, sim (pts) | Δ held-out, real (pts) | Δ / baseline gain, sim | Δ / baseline gain, real "
        "| Δ effective ratio, sim (%) | Δ effective ratio, real (%) |",
        "|---|---|---|---|---|---|---|",
    ]
    for label in check["arms"]:
        if label == base:
            continue
        sim, real = check["per_arm"][label]["simulated"], check["per_arm"][label]["real"]
        lines.append(
            f"| `{label}` | {_pm(sim['heldout_gap'], 100, 2)} | {_pm(real['heldout_gap'], 100, 2)} | "
            f"{num(sim['heldout_gap_share_of_baseline_gain'], '+.2f')} | {num(real['heldout_gap_share_of_baseline_gain'], '+.2f')} | "
            f"{_pm(sim['effective_ratio_gap_relative_percent'], 1, 1)} | {_pm(real['effective_ratio_gap_relative_percent'], 1, 1)} |"
        )
    if check.get("preset_note"):
        lines += ["", f"**Note: {check['preset_note']}.**"]
    return lines + (cell_check_md(check["cell_check"]) if check.get("cell_check") else [])


def _budget_line(s: dict) -> str:
    if s.get("budget") == "generated":
        return ("Budget: **equal generated rollouts**. Every run ends once it generated what the steps above generate "
                "without rounds, so a policy that generates more than it trains on takes fewer steps (real runs decay "
                "the learning rate in generated rollouts, `cobarl train --max-generated`).")
    return "Budget: **equal steps**. Every run trains the steps above, whatever it generates."
