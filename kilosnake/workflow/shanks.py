"""Multi-shank probes: every shank sorted on its own, the shanks joined in one Phy folder.

Shanks of a probe are far apart (Neuropixels 2.0: 250 µm), so no unit spans two of them. The
workflow therefore sorts shank ``k`` (the ``k``-th of the probe's sorted shank ids) as the
sub-recording ``<recording>/shank<k>``: its ``input.json`` is the recording's with the probe
restricted to that shank (:func:`write_shank_input`), and every stage from whitening to the
score cutoff runs on it unchanged, in its own job, under ``results/<recording>/shank<k>/``. The
seed of shank ``k`` is ``seed + k`` (:func:`shank_seed`): it depends on the shank, not on the job,
so the result does not depend on how the work is laid out.

How the shank-and-stage jobs are laid out is an execution choice (``scatter_shanks``); both
layouts run the same per-shank computations on the same inputs, so the Phy folder is the same:

* ``scatter_shanks: true``: one job per shank and stage, on the sub-recording
  ``<recording>/shank<k>``: every stage writes ``results/<recording>/shank<k>/<store>.zarr``;
* ``scatter_shanks: false``: one job per stage for the recording, which loops over the shanks
  (:func:`per_shank`): its store ``results/<recording>/<store>.zarr`` is a *shank set*, a Zarr
  group whose child groups ``shank<k>`` are the shanks' stores (each as a job of the other layout
  writes it); the shanks' ``input.json`` are ``results/<recording>/shank<k>/input.json`` in
  both layouts.

The export joins the shanks (:func:`join_sources`): spikes in time order (ties by shank), cluster
and template ids of shank ``k`` offset by the cluster counts of the shanks before it (ids stay
unique), channels shank after shank (``channel_map``, ``channel_positions``, ``channel_shanks``
of every shank), templates placed on their shank's channels, the whitening matrix block-diagonal.
"""

from __future__ import annotations

import contextlib
import re
import shutil
from pathlib import Path

from kilosnake.io.probe import load_probe
from kilosnake.io.shank_sets import SHANK_SET, shard
from kilosnake.io.store import publish

_SUB = re.compile(r"^(?P<recording>[^/]+)/shank(?P<shank>[0-9]+)$")


def sub_recording(recording: str, shank: int) -> str:
    """The name of shank ``shank`` of ``recording`` in the workflow."""
    return f"{recording}/shank{int(shank)}"


def split_name(name: str) -> tuple[str, int | None]:
    """``(recording, shank index)`` of a workflow recording name (shank None: the whole one)."""
    m = _SUB.match(name)
    return (m["recording"], int(m["shank"])) if m else (name, None)


def shank_seed(seed: int, shank: int) -> int:
    """The seed of shank ``shank``: ``seed + shank``."""
    return int(seed) + int(shank)


def probe_shank_count(probe_source) -> int:
    """Shanks of a probe file (1 when it cannot be read: check_input then says why)."""

    try:
        return int(load_probe(probe_source).shank_ids().size)
    except Exception:  # a missing or broken probe fails in check_input with its message
        return 1


def stack_images(paths, out) -> None:
    """The PNG images ``paths`` one above the other in ``out`` (the shanks' figures)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg
    import numpy as np

    images = [mpimg.imread(p) for p in paths]
    width = max(im.shape[1] for im in images)
    padded = [
        np.pad(im, ((0, 0), (0, width - im.shape[1]), (0, 0)), constant_values=1.0) for im in images
    ]
    mpimg.imsave(out, np.concatenate(padded, axis=0))


@contextlib.contextmanager
def per_shank(n_shanks: int | None, p: dict, inputs: dict, stores: dict, figures: dict = None):
    """The calls a stage job makes: one for a recording sorted whole (or one shank of it),
    one per shank for a loop job on a multi-shank recording.

    Yields a list of ``(inputs, outputs, p)``, one per call: ``inputs`` with shank sets and
    per-shank lists resolved to the shank's (:func:`shard`), ``outputs`` the shank's store in
    each output shank set (written at ``<store>.tmp/shank<k>``) and the shank's figures, ``p``
    with the shank's seed. When the calls are done the shank sets are completed and renamed into
    place, and each figure is the shanks' figures stacked; on an error nothing is left.

    Parameters
    ----------
    n_shanks : int or None
        Shanks to loop over; None (or 1) for a single call with everything as given.
    p : dict
        The stage's resolved parameters (the recording's seed).
    inputs : dict
        The job's inputs by name.
    stores : dict
        Output stores by name.
    figures : dict, optional
        Output images by name.
    """
    figures = figures or {}
    if not n_shanks or n_shanks == 1:
        yield [(dict(inputs), {**stores, **figures}, p)]
        return
    import zarr

    tmps = {name: Path(f"{path}.tmp") for name, path in stores.items()}
    parts = {
        name: [Path(f"{path}.shank{k}.png") for k in range(n_shanks)]
        for name, path in figures.items()
    }
    for tmp in tmps.values():
        if tmp.exists():
            shutil.rmtree(tmp)
        zarr.open_group(str(tmp), mode="w", zarr_format=3)
    calls = []
    for k in range(n_shanks):
        outputs = {name: str(tmp / f"shank{k}") for name, tmp in tmps.items()}
        outputs.update({name: str(files[k]) for name, files in parts.items()})
        calls.append(
            (
                {name: shard(v, k, n_shanks) for name, v in inputs.items()},
                outputs,
                {**p, "seed": shank_seed(p["seed"], k)},
            )
        )
    try:
        yield calls
        for name, files in parts.items():
            stack_images(files, figures[name])
        for name, tmp in tmps.items():
            zarr.open_group(str(tmp), mode="r+").attrs.update(
                {SHANK_SET: int(n_shanks), "complete": True}
            )
            publish(tmp, Path(stores[name]))
    except BaseException:
        for tmp in tmps.values():
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        for files in parts.values():
            for f in files:
                f.unlink(missing_ok=True)
