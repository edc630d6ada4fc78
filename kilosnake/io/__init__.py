"""I/O: everything that reads or writes files, shared by the stages below the workflow.

``recording`` (raw binary files, SpikeGLX ``.meta``), ``probe`` (probe descriptions; where each
stage reads its probe from), ``input_json`` (the checked description every stage reads),
``store`` (atomic Zarr stores with provenance), ``traces`` (``preprocessed.zarr``: layout,
readers, batch geometry), ``corrected_traces`` (the drift-corrected reader), ``drift_store``
(``drift.zarr``), ``blocks`` and ``shank_sets`` (the stores of scattered stages),
``streaming`` (per-spike arrays in blocks), ``prefetch`` (reading ahead), ``phy`` (reading a Phy
folder). Imports only :mod:`kilosnake.runtime` and the base modules.
"""
