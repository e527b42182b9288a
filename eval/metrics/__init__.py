"""Talking-head metrics: a registry of small pure functions with their metadata.

Use :func:`list_metrics`, :func:`get_metric` and :func:`compute_metric`; inputs are
:class:`EvalSample` objects. Heavy libraries are imported inside the metric functions.
"""

from eval.metrics.registry import (EvalSample, MetricInfo, compute_metric, get_metric, list_metrics,
                                   register_metric)

__all__ = ["EvalSample", "MetricInfo", "compute_metric", "get_metric", "list_metrics", "register_metric"]
