"""Curation of the sorter's output: merges, splits, score cutoff, unit labels and metrics.

Each stage reads ``spikes.zarr`` (never rewritten) and writes label maps and keep masks:

* :mod:`~kilosnake.curation.ccg`: refractoriness statistics (Q, R) of correlograms;
* :mod:`~kilosnake.curation.merge`: templates that are one neuron → ``merge.zarr``;
* :mod:`~kilosnake.curation.split`: clusters holding two neurons → ``split.zarr``;
* :mod:`~kilosnake.curation.cutoff`: per-cluster score threshold, good/mua → ``cutoff.zarr``;
* :mod:`~kilosnake.curation.metrics`: per-unit metrics of ``cluster_metrics.tsv``;
* :mod:`~kilosnake.curation.data`: reading the stores and carrying features between lists.

Formulas and label rules: ``docs/metrics.md``.
"""
