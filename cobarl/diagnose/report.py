"""What ``cobarl diagnose`` reports: the diagnosis as one JSON-ready object (from the sampled counts,
through `cobarl.diagnose.stats`), its placement on the regime map, and the text report."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cobarl.diagnose import placement
from cobarl.diagnose.stats import histogram, share_interval, shares


def diagnosis(successes: Sequence[int], more, *, prompt_ids: Sequence[Any], k: int, max_samples: int, interval: str,
              available: int, rollouts_first: int, rollouts_total: int, reward_failures: int,
              source: Mapping[str, Any], seconds: float) -> dict[str, Any]:
    """The diagnosis of ``successes`` (``[P]`` of k samples) and ``more`` (a `cobarl.diagnose.sample.Resampled`).

    ``reachable_of_zero``: share of the resampled 0/k prompts with a success within ``max_samples``;
    ``unsolved_of_solved``: share of the resampled k/k prompts with a failure within it; each with its
    95 % interval (``interval``), None when no such prompt was resampled.
    """
    successes = np.asarray(successes, dtype=np.int64)
    zero, solved = more.looking_for_success, ~more.looking_for_success
    decided = np.array([d is not None for d in more.decided_at], dtype=bool)
    reach = share_interval(int(decided[zero].sum()), int(zero.sum()), interval)
    unsolved = share_interval(int(decided[solved].sum()), int(solved.sum()), interval)
    per_prompt = [{"prompt_id": _plain(pid), "successes_of_k": int(c), "samples": k, "successes": int(c),
                   "pass_at_samples": int(c > 0), "decided_at": None} for pid, c in zip(prompt_ids, successes)]
    for j, i in enumerate(more.index):
        per_prompt[i].update(samples=int(more.samples[j]), successes=int(more.successes[j]),
                             pass_at_samples=int(more.successes[j] > 0), decided_at=more.decided_at[j],
                             resampled="zero" if more.looking_for_success[j] else "solved")
    return {
        "k": k, "max_samples": max_samples, "prompts": int(successes.size), "prompts_available": available,
        **shares(successes, k),
        "histogram": histogram(successes, k),
        "successes_histogram": np.bincount(successes, minlength=k + 1).tolist(),
        "interval": interval,
        "resampled": {"zero": reach["of"], "solved": unsolved["of"]},
        "reachable_of_zero": reach["share"], "reachable_of_zero_ci": reach["ci"], "reachable_count": reach["hits"],
        "unsolved_of_solved": unsolved["share"], "unsolved_of_solved_ci": unsolved["ci"],
        "unsolved_count": unsolved["hits"],
        "samples_to_success": _quartiles([d for d, z in zip(more.decided_at, zero) if z and d is not None]),
        "rollouts_generated": rollouts_total,
        "rollouts": {"first_pass": rollouts_first, "resampling": rollouts_total - rollouts_first},
        "reward_failures": reward_failures,
        "seconds": seconds,
        "source": dict(source),
        "per_prompt": per_prompt,
    }


def _plain(x: Any) -> Any:
    return x.item() if isinstance(x, np.generic) else x


def _quartiles(values: Sequence[int]) -> dict[str, float] | None:
    """Quartiles of the sample number at which the reachable 0/k prompts first succeeded (None: none did)."""
    if not values:
        return None
    q = np.percentile(np.asarray(values, dtype=np.float64), [25, 50, 75])
    return {"q25": float(q[0]), "median": float(q[1]), "q75": float(q[2])}


def placement_result(result: Mapping[str, Any], regime_map: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The nearest regime of ``regime_map`` to ``result`` with what the map measured there (None: no map)."""
    if regime_map is None:
        return None
    near = placement.nearest_regime(regime_map["regimes"], share_zero=result["share_zero"],
                                    reachable_of_zero=result["reachable_of_zero"],
                                    reachable_ci=result["reachable_of_zero_ci"])
    regime = near["regime"]
    return {"name": regime["name"], "by": near["by"], "consistent_with_interval": near["consistent"],
            "scale_note": placement.scale_note(regime, result["k"], result["max_samples"]) or None,
            "caveat": placement.CAVEAT, "regime": regime}


def clean(x: Any) -> Any:
    """JSON-safe: NaN/inf become None, numpy scalars plain numbers."""
    if isinstance(x, Mapping):
        return {k: clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [clean(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def _share_line(what: str, of: int, pool: int, share: float | None, ci, hits: int, interval: str) -> str:
    if of == 0:
        return f"  {what}: no such prompt to resample"
    return (f"  {what}: {hits} of {of} = {_pct(share)} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}] "
            f"(95 % {interval.replace('-', '–').title()}; {of} of the {pool} such prompts resampled)")


def _histogram_lines(r: Mapping[str, Any]) -> list[str]:
    k = r["k"]
    lines = [f"pass rates: successes of {k} samples per prompt ({r['prompts']} prompts)"]
    for h in r["histogram"]:
        lines.append(f"  {h['bucket']:>10}  {h['prompts']:>6}  {100 * h['share']:5.1f} %  {'#' * round(40 * h['share'])}")
    lines.append(f"  0/{k}: {_pct(r['share_zero'])} · mixed (1..{k - 1}/{k}): {_pct(r['share_mixed'])} · "
                 f"{k}/{k}: {_pct(r['share_solved'])}")
    return lines


def _resample_lines(r: Mapping[str, Any]) -> list[str]:
    k, counts = r["k"], r["successes_histogram"]
    lines = [f"resampled up to {r['max_samples']} samples per prompt in all, each stopped once decided:",
             _share_line(f"0/{k} prompts reachable (some sample succeeds)", r["resampled"]["zero"], counts[0],
                         r["reachable_of_zero"], r["reachable_of_zero_ci"], r["reachable_count"], r["interval"]),
             _share_line(f"{k}/{k} prompts unsolved (some sample fails)", r["resampled"]["solved"], counts[k],
                         r["unsolved_of_solved"], r["unsolved_of_solved_ci"], r["unsolved_count"], r["interval"])]
    q = r["samples_to_success"]
    if q is not None:
        lines.append(f"  first success of a reachable 0/{k} prompt at sample {q['median']:.0f} (median; "
                     f"quartiles {q['q25']:.0f}-{q['q75']:.0f})")
    return lines


def _placement_lines(r: Mapping[str, Any]) -> list[str]:
    near, m = r.get("nearest_regime"), r.get("map") or {}
    if near is None:
        return [f"regime map: {m.get('note') or 'none'}; placement skipped"]
    g = near["regime"]
    lines = [f"regime map {m.get('path')} (measured on: {m.get('measured_on') or 'not stated'})",
             f"nearest regime: {near['name']} (by {near['by']}): there {_pct(g['share_zero'])} of prompts at "
             f"0/{g['k']}, {_pct(g['reachable_of_zero'])} of them reachable within {g['max_samples']} samples (here: "
             f"{_pct(r['share_zero'])} and {_pct(r['reachable_of_zero'])})"]
    if len(near["consistent_with_interval"]) > 1:
        lines.append(f"  your interval covers several regimes ({', '.join(near['consistent_with_interval'])}); "
                     "the share at 0/k decided")
    lines += [f"  {line}" for line in placement.delta_lines(g)]
    if near["scale_note"]:
        lines.append(f"  note: {near['scale_note']}")
    lines.append(f"  note: {near['caveat']}")
    return lines


def text(r: Mapping[str, Any]) -> str:
    """The human report of a diagnosis (with its placement)."""
    s = r["source"]
    what = s["task"] if s.get("dataset") is None else s["dataset"]
    head = (f"cobarl diagnose: {what} | model {s['model']} ({s['backend']}, {s['device']}) | "
            f"{r['prompts']} of {r['prompts_available']} train prompts | T={s['temperature']:g} | "
            f"reward {s['reward']} ({s['success']}) | seed {s['seed']}")
    lines = [head, "", *_histogram_lines(r), "", *_resample_lines(r), "",
             f"rollouts generated: {r['rollouts']['first_pass']:,} + {r['rollouts']['resampling']:,} resampling = "
             f"{r['rollouts_generated']:,} in {r['seconds']:.1f} s"]
    if r["reward_failures"]:
        lines.append(f"WARNING: {r['reward_failures']} reward calls failed (raised, timed out or not a number) and "
                     "scored 0: the shares of successes are lower bounds")
    return "\n".join([*lines, "", *_placement_lines(r)])
