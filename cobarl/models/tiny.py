"""A tiny character-level Qwen2 policy for the embedded tasks, built and warm-started locally.

``cobarl train`` with no arguments needs a policy without network access, so the default
model is a random-init ``Qwen2ForCausalLM`` plus a character tokenizer, briefly trained by
supervised learning so that RL starts from a spread of pass rates across difficulty levels
(easy levels mostly solved, the hardest rarely): the regime where budget allocation matters.

The saved directory loads like any Hub checkpoint::

    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)   # left padding, no BOS prepended
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM, Qwen2Tokenizer

from cobarl.tasks import families
from cobarl.tasks.arithmetic import MAX_ANSWER_CHARS, Problem, sign_dropped
from cobarl.tasks.embedded import DEFAULT_TASK, get_task

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, BOS, EOS, UNK)
"""Special tokens; ids 0..3 in this order."""
CHARS: str = "0123456789+-*/=()., \n" + "".join(c for c in families.CHARS if c not in "0123456789=")
"""Characters of every embedded task (the default vocabulary); a task's model uses its own ``chars``."""

DEFAULT_MODEL_NAME = f"tiny-{DEFAULT_TASK}"
"""Cache sub-directory prefix of the default task's model (``<prefix>-seed<seed>``)."""

MAX_NEW_TOKENS = MAX_ANSWER_CHARS + 2
"""Enough new tokens for any embedded task's answer plus EOS, with one to spare."""

_SIZES: dict[str, dict[str, int]] = {
    # hidden, layers, heads, intermediate. "tiny" is ~0.4M parameters.
    "tiny": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256),
    "small": dict(hidden_size=192, num_hidden_layers=4, num_attention_heads=6, intermediate_size=512),
}


def _byte_level_char(c: str) -> str:
    """GPT-2 byte-level alias of an ASCII character (printables map to themselves)."""
    b = ord(c)
    if ord("!") <= b <= ord("~"):
        return c
    # GPT-2's bytes_to_unicode maps the remaining bytes 0..32 to U+0100.. in order; 127.. not needed.
    assert b < ord("!"), c
    return chr(256 + b)


def build_tokenizer(chars: str = CHARS) -> PreTrainedTokenizerFast:
    """Character-level tokenizer: one token per character of ``chars``, plus ``SPECIAL_TOKENS``.

    It is a ``Qwen2Tokenizer`` (byte-level BPE with no merges) because, for a ``qwen2``
    checkpoint, ``AutoTokenizer.from_pretrained`` in transformers 5 always rebuilds a
    ``Qwen2Tokenizer`` from the saved vocabulary, discarding any custom pre-tokenizer; building
    the same thing here makes the in-memory and reloaded tokenizers identical. With no merges,
    byte-level BPE splits text into single characters. No BOS is prepended (Qwen2 style), and
    characters outside ``chars`` are dropped. Padding is on the left, for batched generation.

    >>> tok = build_tokenizer()
    >>> tok.decode(tok("12+7= 19\\n")["input_ids"])
    '12+7= 19\\n'
    """
    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    if len(set(chars)) != len(chars):
        raise ValueError(f"chars repeats a character: {chars!r}")
    vocab.update({_byte_level_char(c): len(SPECIAL_TOKENS) + i for i, c in enumerate(chars)})
    return Qwen2Tokenizer(
        vocab=vocab,
        merges=[],
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        padding_side="left",
        model_max_length=128,
    )


def build_model(tokenizer: PreTrainedTokenizerFast, *, seed: int, size: str = "tiny") -> Qwen2ForCausalLM:
    """Random-init ``Qwen2ForCausalLM`` with tied embeddings sized for ``tokenizer``.

    Args:
        tokenizer: from ``build_tokenizer``; sets the vocabulary and special token ids.
        seed: torch seed for the initial weights.
        size: ``"tiny"`` (~0.4M parameters) or ``"small"`` (~1.9M).
    """
    if size not in _SIZES:
        raise ValueError(f"size must be one of {sorted(_SIZES)}, got {size!r}")
    dims = _SIZES[size]
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        num_key_value_heads=dims["num_attention_heads"],
        max_position_embeddings=128,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **dims,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    # generate() reads these from generation_config, not config; set them to avoid warnings.
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def _sft_rows(tokenizer: PreTrainedTokenizerFast, problems: Sequence[Problem]) -> list[tuple[list[int], list[int]]]:
    """Per problem, ``prompt answer <eos>`` token ids and labels (-100 except on answer and EOS)."""
    prompt_ids = tokenizer([p.prompt for p in problems])["input_ids"]  # same call as TRL and generation
    answer_ids = tokenizer([p.answer for p in problems], add_special_tokens=False)["input_ids"]
    rows = []
    for prompt, answer in zip(prompt_ids, answer_ids):
        target = answer + [tokenizer.eos_token_id]
        rows.append((prompt + target, [-100] * len(prompt) + target))
    return rows


def _collate(rows: Sequence[tuple[list[int], list[int]]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad rows into ``input_ids, attention_mask, labels``, each ``[B, T]``."""
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id)
    labels = torch.full((len(rows), width), -100)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (ids, lab) in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, : len(ids)] = torch.tensor(lab)
        attention_mask[i, : len(ids)] = 1
    return input_ids, attention_mask, labels


def _warmup_cosine(steps: int) -> Callable[[int], float]:
    """Learning-rate factor: linear warm-up over the first 5 % of steps, then cosine decay to 0."""
    warmup = max(1, steps // 20)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.5 * (1.0 + torch.cos(torch.tensor(progress * torch.pi)).item())

    return factor


def _batch_drawer(tokenizer, problems: Sequence[Problem], batch_size: int, gen: torch.Generator,
                  mistake_rng: random.Random, rates: Mapping[int, float], mistake: Callable[[str], str]):
    """A function drawing one batch of SFT rows: a level uniformly, then a problem of that level, each
    row's label replaced by ``mistake(answer)`` with its level's rate (decided afresh at every draw)."""
    rows = _sft_rows(tokenizer, problems)
    level_index: dict[int, list[int]] = defaultdict(list)
    for i, p in enumerate(problems):
        level_index[p.difficulty].append(i)
    by_level = [level_index[k] for k in sorted(level_index)]

    def draw() -> list[tuple[list[int], list[int]]]:
        # Level first, then a problem of that level: a small level (arith-v3's level 0 has ~116 train
        # prompts) would otherwise be a few percent of each batch.
        picks = torch.randint(len(by_level), (batch_size,), generator=gen).tolist()
        idx = [by_level[k][torch.randint(len(by_level[k]), (1,), generator=gen).item()] for k in picks]
        batch = [rows[i] for i in idx]
        for j, i in enumerate(idx):
            if rates.get(problems[i].difficulty, 0.0) > 0 and mistake_rng.random() < rates[problems[i].difficulty]:
                wrong = dataclasses.replace(problems[i], answer=mistake(problems[i].answer))
                batch[j] = _sft_rows(tokenizer, [wrong])[0]
        return batch

    return draw


def warm_start(
    model: Qwen2ForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    problems: Sequence[Problem],
    *,
    steps: int,
    seed: int,
    lr: float = 3e-3,
    batch_size: int = 64,
    mistake_rate: Mapping[int, float] | None = None,
    mistake: Callable[[str], str] = sign_dropped,
) -> dict[str, float]:
    """Short supervised warm-start in place: cross-entropy on answer and EOS tokens only.

    Args:
        model: policy to train in place.
        tokenizer: from ``build_tokenizer``.
        problems: training problems; each batch row draws a level uniformly, then a problem
            of that level uniformly (with replacement).
        steps: optimizer steps (AdamW, linear warm-up then cosine decay).
        seed: seed for batch sampling.
        lr: peak learning rate.
        batch_size: problems per step.
        mistake_rate: per difficulty level, the probability that a drawn row's label is
            ``mistake(answer)`` instead of the answer (decided afresh each time the row is drawn),
            so the model learns to answer correctly only with probability about ``1 - rate``.
        mistake: the systematic wrong answer, a function of the right one (default:
            ``cobarl.tasks.arithmetic.sign_dropped``).

    Returns:
        ``{"warm_start/loss_first", "warm_start/loss_last", "warm_start/steps", "warm_start/seconds"}``,
        where the losses average the first and last 10% of steps.
    """
    if not problems:
        raise ValueError("warm_start needs at least one problem")
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(steps))
    draw = _batch_drawer(tokenizer, problems, batch_size, gen, random.Random(f"cobarl-label-mistake-{seed}"),
                         dict(mistake_rate or {}), mistake)
    model.train()
    losses: list[float] = []
    start = time.perf_counter()
    for _ in range(steps):
        input_ids, attention_mask, labels = _collate(draw(), tokenizer.pad_token_id)
        loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    model.eval()
    k = max(1, steps // 10)
    return {
        "warm_start/loss_first": sum(losses[:k]) / k if losses else float("nan"),
        "warm_start/loss_last": sum(losses[-k:]) / k if losses else float("nan"),
        "warm_start/steps": float(steps),
        "warm_start/seconds": time.perf_counter() - start,
    }


def sample_completions(
    model: Qwen2ForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    prompts: Sequence[str],
    *,
    temperature: float = 1.0,
    max_new_tokens: int = MAX_NEW_TOKENS,
    batch_size: int = 256,
    seed: int | None = None,
) -> list[str]:
    """One completion per prompt through the project's generation loop (`HFGenerator`); ``temperature=0``
    means greedy, T > 0 samples the raw policy (no top-k / top-p cut), as RL does."""
    from cobarl.models.generate import HFGenerator

    samples = HFGenerator(model, tokenizer, batch_size=batch_size).generate(
        list(prompts), n=1, temperature=temperature, top_p=1.0, max_tokens=max_new_tokens,
        seed=0 if seed is None else seed,
    )
    return [s[0] for s in samples]


def _is_saved_model(path: Path) -> bool:
    return (path / "config.json").is_file() and (path / "tokenizer_config.json").is_file()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def remove_stale_builds(cache_dir: Path) -> list[Path]:
    """Remove the temporary folders (``.tiny-*.tmp-<pid>-*``) of builders that died mid-save (SIGKILL, power
    loss: no ``finally`` ran); a live builder's folder is left alone. Returns what was removed."""
    removed = []
    for tmp in Path(cache_dir).glob(".tiny-*.tmp-*"):
        pid = tmp.name.rsplit(".tmp-", 1)[1].split("-", 1)[0]
        if tmp.is_dir() and (not pid.isdigit() or not _pid_alive(int(pid))):
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    return removed


def ensure_default_model(cache_dir: str | Path, *, seed: int = 0, steps: int | None = None,
                         task: str = DEFAULT_TASK) -> Path:
    """Path of the warm-started tiny model of an embedded ``task`` under ``cache_dir``, building it if absent.

    The model is saved as ``cache_dir/tiny-<task>-seed{seed}`` (model and tokenizer, via
    ``save_pretrained``, plus ``warm_start.json``) and loads with ``AutoModelForCausalLM`` /
    ``AutoTokenizer``. It is written into a temporary sibling directory and renamed into
    place, so a crash or a concurrent builder never leaves a half-written model there.
    The recipe is the task's (`cobarl.tasks.embedded.TASKS`).

    Args:
        cache_dir: directory holding cached models; created if missing.
        seed: seed of the initial weights, warm-start problems and batches.
        steps: warm-start steps; None: the task's. Another value (e.g. in tests) gets its own
            ``-steps{steps}`` directory so it never shadows the default model.
        task: an embedded task name.
    """
    recipe = get_task(task)
    steps = recipe.warm_start_steps if steps is None else steps
    cache_dir = Path(cache_dir)
    suffix = "" if steps == recipe.warm_start_steps else f"-steps{steps}"
    final = cache_dir / f"tiny-{task}-seed{seed}{suffix}"
    if _is_saved_model(final):
        return final
    cache_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_builds(cache_dir)
    tokenizer = build_tokenizer(recipe.chars)
    model = build_model(tokenizer, seed=seed)
    problems = recipe.make_warm_start(recipe.warm_start_problems, seed=seed)
    stats: dict = warm_start(model, tokenizer, problems, steps=steps, seed=seed, lr=recipe.warm_start_lr,
                             batch_size=recipe.warm_start_batch, mistake_rate=recipe.mistake_rate,
                             mistake=recipe.mistake)
    stats["warm_start/recipe"] = recipe.describe()
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-{os.getpid()}-", dir=cache_dir))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "warm_start.json").write_text(json.dumps(stats, indent=2))
        try:
            os.replace(tmp, final)  # atomic on POSIX when `final` is absent or an empty directory
        except OSError:
            if not _is_saved_model(final):  # lost a race only if the winner finished; else re-raise
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
