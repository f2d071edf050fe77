"""What TRL users expect: trackers through --report-to (TensorBoard, offline) and LoRA through peft."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from test_train_trainer import make_trainer, small_config  # noqa: E402

from cobarl.train.checkpoints import checkpoint_problem  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")  # tiny matmuls: much faster single-threaded


def test_tensorboard_event_files_hold_budget_and_capability_metrics(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trainer, _ = make_trainer(tmp_path, small_config(tmp_path, max_steps=2, report_to="tensorboard"))
    trainer.train()
    events = list(Path(trainer.args.output_dir).glob("runs/*/events.out.tfevents.*"))
    assert events, "no TensorBoard event file written"
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    for needed in ("train/budget/mean", "train/budget/max", "train/capability/alpha", "train/rollout/effective_ratio"):
        assert needed in tags, (needed, tags)
    assert [e.step for e in acc.Scalars("train/budget/mean")] == [1, 2]


def test_lora_trains_only_the_adapter(tmp_path):
    pytest.importorskip("peft")
    config = small_config(tmp_path, max_steps=2, save_steps=2, lora_r=4, lora_target_modules="q_proj,v_proj")
    trainer, rec = make_trainer(tmp_path, config)
    trainable = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_B" in n}
    trainer.train()
    after = dict(trainer.model.named_parameters())
    assert any(not torch.equal(before[n], after[n].detach()) for n in before)
    ckpt = Path(config.output_dir) / "checkpoint-2"
    assert (ckpt / "adapter_model.safetensors").is_file() and checkpoint_problem(ckpt) is None
    assert len(rec.steps) == 2
