"""Small file helpers shared by every writer: atomic writes and hashing."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(final_path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``final_path``; on success rename it into place.

    On any exception the temporary file is removed and ``final_path`` is left untouched, so a
    killed or failed writer never leaves a half-written result.
    """
    final = Path(final_path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=suffix or final.suffix, dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, 0o644)  # mkstemp makes 0600 files; results are meant to be shared
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(final_path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``final_path`` atomically."""
    with atomic_path(final_path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(final_path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``final_path`` atomically."""
    atomic_write_bytes(final_path, text.encode("utf-8"))


def sha256_file(path: str | os.PathLike, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk_bytes), b""):
            digest.update(block)
    return digest.hexdigest()
