"""Gradient noise scale of the embedded task's policy: is a GRPO step signal- or noise-dominated?

    python scripts/noise_scale.py --seed 0                       # the warm-started model of seed 0
    python scripts/noise_scale.py --seed 0 --model runs/X/checkpoint-300

Samples a GRPO batch as `cobarl train` does (M prompts x G rollouts at T = 1, the exact-match
reward, group-normalised advantages), takes every rollout's policy gradient
g_j = A_j * grad sum_t log pi(y_jt), and estimates the simple noise scale of McCandlish et al.
(2018, "An Empirical Model of Large-Batch Training", appendix A.1) from the B = M * G per-rollout
gradients of each batch:

    |G|^2  ~ (B |mean_j g_j|^2 - mean_j |g_j|^2) / (B - 1)
    tr S   ~ (mean_j |g_j|^2 - |mean_j g_j|^2) * B / (B - 1)
    B_noise = tr S / |G|^2                          (averaged over --batches batches, then divided)

A step of B rollouts is noise-dominated when B << B_noise (halving B roughly halves the progress
per step) and signal-dominated when B >> B_noise (halving B costs little). Rollouts with zero
advantage contribute zero gradients, as they do to the token-mean loss.
"""

from __future__ import annotations

import argparse
import random

import numpy as np
import torch

from cobarl.advantages import group_advantages
from cobarl.models.load import load_model, resolve_model_path
from cobarl.rewards import load_reward
from cobarl.train.data import embedded_datasets


def per_rollout_gradients(model, tokenizer, prompts, answers, *, rollouts: int, max_new_tokens: int, verifier, seed: int):
    """``[B, P]`` flattened policy gradients A_j * grad log pi(y_j) of one sampled batch, and its rewards."""
    params = [p for p in model.parameters() if p.requires_grad]
    enc = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    torch.manual_seed(seed)
    rows, rewards, groups = [], [], []
    model.eval()
    for k, (ids, answer) in enumerate(zip(enc, answers)):
        inp = torch.tensor([ids])
        with torch.no_grad():
            out = model.generate(inp, attention_mask=torch.ones_like(inp), do_sample=True, temperature=1.0, top_k=0,
                                 top_p=1.0, max_new_tokens=max_new_tokens, num_return_sequences=rollouts,
                                 pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
        for seq in out:
            completion = seq[len(ids):]
            eos = (completion == tokenizer.eos_token_id).nonzero()
            completion = completion[: int(eos[0]) + 1] if len(eos) else completion  # through the first EOS
            text = tokenizer.decode(completion, skip_special_tokens=True)
            rows.append((ids, completion))
            rewards.append(float(verifier(text, answer)))
            groups.append(k)
    adv = group_advantages(np.array(rewards), np.array(groups)).advantages
    grads = []
    for (ids, completion), a in zip(rows, adv):
        if a == 0.0:
            grads.append(None)
            continue
        full = torch.cat([torch.tensor(ids), completion]).unsqueeze(0)
        logits = model(full).logits[0, len(ids) - 1 : -1]
        logp = torch.log_softmax(logits.float(), dim=-1).gather(1, completion.unsqueeze(1)).sum()
        g = torch.autograd.grad(float(a) * logp, params)
        grads.append(torch.cat([x.reshape(-1) for x in g]))
    size = sum(p.numel() for p in params)
    return torch.stack([g if g is not None else torch.zeros(size) for g in grads]).double(), np.array(rewards)


def noise_scale_terms(g: torch.Tensor) -> tuple[float, float]:
    """Unbiased (|G|^2, tr S) from one batch's ``[B, P]`` per-example gradients."""
    b = g.shape[0]
    mean_sq = float((g.mean(0) ** 2).sum())
    sq_mean = float((g**2).sum(1).mean())
    return (b * mean_sq - sq_mean) / (b - 1), (sq_mean - mean_sq) * b / (b - 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0, help="Task seed (and the warm-started model's, without --model).")
    p.add_argument("--task", default=None, help="Embedded task (default: cobarl train's default task).")
    p.add_argument("--train-size", type=int, default=384, help="Train prompts drawn from (cobarl train's default).")
    p.add_argument("--model", default=None, help="A model folder, e.g. a run's checkpoint (default: the warm-started model).")
    p.add_argument("--prompts", type=int, default=16, help="M, prompts per batch (cobarl train's default).")
    p.add_argument("--rollouts", type=int, default=8, help="G, rollouts per prompt (cobarl train's default).")
    p.add_argument("--batches", type=int, default=8, help="Batches to average the two terms over.")
    p.add_argument("--max-new-tokens", type=int, default=8)
    args = p.parse_args()
    torch.set_num_threads(1)
    model, tokenizer = load_model(resolve_model_path(args.model, seed=args.seed, task=args.task))
    train, _, _ = embedded_datasets(train_size=args.train_size, eval_size=512, seed=args.seed, task=args.task)
    verifier = load_reward("exact")
    rng = random.Random(args.seed)
    g2, tr = [], []
    for b in range(args.batches):
        idx = rng.sample(range(len(train)), args.prompts)
        grads, rewards = per_rollout_gradients(
            model, tokenizer, [train[i]["prompt"] for i in idx], [train[i]["answer"] for i in idx],
            rollouts=args.rollouts, max_new_tokens=args.max_new_tokens, verifier=verifier, seed=args.seed * 1000 + b)
        a, t = noise_scale_terms(grads)
        g2.append(a)
        tr.append(t)
        print(f"batch {b}: reward {rewards.mean():.3f}  |G|^2 {a:.4g}  tr S {t:.4g}", flush=True)
    B = args.prompts * args.rollouts
    scale = float(np.mean(tr) / np.mean(g2))
    print(f"B_noise = tr S / |G|^2 = {scale:.1f} rollouts (batch of {B}: {B / scale:.2f} x B_noise; "
          f"progress per step relative to a noise-free step ~ 1 / (1 + B_noise / B) = {1 / (1 + scale / B):.2f}, "
          f"at half the batch {1 / (1 + 2 * scale / B):.2f})")


if __name__ == "__main__":
    main()
