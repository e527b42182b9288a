"""The resumable benchmark runner behind ``python -m eval run``.

For every clip of the benchmark and every method:

1. **output**: ``DIR/outputs/<method>/<clip>.mp4`` (H.264, the clip's audio muxed in) plus a
   sidecar ``<clip>.json`` with the method's fingerprint (spec, checkpoint hashes, settings),
   the seed, generation stats and alignment notes. An output whose fingerprint still matches is
   reused; metrics are always computed on the decoded mp4, so a fresh run and a resumed run see
   the same frames.
2. **metrics**: each (method, clip, metric) value goes into ``DIR/cache/metrics/<method>/<clip>.json``
   (rewritten atomically after every metric) with the metric's variant and the output's sha256;
   a cached value is reused when both still match. Set metrics (FID, FVD) cache their per-clip
   features as ``.npy`` and are combined over clips at the end.
3. **failures**: an exception in one (method, clip) or (method, clip, metric) is recorded in
   ``DIR/failures.jsonl`` and in ``results.csv`` as ``failed`` with its message; the run goes on.
   Failures are not cached: a rerun tries again.

Unavailable metrics (missing weights or packages) and metrics that do not apply (full-reference
metrics without ground truth, the ground truth against itself) are rows with status
``unavailable`` / ``n/a`` and the reason, never numbers. Seeds are derived from ``--seed`` and the
clip id, so every method sees the same noise for the same clip.

At the end: ``results.csv`` (tidy), ``curves.csv`` (drift curves), ``metadata.json``, and the
tables and plots of :mod:`eval.report`.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
import traceback
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from eval.benchmarks import CURVES, BenchItem, BenchOptions, Benchmark, LoadedItem, get_benchmark
from eval.methods import Method, NotApplicable, Produced, RestStudentMethod, method_slug, parse_method
from hub.io_utils import atomic_path, atomic_write_text, sha256_file

OK, NA, UNAVAILABLE, FAILED = "ok", "n/a", "unavailable", "failed"
RESULT_COLUMNS = ["method", "benchmark", "subset", "clip", "metric", "value", "status", "reason", "family"]
CURVE_COLUMNS = ["method", "benchmark", "subset", "clip", "curve", "t_seconds", "value"]
ALL_CLIPS = "(all)"
SET_CLIP = "(set)"
OUTPUT_CRF = 12  # cached outputs: near-transparent H.264
LATENCY_KEYS = ("first_chunk_ms", "algorithmic_latency_ms", "end_to_end_ms", "chunk_ms_p50", "chunk_ms_p95",
                "fps", "rtf", "rtf_with_mp4", "peak_mem_mb")
LATENCY_SECONDS = 10.0


@dataclass
class RunConfig:
    """Everything a run depends on (stored in metadata.json)."""

    benchmark: str | Benchmark  # a name from eval.benchmarks.BENCHMARKS, or a Benchmark object
    methods: Sequence[str | Method]
    out: Path
    limit: int | None = None
    metrics: Sequence[str] | None = None  # None: the benchmark's defaults
    quick: bool = False
    size: int | None = None  # None: the first REST checkpoint's image size, else 128
    seed: int = 0
    device: str = "cpu"
    prepared_dir: str | None = None
    latency_json: dict[str, str] = field(default_factory=dict)  # method label -> bench stream JSON
    latency_seconds: float = LATENCY_SECONDS
    progress: bool = True
    build_report: bool = True


@dataclass
class RunSummary:
    out: Path
    rows: int
    failures: list[dict]
    generated: int
    reused: int
    metrics_computed: int
    metrics_cached: int


def clip_seed(base: int, clip_id: str) -> int:
    """The seed of one clip: the same for every method, different across clips."""
    return (base * 1_000_003 + zlib.crc32(clip_id.encode())) % (2 ** 31)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_json(path: Path, payload: Any) -> None:
    atomic_write_text(path, json.dumps(payload, indent=1, default=_json_default, ensure_ascii=False) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _short(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}" if not isinstance(error, ValueError) else str(error)
    return text.strip().splitlines()[0][:500] if text.strip() else type(error).__name__


class MetricPlan:
    """Which metrics run, which are unavailable (with the reason) or do not apply."""

    def __init__(self, names: Sequence[str], benchmark: Benchmark, custom: dict | None = None) -> None:
        from eval.metrics import get_metric

        self.infos = {}
        self.unavailable: dict[str, str] = {}
        self.not_applicable: dict[str, str] = {}
        for name in names:
            info = (custom or {}).get(name) or get_metric(name)
            self.infos[name] = info
            ok, reason = info.available()
            if not ok:
                self.unavailable[name] = reason
            elif info.needs_reference_video and not benchmark.has_ground_truth:
                self.not_applicable[name] = f"{benchmark.name} has no ground-truth video"

    def runnable(self, level: str) -> list:
        return [i for n, i in self.infos.items()
                if i.level == level and n not in self.unavailable and n not in self.not_applicable]

    def outputs(self, name: str) -> tuple[str, ...]:
        info = self.infos[name]
        return info.outputs or (name,)


class Runner:
    """Runs one benchmark for a set of methods into an output folder (see the module docstring)."""

    def __init__(self, config: RunConfig, custom_metrics: dict | None = None) -> None:
        self.config = config
        self.out = Path(config.out)
        self.benchmark = config.benchmark if isinstance(config.benchmark, Benchmark) \
            else get_benchmark(config.benchmark)
        self.methods: list[Method] = [m if isinstance(m, Method) else parse_method(m, config.device)
                                      for m in config.methods]
        if not self.methods:
            raise ValueError("--methods is empty; name at least one method")
        labels = [m.label for m in self.methods]
        duplicated = sorted({x for x in labels if labels.count(x) > 1})
        if duplicated:
            raise ValueError(f"methods share the label(s) {duplicated}; add ?name=... to tell them apart")
        self.size = config.size or next((m.image_size for m in self.methods if isinstance(m, RestStudentMethod)),
                                        None) or BenchOptions().size
        self.options = BenchOptions(size=self.size, limit=config.limit, quick=config.quick,
                                    prepared_dir=config.prepared_dir)
        names = list(config.metrics) if config.metrics is not None else list(self.benchmark.default_metrics)
        self.plan = MetricPlan(names, self.benchmark, custom_metrics)
        self.slugs = {m.label: method_slug(m) for m in self.methods}
        self.failures: list[dict] = []
        self.rows: list[dict] = []
        self.curve_rows: list[dict] = []
        self.alignment: dict[str, dict] = {}
        self.item_notes: dict[str, dict] = {}
        self.fingerprints: dict[str, dict] = {}
        self.counts = {"generated": 0, "reused": 0, "metrics_computed": 0, "metrics_cached": 0}
        self._weight_hash_memo: dict[tuple[str, ...], list[str]] = {}

    # ------------------------------------------------------------------ bookkeeping
    def _row(self, method: Method, item_subset: str, clip: str, metric: str, value: float | None, status: str,
             reason: str = "", family: str = "") -> None:
        self.rows.append({"method": method.label, "benchmark": self.benchmark.name, "subset": item_subset,
                          "clip": clip, "metric": metric, "value": "" if value is None else repr(float(value)),
                          "status": status, "reason": reason, "family": family or metric})

    def _fail(self, method: Method, clip: str, stage: str, error: BaseException) -> str:
        reason = _short(error)
        self.failures.append({"method": method.label, "clip": clip, "stage": stage, "error": reason,
                              "traceback": traceback.format_exception(type(error), error, error.__traceback__)[-3:],
                              "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
        write_json_lines(self.out / "failures.jsonl", self.failures)
        return reason

    def _paths(self, method: Method, clip: str) -> dict[str, Path]:
        slug = self.slugs[method.label]
        return {"video": self.out / "outputs" / slug / f"{clip}.mp4",
                "sidecar": self.out / "outputs" / slug / f"{clip}.json",
                "metrics": self.out / "cache" / "metrics" / slug / f"{clip}.json",
                "curves": self.out / "cache" / "curves" / slug / f"{clip}.json"}

    def _fingerprint(self, method: Method) -> dict:
        if method.label not in self.fingerprints:
            self.fingerprints[method.label] = {**method.fingerprint(), "size": self.size}
        return self.fingerprints[method.label]

    # ------------------------------------------------------------------ outputs
    def ensure_output(self, method: Method, item: BenchItem, loaded_fn) -> dict:
        """The sidecar of the (method, clip) output, generating the video when needed.

        Raises NotApplicable (cached as such) or any generation error.
        """
        paths = self._paths(method, item.clip_id)
        fingerprint = self._fingerprint(method)
        sidecar = read_json(paths["sidecar"])
        if sidecar and sidecar.get("fingerprint") == fingerprint:
            if sidecar.get("not_applicable"):
                raise NotApplicable(sidecar["not_applicable"])
            if paths["video"].is_file() and sha256_file(paths["video"]) == sidecar.get("output_sha256"):
                self.counts["reused"] += 1
                return sidecar
        loaded: LoadedItem = loaded_fn()
        seed = clip_seed(self.config.seed, item.clip_id)
        try:
            produced: Produced = method.produce(loaded, self.size, seed)
        except NotApplicable as why:
            write_json(paths["sidecar"], {"fingerprint": fingerprint, "not_applicable": str(why)})
            raise
        frames = produced.frames
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1:] != (self.size, self.size, 3):
            raise ValueError(f"{method.label} gave frames {frames.dtype} {frames.shape}; expected uint8 "
                             f"(T, {self.size}, {self.size}, 3)")
        from hub import SAMPLES_PER_FRAME
        from hub.media import write_video

        audio = loaded.audio[: len(frames) * SAMPLES_PER_FRAME]
        write_video(paths["video"], frames, audio, crf=OUTPUT_CRF)
        sidecar = {"fingerprint": fingerprint, "seed": seed, "frames": int(len(frames)),
                   "audio_frames": int(loaded.num_frames), "stats": produced.stats, "notes": produced.notes,
                   "output_sha256": sha256_file(paths["video"]), "crf": OUTPUT_CRF,
                   "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        write_json(paths["sidecar"], sidecar)
        self.counts["generated"] += 1
        return sidecar

    # ------------------------------------------------------------------ metrics
    def _sample(self, method: Method, item: BenchItem, loaded: LoadedItem):
        from eval.metrics import EvalSample
        from hub import SAMPLES_PER_FRAME
        from hub.media import read_video

        frames = read_video(self._paths(method, item.clip_id)["video"], with_audio=False).frames  # (T, S, S, 3)
        n = min(len(frames), loaded.num_frames)
        gt = loaded.ground_truth[:n] if loaded.ground_truth is not None else None
        if gt is not None and gt.shape[1:3] != frames.shape[1:3]:
            from eval.methods import _resize

            gt = _resize(gt, frames.shape[1])
        return EvalSample(frames=frames[:n], audio=loaded.audio[: n * SAMPLES_PER_FRAME],
                          reference=loaded.reference_crop(self.size), ground_truth=gt, clip_id=item.clip_id)

    def _weight_hashes(self, specs) -> list[str]:
        """sha256 of each weight file (resolved once per run): a value cached with other weights is stale."""
        from eval.weights import resolve_weight, sha256_cached

        key = tuple(spec.name for spec in specs)
        if key not in self._weight_hash_memo:
            self._weight_hash_memo[key] = [sha256_cached(resolve_weight(spec)) for spec in specs]
        return self._weight_hash_memo[key]

    def run_clip_metrics(self, method: Method, item: BenchItem, sidecar: dict, loaded_fn) -> None:
        paths = self._paths(method, item.clip_id)
        cache = read_json(paths["metrics"]) or {}
        output_sha = sidecar["output_sha256"]
        sample = None
        for info in self.plan.runnable("clip"):
            entry = cache.get(info.name)
            weights = self._weight_hashes(info.weights)
            if (entry and entry.get("variant") == info.variant and entry.get("output_sha256") == output_sha
                    and entry.get("weights", []) == weights):
                self.counts["metrics_cached"] += 1
                values = entry["values"]
            else:
                if method.kind == "ground_truth" and info.needs_reference_video:
                    continue  # reported once as n/a
                try:
                    if sample is None:
                        sample = self._sample(method, item, loaded_fn())
                    info.check_inputs(sample)
                    raw = info.fn(sample)
                    values = {info.name: raw} if not isinstance(raw, dict) else dict(raw)
                    # An informational output (e.g. an offset) may be undefined (NaN): n/a, not a failure.
                    bad = [k for k, v in values.items() if v is None
                           or (not np.isfinite(float(v)) and info.direction(k) is not None)]
                    if bad:
                        raise ValueError(f"{info.name} gave non-finite values for {bad}")
                    values = {k: float(v) for k, v in values.items()}
                except Exception as error:  # noqa: BLE001 - one metric failing is recorded, not fatal
                    reason = self._fail(method, item.clip_id, f"metric {info.name}", error)
                    for output in self.plan.outputs(info.name):
                        self._row(method, item.subset, item.clip_id, output, None, FAILED, reason, info.name)
                    continue
                cache[info.name] = {"variant": info.variant, "output_sha256": output_sha, "weights": weights,
                                    "values": values}
                write_json(paths["metrics"], cache)
                self.counts["metrics_computed"] += 1
            for output, value in values.items():
                if np.isfinite(value):
                    self._row(method, item.subset, item.clip_id, output, value, OK, "", info.name)
                else:
                    self._row(method, item.subset, item.clip_id, output, None, NA, "undefined for this clip",
                              info.name)
        for key, value in (sidecar.get("stats") or {}).items():
            if value is not None:
                self._row(method, item.subset, item.clip_id, key, value, OK, "", "generation")
        if self.benchmark.curves:
            self.run_curves(method, item, sidecar, loaded_fn, sample)

    def run_curves(self, method: Method, item: BenchItem, sidecar: dict, loaded_fn, sample) -> None:
        paths = self._paths(method, item.clip_id)
        cache = read_json(paths["curves"]) or {}
        for name in self.benchmark.curves:
            fn, variant, weight_specs = CURVES[name]
            weights = self._weight_hashes(weight_specs)
            entry = cache.get(name)
            if not (entry and entry.get("variant") == variant and entry.get("output_sha256") == sidecar["output_sha256"]
                    and entry.get("weights", []) == weights):
                try:
                    if sample is None:
                        sample = self._sample(method, item, loaded_fn())
                    times, values = fn(sample)
                except Exception as error:  # noqa: BLE001
                    self._fail(method, item.clip_id, f"curve {name}", error)
                    continue
                entry = {"variant": variant, "output_sha256": sidecar["output_sha256"], "weights": weights,
                         "t": [float(t) for t in times], "v": [float(v) for v in values]}
                cache[name] = entry
                write_json(paths["curves"], cache)
            for t, v in zip(entry["t"], entry["v"]):
                self.curve_rows.append({"method": method.label, "benchmark": self.benchmark.name,
                                        "subset": item.subset, "clip": item.clip_id, "curve": name,
                                        "t_seconds": t, "value": "" if not np.isfinite(v) else v})

    def extract_set_features(self, method: Method, item: BenchItem, sidecar: dict, loaded_fn) -> None:
        for info in self.plan.runnable("set"):
            folder = self.out / "cache" / "features" / info.name
            path = folder / self.slugs[method.label] / f"{item.clip_id}-{sidecar['output_sha256'][:16]}.npy"
            ref_path = folder / "_ground_truth" / f"{item.clip_id}.npy"
            try:
                if not path.is_file():
                    sample = self._sample(method, item, loaded_fn())
                    _save_npy(path, info.extract(sample))
                if not ref_path.is_file():
                    loaded = loaded_fn()
                    from eval.metrics import EvalSample

                    _save_npy(ref_path, info.extract(EvalSample(frames=loaded.ground_truth, clip_id=item.clip_id)))
            except Exception as error:  # noqa: BLE001
                reason = self._fail(method, item.clip_id, f"features {info.name}", error)
                self._row(method, item.subset, item.clip_id, info.name, None, FAILED, reason, info.name)

    def finish_set_metrics(self, items: list[BenchItem]) -> None:
        for info in self.plan.runnable("set"):
            folder = self.out / "cache" / "features" / info.name
            for method in self.methods:
                if method.kind == "ground_truth":
                    continue
                gen, ref, used = [], [], []
                for item in items:
                    sidecar = read_json(self._paths(method, item.clip_id)["sidecar"]) or {}
                    sha = sidecar.get("output_sha256")
                    path = folder / self.slugs[method.label] / f"{item.clip_id}-{(sha or '')[:16]}.npy"
                    ref_path = folder / "_ground_truth" / f"{item.clip_id}.npy"
                    if sha and path.is_file() and ref_path.is_file():
                        gen.append(np.load(path))
                        ref.append(np.load(ref_path))
                        used.append(item.clip_id)
                if not used:
                    continue
                try:
                    value = float(info.fn(gen, ref))
                except Exception as error:  # noqa: BLE001
                    reason = self._fail(method, SET_CLIP, f"metric {info.name}", error)
                    self._row(method, "", SET_CLIP, info.name, None, FAILED, reason, info.name)
                    continue
                missing = len(items) - len(used)
                note = f"over {len(used)} clips" + (f"; {missing} clip(s) without features" if missing else "")
                self._row(method, "", SET_CLIP, info.name, value, OK, note, info.name)

    # ------------------------------------------------------------------ latency benchmark
    def run_latency(self) -> None:
        for method in self.methods:
            if not isinstance(method, RestStudentMethod):
                self._row(method, "", "stream", "latency", None, NA, "only REST student checkpoints stream",
                          "latency")
                continue
            try:
                result, source = self.latency_result(method)
            except Exception as error:  # noqa: BLE001
                reason = self._fail(method, "stream", "latency", error)
                self._row(method, "", "stream", "latency", None, FAILED, reason, "latency")
                continue
            self.item_notes.setdefault("stream", {})[method.label] = {"source": source,
                                                                      "device": result.get("device")}
            for key in LATENCY_KEYS:
                value = result.get(key)
                if isinstance(value, (int, float)) and np.isfinite(value):
                    self._row(method, "", "stream", key, value, OK, "", "latency")
                else:
                    self._row(method, "", "stream", key, None, NA, f"{source} reports {key}={value}", "latency")

    def latency_result(self, method: RestStudentMethod) -> tuple[dict, str]:
        """The bench-stream JSON of one method: a given file, a cached one, or a fresh measurement by
        ``python -m hub bench stream --checkpoint DIR --out FILE`` (a separate process)."""
        given = (self.config.latency_json.get(method.label) or self.config.latency_json.get(method.spec)
                 or self.config.latency_json.get("*"))
        if given:
            payload = read_json(Path(given))
            if not isinstance(payload, dict):
                raise ValueError(f"--latency-json {given}: not a JSON object from `python -m hub bench stream`")
            return payload, str(given)
        path = self.out / "outputs" / self.slugs[method.label] / "latency.json"
        key = {**self._fingerprint(method), "device": self.config.device, "seconds": self.config.latency_seconds}
        cached = read_json(path)
        if cached and cached.get("key") == key:
            self.counts["reused"] += 1
            return cached["result"], f"python -m hub bench stream (cached {path})"
        if method.settings.use_id_sink is False or method.settings.context_chunks is not None \
                or method.settings.guidance is not None:
            raise ValueError("hub bench stream measures steps only; pass --latency-json for other settings")
        with atomic_path(path.with_name("bench-stream.json")) as tmp:
            command = [sys.executable, "-m", "hub", "bench", "stream", "--checkpoint", str(method.checkpoint),
                       "--device", self.config.device, "--seconds", str(self.config.latency_seconds),
                       "--out", str(tmp)]
            if method.settings.steps:
                command += ["--steps", str(method.settings.steps)]
            done = subprocess.run(command, capture_output=True, text=True, cwd=str(Path(__file__).parent.parent))
            if done.returncode != 0:
                tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
                raise ValueError(f"`{' '.join(command[1:])}` failed: {tail[0]}")
            result = json.loads(tmp.read_text())
        write_json(path, {"key": key, "result": result, "command": " ".join(command[1:])})
        self.counts["generated"] += 1
        return result, "python -m hub bench stream"

    # ------------------------------------------------------------------ the run
    def run(self) -> RunSummary:
        from eval.metadata import collect_metadata

        self.out.mkdir(parents=True, exist_ok=True)
        started = time.time()
        items = self.benchmark.items(self.options)
        write_json(self.out / "metadata.json", collect_metadata(self, items, status="running", started=started))
        for name, reason in self.plan.unavailable.items():
            for method in self.methods:
                for output in self.plan.outputs(name):
                    self._row(method, "", ALL_CLIPS, output, None, UNAVAILABLE, reason, name)
        for name, reason in self.plan.not_applicable.items():
            for method in self.methods:
                for output in self.plan.outputs(name):
                    self._row(method, "", ALL_CLIPS, output, None, NA, reason, name)
        for method in self.methods:
            if method.kind == "ground_truth":
                for name, info in self.plan.infos.items():
                    if info.needs_reference_video and name not in self.plan.unavailable \
                            and name not in self.plan.not_applicable:
                        for output in self.plan.outputs(name):
                            self._row(method, "", ALL_CLIPS, output, None, NA,
                                      "the method is the ground truth", name)
        if self.benchmark.kind == "latency":
            self.run_latency()
        else:
            self.run_items(items)
        write_json_lines(self.out / "failures.jsonl", self.failures)
        self.write_results()
        write_json(self.out / "metadata.json", collect_metadata(self, items, status="complete", started=started))
        if self.config.build_report:
            from eval.report import build_report

            build_report([self.out], self.out)
        return RunSummary(out=self.out, rows=len(self.rows), failures=self.failures,
                          generated=self.counts["generated"], reused=self.counts["reused"],
                          metrics_computed=self.counts["metrics_computed"],
                          metrics_cached=self.counts["metrics_cached"])

    def run_items(self, items: list[BenchItem]) -> None:
        from tqdm import tqdm

        bar = tqdm(total=len(items) * len(self.methods), desc=f"{self.benchmark.name}", unit="output",
                   disable=not self.config.progress)
        for item in items:
            loaded_box: list[LoadedItem] = []

            def loaded_fn(item=item, box=loaded_box) -> LoadedItem:
                if not box:
                    box.append(item.load())
                    self.item_notes[item.clip_id] = {**item.info, **box[0].notes}
                return box[0]

            self.item_notes.setdefault(item.clip_id, dict(item.info))
            for method in self.methods:
                bar.set_postfix_str(f"{method.label} / {item.clip_id}")
                try:
                    sidecar = self.ensure_output(method, item, loaded_fn)
                except NotApplicable as why:
                    self._row(method, item.subset, item.clip_id, "output", None, NA, str(why), "output")
                    bar.update(1)
                    continue
                except Exception as error:  # noqa: BLE001 - one output failing is recorded, not fatal
                    reason = self._fail(method, item.clip_id, "generate", error)
                    self._row(method, item.subset, item.clip_id, "output", None, FAILED, reason, "output")
                    bar.update(1)
                    continue
                self._row(method, item.subset, item.clip_id, "output", None, OK, "", "output")
                if sidecar.get("notes", {}).get("alignment"):
                    self.alignment.setdefault(method.label, {})[item.clip_id] = sidecar["notes"]["alignment"]
                self.run_clip_metrics(method, item, sidecar, loaded_fn)
                if self.benchmark.has_ground_truth and method.kind != "ground_truth":
                    self.extract_set_features(method, item, sidecar, loaded_fn)
                bar.update(1)
        bar.close()
        if self.benchmark.has_ground_truth:
            self.finish_set_metrics(items)

    def write_results(self) -> None:
        write_csv(self.out / "results.csv", RESULT_COLUMNS, self.rows)
        if self.benchmark.curves:
            write_csv(self.out / "curves.csv", CURVE_COLUMNS, self.curve_rows)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path, suffix=".npy") as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, np.asarray(array))


def write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    """Write ``rows`` as CSV atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)


def write_json_lines(path: Path, records: list[dict]) -> None:
    """Write one JSON object per line, atomically (the whole file is rewritten)."""
    text = "".join(json.dumps(r, default=_json_default, ensure_ascii=False) + "\n" for r in records)
    atomic_write_text(path, text)


def run_benchmark(config: RunConfig, custom_metrics: dict | None = None) -> RunSummary:
    """Run ``config`` (see :class:`RunConfig`); returns what was done."""
    return Runner(config, custom_metrics).run()


def parse_latency_json(values: Sequence[str]) -> dict[str, str]:
    """``LABEL=FILE`` pairs (a bare FILE applies to every REST method) -> {label: file}."""
    out: dict[str, str] = {}
    for value in values:
        label, sep, path = value.rpartition("=")
        if not sep:
            label, path = "*", value
        if not Path(path).is_file():
            raise ValueError(f"--latency-json {value}: file {path} not found")
        out[label] = path
    return out


def config_to_dict(config: RunConfig) -> dict:
    """The run configuration as JSON-ready values (methods as their specs, the benchmark by name)."""
    payload = {k: v for k, v in vars(config).items() if k not in ("methods", "benchmark", "out")}
    payload["benchmark"] = config.benchmark if isinstance(config.benchmark, str) else config.benchmark.name
    payload["methods"] = [m if isinstance(m, str) else m.spec for m in config.methods]
    payload["out"] = str(config.out)
    return payload

