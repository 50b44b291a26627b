"""Helpers of examples/compare_models.py: 2-D toy densities (data.py), the
five model families (models.py), sample-quality metrics (metrics.py) and the
Markdown / PNG output (report.py)."""
