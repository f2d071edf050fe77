"""Tiny character-level Qwen2 policy: tokenizer, save/load, warm-start, sampling."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from cobarl.models import (
    MAX_NEW_TOKENS,
    build_model,
    build_tokenizer,
    ensure_default_model,
    warm_start,
)
from cobarl.models import tiny
from cobarl.tasks import make_problems, make_splits


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def tokenizer():
    from cobarl.tasks.embedded import get_task

    return build_tokenizer(get_task("arith-v3").chars)  # the arithmetic problems these tests draw


def test_tokenizer_is_char_level_and_round_trips(tokenizer):
    for text in ["12+7=19", " 3 - 4\n", "99*9-10=881", "-89"]:
        ids = tokenizer(text)["input_ids"]
        assert len(ids) == len(text)  # one token per character, no BOS
        assert tokenizer.decode(ids) == text
    assert tokenizer.padding_side == "left"
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    batch = tokenizer(["1+2=", "11+22="], padding=True)
    assert batch["input_ids"][0][:2] == [tokenizer.pad_token_id] * 2
    assert batch["attention_mask"][0] == [0, 0, 1, 1, 1, 1]


def test_model_is_small_and_seeded(tokenizer):
    a, b = build_model(tokenizer, seed=0), build_model(tokenizer, seed=0)
    n_params = sum(p.numel() for p in a.parameters())
    assert 100_000 < n_params < 1_000_000
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert a.config.tie_word_embeddings and a.config.vocab_size == len(tokenizer)


def test_save_and_reload_like_a_hub_checkpoint(tokenizer, tmp_path):
    model = build_model(tokenizer, seed=0)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    # transformers 5 reloads a qwen2 checkpoint's tokenizer as a rebuilt Qwen2Tokenizer;
    # it must tokenize exactly as the in-memory one.
    reloaded_tok = AutoTokenizer.from_pretrained(tmp_path)
    for text in ["12+7=19\n", " 3 - 4", "<eos>1", "abc9"]:
        assert reloaded_tok(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert reloaded_tok.padding_side == "left"
    assert reloaded_tok.eos_token_id == tokenizer.eos_token_id
    assert reloaded_tok.pad_token_id == tokenizer.pad_token_id
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    x = torch.tensor([tokenizer("12+7=")["input_ids"]])
    torch.testing.assert_close(reloaded(x).logits, model(x).logits)


def test_warm_start_reduces_loss(tokenizer):
    torch.manual_seed(0)
    model = build_model(tokenizer, seed=0)
    problems = make_problems(200, seed=0, split="train")
    stats = warm_start(model, tokenizer, problems, steps=40, seed=0, lr=3e-3, batch_size=32)
    assert stats["warm_start/loss_last"] < stats["warm_start/loss_first"] - 0.3


def test_mistake_rate_teaches_the_systematic_mistake(tokenizer):
    # With every label of its level replaced by the mistake, the memorised answer lacks its sign.
    model = build_model(tokenizer, seed=0)
    problem = make_problems(1, seed=0, levels=(3,))
    warm_start(model, tokenizer, problem, steps=60, seed=0, lr=1e-2, batch_size=4, mistake_rate={3: 1.0})
    (completion,) = tiny.sample_completions(model, tokenizer, [problem[0].prompt], temperature=0)
    assert problem[0].answer.startswith("-") and completion == problem[0].answer[1:]


def _held_out_accuracy(model, tokenizer, problems, **kw):
    """The one held-out evaluator (`cobarl.train.evaluate.held_out_accuracy`) with the embedded task's verifier."""
    pytest.importorskip("trl")
    from cobarl.rewards.exact import exact_match_reward
    from cobarl.train.data import problems_to_dataset
    from cobarl.train.evaluate import held_out_accuracy

    return held_out_accuracy(model, tokenizer, problems_to_dataset(problems), exact_match_reward,
                             max_new_tokens=MAX_NEW_TOKENS, **kw)


def test_held_out_accuracy_keys_and_range(tokenizer):
    model = build_model(tokenizer, seed=0)
    _, held_out = make_splits(0, 20, seed=0)
    acc = _held_out_accuracy(model, tokenizer, held_out, num_samples=2, temperature=1.0)
    assert set(acc) == {"accuracy"} | {f"accuracy/level_{lv}" for lv in range(5)}
    assert all(0.0 <= v <= 1.0 for v in acc.values())
    greedy = _held_out_accuracy(model, tokenizer, held_out, temperature=0)
    assert greedy == _held_out_accuracy(model, tokenizer, held_out, temperature=0)


def test_held_out_accuracy_counts_a_memorised_answer(tokenizer):
    # Teach one problem until greedy decoding must get it right: checks generation,
    # left padding, EOS stopping and decoding end to end.
    model = build_model(tokenizer, seed=0)
    problem = make_problems(1, seed=0, levels=(1,))
    warm_start(model, tokenizer, problem, steps=60, seed=0, lr=1e-2, batch_size=4)
    padded_batch = problem + make_problems(3, seed=1, levels=(4,), start_id=1)  # longer prompts force padding
    acc = _held_out_accuracy(model, tokenizer, padded_batch, temperature=0)
    assert acc["accuracy/level_1"] == 1.0


def test_ensure_default_model_builds_once_and_loads(tmp_path, monkeypatch):
    path = ensure_default_model(tmp_path, seed=0, steps=3)
    assert path.parent == tmp_path and path.name.endswith("-steps3")
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp dir left behind
    AutoModelForCausalLM.from_pretrained(path)
    AutoTokenizer.from_pretrained(path)

    def fail(*args, **kwargs):
        raise AssertionError("cached model was rebuilt")

    monkeypatch.setattr(tiny, "warm_start", fail)
    assert ensure_default_model(tmp_path, seed=0, steps=3) == path


def test_generation_leaves_the_callers_rng_alone(tokenizer):
    """Evaluating during training seeds its own sampling; the training RNG must go on as if it had not run."""
    from cobarl.models.generate import HFGenerator

    model = build_model(tokenizer, seed=0)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    HFGenerator(model, tokenizer).generate(["1+2="], n=2, temperature=1.0, top_p=1.0, max_tokens=3, seed=7)
    assert torch.equal(torch.rand(3), expected)
