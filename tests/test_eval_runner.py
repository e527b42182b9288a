"""Runner: resume after an interruption, failure isolation, unavailable metrics, real shared clips."""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest
import torch

from eval.benchmarks import Benchmark, BenchItem, LoadedItem
from eval.methods import Method, NotApplicable, Produced, parse_method
from eval.metrics.registry import MetricInfo
from eval.runner import RunConfig, Runner, clip_seed, run_benchmark
from hub import SAMPLES_PER_FRAME

torch.set_num_threads(1)
SIZE = 32
FRAMES = 10


def _item(clip_id: str, value: int) -> BenchItem:
    def load() -> LoadedItem:
        gt = np.full((FRAMES, SIZE, SIZE, 3), value, np.uint8)
        audio = np.zeros(FRAMES * SAMPLES_PER_FRAME, np.float32)
        return LoadedItem(audio=audio, reference=gt[0], reference_is_crop=True, ground_truth=gt)
    return BenchItem(clip_id=clip_id, subset="", lookup_names=(clip_id,), info={"value": value}, loader=load)


def _bench(name: str = "toy") -> Benchmark:
    items = [_item("a", 60), _item("b", 120), _item("c", 180)]
    return Benchmark(name, "synthetic clips of flat grey", default_metrics=("mean_level",), has_ground_truth=True,
                     build=lambda options: list(items))


class NoisyMethod(Method):
    """Ground truth plus seeded noise; counts its calls."""

    kind = "noisy"

    def __init__(self, spec: str = "noisy", fail_on: str | None = None, not_for: str | None = None) -> None:
        super().__init__(spec, spec)
        self.calls: list[str] = []
        self.fail_on, self.not_for = fail_on, not_for

    def produce(self, item: LoadedItem, size: int, seed: int) -> Produced:
        clip = str(int(item.ground_truth[0, 0, 0, 0]))
        self.calls.append(clip)
        if clip == self.fail_on:
            raise RuntimeError("synthetic generator crash")
        if clip == self.not_for:
            raise NotApplicable("no output for this clip")
        noise = np.random.default_rng(seed).integers(-20, 21, item.ground_truth.shape)
        frames = np.clip(item.ground_truth.astype(int) + noise, 0, 255).astype(np.uint8)
        return Produced(frames, stats={"gen_rtf": 0.5})


class Interrupt(BaseException):
    """Stands in for Ctrl-C / a killed process (not an Exception, so it is not recorded as a failure)."""


def _metrics(interrupt_after: list[int] | None = None, calls: list[str] | None = None) -> dict[str, MetricInfo]:
    def mean_level(sample) -> float:
        if calls is not None:
            calls.append(sample.clip_id)
        if interrupt_after is not None:
            interrupt_after[0] -= 1
            if interrupt_after[0] < 0:
                raise Interrupt()
        return float(sample.frames.mean())

    def psnr_like(sample) -> float:
        diff = sample.frames.astype(float) - sample.ground_truth.astype(float)
        return float(10 * np.log10(255.0 ** 2 / np.mean(diff ** 2)))

    return {
        "mean_level": MetricInfo(name="mean_level", kind="quality", fn=mean_level, higher_is_better=True,
                                 description="mean grey level", variant="v1"),
        "toy_psnr": MetricInfo(name="toy_psnr", kind="quality", fn=psnr_like, higher_is_better=True,
                               description="psnr", variant="v1", needs_reference_video=True),
        "needs_weights": MetricInfo(name="needs_weights", kind="sync", fn=mean_level, higher_is_better=True,
                                    description="x", variant="v1",
                                    checks=(lambda: (False, "weights.bin not found; put it into X"),)),
    }


def _read_rows(path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_resume_after_interruption_reuses_outputs_and_metric_values(tmp_path):
    method = NoisyMethod()
    metric_calls: list[str] = []
    config = RunConfig(benchmark=_bench(), methods=[method], out=tmp_path, metrics=["mean_level", "toy_psnr"],
                       size=SIZE, progress=False, build_report=False)
    with pytest.raises(Interrupt):  # killed while computing the second clip's first metric
        Runner(config, _metrics(interrupt_after=[1], calls=metric_calls)).run()
    assert method.calls == ["60", "120"]
    assert (tmp_path / "outputs").is_dir()

    summary = Runner(config, _metrics(calls=metric_calls)).run()
    assert method.calls == ["60", "120", "180"]  # only the missing output was made
    assert summary.reused == 2 and summary.generated == 1
    assert summary.metrics_cached == 2  # clip a: both metrics; clip b: none were finished
    assert metric_calls.count("a") == 1  # clip a's mean_level was not recomputed
    rows = _read_rows(tmp_path / "results.csv")
    values = {(r["clip"], r["metric"]): r for r in rows}
    for clip, level in (("a", 60), ("b", 120), ("c", 180)):
        assert values[(clip, "mean_level")]["status"] == "ok"
        assert abs(float(values[(clip, "mean_level")]["value"]) - level) < 3
        assert float(values[(clip, "toy_psnr")]["value"]) > 20
        assert values[(clip, "gen_rtf")]["family"] == "generation"

    third = Runner(config, _metrics(calls=metric_calls)).run()
    assert third.generated == 0 and third.metrics_computed == 0
    assert _read_rows(tmp_path / "results.csv") == rows  # identical numbers from the cache


def test_cached_metric_values_of_other_weights_are_recomputed(tmp_path, monkeypatch):
    from eval.weights import WeightSpec

    weight_dir = tmp_path / "weights"
    weight_dir.mkdir()
    (weight_dir / "w.bin").write_bytes(b"first")
    monkeypatch.setenv("REST_WEIGHTS_DIR", str(weight_dir))
    spec = WeightSpec(name="w", filename="w.bin", url="")
    calls: list[str] = []
    metrics = _metrics(calls=calls)
    metrics["mean_level"] = dataclasses.replace(metrics["mean_level"], weights=(spec,))
    config = RunConfig(benchmark=_bench(), methods=[NoisyMethod()], out=tmp_path / "run", metrics=["mean_level"],
                       size=SIZE, progress=False, build_report=False)
    Runner(config, metrics).run()
    assert Runner(config, metrics).run().metrics_computed == 0  # same weights: cached
    (weight_dir / "w.bin").write_bytes(b"second")
    again = Runner(config, metrics).run()
    assert again.metrics_computed == 3 and again.metrics_cached == 0 and len(calls) == 6


def test_changed_method_fingerprint_regenerates(tmp_path):
    config = RunConfig(benchmark=_bench(), methods=[NoisyMethod()], out=tmp_path, metrics=["mean_level"],
                       size=SIZE, progress=False, build_report=False)
    Runner(config, _metrics()).run()

    class Brighter(NoisyMethod):  # a different fingerprint under the same label, and different frames
        kind = "noisy-v2"

        def produce(self, item, size, seed):
            produced = super().produce(item, size, seed)
            produced.frames = np.clip(produced.frames.astype(int) + 10, 0, 255).astype(np.uint8)
            return produced

    config.methods = [Brighter("noisy")]
    summary = Runner(config, _metrics()).run()
    assert summary.generated == 3 and summary.metrics_computed == 3


def test_one_failure_is_recorded_and_not_fatal(tmp_path):
    broken, fine = NoisyMethod("broken", fail_on="120", not_for="180"), NoisyMethod("fine")
    config = RunConfig(benchmark=_bench(), methods=[broken, fine], out=tmp_path,
                       metrics=["mean_level", "needs_weights"], size=SIZE, progress=False, build_report=False)
    summary = Runner(config, _metrics()).run()
    assert [(f["method"], f["clip"], f["stage"]) for f in summary.failures] == [("broken", "b", "generate")]
    lines = (tmp_path / "failures.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["error"] == "RuntimeError: synthetic generator crash"
    rows = _read_rows(tmp_path / "results.csv")
    by = {(r["method"], r["clip"], r["metric"]): r for r in rows}
    assert by[("broken", "b", "output")]["status"] == "failed"
    assert by[("broken", "c", "output")]["status"] == "n/a"
    assert by[("broken", "a", "mean_level")]["status"] == "ok"
    assert all(by[("fine", c, "mean_level")]["status"] == "ok" for c in "abc")
    # an unavailable metric is a row with its reason, never a number
    unavailable = [r for r in rows if r["metric"] == "needs_weights"]
    assert {r["status"] for r in unavailable} == {"unavailable"} and {r["value"] for r in unavailable} == {""}
    assert "weights.bin not found" in unavailable[0]["reason"]


def test_seeds_are_per_clip_and_shared_by_methods():
    assert clip_seed(0, "a") == clip_seed(0, "a") != clip_seed(0, "b")
    assert clip_seed(1, "a") != clip_seed(0, "a")


def test_duplicate_labels_and_empty_methods_are_user_errors(tmp_path):
    with pytest.raises(ValueError, match="share the label"):
        Runner(RunConfig(benchmark=_bench(), methods=["still", "still"], out=tmp_path), _metrics())
    with pytest.raises(ValueError, match="--methods is empty"):
        Runner(RunConfig(benchmark=_bench(), methods=[], out=tmp_path), _metrics())
    with pytest.raises(ValueError, match="unknown benchmark"):
        Runner(RunConfig(benchmark="nope", methods=["still"], out=tmp_path))


def test_rest_checkpoint_streams_through_the_engine(tmp_path, shared_data):
    """A tiny random student on a real portrait and real speech (1 s): frames, stats, cache key."""
    from hub import media
    from tiny_models import tiny_rest_model

    tiny_rest_model().save_pretrained(tmp_path / "ckpt")
    portrait = media.read_image(shared_data / "portraits" / "hallo_1.jpg")
    speech = media.read_audio(shared_data / "speech" / "hallo_1.wav")[: 25 * SAMPLES_PER_FRAME]

    def load() -> LoadedItem:
        return LoadedItem(audio=speech, reference=portrait, reference_is_crop=False)

    bench = Benchmark("one-portrait", "x", default_metrics=(), has_ground_truth=False,
                      build=lambda o: [BenchItem("p", "", ("p",), {}, load)])
    spec = f"rest:{tmp_path / 'ckpt'}?steps=1&sink=0&ctxnoise=0.2&name=tiny"
    config = RunConfig(benchmark=bench, methods=[spec, "still"], out=tmp_path / "run", metrics=["mean_level"],
                       size=SIZE, progress=False, build_report=False)
    summary = Runner(config, _metrics()).run()
    assert not summary.failures, summary.failures
    rows = {(r["method"], r["metric"]): r for r in _read_rows(tmp_path / "run" / "results.csv")}
    assert float(rows[("tiny", "gen_chunk_ms_mean")]["value"]) > 0
    meta = json.loads((tmp_path / "run" / "metadata.json").read_text())
    assert len(meta["methods"]["tiny"]["checkpoint"]["weights_sha256"]) == 64
    assert meta["methods"]["tiny"]["settings"]["use_id_sink"] is False
    assert meta["methods"]["tiny"]["settings"]["context_noise"] == 0.2
    from hub.media import read_video

    out = next((tmp_path / "run" / "outputs").glob("tiny-*/p.mp4"))
    assert read_video(out, with_audio=False).frames.shape == (25, 32, 32, 3)


def test_method_specs_parse_and_reject_mistakes(tmp_path):
    assert parse_method("still").label == "still"
    assert parse_method("still?name=frozen").label == "frozen"
    with pytest.raises(ValueError, match="checkpoint folder .* not found"):
        parse_method(f"rest:{tmp_path / 'missing'}")
    with pytest.raises(ValueError, match="unknown setting"):
        parse_method("ground_truth?steps=2")
    with pytest.raises(ValueError, match="unknown method"):
        parse_method("sadtalker")
    with pytest.raises(ValueError, match="folder .* not found"):
        parse_method(f"folder:{tmp_path / 'nothing'}")


@pytest.mark.slow
def test_mini_real_on_a_real_clip(tmp_path, shared_data):
    """The declared benchmark end to end on one real validation clip with cheap metrics."""
    summary = run_benchmark(RunConfig(benchmark="mini-real", methods=["still", "ground_truth"], out=tmp_path,
                                      limit=1, metrics=["psnr", "lpips"], size=128, progress=False,
                                      build_report=False))
    assert not summary.failures
    rows = _read_rows(tmp_path / "results.csv")
    by = {(r["method"], r["metric"], r["clip"]): r for r in rows}
    clip = next(r["clip"] for r in rows if r["clip"] not in ("(all)", "(set)"))
    assert 5 < float(by[("still", "psnr", clip)]["value"]) < 40
    assert by[("ground_truth", "psnr", "(all)")]["status"] == "n/a"
    from eval.metrics import get_metric

    if get_metric("lpips").available()[0]:
        assert by[("still", "lpips", clip)]["status"] == "ok"
    else:  # no AlexNet weights here: reported as unavailable with the reason, no number
        assert by[("still", "lpips", "(all)")]["status"] == "unavailable"
        assert by[("still", "lpips", "(all)")]["value"] == "" and "alexnet" in by[("still", "lpips", "(all)")]["reason"]
    meta = json.loads((tmp_path / "metadata.json").read_text())
    assert meta["status"] == "complete" and meta["benchmark"]["size"] == 128
    assert meta["metrics"]["psnr"]["variant"].startswith("skimage")


def test_teacher_and_vae_reconstruction_methods(tmp_path):
    from tiny_models import tiny_rest_model

    tiny_rest_model(role="teacher").save_pretrained(tmp_path / "teacher")
    methods = [f"teacher:{tmp_path / 'teacher'}?steps=2", f"vae_recon:{tmp_path / 'teacher'}"]
    config = RunConfig(benchmark=_bench(), methods=methods, out=tmp_path / "run", metrics=["toy_psnr"], limit=1,
                       size=SIZE, progress=False, build_report=False)
    summary = Runner(config, _metrics()).run()
    assert not summary.failures, summary.failures
    rows = {(r["method"], r["metric"]): r for r in _read_rows(tmp_path / "run" / "results.csv")}
    assert rows[("teacher:teacher (steps=2)", "toy_psnr")]["status"] == "ok"
    assert float(rows[("vae_recon", "toy_psnr")]["value"]) > 0


def test_latency_benchmark_reads_bench_stream_json(tmp_path):
    from tiny_models import tiny_rest_model

    tiny_rest_model().save_pretrained(tmp_path / "ckpt")
    result = {"first_chunk_ms": 35.5, "algorithmic_latency_ms": 100.0, "end_to_end_ms": None, "chunk_ms_p50": 30.0,
              "chunk_ms_p95": 41.0, "fps": 60.0, "rtf": 0.7, "rtf_with_mp4": 0.9, "peak_mem_mb": 900.0,
              "device": "cpu"}
    (tmp_path / "bench.json").write_text(json.dumps(result))
    config = RunConfig(benchmark="latency", methods=[f"rest:{tmp_path / 'ckpt'}?name=tiny", "still"],
                       out=tmp_path / "run", latency_json={"tiny": str(tmp_path / "bench.json")}, progress=False,
                       build_report=False)
    Runner(config).run()
    rows = {(r["method"], r["metric"]): r for r in _read_rows(tmp_path / "run" / "results.csv")}
    assert float(rows[("tiny", "chunk_ms_p50")]["value"]) == 30.0
    assert rows[("tiny", "end_to_end_ms")]["status"] == "n/a"  # null in the JSON: never a number
    assert rows[("still", "latency")]["status"] == "n/a"
