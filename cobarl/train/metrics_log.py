"""``metrics.jsonl`` of a run: one JSON object per step, appended, flushed and fsynced by a TRL
callback (beside the progress bar), read back torn-line tolerant, and repaired on resume."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from cobarl import metrics as M
from cobarl.io import write_text
from cobarl.train.checkpoints import checkpoint_step

METRICS_FILE = "metrics.jsonl"


def _trainer_callback_base():
    from transformers import TrainerCallback

    return TrainerCallback


def _fsync_append(path: Path, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def _parse_lines(text: str) -> list[dict]:
    """JSON objects of a metrics file; a torn line (a kill mid-write) is skipped, not the rest of the file."""
    rows = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def truncate_metrics(path: Path, last_step: int) -> None:
    """Keep the intact lines of steps up to ``last_step`` (later ones are redone on resume); atomic rewrite."""
    if not path.is_file():
        return
    keep = [row for row in _parse_lines(path.read_text()) if row.get("step", 0) <= last_step]
    write_text(path, "".join(json.dumps(row) + "\n" for row in keep))


def repair_metrics(path: Path, checkpoint: Path | None) -> None:
    """Make ``metrics.jsonl`` hold exactly the steps up to ``checkpoint`` (none without one), the later ones
    being redone on resume. A step whose line is torn or missing (a kill mid-write, a disk error) is
    restored from the checkpoint's own record of it (``trainer_state.json``'s ``log_history``); a step
    neither holds is refused with the fix, since the summary would under-count the run."""
    last = checkpoint_step(checkpoint) if checkpoint is not None else 0
    if not path.is_file() and last == 0:
        return
    rows = {row["step"]: row for row in read_metrics(path) if isinstance(row.get("step"), int) and 0 < row["step"] <= last}
    if checkpoint is not None:
        history = json.loads((checkpoint / "trainer_state.json").read_text()).get("log_history", [])
        for entry in history:
            step = entry.get("step")
            if isinstance(step, int) and 0 < step <= last and step not in rows and "loss" in entry:
                rows[step] = {"step": step, "time": None, **{k: v for k, v in entry.items() if k != "step"}}
    missing = sorted(set(range(1, last + 1)) - set(rows))
    if missing:
        raise ValueError(
            f"--resume: {path} has no intact line for step(s) {', '.join(map(str, missing[:10]))} and {checkpoint} "
            "has no record of them to restore, so the summary would under-count the run. Start it over with --fresh "
            "(the damaged run is moved aside), or resume from an earlier checkpoint by moving the later ones aside.")
    write_text(path, "".join(json.dumps(rows[step]) + "\n" for step in sorted(rows)))


def read_metrics(path: Path) -> list[dict]:
    return _parse_lines(path.read_text()) if path.is_file() else []


def make_callbacks(run_dir: Path, *, max_steps: int, progress: bool) -> list:
    base = _trainer_callback_base()

    class MetricsJsonl(base):
        """Append one JSON object per logged training step to metrics.jsonl (flushed + fsynced)."""

        def on_log(self, args, state, control, logs=None, **kw):
            if state.is_world_process_zero and logs and "loss" in logs:
                row = {"step": state.global_step, "time": time.time()}
                row.update({k: v for k, v in logs.items() if isinstance(v, (int, float, str)) or v is None})
                _fsync_append(run_dir / METRICS_FILE, json.dumps(row))

    class ProgressBar(base):
        """tqdm bar with live reward, effective ratio and alpha."""

        bar = None

        def on_train_begin(self, args, state, control, **kw):
            if state.is_world_process_zero:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=max_steps, initial=state.global_step, desc="cobarl train", unit="step",
                                dynamic_ncols=True, file=sys.stderr)

        def on_log(self, args, state, control, logs=None, **kw):
            if self.bar is not None and logs and "loss" in logs:
                self.bar.update(state.global_step - self.bar.n)
                self.bar.set_postfix(
                    reward=f"{logs.get(M.REWARD_MEAN, float('nan')):.3f}",
                    eff=f"{logs.get(M.ROLLOUT_EFFECTIVE_RATIO, float('nan')):.2f}",
                    refresh=False,
                    **({"alpha": f"{logs[M.CAPABILITY_ALPHA]:.2f}"} if M.CAPABILITY_ALPHA in logs else
                       {"generated": f"{logs.get(M.ROLLOUT_COUNT, float('nan')):.0f}"}),
                )

        def on_train_end(self, args, state, control, **kw):
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    return [MetricsJsonl()] + ([ProgressBar()] if progress else [])
