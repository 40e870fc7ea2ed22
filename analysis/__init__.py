"""Plots and reports from run records (installed as ``fpsim.analysis``); arrives with the run records.

:func:`histogram` (binade histograms of ``|x|`` with per-format underflow, subnormal and overflow
fractions) and :func:`binade_bars` (the one bar geometry of those histograms) are importable from
here; :mod:`fpsim.analysis.format_plot` draws format ranges and spacing.
"""

from fpsim.analysis.histogram import Histogram, FormatRow, binade_bars, histogram

__all__ = ["FormatRow", "Histogram", "binade_bars", "histogram"]
