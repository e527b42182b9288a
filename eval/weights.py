"""One resolver for every weight file a metric needs.

A metric declares its files as :class:`WeightSpec` entries. :func:`resolve_weight` looks for a file,
in order:

1. an explicit path given by the caller;
2. the folders of :func:`hub.settings.weights_dirs` (``REST_WEIGHTS_DIR``, the shared data's
   ``weights/``, the cache's ``weights/``) and any folders the spec adds (e.g. the torch hub cache);
3. the pinned public URL, downloaded into ``cache_dir()/weights`` and checked against its sha256
   (only when the caller allows downloads; there is no network on the build machines).

A file that is missing, or whose hash does not match the pinned one, raises
:class:`WeightsUnavailable` with a message that names the file, where to put it and its URL. A
metric whose weights cannot be resolved is reported as unavailable; it never returns a number.
"""

from __future__ import annotations

import os
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from hub import settings
from hub.io_utils import atomic_path, sha256_file

_HASH_CACHE: dict[tuple[str, int, int], str] = {}


class WeightsUnavailable(FileNotFoundError):
    """A weight file could not be found, fetched or verified; the message says how to supply it."""


@dataclass(frozen=True)
class WeightSpec:
    """A pinned public weight file.

    Attributes:
        name: short identifier used on the command line (``syncnet``, ``fid_inception``).
        filename: the file's usual name; resolvers look for exactly this name.
        url: public download URL (empty when there is no direct download).
        sha256: full hex sha256 when known; empty when no published hash could be found.
        sha256_prefix: hex prefix of the sha256 when only that is published (torch hub file names
            such as ``alexnet-owt-7be5be79.pth`` carry the first 8 hex digits).
        file_format: ``torch-zip`` (``torch.save`` zip archive, includes TorchScript), ``torch``
            (a ``torch.save`` file in either the zip or the legacy pickle format), ``onnx`` or
            ``any``; checked when no hash is pinned.
        license: licence of the weights as stated by their source.
        note: anything a user should know (source, what the hash status is).
        extra_dirs: further folders searched after the settings folders.
    """

    name: str
    filename: str
    url: str
    sha256: str = ""
    sha256_prefix: str = ""
    file_format: str = "any"
    license: str = ""
    note: str = ""
    extra_dirs: tuple[str, ...] = field(default_factory=tuple)

    def search_dirs(self) -> list[Path]:
        """Folders searched for ``filename``, in order."""
        dirs = list(settings.weights_dirs())
        dirs.extend(Path(d).expanduser() for d in self.extra_dirs)
        return dirs

    def how_to_supply(self) -> str:
        """One sentence: where to put the file and where it comes from."""
        first = os.environ.get("REST_WEIGHTS_DIR") or str(settings.cache_dir() / "weights")
        if not self.url:  # nothing to download: the note says where the file comes from
            return f"put {self.filename} into {first} (or set REST_WEIGHTS_DIR to its folder). {self.note}"
        return (f"put {self.filename} into {first} (or set REST_WEIGHTS_DIR to its folder); "
                f"download it from {self.url}, or run `python -m eval fetch-weights {self.name}` with internet")


def sha256_cached(path: Path) -> str:
    """sha256 of ``path``, remembered while its size and mtime stay the same."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASH_CACHE:
        _HASH_CACHE[key] = sha256_file(path)
    return _HASH_CACHE[key]


# torch.save's legacy (non-zip) format starts with its magic number pickled with protocol 2
_LEGACY_TORCH_HEADER = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


def _is_legacy_torch_file(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(len(_LEGACY_TORCH_HEADER)) == _LEGACY_TORCH_HEADER


def verify_weight(spec: WeightSpec, path: Path) -> str:
    """Check ``path`` against the spec; return its sha256. Raises WeightsUnavailable on mismatch.

    With a pinned ``sha256`` the full hash must match; with only ``sha256_prefix`` the prefix must
    match; with neither, the file format is checked (zip archive for ``torch-zip``, protobuf-like
    non-empty file for ``onnx``, zip or legacy ``torch.save`` header for ``torch``).
    """
    digest = sha256_cached(path)
    if spec.sha256:
        if digest != spec.sha256:
            raise WeightsUnavailable(
                f"{path}: sha256 {digest} does not match the pinned {spec.sha256} of {spec.filename}; "
                f"numbers from other weights do not compare. {spec.how_to_supply()}")
        return digest
    if spec.sha256_prefix:
        if not digest.startswith(spec.sha256_prefix):
            raise WeightsUnavailable(
                f"{path}: sha256 {digest[:16]}... does not start with the pinned prefix "
                f"{spec.sha256_prefix} of {spec.filename}. {spec.how_to_supply()}")
        return digest
    if spec.file_format == "torch-zip" and not zipfile.is_zipfile(path):
        raise WeightsUnavailable(f"{path}: not a torch zip archive (expected {spec.filename} as "
                                 f"written by torch.save / torch.jit.save). {spec.how_to_supply()}")
    if spec.file_format == "torch" and not (zipfile.is_zipfile(path) or _is_legacy_torch_file(path)):
        raise WeightsUnavailable(f"{path}: not a torch.save file (neither a zip archive nor the legacy "
                                 f"format; e.g. an HTML page instead of {spec.filename}). {spec.how_to_supply()}")
    if spec.file_format == "onnx" and path.stat().st_size < 1024:
        raise WeightsUnavailable(f"{path}: too small to be an ONNX model. {spec.how_to_supply()}")
    return digest


def find_weight(spec: WeightSpec, path: str | os.PathLike | None = None) -> Path | None:
    """The first existing candidate file (explicit path, then search folders), or None."""
    if path is not None:
        candidate = Path(path).expanduser()
        if candidate.is_dir():
            candidate = candidate / spec.filename
        return candidate if candidate.is_file() else None
    for folder in spec.search_dirs():
        candidate = folder / spec.filename
        if candidate.is_file():
            return candidate
    return None


def fetch_weight(spec: WeightSpec, timeout_s: float = 60.0) -> Path:
    """Download ``spec.url`` into ``cache_dir()/weights`` atomically and verify it."""
    if not spec.url:
        raise WeightsUnavailable(f"{spec.filename} has no pinned download URL. {spec.how_to_supply()}")
    target = settings.cache_dir() / "weights" / spec.filename
    try:
        with atomic_path(target) as tmp:
            request = urllib.request.Request(spec.url, headers={"User-Agent": "rest-hub"})
            with urllib.request.urlopen(request, timeout=timeout_s) as response, open(tmp, "wb") as out:
                while block := response.read(1 << 20):
                    out.write(block)
            verify_weight(spec, tmp)
    except OSError as error:  # URLError, timeouts and WeightsUnavailable are all OSErrors
        if isinstance(error, WeightsUnavailable):
            raise
        raise WeightsUnavailable(f"could not download {spec.url} ({error}). {spec.how_to_supply()}") from error
    return target


def resolve_weight(spec: WeightSpec, path: str | os.PathLike | None = None,
                   download: bool = False) -> Path:
    """Return a verified local path for ``spec``; see the module docstring for the order.

    Args:
        spec: the weight file wanted.
        path: an explicit file (or folder holding ``spec.filename``); when given, nothing else is
            searched.
        download: fetch from ``spec.url`` when no local file exists.

    Raises:
        WeightsUnavailable: with the file name, the folders searched and the URL.
    """
    found = find_weight(spec, path)
    if found is not None:
        verify_weight(spec, found)
        return found
    if path is not None:
        raise WeightsUnavailable(f"{spec.filename} not found at {path}. {spec.how_to_supply()}")
    if download:
        return fetch_weight(spec)
    searched = ", ".join(str(d) for d in spec.search_dirs())
    raise WeightsUnavailable(f"{spec.filename} not found (searched {searched}). {spec.how_to_supply()}")


def weight_status(spec: WeightSpec, path: str | os.PathLike | None = None) -> tuple[bool, str]:
    """(True, 'path (sha256 ...)') when the file resolves locally, else (False, reason)."""
    try:
        found = resolve_weight(spec, path)
    except WeightsUnavailable as error:
        return False, str(error)
    return True, f"{found} (sha256 {sha256_cached(found)[:12]})"


def weight_record(spec: WeightSpec, path: Path) -> dict[str, str]:
    """What a result records about a weight file: name, file, sha256, how it was verified."""
    verified = "sha256" if spec.sha256 else ("sha256-prefix" if spec.sha256_prefix else "format-only")
    return {"name": spec.name, "filename": spec.filename, "path": str(path),
            "sha256": sha256_cached(path), "verified_by": verified, "url": spec.url}


# ---------------------------------------------------------------------------------------------
# The pinned files. Hash sources are stated in each note.

TORCH_HUB_CHECKPOINTS = str(Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
                            / "hub" / "checkpoints")

SYNCNET_V2 = WeightSpec(
    name="syncnet",
    filename="syncnet_v2.model",
    url="http://www.robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model",
    file_format="torch-zip",
    license="see joonson/syncnet_python (research use)",
    note="From joonson/syncnet_python download_model.sh. No published sha256 was found: the file is "
         "checked to be a torch archive and its actual sha256 is recorded with every result.",
)

FID_INCEPTION = WeightSpec(
    name="fid_inception",
    filename="pt_inception-2015-12-05-6726825d.pth",
    url="https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
        "pt_inception-2015-12-05-6726825d.pth",
    sha256="6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
    license="Apache-2.0 (pytorch-fid port of the TF 2015-12-05 Inception)",
    note="pytorch-fid release asset; the full sha256 is the one published for the identical "
         "torch-fidelity copy and agrees with the 6726825d prefix in the file name.",
    extra_dirs=(TORCH_HUB_CHECKPOINTS,),
)

I3D_STYLEGAN_V = WeightSpec(
    name="i3d_stylegan_v",
    filename="i3d_torchscript.pt",
    url="https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt?dl=1",
    file_format="torch-zip",
    license="Apache-2.0 (Kinetics-400 I3D, TF-equivalent TorchScript from StyleGAN-V)",
    note="StyleGAN-V's FVD detector. No published sha256 was found: checked to be a TorchScript "
         "archive; its actual sha256 is recorded with every result.",
)

I3D_VIDEOGPT = WeightSpec(
    name="i3d_videogpt",
    filename="i3d_pretrained_400.pt",
    url="https://drive.google.com/uc?export=download&id=1mQK8KD8G6UWRa5t87SRMm5PVXtlpneJT",
    file_format="torch",
    license="MIT (wilson1yan/VideoGPT, which distributes the file; no separate licence is stated "
            "for the Kinetics-400 I3D weights themselves)",
    note="VideoGPT's FVD detector: a plain state_dict of InceptionI3d(400, in_channels=3), about "
         "49 MB; the Google Drive id is _I3D_PRETRAINED_ID in wilson1yan/VideoGPT "
         "videogpt/download.py. The Drive link has been reported gone (SeerVideoLDM issue #13); "
         "copies are published as release assets of bytedance/pv3d (v1.0.0) and npurson/fid-metrics "
         "(v1.0), not checked to be identical. No published sha256 was found: checked to be a "
         "torch.save file and to have the exact keys and shapes when loaded; its actual sha256 is "
         "recorded with every result.",
)

ARCFACE_W600K_R50 = WeightSpec(
    name="arcface",
    filename="w600k_r50.onnx",
    url="https://huggingface.co/public-data/insightface/resolve/main/models/buffalo_l/w600k_r50.onnx",
    sha256="4c06341c33c2ca1f86781dab0e829f88ad5b64be9fba56e56bc9ebdefc619e43",
    file_format="onnx",
    license="InsightFace models: non-commercial research use",
    note="ArcFace R50 (WebFace600K) from InsightFace buffalo_l; also inside "
         "https://github.com/deepinsight/insightface/releases/download/v0.7/buffalo_l.zip "
         "(unzip and use w600k_r50.onnx; same sha256, 174,383,860 bytes).",
)

ALEXNET_LPIPS = WeightSpec(
    name="alexnet",
    filename="alexnet-owt-7be5be79.pth",
    url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    sha256_prefix="7be5be79",
    license="BSD-3-Clause (torchvision)",
    note="torchvision ImageNet AlexNet, the LPIPS backbone (the linear heads ship in the lpips "
         "wheel). torchvision names carry the first 8 hex digits of the sha256, checked here.",
    extra_dirs=(TORCH_HUB_CHECKPOINTS,),
)

YUNET = WeightSpec(
    name="yunet",
    filename="yunet_n_320_320.onnx",
    url="https://github.com/ShiqiYu/libfacedetection.train/raw/master/onnx/yunet_n_320_320.onnx",
    file_format="onnx",
    license="Apache-2.0",
    note="YuNet face detector with 5 keypoints (cv2.FaceDetectorYN); in the shared data weights/.",
)

MEDIAPIPE_FACE_LANDMARKER = WeightSpec(
    name="face_landmarker",
    filename="face_landmarker_v2_with_blendshapes.task",
    url="https://storage.googleapis.com/mediapipe-models/face_landmarker/face_landmarker/float16/1/"
        "face_landmarker.task",
    license="Apache-2.0",
    note="MediaPipe FaceLandmarker with 52 blendshapes (jawOpen); in the shared data weights/.",
)

FACESYNC_CCA = WeightSpec(
    name="facesync",
    filename="facesync_cca.safetensors",
    url="",
    file_format="any",
    license="same as this project",
    note="This project's FaceSync CCA sync model, fitted on the shared train clips and shipped in "
         "eval/assets; refit with `python -m eval fit-facesync`. Not downloadable (nothing to fetch).",
    extra_dirs=(str(Path(__file__).resolve().parent / "assets"),),
)

ALL_WEIGHTS: dict[str, WeightSpec] = {spec.name: spec for spec in (
    SYNCNET_V2, FID_INCEPTION, I3D_STYLEGAN_V, I3D_VIDEOGPT, ARCFACE_W600K_R50, ALEXNET_LPIPS, YUNET,
    MEDIAPIPE_FACE_LANDMARKER)}
