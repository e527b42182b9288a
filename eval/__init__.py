"""Evaluation: metrics registry, benchmarks, baselines, runner, tables and plots."""
