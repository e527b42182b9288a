"""The common trainer on the toy stage: resume == uninterrupted, export round trip, groups, files."""

from __future__ import annotations

import copy
import os
import shutil
import signal

import pytest
import torch

from hub.train.config import apply_overrides
from hub.train.stages import get_stage
from hub.train.stages.toy import ToyRegressor
from hub.train.trainer import (Trainer, export_run, find_resume_checkpoint, list_checkpoints, load_checkpoint,
                               lr_factor)

torch.set_num_threads(1)


def toy_cfg(*overrides: str):
    stage = get_stage("toy")
    cfg = apply_overrides(stage.presets["test"], ["model.critic=true", "model.input_noise=0.01",
                                                  "train.keep_checkpoints=10", *overrides])
    return stage, cfg


def final_state(run_dir, step):
    return load_checkpoint(run_dir / "checkpoints" / f"step_{step:08d}.pt")


def assert_states_equal(a, b):
    for key in ("model", "ema"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}/{name} differs"
    for group in a["optimizers"]:
        sa, sb = a["optimizers"][group]["state"], b["optimizers"][group]["state"]
        for pid in sa:
            for name in ("exp_avg", "exp_avg_sq", "step"):
                assert torch.equal(sa[pid][name], sb[pid][name]), f"optimizer {group} {name} differs"
    assert (a["epoch"], a["batch_in_epoch"]) == (b["epoch"], b["batch_in_epoch"])


@pytest.mark.parametrize("num_workers", [0, 1])
def test_sigterm_then_resume_matches_uninterrupted_run(tmp_path, num_workers):
    # 8 steps of 4 samples over 64 samples: crosses no epoch, so also check with 20 samples (epochs).
    stage, cfg = toy_cfg("train.steps=9", "data.num_samples=20", f"train.num_workers={num_workers}")
    full = Trainer(stage, cfg, tmp_path / "full").fit()
    assert full.step == 9 and not full.stopped_early

    def kill_at_3(step):
        if step == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    first = Trainer(stage, cfg, tmp_path / "cut", on_step=kill_at_3).fit()
    assert first.stopped_early and first.step == 3 and first.stop_signal == signal.SIGTERM
    assert first.export_dir is None
    assert [p.name for p in list_checkpoints(tmp_path / "cut")] == ["step_00000003.pt"]
    second = Trainer(stage, cfg, tmp_path / "cut", resume="auto").fit()
    assert second.step == 9
    assert_states_equal(final_state(tmp_path / "full", 9), final_state(tmp_path / "cut", 9))
    # The metrics file describes one run: every step logged exactly once.
    steps = [line.split(",")[0] for line in (tmp_path / "cut" / "metrics.csv").read_text().splitlines()[1:]
             if ",loss/main," in line]
    assert steps == ["2", "4", "6", "8", "9"]


def test_resume_from_periodic_checkpoint_is_bitwise(tmp_path):
    stage, cfg = toy_cfg("train.steps=8", "train.ckpt_every=3", "data.num_samples=12")
    Trainer(stage, cfg, tmp_path / "full").fit()
    (tmp_path / "again" / "checkpoints").mkdir(parents=True)
    shutil.copy(tmp_path / "full" / "checkpoints" / "step_00000003.pt", tmp_path / "again" / "checkpoints")
    Trainer(stage, cfg, tmp_path / "again", resume="auto").fit()
    assert_states_equal(final_state(tmp_path / "full", 8), final_state(tmp_path / "again", 8))


def test_groups_step_at_their_frequency_and_training_converges(tmp_path):
    stage, cfg = toy_cfg("train.steps=30", "train.ckpt_every=100", "model.critic_every=3", "train.lr=3e-2")
    result = Trainer(stage, cfg, tmp_path / "run").fit()
    state = final_state(tmp_path / "run", 30)
    main_steps = {float(s["step"]) for s in state["optimizers"]["main"]["state"].values()}
    critic_steps = {float(s["step"]) for s in state["optimizers"]["critic"]["state"].values()}
    assert main_steps == {30.0} and critic_steps == {10.0}
    first = [float(line.split(",")[3]) for line in (tmp_path / "run" / "metrics.csv").read_text().splitlines()[1:]
             if ",loss/main," in line]
    assert first[-1] < 0.5 * first[0], first
    assert "eval/mse" in result.metrics


def test_export_round_trips_through_from_pretrained(tmp_path):
    stage, cfg = toy_cfg()
    result = Trainer(stage, cfg, tmp_path / "run").fit()
    state = final_state(tmp_path / "run", cfg.train.steps)
    model = ToyRegressor.from_pretrained(result.export_dir)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, state["ema"][f"regressor.{name}"]), name  # export uses the EMA
    assert not torch.equal(state["ema"]["regressor.net.0.weight"], state["model"]["regressor.net.0.weight"])
    again = export_run(tmp_path / "run", tmp_path / "exported")
    assert (again / "model.safetensors").read_bytes() == (result.export_dir / "model.safetensors").read_bytes()


def test_existing_run_needs_resume_and_corrupt_checkpoints_are_skipped(tmp_path):
    stage, cfg = toy_cfg()
    Trainer(stage, cfg, tmp_path / "run").fit()
    with pytest.raises(ValueError, match="--resume auto"):
        Trainer(stage, cfg, tmp_path / "run").fit()
    folder = tmp_path / "run" / "checkpoints"
    (folder / "step_00000099.pt").write_bytes(b"not a checkpoint")  # e.g. a disk that filled up
    (folder / ".step_00000100.pt.tmp123.pt").write_bytes(b"partial")  # an interrupted atomic save
    path, state = find_resume_checkpoint(tmp_path / "run")
    assert path.name == "step_00000008.pt" and state["step"] == 8


def test_missing_group_loss_is_a_clear_error(tmp_path):
    stage, cfg = toy_cfg("train.steps=2")
    stage = copy.copy(stage)
    original = stage.training_step
    stage.training_step = lambda model, batch, step: {"loss/main": original(model, batch, step)["loss/main"]}
    with pytest.raises(ValueError, match="no 'loss/critic'"):
        Trainer(stage, cfg, tmp_path / "run").fit()


def test_lr_schedule_warmup_then_cosine():
    assert lr_factor(0, 4, 100, "cosine", 0.1) == pytest.approx(0.25)
    assert lr_factor(3, 4, 100, "cosine", 0.1) == pytest.approx(1.0)
    assert lr_factor(4, 4, 100, "cosine", 0.1) == pytest.approx(1.0)
    assert lr_factor(52, 4, 100, "cosine", 0.1) == pytest.approx(0.55)
    assert lr_factor(100, 4, 100, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_factor(80, 4, 100, "constant", 0.1) == 1.0


def test_time_limit_lowers_total_steps_and_still_exports(tmp_path):
    # A tiny limit: after 20 measured steps the schedule is refitted to end (almost) at once.
    stage, cfg = toy_cfg("train.steps=500", "train.time_limit_min=0.0001", "data.num_samples=20",
                         "train.ckpt_every=1000")
    trainer = Trainer(stage, cfg, tmp_path / "run")
    result = trainer.fit()
    assert 20 <= result.step < 500 and not result.stopped_early
    assert trainer.total_steps == result.step
    assert result.export_dir is not None and (result.export_dir / "config.json").exists()
    assert trainer.cfg.train.steps == 500  # the run's config is unchanged; exports see the steps that ran
    # The LR schedule is laid over the lowered total: it reaches its floor at the new last step.
    factor = trainer.schedulers["main"].lr_lambdas[0]
    assert factor(trainer.total_steps) == pytest.approx(cfg.train.min_lr_ratio)
    assert factor(trainer.total_steps // 2) > cfg.train.min_lr_ratio + 0.1


def test_no_time_limit_keeps_the_configured_steps(tmp_path):
    stage, cfg = toy_cfg("train.steps=25", "data.num_samples=20")
    trainer = Trainer(stage, cfg, tmp_path / "run")
    assert trainer.fit().step == 25 and trainer.total_steps == 25
