"""Plots and reports from run records (installed as ``fpsim.analysis``); arrives with the run records."""
