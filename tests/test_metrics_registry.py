"""Registry metadata, input checks and the ``python -m eval list`` command."""

import json

import numpy as np
import pytest

from eval.__main__ import main
from eval.metrics import EvalSample, compute_metric, get_metric, list_metrics, register_metric

EXPECTED = {"psnr", "ssim", "lpips", "fid", "fvd", "lse", "lse_resize", "csim", "id_sim_dlib",
            "identity_drift", "lmd", "lmd_face", "av_landmark_sync", "av_facesync", "landmark_jitter", "blink_rate",
            "head_motion", "flicker"}


def test_every_metric_is_registered_with_metadata():
    infos = {m.name: m for m in list_metrics()}
    assert EXPECTED <= set(infos)
    for m in infos.values():
        assert m.variant and m.description and m.arrow in "↑↓"
        ok, reason = m.available()
        assert isinstance(ok, bool) and reason
    assert infos["fid"].level == "set" and infos["psnr"].level == "clip"
    assert infos["lse"].direction("lse_d") is False and infos["lse"].direction("lse_c") is True
    assert infos["lse"].direction("lse_offset") is None
    assert "lse" not in infos["av_landmark_sync"].name  # a landmark signal is never called LSE


def test_input_checks_and_errors():
    frames = np.zeros((3, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="uint8"):
        EvalSample(frames=frames.astype(np.float32))
    with pytest.raises(ValueError, match="audio"):
        compute_metric("av_landmark_sync", EvalSample(frames=frames))
    with pytest.raises(ValueError, match="unknown metric"):
        get_metric("nope")
    with pytest.raises(ValueError, match="set metric"):
        compute_metric("fid", EvalSample(frames=frames))
    with pytest.raises(ValueError, match="kind"):
        register_metric(name="x", kind="beauty", higher_is_better=True, description="", variant="")


def test_list_command_json_reports_unavailable_weights(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("REST_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert EXPECTED <= set(rows)
    assert rows["psnr"]["available"] is True
    lse = rows["lse"]
    if not lse["available"]:
        assert "syncnet_v2.model" in lse["reason"] and "robots.ox.ac.uk" in lse["reason"]
    assert main(["list", "--kind", "sync"]) == 0
    assert "lse" in capsys.readouterr().out
    assert main(["fetch-weights", "nonexistent"]) == 2
