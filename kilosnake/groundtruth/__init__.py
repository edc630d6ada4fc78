"""Ground-truth tooling beside the stages: the recording generator, the scorer, the scorecard.

Used by the demo (rules ``demo_recording`` and ``scorecard``, ``groundtruth.smk``), the tests and
the benchmarks. ``presets`` (configuration), ``units``, ``noise``, ``motion`` and ``render`` (the
generator's parts), ``generate`` (writes a recording, its probe and ``<name>_gt.npz``), ``truth``
(:func:`~kilosnake.groundtruth.truth.load_ground_truth`, the one reader of that file),
``matching`` and ``score`` (accuracy per unit), ``scorecard`` (the text), ``drift_error``
(a drift estimate against the true displacement).
"""
