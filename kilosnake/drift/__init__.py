"""Drift: Kilosort 2.5 registration as its own stage (rule ``drift``, ``drift.smk``).

``suitability`` (whether a probe suits registration), ``detection`` (spikes and their depths),
``registration`` (fingerprints per batch, rigid then block-wise shifts), ``estimate`` (the stage:
``preprocessed.zarr`` → ``drift.zarr``) and ``plot`` (rule ``drift_plot``: ``drift.zarr`` →
``drift.png``). The store itself and the
reader that applies the correction live in :mod:`kilosnake.io` (``drift_store``,
``corrected_traces``), since every later stage reads through them.
"""
