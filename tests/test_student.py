import dataclasses

import torch

from hub.train.config import RunConfig
from hub.train.stages.student import StudentStage, rollout_losses
from tests.synthetic_prepared import write_prepared

import pytest


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return write_prepared(tmp_path_factory.mktemp("prepared_s"), size=32)


def _cfg(prepared, **model) -> RunConfig:
    cfg = dataclasses.replace(StudentStage.presets["test"])
    cfg.data = dataclasses.replace(cfg.data, prepared_dir=str(prepared))
    cfg.model = dataclasses.replace(cfg.model, **model)
    return cfg


def _batch(stage, cfg):
    dataset = stage.build_dataset(cfg, "train")
    return {k: torch.stack([dataset[i][k] for i in range(2)]) for k in dataset[0]}


def test_student_starts_as_teacher_and_only_student_trains(prepared):
    torch.manual_seed(0)
    stage = StudentStage()
    cfg = _cfg(prepared)
    model = stage.build_model(cfg)
    for (name, p), (_, q) in zip(model.student.state_dict().items(), model.teacher.state_dict().items()):
        assert torch.equal(p, q), name
    groups = stage.optimizer_groups(model, cfg)
    teacher_ids = {id(p) for p in model.teacher.parameters()}
    vae_ids = {id(p) for p in model.student.vae.parameters()}
    assert not any(id(p) in teacher_ids | vae_ids for p in groups["main"])


def test_rollout_loss_has_gradients_and_falls(prepared):
    torch.manual_seed(0)
    stage = StudentStage()
    cfg = _cfg(prepared)
    model = stage.build_model(cfg)
    # Give the teacher some non-zero weights (adaLN-Zero makes a fresh one predict v = 0).
    with torch.no_grad():
        for p in model.teacher.dit.parameters():
            p.add_(0.05 * torch.randn_like(p))
    batch = _batch(stage, cfg)
    params = stage.optimizer_groups(model, cfg)["main"]
    opt = torch.optim.Adam(params, lr=2e-3)
    losses = []
    for _ in range(25):
        torch.manual_seed(3)
        loss, logs = rollout_losses(model, batch, cfg)
        opt.zero_grad()
        loss.backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.student.dit.parameters())
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], (losses[0], losses[-1])
    assert all(p.grad is None for p in model.teacher.parameters())


def test_self_and_ground_truth_context_differ(prepared):
    stage = StudentStage()
    torch.manual_seed(0)
    cfg_self = _cfg(prepared)
    model = stage.build_model(cfg_self)
    with torch.no_grad():
        for p in model.teacher.dit.parameters():
            p.add_(0.05 * torch.randn_like(p))
    batch = _batch(stage, cfg_self)
    torch.manual_seed(5)
    loss_self, _ = rollout_losses(model, batch, cfg_self)
    torch.manual_seed(5)
    loss_gt, _ = rollout_losses(model, batch, _cfg(prepared, context="ground_truth"))
    assert not torch.isclose(loss_self, loss_gt)


def test_train_and_export(prepared, tmp_path):
    from hub.models.rest import RestModel
    from hub.train.__main__ import main

    out = tmp_path / "run"
    assert main(["student", "--preset", "test", "--out", str(out), f"data.prepared_dir={prepared}"]) == 0
    model = RestModel.from_pretrained(out / "export")
    assert model.config.role == "student"
    assert model.config.sampling.steps == 2


def _noisy_teacher_model(stage, cfg):
    torch.manual_seed(0)
    model = stage.build_model(cfg)
    with torch.no_grad():
        for p in model.teacher.dit.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def test_self_rollout_prob_zero_is_teacher_forcing(prepared):
    stage = StudentStage()
    cfg = _cfg(prepared, self_rollout_prob=0.0)
    model = _noisy_teacher_model(stage, cfg)
    batch = _batch(stage, cfg)
    torch.manual_seed(5)
    loss_p0, logs = rollout_losses(model, batch, cfg)
    assert logs["rollout/self"] == 0.0
    torch.manual_seed(5)
    loss_gt, _ = rollout_losses(model, batch, _cfg(prepared, context="ground_truth"))
    torch.manual_seed(5)
    loss_p1, logs1 = rollout_losses(model, batch, _cfg(prepared))
    assert logs1["rollout/self"] == 1.0
    assert torch.equal(loss_p0, loss_gt) and not torch.isclose(loss_p0, loss_p1)


def test_teacher_context_noise_changes_only_later_chunks(prepared):
    stage = StudentStage()
    cfg = _cfg(prepared)
    model = _noisy_teacher_model(stage, cfg)
    batch = _batch(stage, cfg)
    torch.manual_seed(5)
    _, clean = rollout_losses(model, batch, cfg)
    torch.manual_seed(5)
    _, noisy = rollout_losses(model, batch, _cfg(prepared, teacher_context_t=0.5))
    assert clean["loss/first_chunk"] == noisy["loss/first_chunk"]  # no past: same target
    assert clean["loss/last_chunk"] != noisy["loss/last_chunk"]


def test_context_noise_is_trained_with_and_exported(prepared, tmp_path):
    from hub.models.rest import RestModel
    from hub.train.__main__ import main

    stage = StudentStage()
    model = _noisy_teacher_model(stage, _cfg(prepared))
    batch = _batch(stage, _cfg(prepared))
    torch.manual_seed(5)
    _, clean = rollout_losses(model, batch, _cfg(prepared))
    torch.manual_seed(5)
    _, noisy = rollout_losses(model, batch, _cfg(prepared, context_noise=0.3))
    assert clean["loss/first_chunk"] == noisy["loss/first_chunk"]  # the first chunk reads no context
    assert clean["loss/last_chunk"] != noisy["loss/last_chunk"]  # later chunks read a re-noised cache

    out = tmp_path / "run"
    assert main(["student", "--preset", "test", "--out", str(out), f"data.prepared_dir={prepared}",
                 "model.context_noise=0.25"]) == 0
    exported = RestModel.from_pretrained(out / "export")
    assert exported.config.sampling.context_noise == 0.25  # the engine streams as it was trained


@pytest.mark.parametrize("field,value", [("self_rollout_prob", 1.5), ("teacher_context_t", 1.0),
                                         ("teacher_context_t", -0.1), ("context_noise", 1.0),
                                         ("context_noise", -0.5)])
def test_student_config_rejects_out_of_range(field, value):
    from hub.train.stages.student import StudentModelConfig

    with pytest.raises(ValueError, match=field):
        StudentModelConfig(**{field: value})
