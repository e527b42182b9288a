"""LSE: the syncnet_v2.model loader, the vectorised windows and the offset-search math."""

import numpy as np
import pytest
import torch

from eval.metrics import EvalSample, compute_metric
from eval.metrics import sync as S
from eval.nets.syncnet import SyncNet, load_syncnet

torch.set_num_threads(1)


def test_offset_search_recovers_known_shift():
    rng = np.random.default_rng(0)
    n, d, shift = 60, 16, 4
    base = torch.from_numpy(rng.normal(size=(n + 2 * 15, d))).float()
    lip = base[15:15 + n]                        # lip window i
    aud = base[15 + shift:15 + shift + n]        # audio window i carries lip window i + shift
    dists = S.offset_distances(lip, aud)
    assert dists.shape == (n, 31)
    scores = S.lse_from_distances(dists)
    # the audio runs `shift` frames ahead of the lips: offset +shift (positive: audio leads)
    assert scores["lse_offset"] == shift
    assert scores["lse_d"] < 0.5 and scores["lse_c"] > 1.0
    # reference formula: mean over windows of pairwise_distance at each of the 31 offsets
    padded = torch.nn.functional.pad(aud, (0, 0, 15, 15))
    ref = torch.stack([torch.nn.functional.pairwise_distance(lip[[i]].repeat(31, 1), padded[i:i + 31])
                       for i in range(n)], 1).mean(1)
    assert torch.allclose(dists.mean(0), ref, atol=1e-5)


def test_loader_reads_exact_syncnet_v2_format(tmp_path):
    torch.manual_seed(0)
    model = SyncNet()
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert {k.split(".")[0] for k in state} == {"netcnnaud", "netfcaud", "netcnnlip", "netfclip"}
    path = tmp_path / "syncnet_v2.model"
    torch.save(state, path)
    loaded = load_syncnet(path)
    for k, v in state.items():
        assert torch.equal(loaded.state_dict()[k], v)
    torch.save({"netcnnaud.0.weight": torch.zeros(1)}, tmp_path / "bad.model")
    with pytest.raises(ValueError, match="not a SyncNet state dict"):
        load_syncnet(tmp_path / "bad.model")


def _small_syncnet():
    torch.manual_seed(0)
    return SyncNet().eval()


def test_sequence_pass_equals_per_window_forward():
    model = _small_syncnet()
    video = torch.rand(1, 3, 8, 224, 224) * 255                      # 4 windows
    with torch.no_grad():
        seq = model.forward_lip_sequence(video)                       # (4, 1024)
        per = torch.cat([model.forward_lip(video[:, :, i:i + 5]) for i in range(4)])
    assert seq.shape == (4, 1024)
    assert torch.allclose(seq, per, rtol=1e-4, atol=1e-4)


def test_mfcc_matches_python_speech_features_on_int16():
    import python_speech_features

    audio = (np.sin(np.arange(16000) * 2 * np.pi * 220 / 16000) * 0.5).astype(np.float32)
    pcm = np.round(audio * 32768).astype(np.int16)
    assert np.allclose(S.mfcc_int16(audio), python_speech_features.mfcc(pcm, 16000).T)


def test_lse_pipeline_with_standin_weights(tmp_path):
    """Full resize path with random stand-in weights: shapes, window count, finite scores."""
    model = _small_syncnet()
    t = 12
    frames = np.random.default_rng(0).integers(0, 256, (t, 96, 96, 3), dtype=np.uint8)
    audio = np.random.default_rng(1).normal(scale=0.1, size=t * 640).astype(np.float32)
    sample = EvalSample(frames=frames, audio=audio)
    scores = compute_metric("lse_resize", sample, model=model, batch_windows=3)
    assert set(scores) == {"lse_d", "lse_c", "lse_offset", "lse_windows"}
    assert scores["lse_windows"] == t - 5
    assert -15 <= scores["lse_offset"] <= 15 and scores["lse_c"] >= 0
    with pytest.raises(ValueError, match="too short"):
        S.syncnet_embeddings(model, S.resize_crops(frames[:5]), audio)


def test_track_crop_geometry():
    frames = np.zeros((3, 100, 100, 3), np.uint8)
    frames[:, 40:60, 40:60] = 255                      # a white "face" box at (40, 40, 20, 20)
    boxes = np.tile([40.0, 40.0, 20.0, 20.0], (3, 1))
    boxes[1] = np.nan                                  # a missed detection is interpolated
    crops = S.track_crops(frames, boxes)
    assert crops.shape == (3, 224, 224, 3)
    # s = 10: rows 40 .. 68 and columns 36 .. 64 of the frame are scaled by 8 to 224 x 224
    assert crops[0, 80, 112, 0] == 255                # frame (50, 50): inside the face
    assert crops[0, 200, 112, 0] == 0                 # frame row 65: below the face
    assert crops[0, 80, 10, 0] == 0                   # frame column 37: left of the face
    assert (crops[1] == crops[0]).all()               # interpolated box of the missed frame
    with pytest.raises(ValueError, match="no face"):
        S.track_crops(frames, np.full((3, 4), np.nan))
