"""The finished runs of a comparison, one JSON file each under ``<output-dir>/runs/``, so that
``cobarl compare`` into the same folder again continues it: an interrupted comparison, or one
extended by arms or seeds, runs only the (arm, seed) pairs it lacks.

A file is written atomically (`cobarl.io.write_text`) once its run has finished, in the process that
writes the report, so a run stopped midway (Ctrl-C, SIGTERM, SIGKILL) leaves no file and runs again
from scratch. Each file holds the run's `RunResult`, its settings (`run_settings`: everything that
determines its result) and which command produced it, when. A run is reused only under the settings
this command would run it with; a folder holding an arm's runs under other settings is refused, so
a report never mixes them.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cobarl.experiments.comparison.backends import run_settings, upgrade_settings
from cobarl.experiments.comparison.runs import CompareOptions, RunResult, run_name
from cobarl.io import write_text

RUNS_DIR = "runs"
FORMAT, VERSION = "cobarl-compare-run", 1
Key = tuple[str, int]


@dataclass(frozen=True)
class StoredRun:
    """One finished run as its file holds it."""

    result: RunResult
    settings: dict[str, Any]
    command: str
    finished_at: str  # local time, ISO 8601, to the second

    def to_dict(self) -> dict[str, Any]:
        r = self.result
        return {"format": FORMAT, "version": VERSION, "label": r.label, "seed": r.seed, "command": self.command,
                "finished_at": self.finished_at, "settings": self.settings, "rows": r.rows, "summary": r.summary}

    @classmethod
    def from_dict(cls, d: Any) -> StoredRun:
        if not isinstance(d, dict) or (d.get("format"), d.get("version")) != (FORMAT, VERSION):
            raise ValueError(f"not a {FORMAT} file of version {VERSION}")
        if not isinstance(d.get("label"), str) or type(d.get("seed")) is not int:
            raise ValueError("its label or seed is missing")
        if not all(isinstance(d.get(k), t) for k, t in
                   (("settings", dict), ("rows", list), ("summary", dict), ("command", str), ("finished_at", str))):
            raise ValueError("a key is missing or of the wrong type")
        return cls(RunResult(d["label"], d["seed"], d["rows"], d["summary"]), d["settings"], d["command"], d["finished_at"])


def run_file(folder: Path, label: str, seed: int) -> Path:
    """``runs/<label>-seed<seed>.json`` (`run_name`)."""
    return folder / RUNS_DIR / f"{run_name(label, seed)}.json"


class RunStore:
    """The runs stored in a report folder, checked against the comparison ``options`` about to run.

    Raises ValueError (one line, naming the setting) if the folder holds runs of one of the arms under
    other settings. ``reused``: the stored runs this comparison takes as they are.
    """

    def __init__(self, folder: str | Path, options: CompareOptions, command: str) -> None:
        self.folder, self.options, self.command = Path(folder), options, command
        specs = {s.label: s for s in options.strategies}
        self.runs: dict[Key, StoredRun] = {}
        others: set[str] = set()
        for key, run in _read_all(self.folder).items():
            label, seed = key
            if label not in specs:
                others.add(label)
                continue
            _check_settings(self.folder, label, upgrade_settings(run.settings), run_settings(specs[label], seed, options))
            self.runs[key] = run
        if others:
            print(f"note: {self.folder}/{RUNS_DIR} also holds runs of {', '.join(sorted(others))}, not in this "
                  "comparison; they are kept, not reported", file=sys.stderr)
        self.reused = {key: run.result for key, run in self.runs.items() if key[1] in options.seeds}

    def keep(self, result: RunResult) -> RunResult:
        """Store a run that just finished; returns it as read back from its file, as a reused run is."""
        spec = next(s for s in self.options.strategies if s.label == result.label)
        run = StoredRun(result, run_settings(spec, result.seed, self.options), self.command,
                        datetime.now().isoformat(timespec="seconds"))
        text = json.dumps(run.to_dict()) + "\n"
        path = run_file(self.folder, result.label, result.seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, text)
        run = StoredRun.from_dict(json.loads(text))
        self.runs[(result.label, result.seed)] = run
        return run.result

    def provenance(self, runs: list[RunResult]) -> list[dict[str, Any]]:
        """Per reported run: reused from the folder or run by this command, and which command first
        produced it, when (summary.json's ``runs``)."""
        out = []
        for r in runs:
            stored = self.runs[(r.label, r.seed)]
            out.append({"label": r.label, "seed": r.seed, "reused": (r.label, r.seed) in self.reused,
                        "command": stored.command, "finished_at": stored.finished_at})
        return out


def _read_all(folder: Path) -> dict[Key, StoredRun]:
    """Every readable run file; a damaged one (torn, edited, of another version) is named on stderr and
    left to be run again (its new file replaces it)."""
    runs: dict[Key, StoredRun] = {}
    for path in sorted((folder / RUNS_DIR).glob("*.json")):
        try:
            run = StoredRun.from_dict(json.loads(path.read_text(encoding="utf-8")))
            if path != run_file(folder, run.result.label, run.result.seed):
                raise ValueError(f"it holds {run.result.label} seed {run.result.seed}, another run's file name")
        except (OSError, UnicodeDecodeError, ValueError) as err:  # JSONDecodeError is a ValueError
            print(f"warning: {path} is damaged ({str(err).splitlines()[0]}); its run runs again", file=sys.stderr)
            continue
        runs[(run.result.label, run.result.seed)] = run
    return runs


def _check_settings(folder: Path, label: str, stored: dict[str, Any], wanted: dict[str, Any]) -> None:
    differ = [k for k in {**wanted, **stored} if stored.get(k, "(unset)") != wanted.get(k, "(unset)")]
    if differ:
        k = differ[0]
        more = f" (and {len(differ) - 1} more settings)" if len(differ) > 1 else ""
        raise ValueError(
            f"{folder} holds runs of {label!r} made with {k} = {stored.get(k, '(unset)')!r}; this command runs it with "
            f"{k} = {wanted.get(k, '(unset)')!r}{more}. A comparison continues only with the same settings: pass "
            "another --output-dir, or move that folder away to start over")
