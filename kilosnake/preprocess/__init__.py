"""Preprocessing (rules ``check_input``, ``shank_input``, ``whitening``, ``preprocess`` and
``gather_preprocessed``, ``preprocess.smk``): from the raw file to ``preprocessed.zarr``.

``check_input`` (the recording and probe looked at before any heavy work → ``input.json``),
``shank_input`` (one shank's ``input.json``), ``filters`` (high-pass and common reference of raw
batches), ``whitening`` (``whitening.zarr``), ``traces`` (filtered, whitened int16 traces →
``preprocessed.zarr``), ``gather`` (the pointer store of a scattered run).
"""
