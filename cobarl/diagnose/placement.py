"""The regime map and where a diagnosis sits on it: reading and checking the map file, the nearest
measured regime, and the lines that say what the map measured there.

The map (``cobarl/data/regime_map.json`` by default, written by the map builder) holds, per measured
regime of the embedded families task, the shares a diagnosis reports (``share_zero``,
``reachable_of_zero``, ...) and each rollout policy's held-out accuracy gain over uniform GRPO there::

    {"format": "cobarl.regime-map", "version": 1, "measured_on": "...",
     "regimes": [{"name": "families-u90", "k": 16, "max_samples": 256, "share_zero": 0.41,
                  "reachable_of_zero": 0.12, "reachable_of_zero_ci": [0.05, 0.2], "uniform_gain": 0.21,
                  "deltas": {"generated": {"coba": {"mean": -0.031, "ci": [-0.05, -0.012], "seeds": 5}}}}]}

Accuracies are fractions in the file and points (x 100) in what is printed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

MAP_FORMAT = "cobarl.regime-map"
MAP_VERSION = 1
BUDGETS = {"generated": "at equal generated rollouts", "steps": "at equal steps"}
"""The map's comparison budgets (keys of ``deltas``), in the order they are printed."""
_SHARES = ("share_zero", "share_solved", "share_mixed", "reachable_of_zero")
CAVEAT = ("the map is measured on the embedded families task (a tiny model, synthetic families), not on your "
          "model: it says which of its worlds your data resembles, not what these policies will do on your data")


def default_map_path() -> Path:
    """The packaged map: ``cobarl/data/regime_map.json``."""
    return Path(__file__).resolve().parents[1] / "data" / "regime_map.json"


def _number(value: Any, where: str, *, share: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where} must be a finite number, got {value!r}")
    if share and not 0 <= value <= 1:
        raise ValueError(f"{where} must be a share in [0, 1], got {value!r}")
    return float(value)


def _interval(value: Any, where: str) -> None:
    if value is None:
        return
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError(f"{where} must be [low, high] or null, got {value!r}")
    lo, hi = (_number(v, where) for v in value)
    if lo > hi:
        raise ValueError(f"{where} must have low <= high, got {value!r}")


def _check_deltas(deltas: Any, where: str) -> None:
    if not isinstance(deltas, Mapping):
        raise ValueError(f"{where} must be an object {{budget: {{policy: {{mean, ci, seeds}}}}}}, got {deltas!r}")
    for budget, policies in deltas.items():
        if budget not in BUDGETS:
            raise ValueError(f"{where}: unknown budget {budget!r}; valid: {', '.join(BUDGETS)}")
        if not isinstance(policies, Mapping):
            raise ValueError(f"{where}.{budget} must be an object {{policy: {{mean, ci, seeds}}}}")
        for policy, d in policies.items():
            at = f"{where}.{budget}.{policy}"
            if not isinstance(d, Mapping):
                raise ValueError(f"{at} must be an object {{mean, ci, seeds}}, got {d!r}")
            _number(d.get("mean"), f"{at}.mean")
            _interval(d.get("ci"), f"{at}.ci")
            seeds = d.get("seeds")
            if seeds is not None and (isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1):
                raise ValueError(f"{at}.seeds must be a positive integer, got {seeds!r}")


def _check_regime(r: Any, where: str) -> None:
    if not isinstance(r, Mapping):
        raise ValueError(f"{where} must be an object, got {type(r).__name__}")
    if not isinstance(r.get("name"), str) or not r["name"]:
        raise ValueError(f"{where}.name must be a non-empty string, got {r.get('name')!r}")
    where = f"{where} ({r['name']})"
    for key in ("k", "max_samples"):
        if isinstance(r.get(key), bool) or not isinstance(r.get(key), int) or r[key] < 1:
            raise ValueError(f"{where}.{key} must be a positive integer, got {r.get(key)!r}")
    for key in _SHARES:
        if key in r or key in ("share_zero", "reachable_of_zero"):  # the two placement reads are required
            _number(r.get(key), f"{where}.{key}", share=True)
    _interval(r.get("reachable_of_zero_ci"), f"{where}.reachable_of_zero_ci")
    if r.get("uniform_gain") is not None:
        _number(r["uniform_gain"], f"{where}.uniform_gain")
    if r.get("deltas") is not None:
        _check_deltas(r["deltas"], f"{where}.deltas")


def validate_map(data: Any, source: str) -> list[dict[str, Any]]:
    """The regimes of a parsed map file; ValueError naming ``source`` and the first thing wrong."""
    if not isinstance(data, Mapping):
        raise ValueError(f"regime map {source}: expected a JSON object, got {type(data).__name__}")
    if data.get("format") != MAP_FORMAT:
        raise ValueError(f"regime map {source}: format must be {MAP_FORMAT!r}, got {data.get('format')!r}; "
                         "is this a regime map file?")
    if data.get("version") != MAP_VERSION:
        raise ValueError(f"regime map {source}: version {data.get('version')!r} is not supported (this cobarl reads "
                         f"version {MAP_VERSION}); rebuild the map with this cobarl or upgrade it")
    regimes = data.get("regimes", [])
    if not isinstance(regimes, list):
        raise ValueError(f"regime map {source}: regimes must be a list, got {type(regimes).__name__}")
    for i, r in enumerate(regimes):
        try:
            _check_regime(r, f"regimes[{i}]")
        except ValueError as e:
            raise ValueError(f"regime map {source}: {e}") from None
    names = [r["name"] for r in regimes]
    if len(set(names)) != len(names):
        raise ValueError(f"regime map {source}: regime names repeat: {sorted({n for n in names if names.count(n) > 1})}")
    return [dict(r) for r in regimes]


def read_map(path: Path, *, explicit: bool) -> tuple[dict[str, Any] | None, str]:
    """``(map, "")`` for a valid map file with regimes, else ``(None, why the placement is skipped)``.

    A missing or empty packaged map is not an error (the map may not have been built yet); a missing
    ``--map FILE`` (``explicit``) is, as is any file that is not a valid map (ValueError).
    """
    if not path.is_file():
        if explicit:
            raise ValueError(f"--map {path}: no such file")
        return None, f"no regime map at {path} (build one with the map builder, or pass --map FILE)"
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"regime map {path}: not readable JSON ({e})") from None
    regimes = validate_map(data, str(path))
    if not regimes:
        return None, f"the regime map {path} holds no regimes yet"
    return {**data, "regimes": regimes, "path": str(path)}, ""


def nearest_regime(regimes: Sequence[Mapping[str, Any]], *, share_zero: float,
                   reachable_of_zero: float | None, reachable_ci: Sequence[float] | None) -> dict[str, Any] | None:
    """The measured regime nearest to a diagnosis: by ``reachable_of_zero`` first, ``share_zero`` breaking ties.

    A regime whose ``reachable_of_zero`` lies inside the diagnosis's own 95 % interval is as near as the
    measurement can tell (distance 0 on it); among equally near regimes the one closest in ``share_zero``
    wins, then the earlier one. With no 0/k prompt resampled (``reachable_of_zero`` None) only
    ``share_zero`` places the data. Returns ``{"regime", "consistent", "by"}`` (``consistent``: the names of
    the regimes inside the interval), or None for no regimes.

    >>> rs = [{"name": "v4", "share_zero": 0.37, "reachable_of_zero": 0.76},
    ...       {"name": "u90", "share_zero": 0.41, "reachable_of_zero": 0.1}]
    >>> nearest_regime(rs, share_zero=0.3, reachable_of_zero=0.2, reachable_ci=[0.12, 0.3])["regime"]["name"]
    'u90'
    """
    if not regimes:
        return None
    lo, hi = reachable_ci if reachable_ci is not None else (reachable_of_zero, reachable_of_zero)

    def reach_gap(r: Mapping[str, Any]) -> float:
        if reachable_of_zero is None:
            return 0.0
        x = r["reachable_of_zero"]
        return 0.0 if lo <= x <= hi else abs(x - reachable_of_zero)

    order = sorted(range(len(regimes)), key=lambda i: (reach_gap(regimes[i]), abs(regimes[i]["share_zero"] - share_zero), i))
    consistent = [r["name"] for r in regimes if reachable_of_zero is not None and reach_gap(r) == 0.0]
    return {"regime": dict(regimes[order[0]]), "consistent": consistent,
            "by": "share_zero" if reachable_of_zero is None else "reachable_of_zero, then share_zero"}


def _points(x: float) -> str:
    return f"{100 * x:+.1f}"


def delta_lines(regime: Mapping[str, Any]) -> list[str]:
    """What the map measured in ``regime``: each policy's held-out accuracy gain over uniform, in points."""
    lines = []
    if regime.get("uniform_gain") is not None:
        lines.append(f"uniform GRPO's own held-out gain there: {_points(regime['uniform_gain'])} points")
    deltas = regime.get("deltas") or {}
    for budget, label in BUDGETS.items():
        policies = deltas.get(budget) or {}
        if not policies:
            continue
        lines.append(f"held-out accuracy vs uniform {label} (points, 95 % CI):")
        for policy, d in sorted(policies.items(), key=lambda kv: -kv[1]["mean"]):
            ci = f" [{_points(d['ci'][0])}, {_points(d['ci'][1])}]" if d.get("ci") is not None else ""
            seeds = f" ({d['seeds']} seeds)" if d.get("seeds") else ""
            lines.append(f"  {policy:<18} {_points(d['mean'])}{ci}{seeds}")
    return lines or ["the map holds no policy measurements for this regime"]


def scale_note(regime: Mapping[str, Any], k: int, max_samples: int) -> str:
    """A warning when the map measured the regime with another k or sampling budget than this diagnosis
    (shares at 0/k and reachability within a budget depend on both), else ``""``."""
    if regime["k"] == k and regime["max_samples"] == max_samples:
        return ""
    return (f"the map measured {regime['name']} with k={regime['k']} and up to {regime['max_samples']} samples per prompt, "
            f"this diagnosis with k={k} and up to {max_samples}: the shares are not on the same scale")
