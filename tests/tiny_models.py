"""Tiny random REST models for fast tests (test presets of every part)."""

from __future__ import annotations

import dataclasses

import torch

from hub.models.rest import RestModel
from hub.train.stages.teacher import _test_model, load_vae, rest_config


def tiny_rest_model(role: str = "student", seed: int = 0, perturb: float = 0.05, **dit_changes) -> RestModel:
    """A RestModel of the test presets with small random weights everywhere (so outputs are not
    zero despite the adaLN-Zero initialisation)."""
    torch.manual_seed(seed)
    cfg = _test_model()
    if dit_changes:
        cfg = dataclasses.replace(cfg, dit=dataclasses.replace(cfg.dit, **dit_changes))
    vae = load_vae(cfg)
    model = RestModel(rest_config(cfg, vae, role), vae=vae)
    with torch.no_grad():
        for p in model.dit.parameters():
            p.add_(perturb * torch.randn_like(p))
    return model.eval()
