"""Tables and plots from tidy results (``python -m eval report DIR [DIR ...]``).

Reads ``results.csv`` (columns ``method, benchmark, subset, clip, metric, value, status, reason,
family``), ``curves.csv`` and ``metadata.json`` of one or more result folders and writes:

* ``table.md`` and ``table.tex``: one table per benchmark, subset and metric kind; methods x
  metrics, the mean over clips; ↑/↓ after each metric; the best value among the compared methods
  in bold (reference rows, i.e. ground truth, the still reference and the autoencoder
  reconstruction, are in italics and never bold);
  ``(k/N)`` when only k of N clips gave a value; unavailable and not-applicable metrics written
  as such, with their reasons below the table;
* ``plots/``: plotly HTML and PNG: per-clip distributions of every metric, quality against
  latency, and drift curves over time (long streams).

Everything is rebuilt from the CSV files alone, so a report can be remade without the outputs.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hub.io_utils import atomic_path, atomic_write_text

SPECIAL_CLIPS = ("(all)", "(set)")
REFERENCE_LABELS = ("ground_truth", "still", "vae_recon")
KIND_ORDER = ("quality", "sync", "identity", "motion", "latency")
# Directions of the numbers that are not registry metrics (generation stats, bench stream JSON).
LATENCY_DIRECTIONS = {"fps": True, "gen_fps": True}
LATENCY_X = ("chunk_ms_p50", "gen_chunk_ms_mean")  # x axis of quality-vs-latency, first found wins
CHROMIUM = "/usr/bin/chromium"
CURVE_LABELS = {"identity": "identity similarity to the reference (dlib)", "sync": "av_corr (landmark sync)",
                "facesync": "FaceSync correlation at lag 0"}


@dataclass
class Cell:
    values: list[float] = field(default_factory=list)
    statuses: dict[str, str] = field(default_factory=dict)  # status -> first reason
    clips: set[str] = field(default_factory=set)


def read_results(folders: list[Path]) -> tuple[list[dict], list[dict], dict]:
    """Rows of results.csv and curves.csv of every folder, and the methods' metadata."""
    rows, curves, methods = [], [], {}
    for folder in folders:
        path = folder / "results.csv"
        if not path.is_file():
            raise ValueError(f"{path} not found; run `python -m eval run ... --out {folder}` first")
        with open(path, newline="", encoding="utf-8") as handle:
            rows += list(csv.DictReader(handle))
        if (folder / "curves.csv").is_file():
            with open(folder / "curves.csv", newline="", encoding="utf-8") as handle:
                curves += list(csv.DictReader(handle))
        if (folder / "metadata.json").is_file():
            meta = json.loads((folder / "metadata.json").read_text())
            methods.update(meta.get("methods", {}))
    return rows, curves, methods


def metric_kind(family: str) -> str:
    if family in ("generation", "latency"):
        return "latency"
    try:
        from eval.metrics import get_metric

        return get_metric(family).kind
    except ValueError:
        return "quality"


def direction(family: str, output: str) -> bool | None:
    """True: higher is better; False: lower; None: informational (no arrow, no bold)."""
    if family in ("generation", "latency"):
        return LATENCY_DIRECTIONS.get(output, False)
    try:
        from eval.metrics import get_metric

        return get_metric(family).direction(output)
    except ValueError:
        return None


def fmt(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    a = abs(value)
    if a >= 100:
        return f"{value:.0f}"
    if a >= 10:
        return f"{value:.1f}"
    if a >= 0.01 or a == 0:
        return f"{value:.3f}"
    return f"{value:.2e}"


def _is_reference(label: str, methods: dict) -> bool:
    meta = methods.get(label)
    if meta is not None and "reference_row" in meta:
        return bool(meta["reference_row"])
    return label in REFERENCE_LABELS


@dataclass
class Table:
    title: str
    methods: list[str]
    columns: list[tuple[str, str]]  # (family, output)
    cells: dict[tuple[str, str], Cell]
    n_clips: dict[str, int]
    reasons: dict[str, str]
    reference: set[str]

    def best(self) -> dict[str, str]:
        """Output -> the best compared method's label (ties: the first)."""
        out = {}
        for family, output in self.columns:
            d = direction(family, output)
            if d is None:
                continue
            scored = [(float(np.mean(c.values)), m) for m in self.methods if m not in self.reference
                      and (c := self.cells.get((m, output))) and c.values]
            if len(scored) >= 2:
                out[output] = (max if d else min)(scored, key=lambda s: s[0])[1]
        return out

    def text(self, method: str, output: str) -> tuple[str, bool]:
        """(cell text, is it a number)."""
        cell = self.cells.get((method, output))
        if cell is None:
            return "–", False
        if cell.values:
            text = fmt(float(np.mean(cell.values)))
            expected = self.n_clips.get(method, 0)
            if expected and len(cell.values) < expected and not (cell.clips & set(SPECIAL_CLIPS)):
                text += f" ({len(cell.values)}/{expected})"
            return text, True
        for status, label in (("unavailable", "unavail."), ("n/a", "n/a"), ("failed", "failed")):
            if status in cell.statuses:
                return label, False
        return "–", False


def _has_output(method: str, subset: str, rows: list[dict]) -> bool:
    """False when every output of ``method`` in ``subset`` was n/a (e.g. a baseline folder that has
    no video for this subset's clips); methods without output rows (latency) are kept."""
    outputs = [r["status"] for r in rows if r["method"] == method and r["metric"] == "output" and r["subset"] == subset]
    return not outputs or any(s in ("ok", "failed") for s in outputs)


def build_tables(rows: list[dict], methods_meta: dict) -> list[Table]:
    """One :class:`Table` per (benchmark, subset, kind)."""
    tables = []
    benchmarks = list(dict.fromkeys(r["benchmark"] for r in rows))
    for bench in benchmarks:
        brows = [r for r in rows if r["benchmark"] == bench and r["metric"] != "output"]
        subsets = sorted({r["subset"] for r in brows if r["subset"]}) or [""]
        output_rows = [r for r in rows if r["benchmark"] == bench]
        for subset in subsets:
            srows = [r for r in brows if r["subset"] == subset or (r["subset"] == "" and r["clip"] in SPECIAL_CLIPS)]
            if not srows:
                continue
            methods = list(dict.fromkeys(r["method"] for r in output_rows))
            n_clips = {m: len({r["clip"] for r in output_rows if r["method"] == m and r["metric"] == "output"
                               and r["subset"] == subset and r["status"] in ("ok", "failed")}) for m in methods}
            by_kind: dict[str, list[tuple[str, str]]] = defaultdict(list)
            for r in srows:
                col = (r["family"] or r["metric"], r["metric"])
                kind = metric_kind(col[0])
                if col not in by_kind[kind]:
                    by_kind[kind].append(col)
            for kind in sorted(by_kind, key=lambda k: KIND_ORDER.index(k) if k in KIND_ORDER else 99):
                cols = by_kind[kind]
                cells: dict[tuple[str, str], Cell] = {}
                reasons: dict[str, str] = {}
                wanted = {c[1] for c in cols}
                for r in srows:
                    if r["metric"] not in wanted:
                        continue
                    cell = cells.setdefault((r["method"], r["metric"]), Cell())
                    cell.clips.add(r["clip"])
                    if r["status"] == "ok" and r["value"] != "":
                        cell.values.append(float(r["value"]))
                    else:
                        cell.statuses.setdefault(r["status"], r["reason"])
                        if r["status"] in ("unavailable", "n/a") and r["reason"]:
                            name = r["metric"] if r["family"] in ("latency", "generation", "") else r["family"]
                            reasons.setdefault(f"{name} ({r['status']})",
                                               r["reason"].split(". ")[0])
                shown = [m for m in methods if any((m, c[1]) in cells for c in cols) and _has_output(m, subset, output_rows)]
                title = bench + (f" / {subset}" if subset else "") + f" — {kind}"
                tables.append(Table(title, shown, cols, cells, n_clips, reasons,
                                    {m for m in shown if _is_reference(m, methods_meta)}))
    return tables


def _arrow(family: str, output: str) -> str:
    d = direction(family, output)
    return "" if d is None else (" ↑" if d else " ↓")


def tables_markdown(tables: list[Table]) -> str:
    lines = ["# Results", "",
             "Mean over clips; ↑ higher is better, ↓ lower is better; **bold**: best compared method "
             "(reference rows in italics: ground truth, still reference, autoencoder reconstruction; never bold); (k/N): k of N clips gave a value.", ""]
    for table in tables:
        best = table.best()
        lines += [f"## {table.title}", ""]
        lines.append("| method | " + " | ".join(f"{o}{_arrow(f, o)}" for f, o in table.columns) + " |")
        lines.append("|---|" + "---:|" * len(table.columns))
        for m in table.methods:
            label = f"*{m}*" if m in table.reference else m
            cells = []
            for _, o in table.columns:
                text, _ = table.text(m, o)
                cells.append(f"**{text}**" if best.get(o) == m else text)
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
        for key, reason in table.reasons.items():
            lines.append(f"- {key}: {reason}")
        if table.reasons:
            lines.append("")
    return "\n".join(lines)


def _tex(text: str) -> str:
    return re.sub(r"([_%&#$])", r"\\\1", text).replace("–", "--")


def tables_latex(tables: list[Table]) -> str:
    parts = ["% Generated by `python -m eval report`; needs \\usepackage{booktabs}.", ""]
    for table in tables:
        best = table.best()
        arrows = {True: "$\\uparrow$", False: "$\\downarrow$", None: ""}
        parts.append(f"% {table.title}")
        parts.append("\\begin{tabular}{l" + "r" * len(table.columns) + "}")
        parts.append("\\toprule")
        header = " & ".join(f"{_tex(o)} {arrows[direction(f, o)]}".strip() for f, o in table.columns)
        parts.append(f"Method & {header} \\\\")
        parts.append("\\midrule")
        for m in table.methods:
            cells = []
            for _, o in table.columns:
                text, _ = table.text(m, o)
                text = _tex(text)
                cells.append(f"\\textbf{{{text}}}" if best.get(o) == m else text)
            label = f"\\textit{{{_tex(m)}}}" if m in table.reference else _tex(m)
            parts.append(f"{label} & " + " & ".join(cells) + " \\\\")
        parts += ["\\bottomrule", "\\end{tabular}", ""]
    return "\n".join(parts)


# ------------------------------------------------------------------------------------------------
# plots


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def figures(rows: list[dict], curves: list[dict]) -> dict[str, object]:
    """Plotly figures by file stem."""
    import plotly.graph_objects as go

    figs: dict[str, object] = {}
    ok = [r for r in rows if r["status"] == "ok" and r["value"] != ""]
    # per-clip distributions
    for bench in dict.fromkeys(r["benchmark"] for r in ok):
        per_clip = [r for r in ok if r["benchmark"] == bench and r["clip"] not in SPECIAL_CLIPS]
        for output in dict.fromkeys(r["metric"] for r in per_clip):
            sel = [r for r in per_clip if r["metric"] == output]
            counts = defaultdict(int)
            for r in sel:
                counts[r["method"]] += 1
            if max(counts.values()) < 2:
                continue  # one value per method: the table says it all
            fig = go.Figure()
            for method in dict.fromkeys(r["method"] for r in sel):
                vals = [float(r["value"]) for r in sel if r["method"] == method]
                clips = [r["clip"] for r in sel if r["method"] == method]
                fig.add_trace(go.Box(y=vals, name=method, boxpoints="all", jitter=0.3, text=clips,
                                     hovertemplate="%{text}: %{y}<extra>" + method + "</extra>"))
            fam = sel[0]["family"]
            fig.update_layout(title=f"{bench}: {output}{_arrow(fam, output)} per clip", showlegend=False,
                              yaxis_title=output, template="plotly_white", width=900, height=520)
            figs[f"dist_{_slug(bench)}_{_slug(output)}"] = fig
    # quality against latency
    latency: dict[str, tuple[str, float]] = {}
    for key in LATENCY_X:
        for method in dict.fromkeys(r["method"] for r in ok if r["metric"] == key):
            if method not in latency:
                latency[method] = (key, float(np.mean([float(r["value"]) for r in ok
                                                       if r["metric"] == key and r["method"] == method])))
    if latency:
        quality = [(r["family"], r["metric"]) for r in ok if r["metric"] not in LATENCY_X
                   and metric_kind(r["family"]) in ("quality", "sync", "identity")
                   and direction(r["family"], r["metric"]) is not None]
        for family, output in dict.fromkeys(quality):
            xs, ys, names = [], [], []
            for method, (key, x) in latency.items():
                vals = [float(r["value"]) for r in ok if r["metric"] == output and r["method"] == method]
                if vals:
                    xs.append(x)
                    ys.append(float(np.mean(vals)))
                    names.append(method)
            if not names:
                continue
            x_name = " / ".join(sorted({latency[m][0] for m in names}))
            fig = go.Figure(go.Scatter(x=xs, y=ys, mode="markers+text", text=names, textposition="top center",
                                       marker={"size": 11}))
            fig.update_layout(title=f"{output}{_arrow(family, output)} against latency", xaxis_title=f"{x_name} (ms)",
                              yaxis_title=output, template="plotly_white", width=900, height=560)
            figs[f"quality_vs_latency_{_slug(output)}"] = fig
    # drift over time
    for key in dict.fromkeys((c["benchmark"], c["subset"], c["curve"]) for c in curves):
        bench, subset, curve = key
        sel = [c for c in curves if (c["benchmark"], c["subset"], c["curve"]) == key and c["value"] != ""]
        if not sel:
            continue
        fig = go.Figure()
        for method in dict.fromkeys(c["method"] for c in sel):
            by_t: dict[float, list[float]] = defaultdict(list)
            for c in sel:
                if c["method"] == method:
                    by_t[float(c["t_seconds"])].append(float(c["value"]))
            ts = sorted(by_t)
            fig.add_trace(go.Scatter(x=ts, y=[float(np.mean(by_t[t])) for t in ts], mode="lines+markers", name=method))
        fig.update_layout(title=f"{bench} {subset}: {curve} over time (mean over streams)", xaxis_title="time (s)",
                          yaxis_title=CURVE_LABELS.get(curve, curve), template="plotly_white", width=900, height=520)
        figs[f"drift_{_slug(curve)}_{_slug(subset or bench)}"] = fig
    return figs


PNG_TIMEOUT_S = 300.0  # all PNGs of one report (mini-real, 31 figures: 12 s on the 2-core CPU)


def write_plots(figs: dict[str, object], folder: Path, png: bool = True) -> dict[str, str]:
    """Write ``<stem>.html`` (plotly.js in the folder once) and ``<stem>.png``; returns notes."""
    folder.mkdir(parents=True, exist_ok=True)
    for stem, fig in figs.items():
        with atomic_path(folder / f"{stem}.html") as tmp:
            fig.write_html(str(tmp), include_plotlyjs="directory", full_html=True)
    notes = {}
    if png and figs:
        finals = [folder / f"{stem}.png" for stem in figs]
        temps = [p.with_name(f".{p.name}.tmp.png") for p in finals]
        try:
            render_pngs_in_child(list(figs.values()), temps)
            for tmp, final in zip(temps, finals):
                os.replace(tmp, final)
        except Exception as error:  # noqa: BLE001 - PNGs are optional; HTML is always written
            notes["png"] = f"PNG export unavailable: {type(error).__name__}: {str(error).splitlines()[0][:300]}"
            for tmp in folder.glob(".*.tmp.png"):
                tmp.unlink()
    return notes


def render_pngs_in_child(figs: list, paths: list[Path], timeout_s: float = PNG_TIMEOUT_S) -> None:
    """Write each figure as a PNG through kaleido, in a child process killed after ``timeout_s``.

    Kaleido drives a headless Chromium and can hang for good (plotly/Kaleido#134, #419; seen here
    once in a test run); a child process in its own session, killed with its whole process group,
    bounds that. Raises ``subprocess.TimeoutExpired`` or ``RuntimeError`` (with the child's last
    error line) on failure.
    """
    with tempfile.TemporaryDirectory(prefix="rest-png-") as tmp:
        jobs = []
        for i, (fig, path) in enumerate(zip(figs, paths)):
            source = Path(tmp) / f"fig{i}.json"
            source.write_text(fig.to_json())
            jobs.append([str(source), str(path)])
        job_file = Path(tmp) / "jobs.json"
        job_file.write_text(json.dumps(jobs))
        env = dict(os.environ)
        if "BROWSER_PATH" not in env and Path(CHROMIUM).is_file():
            env["BROWSER_PATH"] = CHROMIUM  # kaleido needs a Chrome; Debian's chromium works
        root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        child = subprocess.Popen([sys.executable, "-c", "import sys; from eval.report import _render_png_jobs; "
                                  "_render_png_jobs(sys.argv[1])", str(job_file)],
                                 env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                 start_new_session=True)
        try:
            _, err = child.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)  # the child and the browser it started
            child.communicate()
            raise
        if child.returncode != 0:
            last = (err or "").strip().splitlines()
            raise RuntimeError(last[-1] if last else f"PNG export exited with status {child.returncode}")


def _render_png_jobs(job_file: str) -> None:
    """Child side of :func:`render_pngs_in_child`: ``[[figure.json, out.png], ...]`` -> PNGs."""
    import plotly.io as pio

    jobs = json.loads(Path(job_file).read_text())
    figs = [pio.from_json(Path(source).read_text()) for source, _ in jobs]
    pio.write_images(figs, [out for _, out in jobs], format="png")


def build_report(folders: list[Path], out: Path, png: bool = True) -> dict:
    """Write table.md, table.tex and plots/ for the results in ``folders`` into ``out``."""
    folders = [Path(f) for f in folders]
    rows, curves, methods_meta = read_results(folders)
    tables = build_tables(rows, methods_meta)
    figs = figures(rows, curves)
    notes = write_plots(figs, Path(out) / "plots", png=png)
    md = tables_markdown(tables)
    if figs:
        md += "\n## Plots\n\n" + "\n".join(f"- [{stem}](plots/{stem}.html)" + (
            f" ([png](plots/{stem}.png))" if "png" not in notes and png else "") for stem in figs) + "\n"
    for note in notes.values():
        md += f"\nNote: {note}\n"
    atomic_write_text(Path(out) / "table.md", md)
    atomic_write_text(Path(out) / "table.tex", tables_latex(tables))
    return {"tables": len(tables), "plots": len(figs), "notes": notes}
