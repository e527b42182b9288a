"""Methods compared by the benchmarks, named by spec strings on the command line.

=============================  ====================================================================
spec                           what it is
=============================  ====================================================================
``rest:DIR[?k=v&...]``         a REST student checkpoint run through :class:`hub.engine.StreamingEngine`
                               (audio pushed one chunk at a time). Ablations as settings:
                               ``steps``, ``guidance``, ``shift``, ``sampler``, ``sink`` (0: no
                               ID-Sink), ``context`` (Context-Cache window in chunks; 0: none).
                               Another checkpoint (e.g. the no-ASD ablation) is another ``rest:DIR``.
``teacher:DIR[?k=v&...]``      the bidirectional teacher (:func:`hub.pipeline.generate_teacher_latents`
                               + :func:`hub.pipeline.decode_stream`); ``steps``, ``guidance``,
                               ``shift``, ``sampler``, ``window``, ``overlap``.
``ground_truth``               the real frames (benchmarks with ground truth only).
``still``                      the reference crop repeated (no motion at all).
``vae_recon[:DIR]``            autoencoder reconstruction of the ground truth (the upper bound of the
                               latent space); DIR: a REST or VAE checkpoint (default
                               ``checkpoints/rest-tiny``).
``audio_energy_warp``          a classic non-learned baseline: the mouth of the reference is warped
                               open by the audio envelope (MediaPipe landmarks from :mod:`hub.face`).
``folder:PATH[?k=v]``          outside videos named by clip id (``PATH/<id>.mp4`` or
                               ``PATH/<id>/output.mp4``), aligned by :mod:`eval.align`; ``overlay``
                               (``vasa1``, ``emo``, ``none``; default: the folder's name when known),
                               ``cropped`` (``auto``, ``yes``, ``no``).
=============================  ====================================================================

Every spec also takes ``name=LABEL`` (the row label in tables). A method turns a
:class:`~eval.benchmarks.LoadedItem` into frames at the benchmark size with :meth:`Method.produce`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl

import numpy as np

from hub import SAMPLES_PER_FRAME, settings
from hub.io_utils import sha256_file

DEFAULT_STUDENT = "checkpoints/rest-tiny"
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi")


class NotApplicable(Exception):
    """The method has no output for this clip by design (e.g. ground truth on a generated-only
    benchmark, a folder without this clip's video). Recorded as ``n/a``, never as a failure."""


@dataclass
class Produced:
    """A method's output for one clip.

    Attributes:
        frames: uint8 (n, S, S, 3) at 25 fps, n = the clip's audio frames.
        stats: generation numbers (latency, throughput) recorded as metrics ``gen_*``.
        notes: how the output was made or aligned (recorded in the metadata).
    """

    frames: np.ndarray
    stats: dict = field(default_factory=dict)
    notes: dict = field(default_factory=dict)


def resolve_checkpoint(path: str, spec: str) -> Path:
    """A checkpoint folder (relative paths: the working directory, then the repository root)."""
    p = Path(path).expanduser()
    candidates = [p] if p.is_absolute() else list(dict.fromkeys([Path.cwd() / p, settings.REPO_ROOT / p]))
    for c in candidates:
        if (c / "config.json").is_file() and (c / "model.safetensors").is_file():
            return c.resolve()
    raise ValueError(f"{spec}: checkpoint folder {path} not found (looked for config.json + model.safetensors "
                     f"in {', '.join(str(c) for c in candidates)}); train it first (see README) or name "
                     "another folder")


def checkpoint_record(folder: Path) -> dict:
    """Path and sha256 of a checkpoint's files (stored with results; part of the cache key)."""
    return {"path": str(folder), "config_sha256": sha256_file(folder / "config.json"),
            "weights_sha256": sha256_file(folder / "model.safetensors")}


def _resize(frames: np.ndarray, size: int) -> np.ndarray:
    import cv2

    if frames.shape[1] == size and frames.shape[2] == size:
        return frames
    interp = cv2.INTER_AREA if frames.shape[1] > size else cv2.INTER_CUBIC
    return np.stack([cv2.resize(f, (size, size), interpolation=interp) for f in frames])  # (T, S, S, 3)


class Method:
    """Base class: a named way to make (or fetch) frames for a benchmark clip."""

    kind = "method"
    is_reference = False  # built-in references (ground truth, still, vae_recon) are never "best"
    params_accepted: tuple[str, ...] = ()

    def __init__(self, spec: str, label: str | None = None) -> None:
        self.spec = spec
        self.label = label or spec

    def fingerprint(self) -> dict:
        """What the cached output depends on; a change invalidates the cache."""
        return {"spec": self.spec, "kind": self.kind}

    def describe(self) -> dict:
        """JSON-ready description for the metadata."""
        return {"label": self.label, **self.fingerprint()}

    def produce(self, item, size: int, seed: int) -> Produced:  # item: eval.benchmarks.LoadedItem
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"


# ------------------------------------------------------------------------------------------------
# built-in references and baselines


class GroundTruthMethod(Method):
    kind = "ground_truth"
    is_reference = True

    def produce(self, item, size: int, seed: int) -> Produced:
        if item.ground_truth is None:
            raise NotApplicable("this benchmark has no ground-truth video")
        return Produced(_resize(item.ground_truth, size))


class StillMethod(Method):
    """The reference repeated: perfect identity and stability by construction, no motion (a
    reference row, never "best")."""

    kind = "still"
    is_reference = True

    def produce(self, item, size: int, seed: int) -> Produced:
        crop = item.reference_crop(size)
        return Produced(np.repeat(crop[None], item.num_frames, axis=0))  # (n, S, S, 3)


class VaeReconMethod(Method):
    """Encode the ground truth with the generator's autoencoder and decode it (posterior mean)."""

    kind = "vae_recon"
    is_reference = True

    def __init__(self, spec: str, checkpoint: str, label: str | None = None) -> None:
        super().__init__(spec, label)
        self.checkpoint = resolve_checkpoint(checkpoint, spec)
        self._vae = None

    def fingerprint(self) -> dict:
        return {**super().fingerprint(), "checkpoint": checkpoint_record(self.checkpoint)}

    def vae(self):
        if self._vae is None:
            import json

            kind = json.loads((self.checkpoint / "config.json").read_text()).get("kind")
            if kind == "rest":
                from hub.models.rest import RestModel

                self._vae = RestModel.from_pretrained(self.checkpoint).vae
            else:
                from hub.models.vae import CausalVideoVAE

                self._vae = CausalVideoVAE.from_pretrained(self.checkpoint)
        return self._vae

    def produce(self, item, size: int, seed: int) -> Produced:
        import torch

        if item.ground_truth is None:
            raise NotApplicable("autoencoder reconstruction needs a ground-truth video")
        vae = self.vae()
        f_t = vae.config.temporal_factor
        gt = item.ground_truth
        n = len(gt)
        pad = (-(n - 1)) % f_t  # frames to add so that n + pad = 1 + k f_t
        video = np.concatenate([gt, np.repeat(gt[-1:], pad, axis=0)]) if pad else gt     # (1 + k f_t, S, S, 3)
        x = torch.from_numpy(video).permute(3, 0, 1, 2)[None].float().div(127.5).sub(1.0)  # (1, 3, T, S, S)
        encoder, decoder = vae.start_encode(), vae.start_decode()
        out = []
        step = 1 + 8 * f_t  # frames per encoder call (bounded memory on long clips)
        with torch.no_grad():
            for start in range(0, x.shape[2], step):
                latents = encoder.encode(x[:, :, start:start + step])                      # (1, C, m, h, w)
                if latents.shape[2]:
                    out.append(decoder.decode(latents))                                    # (1, 3, f, S, S)
        from hub.pipeline import video_to_uint8

        frames = video_to_uint8(torch.cat(out, dim=2))[:n]                                 # (n, S, S, 3)
        return Produced(frames, notes={"vae_recon": f"posterior mean, streaming encode/decode, {pad} "
                                                    "frames repeated at the end then dropped"})


# MediaPipe face-mesh indices of the inner lips (upper and lower contour, corner to corner)
_UPPER_INNER_LIP = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308]
_LOWER_INNER_LIP = [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308]
_MOUTH_CORNERS = (61, 291)


@dataclass(frozen=True)
class EnergyWarpConfig:
    """Settings of the audio-energy mouth warp."""

    max_open: float = 0.3  # largest lower-lip drop, in mouth widths
    smooth_frames: int = 3  # moving average of the envelope
    level_percentile: float = 95.0  # envelope value that opens the mouth fully
    jaw_extent: float = 0.9  # how far below the mouth centre the warp is full, in mouth widths
    width_extent: float = 0.75  # horizontal Gaussian width of the warp, in mouth widths
    interior_darkness: float = 0.3  # the opened gap = this x the lip colour
    interior_alpha: float = 0.7


def frame_energy(audio: np.ndarray, frames: int, smooth: int) -> np.ndarray:
    """RMS of each 640-sample block, moving-averaged over ``smooth`` frames; (frames,)."""
    blocks = np.zeros(frames * SAMPLES_PER_FRAME, np.float64)
    take = min(len(audio), len(blocks))
    blocks[:take] = audio[:take]
    rms = np.sqrt(np.mean(blocks.reshape(frames, SAMPLES_PER_FRAME) ** 2, axis=1))   # (frames,)
    if smooth > 1:
        rms = np.convolve(np.pad(rms, (smooth // 2, smooth - 1 - smooth // 2), mode="edge"),
                          np.ones(smooth) / smooth, mode="valid")
    return rms


class AudioEnergyWarpMethod(Method):
    """Opens the reference's mouth in proportion to the speech energy, by a smooth image warp.

    Per frame: the lower lip and jaw region moves down by ``open = max_open x W x e`` pixels
    (``W`` the mouth width, ``e`` the normalised envelope in [0, 1]) with a Gaussian fall-off
    sideways and below the jaw; the gap between the resting and the dropped lower inner lip is
    darkened. No learning, no motion
    besides the mouth: a floor for sync and a ceiling for identity.
    """

    kind = "audio_energy_warp"

    def __init__(self, spec: str, label: str | None = None, config: EnergyWarpConfig | None = None) -> None:
        super().__init__(spec, label)
        self.config = config or EnergyWarpConfig()

    def fingerprint(self) -> dict:
        from dataclasses import asdict

        return {**super().fingerprint(), "config": asdict(self.config)}

    def produce(self, item, size: int, seed: int) -> Produced:
        import cv2

        from hub.face import FaceAnalyzer

        cfg = self.config
        crop = item.reference_crop(size)                                         # (S, S, 3)
        with FaceAnalyzer(max_faces=1, blendshapes=False) as analyzer:
            faces = analyzer.detect(crop)
        if not faces or faces[0].landmarks is None:
            raise ValueError("audio_energy_warp: no face landmarks in the reference crop")
        marks = faces[0].landmarks.astype(np.float64)                            # (478, 2)
        width = float(np.linalg.norm(marks[_MOUTH_CORNERS[1]] - marks[_MOUTH_CORNERS[0]]))
        upper, lower = marks[_UPPER_INNER_LIP], marks[_LOWER_INNER_LIP]          # (11, 2)
        cx, cy = np.concatenate([upper, lower]).mean(axis=0)
        n = item.num_frames
        energy = frame_energy(item.audio, n, cfg.smooth_frames)
        level = np.percentile(energy, cfg.level_percentile)
        openness = np.clip(energy / level, 0.0, 1.0) if level > 0 else np.zeros(n)   # (n,)

        ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)                    # (S, S)
        g_x = np.exp(-(((xs - cx) / (cfg.width_extent * width)) ** 2))
        below = ys - cy
        jaw_end = cfg.jaw_extent * width
        g_y = np.where(below < 0, np.exp(-((below / (0.08 * width)) ** 2)),
                       np.where(below <= jaw_end, 1.0, np.exp(-(((below - jaw_end) / (0.5 * width)) ** 2))))
        weight = (g_x * g_y).astype(np.float32)                                  # (S, S) share of the drop
        lip_colour = np.median(crop[np.clip(lower[:, 1].round().astype(int), 0, size - 1),
                                    np.clip(lower[:, 0].round().astype(int), 0, size - 1)], axis=0)
        frames = np.empty((n, size, size, 3), np.uint8)
        for t in range(n):
            drop = float(cfg.max_open * width * openness[t])
            if drop < 0.25:
                frames[t] = crop
                continue
            warped = cv2.remap(crop, xs, ys - drop * weight, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            lower_t = lower.copy()
            lower_t[:, 1] += drop * np.interp(lower[:, 0], [cx - width, cx, cx + width], [0.0, 1.0, 0.0])
            polygon = np.concatenate([lower, lower_t[::-1]]).round().astype(np.int32)  # the newly opened gap
            mask = np.zeros((size, size), np.float32)
            cv2.fillPoly(mask, [polygon], 1.0)
            mask = cv2.GaussianBlur(mask, (3, 3), 0)[..., None] * cfg.interior_alpha   # (S, S, 1)
            dark = (lip_colour * cfg.interior_darkness).astype(np.float32)
            frames[t] = (warped * (1 - mask) + dark * mask).round().clip(0, 255).astype(np.uint8)
        return Produced(frames, notes={"audio_energy_warp": f"mouth width {width:.1f} px, envelope level "
                                                            f"{level:.4f} (p{cfg.level_percentile:g})"})


# ------------------------------------------------------------------------------------------------
# REST student and teacher

_REST_PARAMS = ("steps", "guidance", "shift", "sampler", "sink", "context", "ctxnoise", "name")
_TEACHER_PARAMS = ("steps", "guidance", "shift", "sampler", "window", "overlap", "name")


def _number(spec: str, key: str, value: str, cast):
    try:
        return cast(value)
    except ValueError:
        raise ValueError(f"{spec}: {key}={value!r} is not a {cast.__name__}") from None


class RestStudentMethod(Method):
    """A student checkpoint streamed through the engine, audio pushed one chunk at a time."""

    kind = "rest"

    def __init__(self, spec: str, checkpoint: str, params: dict[str, str], label: str | None = None,
                 device: str = "cpu") -> None:
        from hub.engine import EngineSettings

        super().__init__(spec, label)
        self.checkpoint = resolve_checkpoint(checkpoint, spec)
        self.device = device
        sink = params.get("sink", "1")
        if sink not in ("0", "1"):
            raise ValueError(f"{spec}: sink={sink!r}; accepted: 0 (no ID-Sink) or 1")
        self.settings = EngineSettings(
            steps=_number(spec, "steps", params["steps"], int) if "steps" in params else None,
            guidance=_number(spec, "guidance", params["guidance"], float) if "guidance" in params else None,
            shift=_number(spec, "shift", params["shift"], float) if "shift" in params else None,
            sampler=params.get("sampler"),
            context_chunks=_number(spec, "context", params["context"], int) if "context" in params else None,
            context_noise=_number(spec, "ctxnoise", params["ctxnoise"], float) if "ctxnoise" in params else None,
            use_id_sink=sink == "1")
        self._engine = None

    def fingerprint(self) -> dict:
        from dataclasses import asdict

        return {**super().fingerprint(), "checkpoint": checkpoint_record(self.checkpoint),
                "settings": {k: v for k, v in asdict(self.settings).items() if k != "seed"}}

    def engine(self):
        if self._engine is None:
            from hub.engine import StreamingEngine

            self._engine = StreamingEngine.from_pretrained(self.checkpoint, device=self.device)
        return self._engine

    @property
    def image_size(self) -> int:
        import json

        payload = json.loads((self.checkpoint / "config.json").read_text())
        return int(payload["config"]["vae"]["image_size"])

    def produce(self, item, size: int, seed: int) -> Produced:
        import dataclasses

        engine = self.engine()
        model_size = engine.config.image_size
        engine.reset(item.reference_crop(model_size), dataclasses.replace(self.settings, seed=seed),
                     already_cropped=True)
        piece = engine.frames_per_chunk * SAMPLES_PER_FRAME
        chunks = []
        for start in range(0, len(item.audio), piece):
            chunks += engine.push(item.audio[start:start + piece])
        chunks += engine.flush()
        frames = np.concatenate([c.frames for c in chunks])                         # (n, s, s, 3)
        stats = engine.stats()
        if len(frames) != item.num_frames:
            raise ValueError(f"engine made {len(frames)} frames for {item.num_frames} frames of audio")
        notes = {} if model_size == size else {"resize": f"{model_size} -> {size} px"}
        gen = {"gen_first_chunk_ms": stats["first_chunk_ms"], "gen_chunk_ms_mean": stats["chunk_ms_mean"],
               "gen_chunk_ms_p95": stats["chunk_ms_p95"], "gen_rtf": stats["rtf"], "gen_fps": stats["fps"],
               "gen_algorithmic_latency_ms": stats["algorithmic_latency_ms"]}
        return Produced(_resize(frames, size), stats=gen, notes=notes)


class TeacherMethod(Method):
    """The bidirectional teacher over the whole clip (offline; not a streaming method)."""

    kind = "teacher"

    def __init__(self, spec: str, checkpoint: str, params: dict[str, str], label: str | None = None,
                 device: str = "cpu") -> None:
        super().__init__(spec, label)
        self.checkpoint = resolve_checkpoint(checkpoint, spec)
        self.device = device
        self.options = {}
        for key, cast in (("steps", int), ("guidance", float), ("shift", float), ("window", int),
                          ("overlap", int)):
            if key in params:
                self.options[key] = _number(spec, key, params[key], cast)
        if "sampler" in params:
            self.options["sampler"] = params["sampler"]
        self._model = None

    def fingerprint(self) -> dict:
        return {**super().fingerprint(), "checkpoint": checkpoint_record(self.checkpoint), "options": self.options}

    def model(self):
        if self._model is None:
            from hub.models.rest import RestModel

            self._model = RestModel.from_pretrained(self.checkpoint, map_location=self.device)
        return self._model

    def produce(self, item, size: int, seed: int) -> Produced:
        import time

        import torch

        from hub.pipeline import (decode_stream, encode_reference, generate_teacher_latents,
                                  stream_audio_tokens, video_to_uint8)

        model = self.model()
        sampling = model.config.sampling
        options = {"steps": sampling.steps, "guidance": sampling.guidance, "shift": sampling.shift,
                   "sampler": sampling.sampler, **self.options}
        start = time.perf_counter()
        ref = encode_reference(model, item.reference_crop(model.config.image_size))       # (1, C, 1, h, w)
        tokens = stream_audio_tokens(model, item.audio)                                    # (1, n, A, D)
        latents = generate_teacher_latents(model, ref, tokens, generator=torch.Generator().manual_seed(seed),
                                           **options)                                      # (1, C, n, h, w)
        frames = video_to_uint8(decode_stream(model, ref, latents))[: item.num_frames]    # (T, s, s, 3)
        seconds = time.perf_counter() - start
        stats = {"gen_rtf": seconds / (item.num_frames / 25.0), "gen_fps": item.num_frames / seconds}
        return Produced(_resize(frames, size), stats=stats, notes={"teacher_options": options})


# ------------------------------------------------------------------------------------------------
# outside videos


class FolderMethod(Method):
    """Videos made elsewhere, one per clip id, aligned to the benchmark (see :mod:`eval.align`)."""

    kind = "folder"

    def __init__(self, spec: str, path: str, params: dict[str, str], label: str | None = None) -> None:
        from eval.align import OVERLAYS

        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise ValueError(f"{spec}: folder {path} not found")
        super().__init__(spec, label or folder.name)
        self.folder = folder.resolve()
        overlay = params.get("overlay", folder.name if folder.name in OVERLAYS else "none")
        if overlay != "none" and overlay not in OVERLAYS:
            raise ValueError(f"{spec}: overlay={overlay!r}; accepted: none, {', '.join(OVERLAYS)}")
        self.overlay = None if overlay == "none" else OVERLAYS[overlay]
        cropped = params.get("cropped", "auto")
        if cropped not in ("auto", "yes", "no"):
            raise ValueError(f"{spec}: cropped={cropped!r}; accepted: auto, yes, no")
        self.cropped = {"auto": None, "yes": True, "no": False}[cropped]

    def fingerprint(self) -> dict:
        return {**super().fingerprint(), "folder": str(self.folder),
                "overlay": self.overlay.name if self.overlay else None, "cropped": self.cropped}

    def find_video(self, lookup_names: tuple[str, ...]) -> Path | None:
        """The folder's video for a clip: ``<name>.<ext>`` or ``<name>/output.mp4`` for each name;
        a nested name ``a/b`` also matches ``b`` when this folder is called ``a``."""
        names = list(lookup_names)
        for name in lookup_names:
            head, _, tail = name.partition("/")
            if tail and head == self.folder.name:
                names.append(tail)
        for name in names:
            for suffix in VIDEO_SUFFIXES:
                if (self.folder / f"{name}{suffix}").is_file():
                    return self.folder / f"{name}{suffix}"
            if (self.folder / name / "output.mp4").is_file():
                return self.folder / name / "output.mp4"
        return None

    def produce(self, item, size: int, seed: int) -> Produced:
        from eval.align import align_video

        lookup_names = item.lookup_names
        video = self.find_video(lookup_names)
        if video is None:
            raise NotApplicable(f"no video for {lookup_names[0] if lookup_names else 'this clip'} in {self.folder}")
        frames, record = align_video(video, size, audio_samples=len(item.audio), overlay=self.overlay,
                                     already_cropped=self.cropped)
        return Produced(frames, notes={"alignment": record.to_dict()})


# ------------------------------------------------------------------------------------------------
# parsing


def split_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    """``kind:arg?k=v&k=v`` -> (kind, arg, params); bare names have an empty arg."""
    spec = spec.strip()
    body, _, query = spec.partition("?")
    kind, _, arg = body.partition(":")
    params = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=False)) if query else {}
    return kind, arg, params


def _check_params(spec: str, params: dict[str, str], accepted: tuple[str, ...]) -> None:
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(f"{spec}: unknown setting(s) {unknown}; accepted: {', '.join(accepted) or 'none'}")


def _default_label(kind: str, arg: str, params: dict[str, str]) -> str:
    extra = ", ".join(f"{k}={v}" for k, v in params.items() if k != "name")
    base = Path(arg).name if arg else kind
    if kind == "teacher":
        base = f"teacher:{base}"
    return f"{base} ({extra})" if extra else base


def parse_method(spec: str, device: str = "cpu") -> Method:
    """Build a :class:`Method` from its spec string (see the module docstring)."""
    kind, arg, params = split_spec(spec)
    label = params.get("name")
    if kind == "rest":
        _check_params(spec, params, _REST_PARAMS)
        if not arg:
            raise ValueError(f"{spec}: rest needs a checkpoint folder, e.g. rest:{DEFAULT_STUDENT}")
        return RestStudentMethod(spec, arg, params, label or _default_label(kind, arg, params), device)
    if kind == "teacher":
        _check_params(spec, params, _TEACHER_PARAMS)
        if not arg:
            raise ValueError(f"{spec}: teacher needs a checkpoint folder, e.g. teacher:checkpoints/teacher-tiny")
        return TeacherMethod(spec, arg, params, label or _default_label(kind, arg, params), device)
    if kind == "folder":
        _check_params(spec, params, ("overlay", "cropped", "name"))
        if not arg:
            raise ValueError(f"{spec}: folder needs a path, e.g. folder:../shared/data/baselines/vasa1")
        return FolderMethod(spec, arg, params, label)
    if kind == "vae_recon":
        _check_params(spec, params, ("name",))
        return VaeReconMethod(spec, arg or DEFAULT_STUDENT, label or "vae_recon")
    simple = {"ground_truth": GroundTruthMethod, "still": StillMethod, "audio_energy_warp": AudioEnergyWarpMethod}
    if kind in simple:
        if arg:
            raise ValueError(f"{spec}: {kind} takes no argument")
        _check_params(spec, params, ("name",))
        return simple[kind](spec, label or kind)
    raise ValueError(f"unknown method {spec!r}; accepted: rest:DIR, teacher:DIR, folder:PATH, vae_recon[:DIR], "
                     "ground_truth, still, audio_energy_warp")


def method_slug(method: Method) -> str:
    """A file-name-safe, unique-per-spec folder name for a method's cached outputs."""
    import hashlib

    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", method.label).strip("_")[:48] or "method"
    return f"{readable}-{hashlib.sha1(method.spec.encode()).hexdigest()[:8]}"
