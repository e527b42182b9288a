"""Config resolution: typed overrides, files, validation, CLI errors."""

from __future__ import annotations

import json

import pytest

from hub.train.__main__ import main
from hub.train.config import apply_overrides, config_diff, config_from_dict, config_to_dict, resolve_config
from hub.train.stages import get_stage


@pytest.fixture()
def preset():
    return get_stage("toy").presets["test"]


def test_overrides_are_parsed_with_the_field_type(preset):
    cfg = apply_overrides(preset, ["train.lr=3e-4", "train.steps=12", "model.critic=yes", "train.betas=(0.5, 0.9)",
                                   "train.run_name=abc", "train.tensorboard=0"])
    assert cfg.train.lr == 3e-4 and isinstance(cfg.train.lr, float)
    assert cfg.train.steps == 12 and cfg.model.critic is True and cfg.train.tensorboard is False
    assert cfg.train.betas == (0.5, 0.9) and cfg.train.run_name == "abc"
    assert preset.train.lr != 3e-4  # the preset itself is untouched


@pytest.mark.parametrize("override, message", [
    ("train.lrr=1", "unknown config key 'train.lrr'.*train.lr,"),
    ("model.nope=1", "valid keys: model.in_dim"),
    ("train.steps=1.5", "expected an integer"),
    ("model.critic=maybe", "expected a bool"),
    ("train.betas=0.9", "expected 2 comma-separated values"),
    ("train.lr", "expected key.sub=value"),
    ("train=1", "is a section"),
])
def test_bad_overrides_are_clear_errors(preset, override, message):
    with pytest.raises(ValueError, match=message):
        apply_overrides(preset, [override])


def test_validation_names_the_setting(preset):
    with pytest.raises(ValueError, match="train.precision='fp16'; accepted: fp32, bf16"):
        resolve_config(preset, overrides=["train.precision=fp16"])
    with pytest.raises(ValueError, match="train.grad_accum=0"):
        resolve_config(preset, overrides=["train.grad_accum=0"])


def test_config_files_then_overrides(tmp_path, preset):
    (tmp_path / "c.json").write_text(json.dumps({"train": {"lr": 1, "betas": [0.1, 0.2]}, "model": {"hidden": 7}}))
    cfg = resolve_config(preset, tmp_path / "c.json", ["model.hidden=9"])
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float) and cfg.train.betas == (0.1, 0.2)
    assert cfg.model.hidden == 9
    (tmp_path / "c.yaml").write_text("train:\n  steps: 5\ndata:\n  num_samples: 10\n")
    cfg = resolve_config(preset, tmp_path / "c.yaml")
    assert cfg.train.steps == 5 and cfg.data.num_samples == 10
    (tmp_path / "bad.json").write_text(json.dumps({"model": {"hidden": "wide"}}))
    with pytest.raises(ValueError, match="model.hidden='wide': expected an integer"):
        resolve_config(preset, tmp_path / "bad.json")


def test_saved_config_round_trips(preset):
    cfg = apply_overrides(preset, ["model.hidden=5", "train.betas=0.1,0.2"])
    back = config_from_dict(preset, json.loads(json.dumps(config_to_dict(cfg))))
    assert back == cfg and config_diff(back, cfg) == {}
    assert config_diff(preset, cfg) == {"model.hidden": (16, 5), "train.betas": ((0.9, 0.999), (0.1, 0.2))}


def test_cli_reports_user_errors_with_status_2(tmp_path, capsys):
    assert main(["toy", "--preset", "nope"]) == 2
    assert "has no preset 'nope'; accepted: test, tiny" in capsys.readouterr().err
    assert main(["nostage", "--preset", "test"]) == 2
    assert "unknown stage 'nostage'; accepted:" in capsys.readouterr().err
    assert main(["toy", "--preset", "test", "train.bogus=1"]) == 2
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    assert "not a training run folder" in capsys.readouterr().err


def test_cli_trains_resumes_and_exports(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["toy", "--preset", "test", "--out", str(run), "train.steps=4", "train.ckpt_every=2"]) == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["stage"] == "toy" and saved["preset"] == "test" and saved["config"]["train"]["steps"] == 4
    assert main(["toy", "--preset", "test", "--out", str(run), "--resume", "auto", "train.steps=6"]) == 0
    assert "(step 6)" in capsys.readouterr().out
    assert main(["export", str(run), "--out", str(tmp_path / "exp")]) == 0
    assert (tmp_path / "exp" / "model.safetensors").is_file()
