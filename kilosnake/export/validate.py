"""Validation of a written Phy folder: shapes, ranges, params.py, and phylib loading it."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np

from kilosnake.export.sources import is_sorted_in_blocks
from kilosnake.export.tables import MIN_PHY_TEMPLATES, TSV_FILES, PhyExportError
from kilosnake.io.phy import read_params_py
from kilosnake.io.streaming import (
    npy_blocks,
)

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# validation


def _load(folder: Path, name: str) -> np.ndarray:
    path = folder / name
    if not path.is_file():
        raise PhyExportError(f"{name} is missing from {folder}")
    return np.load(path, mmap_mode="r", allow_pickle=False)


def _expect(cond: bool, message: str) -> None:
    if not cond:
        raise PhyExportError(message)


def check_shapes(folder: Path) -> dict:
    """Our own checks of every file's dtype and shape (ALGORITHM.md §5.1); return the sizes."""
    st = _load(folder, "spike_times.npy")
    _expect(st.dtype == np.uint64 and st.ndim == 1, f"spike_times.npy: {st.dtype} {st.shape}")
    _expect(is_sorted_in_blocks(folder / "spike_times.npy"), "spike_times.npy is not sorted")
    n = st.size
    for name, dtype in (
        ("spike_templates.npy", np.uint32),
        ("spike_clusters.npy", np.uint32),
        ("amplitudes.npy", np.float64),
    ):
        a = _load(folder, name)
        _expect(
            a.dtype == dtype and a.shape == (n,),
            f"{name}: {a.dtype} {a.shape}, want {np.dtype(dtype)} ({n},)",
        )
    tmpl = _load(folder, "templates.npy")
    _expect(
        tmpl.dtype == np.float32 and tmpl.ndim == 3, f"templates.npy: {tmpl.dtype} {tmpl.shape}"
    )
    n_t, _, n_c = tmpl.shape
    _expect(n_t >= MIN_PHY_TEMPLATES, f"templates.npy has {n_t} templates (phylib needs 2)")
    _expect(
        n == 0 or npy_max(folder / "spike_templates.npy") < n_t,
        "spike_templates.npy refers to missing templates",
    )
    cm = _load(folder, "channel_map.npy")
    _expect(cm.dtype == np.int32 and cm.shape == (n_c,), f"channel_map.npy: {cm.dtype} {cm.shape}")
    pos = _load(folder, "channel_positions.npy")
    _expect(
        pos.dtype == np.float64 and pos.shape == (n_c, 2), f"channel_positions.npy: {pos.shape}"
    )
    _expect(np.unique(pos, axis=0).shape[0] == n_c, "channel_positions.npy has duplicates")
    _expect(_load(folder, "channel_shanks.npy").shape == (n_c,), "channel_shanks.npy shape")
    _expect(
        _load(folder, "similar_templates.npy").shape == (n_t, n_t), "similar_templates.npy shape"
    )
    for name in ("whitening_mat.npy", "whitening_mat_inv.npy"):
        w = _load(folder, name)
        _expect(w.dtype == np.float64 and w.shape == (n_c, n_c), f"{name}: {w.shape}")
    check_feature_files(folder, n, n_t, n_c)
    check_cluster_tables(folder, n_t)
    params = check_params_py(folder, cm)
    return {"n_spikes": int(n), "n_templates": int(n_t), "n_channels": int(n_c), "params": params}


def npy_max(path: Path) -> int:
    """Largest value of a non-empty integer ``.npy`` file, read in blocks."""
    return max(int(block.max()) for _, block in npy_blocks(path) if block.size)


def check_feature_files(folder: Path, n: int, n_t: int, n_c: int) -> None:
    pc, pci = _load(folder, "pc_features.npy"), _load(folder, "pc_feature_ind.npy")
    _expect(
        pc.dtype == np.float32 and pc.ndim == 3 and pc.shape[0] == n,
        f"pc_features.npy: {pc.dtype} {pc.shape}",
    )
    _expect(
        pci.dtype == np.uint32 and pci.shape == (n_t, pc.shape[2]),
        f"pc_feature_ind.npy: {pci.dtype} {pci.shape}, want ({n_t}, {pc.shape[2]})",
    )
    _expect(pci.size == 0 or int(pci.max()) < n_c, "pc_feature_ind.npy refers to missing channels")
    tf, tfi = _load(folder, "template_features.npy"), _load(folder, "template_feature_ind.npy")
    _expect(
        tf.dtype == np.float32 and tf.ndim == 2 and tf.shape[0] == n,
        f"template_features.npy: {tf.dtype} {tf.shape}",
    )
    _expect(
        tfi.dtype == np.uint32 and tfi.shape == (n_t, tf.shape[1]) and tf.shape[1] >= 2,
        f"template_feature_ind.npy: {tfi.dtype} {tfi.shape}",
    )
    _expect(
        tfi.size == 0 or int(tfi.max()) < n_t,
        "template_feature_ind.npy refers to missing templates",
    )


def check_cluster_tables(folder: Path, n_t: int) -> None:
    for name in TSV_FILES:
        lines = (folder / name).read_text().splitlines()
        _expect(len(lines) == n_t + 1, f"{name}: {len(lines) - 1} rows for {n_t} clusters")
    for line in (folder / "cluster_ContamPct.tsv").read_text().splitlines()[1:]:
        v = float(line.split("\t")[1])
        _expect(0.0 <= v <= 100.0, f"cluster_ContamPct.tsv: {v} outside [0, 100]")


def check_params_py(folder: Path, channel_map) -> dict:
    p = read_params_py(folder)
    for key in ("dat_path", "n_channels_dat", "dtype", "offset", "sample_rate", "hp_filtered"):
        _expect(key in p, f"params.py lacks {key}")
    dat = p["dat_path"]
    _expect(
        isinstance(dat, str) and "\\" not in dat,
        f"params.py dat_path {dat!r} must be one path written with forward slashes",
    )
    _expect(
        channel_map.size == 0 or int(channel_map.max()) < p["n_channels_dat"],
        "channel_map.npy refers to rows beyond n_channels_dat",
    )
    raw = (folder / dat) if not os.path.isabs(dat) else Path(dat)
    _expect(raw.is_file(), f"params.py dat_path {dat!r} does not resolve to a file from {folder}")
    row = p["n_channels_dat"] * np.dtype(p["dtype"]).itemsize
    _expect(
        (raw.stat().st_size - p["offset"]) % row == 0,
        f"{raw} size is not a multiple of n_channels_dat x itemsize",
    )
    return p


def phylib_can_load(sizes: dict) -> bool:
    """phylib squeezes arrays: it needs at least two spikes and two channels."""
    return sizes["n_spikes"] >= 2 and sizes["n_channels"] >= 2


def check_with_phylib(folder: Path, sizes: dict) -> None:
    """Load the folder with phylib's TemplateModel and read a waveform of every cluster."""
    from phylib.io.model import load_model

    before = set(os.listdir(folder))
    try:
        model = load_model(folder / "params.py")
    except Exception as exc:
        raise PhyExportError(
            f"phylib cannot load the folder: {exc.__class__.__name__}: {exc}"
        ) from exc
    try:
        _expect(model.n_spikes == sizes["n_spikes"], f"phylib sees {model.n_spikes} spikes")
        _expect(
            model.n_templates == sizes["n_templates"],
            f"phylib sees {model.n_templates} templates, the folder has {sizes['n_templates']}",
        )
        _expect(model.traces is not None, "phylib did not find the raw data file")
        # each cluster's first spike, found in one pass (phylib's per-cluster lookup scans
        # every spike for each cluster)
        clusters, first = np.unique(model.spike_clusters, return_index=True)
        first_spike = dict(zip(clusters.tolist(), first.tolist()))
        for c in model.cluster_ids:
            spike = np.array([first_spike[int(c)]])
            channels = model.get_template(int(c)).channel_ids
            w = model.get_waveforms(spike, channels)
            _expect(
                w is not None and w.shape[0] == 1 and w.shape[2] == len(channels),
                f"phylib could not read a waveform of cluster {c}",
            )
    finally:
        model.close()
        for name in set(os.listdir(folder)) - before:  # phylib writes into the folder
            path = folder / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def validate_phy(folder) -> dict:
    """Check a Phy folder: every file's dtype and shape, then phylib loading it.

    Parameters
    ----------
    folder : path
        The Phy folder (``params.py`` and the ``.npy``/``.tsv`` files).

    Returns
    -------
    dict
        ``n_spikes``, ``n_templates``, ``n_channels``, ``params`` and ``phylib_checked``.

    Raises
    ------
    PhyExportError
        Naming the first problem found.
    """
    folder = Path(folder)
    sizes = check_shapes(folder)
    sizes["phylib_checked"] = phylib_can_load(sizes)
    if sizes["phylib_checked"]:
        check_with_phylib(folder, sizes)
    else:
        logger.warning(
            "the folder has %d spike(s) and %d channel(s): phylib (and Phy) cannot "
            "open it; only shapes and dtypes were checked",
            sizes["n_spikes"],
            sizes["n_channels"],
        )
    return sizes
