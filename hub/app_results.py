"""The evaluation hub's published results, as the demo's Results tab shows them (no Gradio here).

The eval hub writes one folder per benchmark: ``results/<benchmark>/results.csv`` (a tidy long table
with columns ``method, benchmark, clip, metric, value``) and ``table.md`` (its Markdown table).
:func:`load_results` gathers every benchmark into one Markdown text and one interactive plotly
figure (mean over clips per method and metric, with the standard deviation as error bars).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RESULT_COLUMNS", "ResultsView", "load_results"]

RESULT_COLUMNS = ("method", "benchmark", "clip", "metric", "value")
NO_RESULTS = ("**No results yet.** The evaluation hub has not published any benchmark in `{folder}`. "
              "Run an evaluation (see README, *Evaluation*) and press *Refresh*.")


@dataclass
class ResultsView:
    """What the Results tab shows: ``markdown`` always, ``figure`` (plotly) when there is data."""

    markdown: str
    figure: object | None = None  # plotly.graph_objects.Figure
    benchmarks: tuple[str, ...] = ()


def _read_table(csv_path: Path):
    import pandas as pd

    try:
        frame = pd.read_csv(csv_path)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{csv_path}: unreadable CSV ({type(exc).__name__})") from None
    missing = [c for c in RESULT_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{csv_path}: missing columns {missing}; expected {list(RESULT_COLUMNS)}")
    frame = frame[list(RESULT_COLUMNS)].copy()
    frame["value"] = pd.to_numeric(frame["value"], errors="coerce")
    return frame.dropna(subset=["value"])


def load_results(results_dir: str | os.PathLike) -> ResultsView:
    """Every ``<results_dir>/*/results.csv`` as Markdown + one plotly figure.

    A missing or empty folder gives a "no results yet" message; a malformed CSV is reported in the
    Markdown (the other benchmarks are still shown).
    """
    import pandas as pd

    folder = Path(results_dir)
    csvs = sorted(folder.glob("*/results.csv")) if folder.is_dir() else []
    frames, sections, problems = [], [], []
    for csv_path in csvs:
        name = csv_path.parent.name
        try:
            frame = _read_table(csv_path)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        if frame.empty:
            problems.append(f"{csv_path}: no numeric values")
            continue
        frames.append(frame)
        table_md = csv_path.parent / "table.md"
        if table_md.is_file():
            body = table_md.read_text(encoding="utf-8").strip()
        else:  # the eval hub's table is missing: a plain mean table instead
            means = frame.pivot_table(index="method", columns="metric", values="value", aggfunc="mean")
            body = means.to_markdown(floatfmt=".4g") if _has_tabulate() else "```\n" + means.to_string() + "\n```"
        clips = frame["clip"].nunique()
        sections.append(f"### {name}\n\n{clips} clip(s), {frame['method'].nunique()} method(s)\n\n{body}")
    if not frames:
        text = NO_RESULTS.format(folder=folder)
        if problems:
            text += "\n\n" + "\n".join(f"- {p}" for p in problems)
        return ResultsView(markdown=text)
    data = pd.concat(frames, ignore_index=True)
    markdown = "\n\n".join(sections)
    if problems:
        markdown += "\n\n**Skipped:**\n" + "\n".join(f"- {p}" for p in problems)
    return ResultsView(markdown=markdown, figure=_figure(data),
                       benchmarks=tuple(sorted(data["benchmark"].astype(str).unique())))


def _has_tabulate() -> bool:
    import importlib.util

    return importlib.util.find_spec("tabulate") is not None


def _figure(data):
    """Bars of the mean over clips (± std) per method, one panel per metric, benchmarks as colours."""
    import plotly.express as px

    summary = (data.groupby(["benchmark", "metric", "method"], as_index=False)["value"]
               .agg(mean="mean", std="std", clips="count"))
    summary["std"] = summary["std"].fillna(0.0)
    metrics = sorted(summary["metric"].unique())
    columns = min(3, len(metrics))
    fig = px.bar(summary, x="method", y="mean", error_y="std", color="benchmark", barmode="group",
                 facet_col="metric", facet_col_wrap=columns, facet_col_spacing=0.06,
                 category_orders={"metric": metrics}, hover_data=["clips"],
                 labels={"mean": "mean over clips", "method": ""})
    fig.update_yaxes(matches=None, showticklabels=True)  # every metric on its own scale
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=", 1)[-1]))
    rows = -(-len(metrics) // columns)
    fig.update_layout(height=320 * rows + 80, margin={"t": 60, "l": 40, "r": 20, "b": 40},
                      legend_title_text="benchmark")
    return fig
