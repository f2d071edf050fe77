"""`TrainConfig`: every option of `cobarl train`, each documented once (its field's ``help``).

One tree: a strategy's options are not re-declared here; ``TrainConfig.strategy`` is a
:class:`cobarl.policies.StrategyConfig`, and the CLI flags for them are generated from every
policy's options (so an option a policy declares becomes a flag, a YAML key and a ``cobarl compare``
option at once). The CLI (:mod:`cobarl.train.cli`), YAML files and ``cobarl compare --backend real``
all build a `TrainConfig` through :func:`make_config`, which checks every value's type, range and
finiteness and names the offending option -- before any model is loaded. Reading and writing run
files is :mod:`cobarl.train.config_files`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from cobarl.allocation import budget_problem
from cobarl.options import check_fields, check_option, fields_by_name, option, parse_option
from cobarl.policies import POLICIES, StrategyConfig
from cobarl.strategies import STRATEGIES, canonical_option
from cobarl.tasks.embedded import DEFAULT_TASK, TASKS, task_preset
from cobarl.train.layout import StepLayout, check_strategy

LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo")
SCALE_REWARDS = ("group", "batch", "none")
DEFAULT_STRATEGY = "coba"
# Why the sizes have an upper bound: beyond it a per-step prompt list or rollout batch does not fit a
# machine (a MemoryError or minutes of silence otherwise), so it is refused before anything is allocated.
_MACHINE = "what one machine can hold"
# Keys of old config files / flags, mapped to their current names (a strategy's options: cobarl.strategies).
RENAMED = {"beta": "kl_beta", "allocator": "strategy"}


@dataclass(frozen=True)
class TrainConfig:
    # --- what to train on ------------------------------------------------------------------------
    model: str | None = option(
        None, "HF model name or local path. Default: the embedded task's tiny model (built, "
        "warm-started and cached offline on first use)."
    )
    dataset: str | None = option(
        None, "Local .parquet/.jsonl in the verl/DAPO layout: `prompt` (string or chat list) and the "
        "ground truth in `reward_model.ground_truth` or `answer` (read by cobarl.data.load_math: repeated "
        "prompts are dropped, ids are stable). Default: the embedded task (--task)."
    )
    eval_dataset: str | None = option(
        None, "Held-out .parquet/.jsonl (same layout). Default: the embedded held-out split, or the last "
        "`eval_size` rows of --dataset."
    )
    task: str | None = option(
        None, "Embedded task (no --dataset): families-v4 (the default: 24 families, each with its own answer marker "
        "and habitual mistake) or arith-v3 (the previous default; its documented results used --train-size 1024 "
        "--learning-rate 3e-4). Each builds and caches its own tiny model.", choices=tuple(TASKS),
    )
    eval_size: int = option(
        512, "Number of held-out prompts used for the before/after accuracy.",
        ge=1, le=1_000_000, why=_MACHINE,
    )
    validation_size: int = option(
        0, "Prompts of a validation split, disjoint from train and held-out, scored after training (sampled "
        "avg@8) as eval/validation_accuracy, so settings can be chosen without looking at held-out (cobarl "
        "compare --grid --backend real does). Embedded task: drawn from its eval pool after the held-out "
        "prompts; --dataset: its last rows once held-out rows are set aside (at most half of what is left). 0: none.",
        ge=0, le=1_000_000, why=_MACHINE,
    )
    train_size: int = option(
        384, "Training prompts of the embedded task; few enough that each recurs every train_size/prompts_per_step "
        "steps (12.5 times in the default run), so per-prompt statistics drive most of the run, as in the papers' "
        "many-epoch runs.",
        ge=1, le=10_000_000, why=_MACHINE,
    )
    reward: str = option(
        "exact", "Verifier scoring a completion against the ground truth: a name (exact, math) or "
        "'package.module:function' for a callable f(completion, answer) -> float."
    )
    reward_timeout: float = option(30.0, "Seconds one reward call may take before it scores 0 and counts as a failure.", gt=0)
    reward_workers: int = option(
        4, "Reward calls run in parallel (threads), so one slow verifier cannot serialise a step.",
        ge=1, le=1_024, why=_MACHINE,
    )
    reward_failure_limit: float = option(
        0.9, "Abort when this share of a step's reward calls fail (raise, time out, NaN); 1 disables the check.",
        gt=0, le=1,
    )

    # --- run -------------------------------------------------------------------------------------
    output_dir: str | None = option(
        None, "Run directory (metrics.jsonl, checkpoints, config.yaml). Default: runs/train-<timestamp>."
    )
    resume: bool = option(
        False, "Continue from the last complete checkpoint in --output-dir (default: the newest run "
        "under runs/), reloading the strategy's state (its statistics, prompt stream, ...); restarts cleanly if no checkpoint was written yet."
    )
    fresh: bool = option(False, "If --output-dir holds a run, move it aside to <dir>.old-N and start a new one.")
    allow_config_change: bool = option(
        False, "With --resume, accept run-defining options that differ from the saved config.yaml."
    )
    seed: int = option(0, "Random seed (prompt order, sampling, model init of the embedded model).")
    max_steps: int = option(
        300, "Optimizer steps. One allocation each with num_iterations=1; with num_iterations=n, one "
        "allocation every n steps.",
        ge=1,
    )
    max_generated: int | None = option(
        None, "Stop once this many rollouts were generated (all processes), and let the learning rate decay "
        "linearly in generated rollouts instead of steps: the fair budget for comparing policies that generate "
        "more than they train on (Reinforce-Ada, DAPO, PODS, GRESO). max_steps stays a cap. Default: off (the schedule "
        "and the end follow max_steps).", ge=1)
    save_steps: int = option(25, "Write a checkpoint every this many steps (and at the end).", ge=1)
    save_total_limit: int = option(2, "Keep at most this many checkpoints.", ge=1)
    transitions: bool = option(
        False, "Also bucket every train prompt by its successes in 16 samples before and after RL (extremely hard "
        "0/16 ... extremely easy 16/16, CoBA-RL Fig. 7) and write the 5x5 transition counts to summary.json; "
        "costs 2 x 16 generations per train prompt, on the main process (others wait, as for the before-RL evaluation)."
    )
    eval_every: int = option(0, "Also evaluate held-out accuracy as before/after RL (greedy and sampled avg@8, "
                           "eval/heldout_greedy_accuracy and eval/heldout_accuracy) every this many steps; 0: only before/after.", ge=0)
    progress: bool = option(True, "Show a progress bar with live reward, effective ratio and alpha.")
    report_to: str = option(
        "none", "Trackers for TRL's logs, comma-separated (tensorboard, wandb, trackio, ...), or none."
    )

    # --- the strategy: how a step spends its rollouts -----------------------------------------------
    strategy: StrategyConfig | None = field(
        default=None,
        metadata={"help": "The strategy and its policy's options (cobarl.policies.StrategyConfig); each option is a "
                  "flag of its own. None: coba with the task's preset (task_preset).", "nested": True},
    )
    prompts_per_step: int = option(16, "Distinct prompts drawn per generation.", ge=1, le=100_000, why=_MACHINE)
    rollouts_per_prompt: float = option(8.0, "Average rollouts per prompt; sets rollouts_per_step if that is unset.", gt=0)
    rollouts_per_step: int | None = option(
        None, "Total rollouts per generation across all processes (the fixed budget). "
        "Default: round(rollouts_per_prompt * prompts_per_step).",
        ge=1, le=1_000_000, why=_MACHINE,
    )

    # --- policy optimisation (passed to TRL's GRPOConfig) -----------------------------------------
    learning_rate: float = option(
        1.5e-4, "Learning rate (AdamW, linear decay). The default suits the embedded task's tiny model: slow enough that "
        "the run is limited by its rollouts, not by the step size (docs/task-v4.md); a real LLM wants ~1e-6.",
        gt=0,
    )
    max_completion_length: int = option(8, "Max new tokens per rollout.", ge=1, le=1_000_000, why=_MACHINE)
    temperature: float = option(1.0, "Sampling temperature for rollouts (> 0).", gt=0)
    loss_type: str = option("dapo", "TRL loss aggregation (TRL's default: dapo).", choices=LOSS_TYPES)
    scale_rewards: str = option("group", "Advantage scaling: group, batch or none.", choices=SCALE_REWARDS)
    kl_beta: float = option(
        0.0, "KL coefficient to the reference model (TRL's `beta`; 0: no reference model). --beta is a deprecated alias.",
        aliases=("--beta",), ge=0, le=1_000, why="larger values overflow the loss to inf",
    )
    num_iterations: int = option(
        1, "Model updates per generated batch (TRL num_iterations).",
        ge=1, le=1_000, why=_MACHINE,
    )
    micro_batch_size: int | None = option(
        None, "Rollouts per forward/backward pass on each process; rollouts_per_step must be a multiple of "
        "micro_batch_size x processes. Default: rollouts_per_step / processes (one pass).",
        ge=1, le=1_000_000, why=_MACHINE,
    )
    lora_r: int = option(0, "LoRA rank (needs the peft extra); 0: train all weights.", ge=0)
    lora_alpha: float = option(16.0, "LoRA alpha.", gt=0)
    lora_dropout: float = option(0.0, "LoRA dropout.", ge=0, lt=1)
    lora_target_modules: str = option("all-linear", "Modules LoRA adapts: all-linear or comma-separated names.")
    use_vllm: bool = option(False, "Generate with vLLM (GPU only).")
    vllm_mode: str = option("colocate", "vLLM mode: colocate (a vLLM engine in each training process) or server (a "
                          "`trl vllm-serve` server; every rollout row is sent with n=1, so each prompt gets its own count).",
                          choices=("colocate", "server"))
    vllm_server_url: str | None = option(None, "vLLM server URL for --vllm-mode server. Default: TRL's, http://0.0.0.0:8000.")
    device: str = option("auto", "cpu, cuda or auto.", choices=("auto", "cpu", "cuda"))
    cpu_threads: int = option(0, "torch CPU threads; 0: 1 for the embedded tiny model (faster), torch's default otherwise.", ge=0)

    def __post_init__(self) -> None:
        if self.strategy is None:
            object.__setattr__(self, "strategy", new_strategy({}, self.dataset, self.task))
        errors = check_fields(self)
        if errors:  # cross-field checks on ill-typed or out-of-range values would only add noise
            raise ValueError("invalid train config:\n  " + "\n  ".join(errors))
        if self.rollouts_per_step is None:
            object.__setattr__(self, "rollouts_per_step", int(round(self.rollouts_per_prompt * self.prompts_per_step)))
            errors = list(filter(None, [check_option(TrainConfig, "rollouts_per_step", self.rollouts_per_step)]))
        # The strategy is checked only with options that passed: max_steps 0 is reported as itself, not
        # as the schedule length the allocator derives from it.
        errors = errors or list(_validate(self)) or check_strategy(self.strategy_config(), self.layout(1), None)
        if errors:
            raise ValueError("invalid train config:\n  " + "\n  ".join(errors))

    @property
    def strategy_name(self) -> str:
        return self.strategy.name

    @property
    def allocations(self) -> int:
        """Allocations (generations) in the whole run: one per ``num_iterations`` optimizer steps."""
        return -(-self.max_steps // self.num_iterations)

    def strategy_config(self) -> StrategyConfig:
        """The strategy with what the run derives filled in (linear-decay's schedule length)."""
        return self.strategy.with_total_steps(self.allocations)

    def layout(self, processes: int) -> StepLayout:
        """The step's layout on ``processes`` processes (ValueError with the fix if it does not split)."""
        return StepLayout.derive(self.prompts_per_step, self.rollouts_per_step, processes, self.micro_batch_size)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        strategy = self.strategy.to_dict(derived=False)
        out["strategy"] = {"name": strategy.pop("strategy"), **strategy}
        return out

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


def new_strategy(values: dict[str, Any], dataset: str | None, task: str | None) -> StrategyConfig:
    """A new run's strategy: ``values`` (``strategy`` and options) over the task's preset, which sets
    only options the chosen policy has (the embedded tasks' max_budget is an allocator's)."""
    values = dict(values)
    name = values.pop("strategy", DEFAULT_STRATEGY)
    probe = StrategyConfig(name) if isinstance(name, str) or callable(name) else None
    own = fields_by_name(probe.policy.Options) if probe is not None else {}
    preset = {k: v for k, v in task_preset(dataset, task).items() if k in own}
    return StrategyConfig(name, **{**preset, **values})


# --- field introspection ----------------------------------------------------------------------------


def _train_fields() -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(TrainConfig) if f.name != "strategy"]


def strategy_option_fields() -> dict[str, tuple[type, dataclasses.Field]]:
    """Every option a strategy may take -> (the first policy's Options class that declares it, its field),
    in registration order; the options a run derives (the schedule length) are not among them."""
    out = {}
    for cls in (c for _, c in POLICIES.items()):
        for name, f in fields_by_name(cls.Options).items():
            if not f.metadata.get("derived"):
                out.setdefault(name, (cls.Options, f))
    return out


# --- validation ---------------------------------------------------------------------------------------


def _validate(c: TrainConfig):
    if not isinstance(c.strategy, StrategyConfig):
        yield f"strategy must be a StrategyConfig (build configs with make_config), got {type(c.strategy).__name__}"
        return
    yield from _check_sizes(c)
    yield from _check_budget(c)
    if c.use_vllm and c.device == "cpu":
        yield "use_vllm needs a GPU; drop --use-vllm or set --device cuda"
    if c.task is not None and c.dataset is not None:
        yield f"--task {c.task} names an embedded task and --dataset a file to train on; pass one of them"
    if c.fresh and c.resume:
        yield "--fresh starts a new run and --resume continues one; pass one of them"


EMBEDDED_MAX_PROMPTS = 20_000  # an embedded task's own max_prompts may be lower


def _check_sizes(c: TrainConfig):
    """What one field's own bounds cannot say: the embedded tasks draw their splits by rejection
    sampling, which slows to a crawl beyond the task's ``max_prompts``."""
    if c.dataset is None:
        task = TASKS.get(c.task or DEFAULT_TASK)
        cap = task.max_prompts if task is not None else EMBEDDED_MAX_PROMPTS
        for name in ("train_size", "eval_size", "validation_size"):
            if getattr(c, name) > cap:
                yield (f"{name} must be <= {cap:,} for the embedded task {task.name if task else c.task} (its distinct "
                       f"prompts are drawn one by one from a fixed pool), got {getattr(c, name):,}; pass --dataset for a larger set")
        if c.prompts_per_step > c.train_size:
            yield f"prompts_per_step ({c.prompts_per_step}) exceeds train_size ({c.train_size}), the training prompts"


def _check_budget(c: TrainConfig):
    r, p = c.rollouts_per_step, c.prompts_per_step
    o = c.strategy.options
    if hasattr(o, "min_budget") and hasattr(o, "max_budget"):
        problem = budget_problem(p, r, o.min_budget, o.max_budget)
        if problem:
            yield (f"budget cannot be met with --rollouts-per-step {r} over --prompts-per-step {p}: {problem} "
                   "(--min-budget / --max-budget bound each prompt)")
    if c.micro_batch_size is not None and c.micro_batch_size >= 1 and r % c.micro_batch_size:
        yield f"rollouts_per_step ({r}) must be a multiple of micro_batch_size ({c.micro_batch_size})"


def parse_strategy_values(values: dict[str, Any]) -> dict[str, Any]:
    """Flat strategy values (``strategy`` and options, any old spelling), each typed as its option
    holds it (YAML and Python values are not read as text); ValueError naming every bad one."""
    known = strategy_option_fields()
    errors, out = [], {}
    for key, value in values.items():
        if key == "strategy":
            if isinstance(value, str) and value not in STRATEGIES:
                errors.append(f"unknown strategy {value!r}; valid strategies: {', '.join(STRATEGIES)}")
            out[key] = value
            continue
        cls, _ = known[key]
        try:
            out[key] = parse_option(cls, key, value)
        except ValueError as e:
            errors.append(str(e))
    if errors:
        raise ValueError("invalid train config:\n  " + "\n  ".join(errors))
    return out


def split_values(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Flat option values -> (TrainConfig fields, strategy values by current name); unknown keys are an error.

    ``strategy`` (or its old name ``allocator``) may be a strategy name (flat form, as on the command
    line) or a mapping of the strategy and its options (the nested form ``config.yaml`` is written in;
    an old file's every-policy mapping is read as :meth:`StrategyConfig.from_dict` reads it).
    """
    values = {RENAMED.get(k, k): v for k, v in values.items()}
    option_keys = set(strategy_option_fields())
    train_keys = {f.name for f in _train_fields()}
    train, strategy = {}, {}
    nested = values.pop("strategy", None)
    if isinstance(nested, dict):
        strategy.update(_nested_strategy(nested))
    elif nested is not None:
        strategy["strategy"] = nested
    unknown = []
    for k, v in values.items():
        if k in train_keys:
            train[k] = v
        elif canonical_option(k) in option_keys:
            strategy[canonical_option(k)] = v
        else:
            unknown.append(k)
    bad = sorted(k for k in strategy if k != "strategy" and k not in option_keys)
    if unknown or bad:
        valid = sorted(train_keys | option_keys | {"strategy"})
        raise ValueError(f"unknown option(s) {', '.join(sorted(unknown) + bad)}; valid options: {', '.join(valid)}")
    return train, strategy


def _nested_strategy(mapping: dict) -> dict[str, Any]:
    """A nested ``strategy:`` (or old ``allocator:``) mapping as flat strategy values."""
    data = {str(k).replace("-", "_"): v for k, v in mapping.items()}  # today's: {name: coba, kappa: ...}
    try:
        old = StrategyConfig.from_dict(data)  # reads an old file's every-policy mapping
    except ValueError:  # refused below, option by option, under the names the flags have
        return {canonical_option("strategy" if k == "name" else k): v for k, v in data.items()}
    named = "name" in data or "strategy" in data
    return {**({"strategy": old.strategy} if named else {}), **old.overrides}


def make_config(values: dict[str, Any], base: TrainConfig | None = None) -> TrainConfig:
    """A validated `TrainConfig` from flat or nested option values (CLI, YAML, compare). A new run
    starts from the strategy's options plus its task's preset (:func:`new_strategy`); a resumed one
    (``base``) from the settings it recorded."""
    train, strategy = split_values(values)
    strategy = parse_strategy_values(strategy)
    try:
        if base is None or strategy.get("strategy", base.strategy.strategy) != base.strategy.strategy:
            # a new run, or a resumed one told another strategy: that strategy's own options, not the saved one's
            config = new_strategy(strategy, train.get("dataset", base and base.dataset), train.get("task", base and base.task))
        else:
            config = base.strategy.replace(**strategy)
    except (ValueError, TypeError) as e:
        raise ValueError(f"invalid train config:\n  {e}") from None
    if base is not None:
        return dataclasses.replace(base, strategy=config, **train)
    return TrainConfig(strategy=config, **train)
