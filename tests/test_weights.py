"""The weight resolver: search order, hash checks, clear errors, verified atomic download."""

import hashlib
import zipfile

import pytest

from eval import weights as W


def _spec(**kw):
    base = dict(name="toy", filename="toy.bin", url="", file_format="any")
    base.update(kw)
    return W.WeightSpec(**base)


@pytest.fixture()
def isolated(tmp_path, monkeypatch):
    """No shared data, empty cache, REST_WEIGHTS_DIR in tmp."""
    monkeypatch.setenv("REST_DATA_DIR", str(tmp_path / "no-shared-data"))
    monkeypatch.setenv("REST_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("REST_WEIGHTS_DIR", str(tmp_path / "weights"))
    (tmp_path / "weights").mkdir()
    return tmp_path


def test_missing_file_names_file_folder_and_url(isolated):
    spec = _spec(url="https://example.org/toy.bin")
    ok, reason = W.weight_status(spec)
    assert not ok
    assert "toy.bin" in reason and "https://example.org/toy.bin" in reason
    assert str(isolated / "weights") in reason
    with pytest.raises(W.WeightsUnavailable):
        W.resolve_weight(spec)


def test_search_order_explicit_then_env_then_cache(isolated):
    data = b"x" * 10
    spec = _spec()
    (isolated / "cache" / "weights").mkdir(parents=True)
    (isolated / "cache" / "weights" / "toy.bin").write_bytes(data)
    assert W.resolve_weight(spec) == isolated / "cache" / "weights" / "toy.bin"
    (isolated / "weights" / "toy.bin").write_bytes(data)
    assert W.resolve_weight(spec) == isolated / "weights" / "toy.bin"
    explicit = isolated / "elsewhere" / "toy.bin"
    explicit.parent.mkdir()
    explicit.write_bytes(data)
    assert W.resolve_weight(spec, explicit) == explicit
    assert W.resolve_weight(spec, explicit.parent) == explicit  # a folder holding the file
    with pytest.raises(W.WeightsUnavailable, match="not found at"):
        W.resolve_weight(spec, isolated / "nowhere.bin")


def test_sha256_full_and_prefix_checks(isolated):
    data = b"pinned bytes"
    digest = hashlib.sha256(data).hexdigest()
    (isolated / "weights" / "toy.bin").write_bytes(data)
    assert W.resolve_weight(_spec(sha256=digest)).name == "toy.bin"
    assert W.resolve_weight(_spec(sha256_prefix=digest[:8])).name == "toy.bin"
    with pytest.raises(W.WeightsUnavailable, match="does not match"):
        W.resolve_weight(_spec(sha256="0" * 64))
    with pytest.raises(W.WeightsUnavailable, match="prefix"):
        W.resolve_weight(_spec(sha256_prefix="00000000"))
    record = W.weight_record(_spec(sha256=digest), isolated / "weights" / "toy.bin")
    assert record["sha256"] == digest and record["verified_by"] == "sha256"


def test_format_check_without_hash(isolated):
    path = isolated / "weights" / "toy.bin"
    path.write_bytes(b"not a zip")
    with pytest.raises(W.WeightsUnavailable, match="torch zip"):
        W.resolve_weight(_spec(file_format="torch-zip"))
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", b"")
    assert W.resolve_weight(_spec(file_format="torch-zip")) == path


def test_download_verifies_hash_and_is_atomic(isolated):
    source = isolated / "remote.bin"
    source.write_bytes(b"remote weights")
    digest = hashlib.sha256(b"remote weights").hexdigest()
    good = _spec(url=source.as_uri(), sha256=digest)
    path = W.resolve_weight(good, download=True)
    assert path == isolated / "cache" / "weights" / "toy.bin" and path.read_bytes() == b"remote weights"
    path.unlink()
    bad = _spec(url=source.as_uri(), sha256="f" * 64)
    with pytest.raises(W.WeightsUnavailable, match="does not match"):
        W.fetch_weight(bad)
    assert list((isolated / "cache" / "weights").iterdir()) == []  # nothing half-written left
    with pytest.raises(W.WeightsUnavailable, match="could not download"):
        W.fetch_weight(_spec(url=(isolated / "absent.bin").as_uri()))


def test_pinned_specs_are_complete():
    for spec in W.ALL_WEIGHTS.values():
        assert spec.filename and spec.url.startswith("http") and spec.license
        assert len(spec.sha256) in (0, 64)
    assert W.FID_INCEPTION.sha256.startswith("6726825d")  # agrees with the name's hash prefix
    assert W.ALEXNET_LPIPS.sha256_prefix == "7be5be79"
