"""The one generation loop: ``model.generate`` in left-padded batches, for training-time evaluation,
``cobarl eval`` and the embedded model's checks alike."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


class HFGenerator:
    """``model.generate`` in left-padded batches of ``batch_size`` sequences (``n`` per prompt).

    Args:
        model, tokenizer: a causal LM and its tokenizer.
        batch_size: sequences per ``generate`` call (prompts per call = ``batch_size // n``, at least 1).
        add_special_tokens: passed to the tokenizer; ``None`` adds them unless the tokenizer has a chat
            template (its template already wrote BOS).
    """

    def __init__(self, model: Any, tokenizer: Any, *, batch_size: int = 64, add_special_tokens: bool | None = None):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        if add_special_tokens is None:
            add_special_tokens = not getattr(tokenizer, "chat_template", None)
        self.add_special_tokens = add_special_tokens

    def max_new_tokens(self, prompts: Sequence[str], requested: int) -> int:
        """``requested``, capped so that the longest prompt plus completion fits the model's positions."""
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if not limit or not prompts:
            return requested
        longest = max(len(ids) for ids in self.tokenizer(list(prompts), add_special_tokens=self.add_special_tokens)["input_ids"])
        return max(1, min(requested, limit - longest))

    def generate(self, prompts: Sequence[str], *, n: int, temperature: float, top_p: float, max_tokens: int,
                 seed: int, on_done: Callable[[int], None] | None = None) -> list[list[str]]:
        import torch

        tok, model = self.tokenizer, self.model
        was_training, side = model.training, tok.padding_side
        model.eval()
        tok.padding_side = "left"
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        per_call = max(1, self.batch_size // n)
        if temperature > 0:  # top_k=0: no top-k cut, only top-p (the papers' sampling)
            sampling = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0, num_return_sequences=n)
        else:
            sampling = dict(do_sample=False, num_return_sequences=1)
        out: list[list[str]] = []
        # Our seeds must not leak into the caller's RNG: an evaluation during training would otherwise
        # reset the generator the next rollouts are sampled from (the same state after every evaluation).
        cuda = [model.device] if model.device.type == "cuda" else []
        try:
            with torch.no_grad(), torch.random.fork_rng(devices=cuda):
                for b, lo in enumerate(range(0, len(prompts), per_call)):
                    batch = list(prompts[lo : lo + per_call])
                    enc = tok(batch, return_tensors="pt", padding=True, add_special_tokens=self.add_special_tokens)
                    enc = {key: v.to(model.device) for key, v in enc.items()}
                    torch.manual_seed(seed * 1_000_003 + b)  # per batch: results do not depend on earlier batches
                    gen = model.generate(**enc, max_new_tokens=max_tokens, pad_token_id=tok.pad_token_id, **sampling)
                    texts = tok.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
                    reps = sampling["num_return_sequences"]
                    for i in range(len(batch)):  # generate returns the n samples of a prompt contiguously
                        samples = texts[i * reps : (i + 1) * reps]
                        out.append(samples * n if reps == 1 else samples)  # greedy: one sample stands for n
                    if on_done is not None:
                        on_done(len(batch) * n)
        finally:
            tok.padding_side = side
            model.train(was_training)
        return out
