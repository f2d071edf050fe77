"""vLLM generation in `AdaptiveGRPOTrainer` (server and colocate), on CPU, faked at TRL's call boundaries.

TRL's server mode needs vLLM and CUDA (NCCL weight sync), so the fakes replace only what talks to
vLLM: ``VLLMClient`` (server mode) and ``vllm.LLM`` (colocate mode), both inside
``trl.generation.vllm_generation``. Everything between -- ``GRPOTrainer._generate``, TRL's
``VLLMGeneration.generate`` (gather, ``rows[::num_generations]``, ``n``, broadcast, per-rank slice)
and ``sync_weights`` -- is TRL's own code. The fakes record every request and answer with
completions sampled from their own copy of the tiny model, loaded from the weights TRL streams at
each sync; sampling is seeded per request, so a run on 1 and on 2 processes sends the same requests.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import torchrun

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

STAIRS = [2, 3, 4, 7]  # 4 prompts, 16 rollouts: every prompt a different count


def sample(model, prompt_ids: list[int], n: int, max_tokens: int, temperature: float, seed: int, eos: int):
    """``n`` completions of one prompt with their sampled-token log-probs (what vLLM returns)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    with torch.no_grad():
        for _ in range(n):
            ids, completion, logps = list(prompt_ids), [], []
            for _ in range(max_tokens):
                logp = torch.log_softmax(model(torch.tensor([ids])).logits[0, -1].float() / temperature, -1)
                tok = int(torch.multinomial(logp.exp(), 1, generator=gen))
                completion.append(tok), logps.append(float(logp[tok])), ids.append(tok)
                if tok == eos:
                    break
            out.append((completion, logps))
    return out


class _TinyEngine:
    """The tiny model behind a fake: weights come only from TRL's syncs."""

    model_factory = None  # set by the test: () -> (model, tokenizer)

    def __init__(self):
        self.model, self.tokenizer = type(self).model_factory()
        self.model.eval()
        self.requests: list[dict] = []
        self.synced: list[list[str]] = []

    def _load(self, pairs) -> list[str]:
        params = dict(self.model.named_parameters())
        names = []
        for name, value in pairs:
            params[name].data.copy_(value)  # KeyError on a name vLLM would not know
            names.append(name)
        return names

    def _answer(self, prompts: list[list[int]], n: int, max_tokens: int, temperature: float):
        seed = 1000 + len(self.requests)
        return [c for i, p in enumerate(prompts)
                for c in sample(self.model, p, n, max_tokens, temperature, seed + i, self.tokenizer.eos_token_id)]


class FakeServer(_TinyEngine):
    """Stands in for `trl.generation.vllm_client.VLLMClient` (a `trl vllm-serve` server)."""

    def __init__(self, base_url=None, group_port=None, connection_timeout=None, **kw):
        super().__init__()
        self.base_url = base_url

    def init_communicator(self, device=None):
        self.device = device

    def get_server_info(self):
        return {"model_config": {"logprobs_mode": "processed_logprobs"}}

    def update_named_params(self, metadata, params):
        self.synced.append(self._load(params))
        assert [m[0] for m in metadata] == self.synced[-1]

    def reset_prefix_cache(self):
        pass

    def generate(self, prompts, features=None, n=1, temperature=1.0, max_tokens=16, **sampling):
        answers = self._answer(prompts, n, max_tokens, temperature)
        self.requests.append({"prompts": [list(p) for p in prompts], "n": n, "max_tokens": max_tokens,
                              "completions": [c for c, _ in answers]})
        return {"prompt_ids": [list(p) for p in prompts], "completion_ids": [c for c, _ in answers],
                "logprobs": [[[lp] for lp in lps] for _, lps in answers],
                "logprob_token_ids": [[[t] for t in c] for c, _ in answers]}


class FakeLLM(_TinyEngine):
    """Stands in for `vllm.LLM` (colocate mode): `generate(prompts, sampling_params)` and the weight loader."""

    def __init__(self, **kwargs):
        super().__init__()
        self._loading: list[str] = []  # TRL loads one tensor per call, then resets the prefix cache
        runner = SimpleNamespace(model=SimpleNamespace(load_weights=lambda pairs: self._loading.extend(self._load(pairs))))
        self.llm_engine = SimpleNamespace(model_executor=SimpleNamespace(driver_worker=SimpleNamespace(model_runner=runner)))

    def reset_prefix_cache(self):
        self.synced.append(self._loading)
        self._loading = []

    def generate(self, prompts, sampling_params=None, use_tqdm=False):
        sp = sampling_params
        ids = [p["prompt_token_ids"] for p in prompts]
        answers = self._answer(ids, sp.n, sp.max_tokens, sp.temperature)
        self.requests.append({"prompts": [list(p) for p in ids], "n": sp.n, "completions": [c for c, _ in answers]})
        return [SimpleNamespace(prompt_token_ids=p, outputs=[SimpleNamespace(
                    token_ids=c, logprobs=[{t: SimpleNamespace(logprob=lp, rank=1)} for t, lp in zip(c, lps)])])
                for p, (c, lps) in zip(ids, answers)]


def install_fakes(patch, model_factory) -> None:
    """Replace vLLM at TRL's boundary; ``patch(obj, name, value)`` sets an attribute (monkeypatched in tests)."""
    import trl.generation.vllm_generation as vg

    _TinyEngine.model_factory = staticmethod(model_factory)
    for name, value in (("is_vllm_available", lambda: True), ("VLLMClient", FakeServer), ("LLM", FakeLLM),
                        ("SamplingParams", SimpleNamespace)):  # LLM, SamplingParams: absent without vLLM
        patch(vg, name, value)


def staircase(pass_rates, total_budget, min_budget, max_budget):
    assert len(pass_rates) == len(STAIRS) and total_budget == sum(STAIRS)
    return np.array(STAIRS)


def expected_prompt_ids(trainer, row_ids: list) -> list[list[int]]:
    """The token ids TRL sends for these rows: each row's dataset prompt, tokenized as TRL does."""
    ds = trainer.train_dataset
    text = dict(zip(ds["prompt_id"], ds["prompt"]))
    return [list(ids) for ids in trainer.processing_class(text=[text[pid] for pid in row_ids])["input_ids"]]


def check_requests_follow_plans(trainer, steps: list[dict], requests: list[dict]) -> None:
    """One request per generation, n=1, every row of the global batch in the planned order."""
    assert len(requests) == len(steps)
    for step, req in zip(steps, requests):
        assert req["n"] == 1
        assert req["prompts"] == expected_prompt_ids(trainer, step["row_ids"])
        per_prompt = Counter(step["row_ids"])
        assert [per_prompt[pid] for pid in step["plan_ids"]] == step["counts"]


@pytest.fixture
def vllm_trainer(tmp_path, monkeypatch):
    """Build an AdaptiveGRPOTrainer whose vLLM is faked; ``use_vllm`` bypasses the CPU refusal for that."""
    from test_train_trainer import V3_CHARS, make_trainer, small_config

    from cobarl import Allocator, StrategyConfig
    from cobarl.models.tiny import build_model, build_tokenizer

    # TRL's colocate init sets these; left set, later trainers in this process would place tensors on
    # "cpu:<LOCAL_RANK>", which torch.load cannot restore. Restored by hand: monkeypatch.delenv of an absent
    # key records nothing to undo.
    launch_env = {key: os.environ.get(key) for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    install_fakes(lambda o, n, v: monkeypatch.setattr(o, n, v, raising=False), lambda: (build_model(build_tokenizer(V3_CHARS), seed=1), build_tokenizer(V3_CHARS)))

    def build(mode: str, max_steps: int = 2, **policy):
        config = small_config(tmp_path, max_steps=max_steps, **policy)
        object.__setattr__(config, "use_vllm", True)
        object.__setattr__(config, "vllm_mode", mode)
        alloc = None if policy else Allocator(StrategyConfig(strategy=staircase, min_budget=2, max_budget=8))
        return make_trainer(tmp_path, config, allocator=alloc)

    yield build
    for key, value in launch_env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.mark.parametrize("mode", ["server", "colocate"])
def test_vllm_generates_each_prompt_its_planned_count(vllm_trainer, mode):
    from test_train_trainer import reference_advantages

    trainer, rec = vllm_trainer(mode)
    trainer.train()
    engine = trainer.vllm_generation.vllm_client if mode == "server" else trainer.vllm_generation.llm
    assert [s["counts"] for s in rec.steps] == [STAIRS, STAIRS]
    check_requests_follow_plans(trainer, rec.steps, engine.requests)
    # Rewards row k score completion k against the answer of prompt row_ids[k]; advantages group by prompt.
    ds = trainer.train_dataset
    answer = dict(zip(ds["prompt_id"], ds["answer"]))
    for step, req in zip(rec.steps, engine.requests):
        texts = trainer.processing_class.batch_decode(req["completions"], skip_special_tokens=True)
        expected = trainer.reward_funcs[0](prompts=None, completions=texts, answer=[answer[p] for p in step["row_ids"]])
        np.testing.assert_allclose(step["rewards"], expected)
        np.testing.assert_allclose(step["advantages"], reference_advantages(step["rewards"], step["row_ids"]), atol=1e-5)
    # TRL streamed every weight before each generation.
    names = [n for n, _ in trainer.model.named_parameters()]
    assert len(engine.synced) == len(rec.steps) and all(s == names for s in engine.synced)


@pytest.mark.parametrize("mode", ["server", "colocate"])
def test_vllm_generates_each_round_in_one_request(vllm_trainer, mode):
    """A policy in rounds: one vLLM request per round, n=1 per row, all of it counted as generated."""
    from cobarl.train.metrics_log import METRICS_FILE, read_metrics

    trainer, _ = vllm_trainer(mode, allocator="reinforce-ada", round_size=4, max_rounds=2)
    trainer.train()
    engine = trainer.vllm_generation.vllm_client if mode == "server" else trainer.vllm_generation.llm
    rows = read_metrics(Path(trainer.args.output_dir) / METRICS_FILE)
    assert all(req["n"] == 1 for req in engine.requests)
    assert len(engine.requests) == sum(r["rollout/rounds"] for r in rows)
    assert sum(len(req["prompts"]) for req in engine.requests) == sum(r["rollout/count"] for r in rows)
    assert all(r["rollout/trained"] == trainer.args.generation_batch_size for r in rows)


def test_vllm_server_mode_is_accepted_by_the_config(tmp_path):
    from cobarl.train.config import make_config

    config = make_config({"use_vllm": True, "vllm_mode": "server", "device": "cuda", "output_dir": str(tmp_path),
                          "vllm_server_url": "http://10.0.0.2:8000"})
    assert config.vllm_mode == "server" and config.vllm_server_url == "http://10.0.0.2:8000"


# --- 1 and 2 processes (torchrun, gloo) ---------------------------------------------------------------------


def worker(model_dir: str, out_dir: str) -> None:
    """Runs `cobarl.train.run.run` in server mode with the fake server; writes each rank's plans and slices."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cobarl.train.config import make_config
    from cobarl.train.run import run
    from cobarl.train.trainer import AdaptiveGRPOTrainer

    torch.set_num_threads(1)
    install_fakes(setattr, lambda: (AutoModelForCausalLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    record, plan, generate = {"plans": [], "local": []}, AdaptiveGRPOTrainer._plan_generation, AdaptiveGRPOTrainer._generate

    def planning(self, inputs):
        ids, counts, rows = plan(self, inputs)
        record["plans"].append({"ids": [int(i) for i in ids], "counts": counts.tolist(),
                                "rows": [int(r["prompt_id"]) for r in rows]})
        return ids, counts, rows

    def generating(self, prompts):
        out = generate(self, prompts)
        record["local"].append({"prompt_ids": [list(p) for p in out[0]], "completion_ids": [list(c) for c in out[1]]})
        return out

    AdaptiveGRPOTrainer._plan_generation, AdaptiveGRPOTrainer._generate = planning, generating
    # A step too small to change a float32 weight: 1 and 2 processes then sample from identical weights, so
    # the seeded fake answers alike and the (reward-driven) coba allocations can be compared.
    config = make_config(dict(
        model=model_dir, output_dir=str(Path(out_dir) / "run"), max_steps=3, save_steps=10, seed=0,
        prompts_per_step=4, rollouts_per_step=16, max_budget=8, train_size=8, eval_size=4, max_completion_length=4,
        learning_rate=1e-30, progress=False, device="cpu", reward="helpers:parity_reward",
    ))
    trainers = []
    init = AdaptiveGRPOTrainer.__init__

    def keep(self, *a, args, **k):  # cobarl train refuses --use-vllm on a CPU: switch it on past that check
        args.use_vllm, args.vllm_mode = True, "server"
        init(self, *a, args=args, **k)
        trainers.append(self)

    AdaptiveGRPOTrainer.__init__ = keep
    run(config, log=lambda _: None)
    if rank == 0:
        record["requests"] = trainers[0].vllm_generation.vllm_client.requests
        record["tokenized"] = {str(pid): list(ids) for pid, ids in zip(
            trainers[0].train_dataset["prompt_id"], expected_prompt_ids(trainers[0], trainers[0].train_dataset["prompt_id"]))}
    Path(out_dir, f"world{world}-rank{rank}.json").write_text(json.dumps(record))


@pytest.mark.slow
def test_server_mode_counts_on_one_and_two_processes(tmp_path, tiny_model_dir):
    for world in (1, 2):
        torchrun(tmp_path, __file__, str(tiny_model_dir), str(tmp_path / f"w{world}"), processes=world)
    one = json.loads((tmp_path / "w1" / "world1-rank0.json").read_text())
    two = [json.loads((tmp_path / "w2" / f"world2-rank{r}.json").read_text()) for r in (0, 1)]
    assert one["plans"] == two[0]["plans"] == two[1]["plans"]  # same counts on 1 and 2 processes, one plan for both ranks
    assert any(len(set(p["counts"])) > 1 for p in one["plans"])  # the allocator did act on the rewards
    assert one["requests"] == two[0]["requests"]
    tokenized = one["tokenized"]
    for plan, req in zip(one["plans"], one["requests"]):
        assert req["n"] == 1 and req["prompts"] == [tokenized[str(pid)] for pid in plan["rows"]]
        per_prompt = Counter(plan["rows"])
        assert [per_prompt[pid] for pid in plan["ids"]] == plan["counts"]
        assert sum(plan["counts"]) == 16
    # Each rank trains on its own slice of the server's answer: rows r*8 .. (r+1)*8.
    for r, rank in enumerate(two):
        for req, local in zip(one["requests"], rank["local"]):
            assert local["prompt_ids"] == req["prompts"][8 * r: 8 * (r + 1)]
            assert local["completion_ids"] == req["completions"][8 * r: 8 * (r + 1)]


if __name__ == "__main__":
    worker(sys.argv[1], sys.argv[2])
