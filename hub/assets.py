"""Demo example inputs (portraits and speech): pinned public files, verified by sha256.

    python -m hub.assets fetch [--dest DIR] [--no-local]   # into cache_dir()/assets by default
    python -m hub.assets list                              # what is available where

The list lives in ``hub/assets_list.json``: for each file its name, kind, the pinned
``raw.githubusercontent.com/<owner>/<repo>/<commit>/<path>`` URL, its source and licence, and the
sha256 of the copy in the shared data folder. A download whose hash differs is an error and
leaves nothing behind. :func:`example_pairs` gives ``(portrait, speech)`` paths for the app: from
the shared data folder when present, else from the cache, else an empty list.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hub import settings
from hub.io_utils import atomic_path, sha256_file

__all__ = ["Asset", "load_assets", "example_pairs", "fetch", "cache_assets_dir", "main"]

ASSETS_LIST = Path(__file__).with_name("assets_list.json")
_CHUNK = 1 << 16

Downloader = Callable[[str, Path], None]
"""``downloader(url, path)`` writes the bytes at ``url`` to ``path``."""


@dataclass(frozen=True)
class Asset:
    """One pinned example file."""

    name: str  # file name in the cache folder
    kind: str  # "portrait" or "speech"
    file: str  # path inside the shared data folder
    url: str
    source: str  # owner/repo:path@commit
    sha256: str
    bytes: int
    license: str


def load_assets(path: Path = ASSETS_LIST) -> tuple[list[Asset], list[tuple[str, str]]]:
    """The pinned assets and the example pairs (portrait name, speech name)."""
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    assets = [Asset(**entry) for entry in doc["assets"]]
    names = {a.name for a in assets}
    pairs = [(p, s) for p, s in doc["pairs"]]
    for p, s in pairs:
        assert p in names and s in names, f"assets_list.json pair ({p}, {s}) names an unknown asset"
    return assets, pairs


def cache_assets_dir() -> Path:
    """Default download folder: ``hub.settings.cache_dir() / "assets"``."""
    return settings.cache_dir() / "assets"


def _urllib_download(url: str, path: Path, timeout: float = 60.0) -> None:
    scheme = urllib.parse.urlparse(url).scheme
    if scheme not in ("https", "file"):
        raise ValueError(f"refusing to download {url}: only https:// and file:// URLs are accepted")
    with urllib.request.urlopen(url, timeout=timeout) as response, open(path, "wb") as out:
        shutil.copyfileobj(response, out, _CHUNK)


def _install(asset: Asset, target: Path, producer: Callable[[Path], None]) -> None:
    """Run ``producer(tmp)`` and move ``tmp`` to ``target`` only if its size and sha256 match."""
    with atomic_path(target) as tmp:
        producer(tmp)
        size = tmp.stat().st_size
        digest = sha256_file(tmp)
        if digest != asset.sha256 or size != asset.bytes:
            raise ValueError(
                f"{asset.name}: sha256 mismatch for {asset.url} (got {digest[:16]}..., {size} bytes; "
                f"expected {asset.sha256[:16]}..., {asset.bytes} bytes); nothing was saved"
            )


def _is_valid(path: Path, asset: Asset) -> bool:
    return path.is_file() and path.stat().st_size == asset.bytes and sha256_file(path) == asset.sha256


def fetch(
    dest: str | Path | None = None,
    *,
    use_local: bool = True,
    downloader: Downloader | None = None,
    assets: list[Asset] | None = None,
) -> list[Path]:
    """Make every pinned asset present and verified in ``dest`` (default :func:`cache_assets_dir`).

    Files already there with the right hash are kept. With ``use_local`` a verified copy from the
    shared data folder is used instead of the network. Raises ``ValueError`` on a hash mismatch
    (the bad download is removed) or a failed download.
    """
    folder = Path(dest) if dest is not None else cache_assets_dir()
    folder.mkdir(parents=True, exist_ok=True)
    assets = assets if assets is not None else load_assets()[0]
    download = downloader or _urllib_download
    shared = settings.data_dir() if use_local else None
    paths = []
    for asset in assets:
        target = folder / asset.name
        if not _is_valid(target, asset):
            local = shared / asset.file if shared is not None else None
            if local is not None and _is_valid(local, asset):
                _install(asset, target, lambda tmp, src=local: shutil.copyfile(src, tmp))
            else:
                def produce(tmp: Path, url: str = asset.url) -> None:
                    try:
                        download(url, tmp)
                    except OSError as exc:  # urllib.error.URLError is an OSError
                        raise ValueError(f"{asset.name}: download from {url} failed ({exc})") from None

                _install(asset, target, produce)
        paths.append(target)
    return paths


def example_pairs() -> list[tuple[Path, Path]]:
    """``(portrait_path, speech_path)`` examples: from the shared data folder when its files are
    there, else from the asset cache (after ``python -m hub.assets fetch``), else ``[]``."""
    assets, pairs = load_assets()
    by_name = {a.name: a for a in assets}
    shared = settings.data_dir()
    if shared is not None and all((shared / a.file).is_file() for a in assets):
        return [(shared / by_name[p].file, shared / by_name[s].file) for p, s in pairs]
    cache = cache_assets_dir()
    if all((cache / a.name).is_file() and (cache / a.name).stat().st_size == a.bytes for a in assets):
        return [(cache / p, cache / s) for p, s in pairs]
    return []


def _status(path: Path, asset: Asset) -> str:
    if not path.is_file():
        return "missing"
    return "ok" if _is_valid(path, asset) else "bad hash"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hub.assets", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    fetch_cmd = sub.add_parser("fetch", help="download and verify the demo examples")
    fetch_cmd.add_argument("--dest", default=None, help="folder (default: the cache's assets/)")
    fetch_cmd.add_argument("--no-local", action="store_true",
                           help="download even when the shared data folder has a copy")
    sub.add_parser("list", help="show which example files are available where")
    args = parser.parse_args(argv)
    try:
        if args.command == "fetch":
            paths = fetch(args.dest, use_local=not args.no_local)
            print(f"{len(paths)} example files verified in {paths[0].parent if paths else args.dest}")
            return 0
        assets, pairs = load_assets()
        shared = settings.data_dir()
        cache = cache_assets_dir()
        print(f"shared data: {shared or 'not found (set REST_DATA_DIR)'}")
        print(f"cache:       {cache}")
        print(f"{'name':34s} {'kind':8s} {'shared':9s} {'cache':9s} source")
        for a in assets:
            in_shared = _status(shared / a.file, a) if shared is not None else "-"
            print(f"{a.name:34s} {a.kind:8s} {in_shared:9s} {_status(cache / a.name, a):9s} {a.source}")
        found = example_pairs()
        print(f"example pairs available: {len(found)} of {len(pairs)}")
        return 0
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
