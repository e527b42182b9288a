import hashlib
import shutil

import pytest

from hub import assets


def _asset(tmp_path, name="a.wav", content=b"RIFF-test-bytes", sha=None):
    src = tmp_path / "upstream" / name
    src.parent.mkdir(exist_ok=True)
    src.write_bytes(content)
    return assets.Asset(
        name=name, kind="speech", file=f"speech/{name}", url=src.as_uri(),
        source=f"owner/repo:{name}@abc1234", sha256=sha or hashlib.sha256(content).hexdigest(),
        bytes=len(content), license="MIT",
    )


def test_fetch_file_url_verified(tmp_path):
    asset = _asset(tmp_path)
    dest = tmp_path / "dest"
    paths = assets.fetch(dest, use_local=False, assets=[asset])
    assert paths == [dest / "a.wav"] and paths[0].read_bytes() == b"RIFF-test-bytes"
    # already present and valid: not downloaded again
    calls = []
    assets.fetch(dest, use_local=False, assets=[asset], downloader=lambda u, p: calls.append(u))
    assert calls == []


def test_wrong_hash_is_an_error_and_leaves_nothing(tmp_path):
    asset = _asset(tmp_path, sha="0" * 64)
    dest = tmp_path / "dest"
    with pytest.raises(ValueError, match="a.wav: sha256 mismatch .* nothing was saved"):
        assets.fetch(dest, use_local=False, assets=[asset])
    assert list(dest.iterdir()) == []


def test_download_failure_and_bad_scheme(tmp_path):
    asset = _asset(tmp_path)

    def offline(url, path):
        raise OSError("network unreachable")

    with pytest.raises(ValueError, match="a.wav: download from .* failed"):
        assets.fetch(tmp_path / "d", use_local=False, assets=[asset], downloader=offline)
    assert list((tmp_path / "d").iterdir()) == []
    with pytest.raises(ValueError, match="only https:// and file://"):
        assets._urllib_download("http://example.com/x", tmp_path / "x")


def test_assets_list_matches_shared_copies(shared_data):
    pinned, pairs = assets.load_assets()
    kinds = [a.kind for a in pinned]
    assert 5 <= kinds.count("portrait") <= 8 and 4 <= kinds.count("speech") <= 6
    assert len(pairs) >= 4
    for a in pinned:
        owner_repo, rest = a.source.split(":", 1)
        path, commit = rest.rsplit("@", 1)
        assert a.url == f"https://raw.githubusercontent.com/{owner_repo}/{commit}/{path}"
        local = shared_data / a.file
        assert local.is_file() and local.stat().st_size == a.bytes
        assert hashlib.sha256(local.read_bytes()).hexdigest() == a.sha256, a.name


def test_example_pairs_shared_cache_or_empty(shared_data, tmp_path, monkeypatch):
    pairs = assets.example_pairs()
    assert pairs and all(p.is_file() and s.is_file() for p, s in pairs)
    assert all(str(p).startswith(str(shared_data)) for p, _ in pairs)
    # no shared data, empty cache: nothing to offer
    monkeypatch.setenv("REST_DATA_DIR", str(tmp_path / "no-data"))
    monkeypatch.setenv("REST_CACHE_DIR", str(tmp_path / "cache"))
    assert assets.example_pairs() == []
    # fetch through a downloader that serves the shared copies by URL: the cache then has them
    by_url = {a.url: shared_data / a.file for a in assets.load_assets()[0]}
    assets.fetch(downloader=lambda url, path: shutil.copyfile(by_url[url], path))
    cached = assets.example_pairs()
    assert len(cached) == len(pairs)
    assert all(p.parent == tmp_path / "cache" / "assets" for p, _ in cached)


def test_cli_list(capsys, tmp_path, monkeypatch, shared_data):
    monkeypatch.setenv("REST_CACHE_DIR", str(tmp_path))
    assert assets.main(["list"]) == 0
    out = capsys.readouterr().out
    for a in assets.load_assets()[0]:
        line = next(line for line in out.splitlines() if line.startswith(a.name))
        assert line.split()[2:4] == ["ok", "missing"]  # in the shared folder, not in the cache
