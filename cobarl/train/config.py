"""`TrainConfig`: every option of `cobarl train`, each documented once (its field's ``help``).

One tree: the allocator's options are not re-declared here; ``TrainConfig.allocator`` is a
:class:`cobarl.allocator.AllocatorConfig`, and the CLI flags for it are generated from that class's
fields (so a field the core adds becomes a flag, a YAML key and a ``cobarl compare`` option at once).
The CLI (:mod:`cobarl.train.cli`), YAML files and ``cobarl compare --backend real`` all build a
`TrainConfig` through :func:`make_config`, which checks every value's type, range and finiteness
and names the offending field -- before any model is loaded.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cobarl.allocation import budget_problem
from cobarl.allocator import STRATEGIES, AllocatorConfig
from cobarl.options import check_fields, check_option, option, parse_option
from cobarl.tasks.embedded import DEFAULT_TASK, TASKS, task_preset

# The allocator names `cobarl train` accepts; a Python caller may also pass a callable to the trainer.
ALLOCATORS = tuple(STRATEGIES)
LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo")
SCALE_REWARDS = ("group", "batch", "none")

# AllocatorConfig fields under another flag name (``strategy`` is ``--allocator``).
_FLAG_NAMES = {f.name: f.metadata["flag"] for f in dataclasses.fields(AllocatorConfig) if "flag" in f.metadata}
# Why the sizes have an upper bound: beyond it a per-step prompt list or rollout batch does not fit a
# machine (a MemoryError or minutes of silence otherwise), so it is refused before anything is allocated.
_MACHINE = "what one machine can hold"
# Keys of old config files / flags, mapped to their current names.
RENAMED = {"beta": "kl_beta"}


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
        "under runs/), reloading the allocator state; restarts cleanly if no checkpoint was written yet."
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

    # --- budget allocation -----------------------------------------------------------------------
    allocator: AllocatorConfig | None = field(
        default=None,
        metadata={"help": "Budget allocator options (cobarl.AllocatorConfig); each field is a flag of its own. "
                  "None: the library defaults with the task's preset (task_preset).",
                  "nested": True},
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
        1, "Policy updates per generated batch (TRL num_iterations).",
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
        if self.allocator is None:
            object.__setattr__(self, "allocator", AllocatorConfig(**task_preset(self.dataset, self.task)))
        errors = check_fields(self)
        if errors:  # cross-field checks on ill-typed or out-of-range values would only add noise
            raise ValueError("invalid train config:\n  " + "\n  ".join(errors))
        if self.rollouts_per_step is None:
            object.__setattr__(self, "rollouts_per_step", int(round(self.rollouts_per_prompt * self.prompts_per_step)))
            errors = list(filter(None, [check_option(TrainConfig, "rollouts_per_step", self.rollouts_per_step)]))
        # The allocator is built only from options that passed: max_steps 0 is reported as itself, not
        # as the schedule length the allocator derives from it.
        errors = errors or list(_validate(self)) or list(_check_allocator(self))
        if errors:
            raise ValueError("invalid train config:\n  " + "\n  ".join(errors))

    @property
    def strategy(self) -> str:
        return self.allocator.strategy if isinstance(self.allocator.strategy, str) else "callable"

    @property
    def allocations(self) -> int:
        """Allocations (generations) in the whole run: one per ``num_iterations`` optimizer steps."""
        return -(-self.max_steps // self.num_iterations)

    def allocator_config(self) -> AllocatorConfig:
        """The allocator config with the derived schedule length filled in."""
        return dataclasses.replace(self.allocator, total_steps=self.allocator.total_steps or self.allocations)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["allocator"] = self.allocator.to_dict(derived=False)
        return out

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


# --- field introspection ----------------------------------------------------------------------------


def _train_fields() -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(TrainConfig) if f.name != "allocator"]


def allocator_fields() -> list[dataclasses.Field]:
    """AllocatorConfig fields a user sets (flags, YAML keys), in declaration order; not those the
    trainer derives (the schedule length is the number of allocations of the run)."""
    return [f for f in dataclasses.fields(AllocatorConfig) if not f.metadata.get("derived")]


def allocator_key(f: dataclasses.Field) -> str:
    """The flat option name of an AllocatorConfig field (``strategy`` -> ``allocator``)."""
    return f.metadata.get("flag", f.name)


# --- validation ---------------------------------------------------------------------------------------


def _validate(c: TrainConfig):
    if not isinstance(c.allocator, AllocatorConfig):
        yield f"allocator must be an AllocatorConfig (build configs with make_config), got {type(c.allocator).__name__}"
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
    a, r, p = c.allocator, c.rollouts_per_step, c.prompts_per_step
    if a.min_budget is not None and a.max_budget is not None:
        problem = budget_problem(p, r, a.min_budget, a.max_budget)
        if problem:
            yield (f"budget cannot be met with --rollouts-per-step {r} over --prompts-per-step {p}: {problem} "
                   "(--min-budget / --max-budget bound each prompt)")
    if c.micro_batch_size is not None and c.micro_batch_size >= 1 and r % c.micro_batch_size:
        yield f"rollouts_per_step ({r}) must be a multiple of micro_batch_size ({c.micro_batch_size})"


def _check_allocator(c: TrainConfig):
    yield from check_allocator(c.allocator_config(), c.prompts_per_step, c.rollouts_per_step, c.train_size)


def check_allocator(cfg: AllocatorConfig, prompts: int, budget: int, train_prompts: int | None = None) -> list[str]:
    """Build the policy and plan one step with it: every allocator option is checked by the code that
    will use it, so a value the core refuses (kappa <= 2, tau < 0, a group larger than a round, a
    generation batch larger than the data, ...) fails here, not at step 1."""
    from cobarl.policies import PromptStream, make_policy

    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            return [f"{allocator_key(f)} must be a finite number, got {value!r}"]
    try:
        policy = make_policy(cfg)
        if policy.needs_stream and train_prompts is None:  # checked again once the data are known
            return []
        if policy.needs_stream:
            policy.stream = PromptStream(range(train_prompts))
        request = policy.begin(list(range(prompts)), budget)
    except (ValueError, TypeError) as e:
        return [f"allocator: {e}"]
    if policy.single_pass and (sum(request.values()) != budget or len(request) > prompts):
        return [f"allocator returned {list(request.values())} for {prompts} prompts and a budget of {budget}"]
    return []


def derive_accumulation(rollouts: int, per_device: int, world: int, accumulation: int = 1) -> int:
    """Gradient accumulation steps that make one optimizer step consume exactly ``rollouts`` rollouts.

    Raises ValueError with the numbers and the fix when ``rollouts`` does not split evenly.
    """
    per_pass = per_device * world
    if rollouts % per_pass:
        fits = [b for b in range(1, rollouts // world + 1) if rollouts % (b * world) == 0]
        raise ValueError(
            f"rollouts_per_step ({rollouts}) must be a multiple of micro batch x processes = {per_device} x {world} "
            f"= {per_pass}; micro batch sizes that fit {world} process(es): {', '.join(map(str, fits)) or 'none'}"
            + ("" if fits else f" (make rollouts_per_step a multiple of {world})")
        )
    steps = rollouts // per_pass
    if accumulation not in (1, steps):
        raise ValueError(
            f"gradient_accumulation_steps={accumulation} would split one generation of {rollouts} rollouts over "
            f"several optimizer steps; with rollouts_per_step set it is derived ({steps}); leave it unset"
        )
    return steps


def batch_layout(c: TrainConfig, world: int) -> tuple[int, int]:
    """(micro batch per process, gradient accumulation steps) for ``world`` processes: one optimizer
    step = one generation of ``rollouts_per_step`` rollouts across all of them."""
    r = c.rollouts_per_step
    if c.micro_batch_size is None and r % world:
        raise ValueError(f"rollouts_per_step ({r}) must be a multiple of the number of processes ({world}) "
                         f"so that each process generates the same number of rollouts")
    micro = c.micro_batch_size or r // world
    return micro, derive_accumulation(r, micro, world)


def make_allocator_config(values: dict[str, Any], base: AllocatorConfig | None = None) -> AllocatorConfig:
    """An AllocatorConfig from flat option names (``allocator`` for the strategy), type-checked;
    the fields not given are those of ``base`` (default: the library's `AllocatorConfig`)."""
    fields = {allocator_key(f): f for f in allocator_fields()}
    errors, changes = [], {}
    for key, value in values.items():
        try:
            changes[fields[key].name] = parse_option(AllocatorConfig, fields[key].name, value)
        except ValueError as e:
            errors.append(str(e).replace(fields[key].name, key, 1))
    if errors:
        raise ValueError("invalid train config:\n  " + "\n  ".join(errors))
    strategy = changes.get("strategy")
    if isinstance(strategy, str) and strategy not in ALLOCATORS:
        raise ValueError(f"invalid train config:\n  unknown allocator {strategy!r}; valid allocators: {', '.join(ALLOCATORS)}")
    try:
        return dataclasses.replace(base or AllocatorConfig(), **changes)
    except (ValueError, TypeError) as e:
        raise ValueError(f"invalid train config:\n  allocator: {e}") from None


def split_values(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Flat option values -> (TrainConfig fields, AllocatorConfig fields); unknown keys are an error.

    ``allocator`` may be a strategy name (flat form, as on the command line) or a mapping of
    AllocatorConfig fields (the nested form ``config.yaml`` is written in).
    """
    values = {RENAMED.get(k, k): v for k, v in values.items()}
    alloc_keys = {allocator_key(f) for f in allocator_fields()} | {f.name for f in allocator_fields()}
    train_keys = {f.name for f in _train_fields()}
    train, alloc = {}, {}
    nested = values.pop("allocator", None)
    if isinstance(nested, dict):
        for k, v in nested.items():
            k = str(k).replace("-", "_")
            alloc[_FLAG_NAMES.get(k, k)] = v
    elif nested is not None:
        alloc["allocator"] = nested
    unknown = []
    for k, v in values.items():
        if k in train_keys:
            train[k] = v
        elif k in alloc_keys:
            alloc[_FLAG_NAMES.get(k, k)] = v
        else:
            unknown.append(k)
    bad_nested = sorted(set(alloc) - {allocator_key(f) for f in allocator_fields()})
    if unknown or bad_nested:
        valid = sorted(train_keys | {allocator_key(f) for f in allocator_fields()})
        raise ValueError(f"unknown option(s) {', '.join(sorted(unknown) + bad_nested)}; valid options: {', '.join(valid)}")
    return train, alloc


def make_config(values: dict[str, Any], base: TrainConfig | None = None) -> TrainConfig:
    """A validated `TrainConfig` from flat or nested option values (CLI, YAML, compare). A new run
    starts from the library's allocator defaults plus its task's preset (`task_preset`); a resumed
    one (``base``) from the settings it recorded."""
    train, alloc = split_values(values)
    if base is None:
        alloc = {**task_preset(train.get("dataset"), train.get("task")), **alloc}
    allocator = make_allocator_config(alloc, base.allocator if base is not None else None)
    if base is not None:
        return dataclasses.replace(base, allocator=allocator, **train)
    return TrainConfig(allocator=allocator, **train)


# --- files --------------------------------------------------------------------------------------------


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict of option values (keys checked by `make_config`)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        data = yaml.load(path.read_text(), Loader=_unique_key_loader()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ValueError(f"{path}:{where}: not valid YAML ({getattr(e, 'problem', None) or e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of option: value, got {type(data).__name__}")
    try:
        check_one_name_per_option(data)
        data = {str(k).replace("-", "_"): v for k, v in data.items()}
        split_values(dict(data))
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    return data


def _unique_key_loader():
    """A safe YAML loader that refuses a mapping with a key given twice (PyYAML keeps the last silently)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} is given twice (each option once)", key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def check_one_name_per_option(data: dict[str, Any]) -> None:
    """Refuse one file naming an option twice under different spellings (``allocator`` and ``strategy``,
    ``beta`` and ``kl_beta``, ``max-steps`` and ``max_steps``, a flat key and the nested ``allocator:``
    mapping's): which one wins would be an accident of ordering."""
    alloc_names = {f.name for f in allocator_fields()} | {allocator_key(f) for f in allocator_fields()}

    def canonical(key: str) -> str:
        key = RENAMED.get(key.replace("-", "_"), key.replace("-", "_"))
        if key in alloc_names:
            return "allocator." + _FLAG_NAMES.get(key, key)
        return key

    spellings: dict[str, list[str]] = {}
    for key, value in data.items():
        if str(key) == "allocator" and isinstance(value, dict):
            for sub in value:
                spellings.setdefault(canonical(str(sub)), []).append(f"allocator.{sub}")
        else:
            spellings.setdefault(canonical(str(key)), []).append(str(key))
    clashes = [f"{' and '.join(names)}" for names in spellings.values() if len(names) > 1]
    if clashes:
        raise ValueError("the same option is set twice: " + "; ".join(clashes) + "; keep one of each")


def dump_yaml(config: TrainConfig, path: str | Path) -> None:
    """Write the resolved config atomically (:func:`cobarl.io.write_text`)."""
    import yaml

    from cobarl.io import write_text

    write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))


# Options that do not change what a run computes: they may differ on --resume without a diff.
NOT_RUN_DEFINING = frozenset({
    "output_dir", "resume", "fresh", "allow_config_change", "max_steps", "save_steps", "save_total_limit",
    "progress", "report_to", "cpu_threads", "eval_every", "reward_timeout", "reward_workers", "reward_failure_limit",
    "device", "transitions", "vllm_server_url",
})


def config_diff(saved: TrainConfig, new: TrainConfig) -> list[str]:
    """Run-defining options that differ, as ``name: saved -> new`` lines."""
    a, b = saved.to_dict(), new.to_dict()
    out = [f"{k}: {a[k]!r} -> {b[k]!r}" for k in a if k not in NOT_RUN_DEFINING and k != "allocator" and a[k] != b[k]]
    out += [f"{_FLAG_NAMES.get(k, k)}: {v!r} -> {b['allocator'].get(k)!r}"
            for k, v in a["allocator"].items() if v != b["allocator"].get(k)]
    if saved.allocations != new.allocations and saved.strategy == "linear-decay":
        # linear-decay's schedule spans the run's allocations: a longer run is a different schedule.
        out.append(f"max_steps: {saved.max_steps} -> {new.max_steps} (sets the linear-decay schedule length)")
    return out
