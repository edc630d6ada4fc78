"""The sorting core: universal waveforms, template learning and the final matching pass.

Stages (each one a Snakemake rule writing one Zarr store):

* :func:`kilosnake.sorting.detect.run_detect` → ``detect.zarr``: universal temporal waveforms
  (``wTEMP``), the PCA basis (``wPCA``), channel neighbourhoods, sub-sample alignment kernels,
  the learning schedule and the templates the learner starts from.
* :func:`kilosnake.sorting.learn.run_learn` → ``templates.zarr``: Kilosort 2.5 online template
  learning (rank-3 templates refined by matching pursuit over the batches).
* :func:`kilosnake.sorting.final_pass.run_final_pass` → ``spikes.zarr``: matching pursuit with
  frozen templates over every batch, with template and PC features.

Every numerical function takes a :class:`kilosnake.runtime.backend.Backend` and runs on NumPy or
CuPy.
"""
