"""``cobarl bench rounds``: the same rollouts generated in one call, in rounds, and prompt by prompt.

Builds `cobarl train`'s trainer on the embedded default (its tiny model, CPU) and times its round
generation (`AdaptiveGRPOTrainer._generate_round`: generate, score, gather) on the same prompts:

* ``one call``: every prompt's ``rollouts`` rows in a single call;
* ``rounds``: ``rounds`` calls of ``rollouts / rounds`` rows per prompt, every prompt in each call
  (what a policy that samples in rounds does);
* ``per prompt``: one call per prompt per round (what batching every active prompt avoids).

The variants alternate within each repeat, so machine load hits them alike; the median is reported.
"""

from __future__ import annotations

import statistics
import tempfile
import time


def build_trainer_for_bench(seed: int = 0):
    """The default `cobarl train` trainer (embedded task, its tiny model) in a scratch folder."""
    from pathlib import Path

    from cobarl.models.load import load_model, resolve_model_path
    from cobarl.rewards.registry import load_reward
    from cobarl.train.build import build_trainer
    from cobarl.train.config import make_config
    from cobarl.train.data import load_splits
    from cobarl.tasks.embedded import DEFAULT_TASK

    run_dir = Path(tempfile.mkdtemp(prefix="cobarl-bench-rounds-"))
    config = make_config({"output_dir": str(run_dir), "task": DEFAULT_TASK, "seed": seed, "allocator": "reinforce-ada",
                          "progress": False, "device": "cpu"})
    train_ds, _, _ = load_splits(config)
    model, tokenizer = load_model(resolve_model_path(config.model, seed=seed, task=config.task))
    verifier = load_reward(config.reward, timeout=config.reward_timeout, workers=config.reward_workers)
    trainer = build_trainer(config, model, tokenizer, train_ds, verifier, run_dir=run_dir, device="cpu", callbacks=[])
    trainer.model.train()
    return trainer, train_ds


def bench_rounds(prompts: int = 16, rollouts: int = 32, rounds: int = 4, repeats: int = 7, seed: int = 0) -> dict:
    import torch

    from cobarl.train.rounds import RoundLog

    torch.set_num_threads(1)
    trainer, data = build_trainer_for_bench(seed)
    ids = data["prompt_id"][:prompts] if "prompt_id" in data.column_names else list(range(prompts))
    per_round = rollouts // rounds
    variants = {
        "one call": lambda: [[pid for pid in ids for _ in range(rollouts)]],
        "rounds": lambda: [[pid for pid in ids for _ in range(per_round)] for _ in range(rounds)],
        "per prompt": lambda: [[pid] * per_round for _ in range(rounds) for pid in ids],
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, calls in variants.items():
            start = time.perf_counter()
            log = RoundLog()
            for rows in calls():
                trainer._generate_round(rows, log)
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(t) for name, t in times.items()}
    return {"prompts": prompts, "rollouts_per_prompt": rollouts, "rounds": rounds, "repeats": repeats,
            "median_s": median, "ratio_to_one_call": {k: v / median["one call"] for k, v in median.items()}}
