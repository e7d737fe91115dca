"""Dagster orchestration of EMP Predator: thin assets over emp_core."""

import warnings

import dagster as dg

# Single-run backfill policies and a few APIs we use are marked beta/preview;
# we pin the version, so the warnings only add noise to every run and test.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)
