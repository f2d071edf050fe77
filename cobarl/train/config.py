"""`TrainConfig`: every option of `cobarl train`, each documented once (its field's ``help``).

The CLI (:mod:`cobarl.train.cli`) is generated from these fields, a YAML file may set any of them,
and the resolved config is saved as ``config.yaml`` in the run directory. Derived quantities
(``rollouts_per_step``) are computed once in ``__post_init__``; cross-field rules fail there with a
message that says how to fix them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cobarl.allocator import STRATEGIES

# The allocator names `cobarl train` accepts; a Python caller may also pass a callable to the trainer.
ALLOCATORS = tuple(STRATEGIES)
LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo")


def _opt(default: Any, help: str, **extra: Any) -> Any:
    return field(default=default, metadata={"help": help, **extra})


@dataclass(frozen=True)
class TrainConfig:
    # --- what to train on ------------------------------------------------------------------------
    model: str | None = _opt(
        None, "HF model name or local path. Default: the embedded tiny arithmetic model (built, "
        "warm-started and cached offline on first use)."
    )
    dataset: str | None = _opt(
        None, "Local .parquet/.jsonl in the verl/DAPO layout: `prompt` (string or chat list) and the "
        "ground truth in `reward_model.ground_truth` or `answer`. Default: the embedded arithmetic task."
    )
    eval_dataset: str | None = _opt(
        None, "Held-out .parquet/.jsonl (same layout). Default: the embedded held-out split, or the last "
        "`eval_size` rows of --dataset."
    )
    eval_size: int = _opt(512, "Number of held-out prompts used for the before/after accuracy.")
    train_size: int = _opt(
        1024, "Training prompts of the embedded task; small enough that prompts recur every "
        "train_size/prompts_per_step steps, so the allocator has per-prompt statistics to act on."
    )
    reward: str = _opt(
        "exact", "Verifier scoring a completion against the ground truth: a name (exact) or "
        "'package.module:function' for a callable f(completion, answer) -> float."
    )

    # --- run -------------------------------------------------------------------------------------
    output_dir: str | None = _opt(
        None, "Run directory (metrics.jsonl, checkpoints, config.yaml). Default: runs/train-<timestamp>."
    )
    resume: bool = _opt(
        False, "Continue from the last complete checkpoint in --output-dir (default: the newest run "
        "under runs/), reloading the allocator state."
    )
    seed: int = _opt(0, "Random seed (prompt order, sampling, model init of the embedded model).")
    max_steps: int = _opt(300, "Number of RL steps (one allocation and one optimizer update each).")
    save_steps: int = _opt(25, "Write a checkpoint every this many steps (and at the end).")
    save_total_limit: int = _opt(2, "Keep at most this many checkpoints.")
    eval_every: int = _opt(0, "Also log held-out accuracy (eval/accuracy) every this many steps; 0: only before/after.")
    progress: bool = _opt(True, "Show a progress bar with live reward, effective ratio and alpha.")

    # --- budget allocation -----------------------------------------------------------------------
    allocator: str = _opt("coba", f"Budget allocator: one of {', '.join(ALLOCATORS)}.", choices=ALLOCATORS)
    prompts_per_step: int = _opt(16, "Distinct prompts drawn per step.")
    rollouts_per_prompt: float = _opt(8.0, "Average rollouts per prompt; sets rollouts_per_step if that is unset.")
    rollouts_per_step: int | None = _opt(
        None, "Total rollouts per step (the fixed budget). Default: round(rollouts_per_prompt * prompts_per_step)."
    )
    min_budget: int = _opt(2, "Fewest rollouts any drawn prompt gets (>= 2 so a group can have mixed outcomes).")
    max_budget: int = _opt(32, "Most rollouts any one prompt gets.")
    kappa: float = _opt(11.0, "kappa: concentration alpha+beta of the capability Beta prior.")
    window: int = _opt(1, "k: capability moving-average window, in steps.", aliases=("--k",))
    gamma: float = _opt(10.0, "gamma: sharpness of the capability -> Beta-mean mapping.")
    tau: str = _opt("8.0", "tau: allocation temperature, a number or 'adaptive'.")
    fixed_alpha: float = _opt(10.5, "alpha of the fixed-beta allocator (paper Table 3: 10.5 or 1.5).")
    fixed_beta: float = _opt(1.5, "beta of the fixed-beta allocator (paper Table 3: 1.5 or 10.5).")

    # --- policy optimisation (passed to TRL's GRPOConfig) -----------------------------------------
    learning_rate: float = _opt(3e-4, "Learning rate (AdamW, linear decay).")
    max_completion_length: int = _opt(8, "Max new tokens per rollout.")
    temperature: float = _opt(1.0, "Sampling temperature for rollouts.")
    loss_type: str = _opt("dapo", "TRL loss aggregation (TRL's default: dapo).", choices=LOSS_TYPES)
    scale_rewards: str = _opt("group", "Advantage scaling: group, batch or none.", choices=("group", "batch", "none"))
    beta: float = _opt(0.0, "KL coefficient to the reference model (0: no reference model).")
    num_iterations: int = _opt(1, "Policy updates per generated batch (TRL num_iterations).")
    micro_batch_size: int | None = _opt(
        None, "Rollouts per forward/backward pass; rollouts_per_step must be a multiple. Default: all at once."
    )
    use_vllm: bool = _opt(False, "Generate with vLLM (GPU only).")
    vllm_mode: str = _opt("colocate", "vLLM mode: colocate (server mode needs a rollout function).",
                          choices=("colocate", "server"))
    device: str = _opt("auto", "cpu, cuda or auto.", choices=("auto", "cpu", "cuda"))
    cpu_threads: int = _opt(0, "torch CPU threads; 0: 1 for the embedded tiny model (faster), torch's default otherwise.")

    def __post_init__(self) -> None:
        if self.rollouts_per_step is None:
            object.__setattr__(self, "rollouts_per_step", int(round(self.rollouts_per_prompt * self.prompts_per_step)))
        if isinstance(self.tau, (int, float)):
            object.__setattr__(self, "tau", str(float(self.tau)))
        errors = list(_validate(self))
        if errors:
            raise ValueError("invalid train config:\n  " + "\n  ".join(errors))

    @property
    def tau_value(self) -> float | str:
        return "adaptive" if self.tau == "adaptive" else float(self.tau)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


def _validate(c: TrainConfig):
    if c.allocator not in ALLOCATORS:
        yield f"unknown allocator {c.allocator!r}; valid allocators: {', '.join(ALLOCATORS)}"
    if c.prompts_per_step < 1:
        yield f"prompts_per_step must be >= 1, got {c.prompts_per_step}"
    if c.min_budget < 2:
        yield f"min_budget must be >= 2 (a group of one has no baseline), got {c.min_budget}"
    if c.max_budget < c.min_budget:
        yield f"max_budget ({c.max_budget}) must be >= min_budget ({c.min_budget})"
    r, p = c.rollouts_per_step, c.prompts_per_step
    if r < c.min_budget * p:
        yield (f"budget cannot be met: rollouts_per_step={r} < min_budget x prompts_per_step = "
               f"{c.min_budget} x {p} = {c.min_budget * p}; raise --rollouts-per-step or lower --prompts-per-step")
    if r > c.max_budget * p:
        yield (f"budget cannot be met: rollouts_per_step={r} > max_budget x prompts_per_step = "
               f"{c.max_budget} x {p} = {c.max_budget * p}; raise --max-budget or --prompts-per-step")
    if c.micro_batch_size is not None and (c.micro_batch_size < 1 or r % c.micro_batch_size):
        yield f"rollouts_per_step ({r}) must be a multiple of micro_batch_size ({c.micro_batch_size})"
    if c.tau != "adaptive":
        try:
            float(c.tau)
        except ValueError:
            yield f"tau must be a number or 'adaptive', got {c.tau!r}"
    for name in ("max_steps", "save_steps", "max_completion_length", "num_iterations", "eval_size", "window"):
        if getattr(c, name) < 1:
            yield f"{name} must be >= 1, got {getattr(c, name)}"
    if c.eval_every < 0:
        yield f"eval_every must be >= 0, got {c.eval_every}"
    if c.scale_rewards not in ("group", "batch", "none"):
        yield f"scale_rewards must be group, batch or none, got {c.scale_rewards!r}"
    if c.loss_type not in LOSS_TYPES:
        yield f"unknown loss_type {c.loss_type!r}; valid: {', '.join(LOSS_TYPES)}"
    if c.vllm_mode not in ("colocate", "server"):
        yield f"vllm_mode must be colocate or server, got {c.vllm_mode!r}"
    if c.use_vllm and c.vllm_mode == "server":
        yield ("vLLM server mode cannot serve variable per-prompt budgets (TRL asks the server for a fixed "
               "n per prompt); use --vllm-mode colocate, or pass a rollout_func to AdaptiveGRPOTrainer")
    if c.use_vllm and c.device == "cpu":
        yield "use_vllm needs a GPU; drop --use-vllm or set --device cuda"


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict of `TrainConfig` fields (unknown keys are an error)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of option: value, got {type(data).__name__}")
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{path}: unknown option(s) {', '.join(unknown)}; valid options: {', '.join(sorted(names))}")
    return data


def dump_yaml(config: TrainConfig, path: str | Path) -> None:
    """Write the resolved config atomically (temp file + rename)."""
    import os

    import yaml

    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    os.replace(tmp, path)
