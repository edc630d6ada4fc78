"""The per-cluster tables and file texts of a Phy folder: templates, params.py, TSV columns,
whitening inverse.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import numpy as np

from kilosnake.errors import KilosnakeError

logger = logging.getLogger(__name__)


PER_SPIKE_FILES = (
    "spike_times.npy",
    "spike_templates.npy",
    "spike_clusters.npy",
    "amplitudes.npy",
    "pc_features.npy",
    "template_features.npy",
)

TSV_FILES = (
    "cluster_KSLabel.tsv",
    "cluster_group.tsv",
    "cluster_ContamPct.tsv",
    "cluster_Amplitude.tsv",
)


#: phylib squeezes arrays: it needs at least this many templates and template-feature columns
MIN_PHY_TEMPLATES = 2


# --------------------------------------------------------------------------------------------
# what goes into the folder


@dataclasses.dataclass
class ClusterTable:
    """Per-cluster arrays of the export, already padded to at least two clusters."""

    templates: np.ndarray  # (n, nt0, Nchan) whitened, unit norm
    similar: np.ndarray  # (n, n) float32
    pc_feature_ind: np.ndarray  # (n, C)
    template_feature_ind: np.ndarray  # (n, K)
    good: np.ndarray  # (n,) bool
    contamination: np.ndarray  # (n,) in [0, 1]
    n_real: int  # clusters before padding
    reasons: tuple = ()  # (n,) why each cluster is good or mua (empty: not recorded)
    noise: np.ndarray | None = None  # (n,) bool: labelled noise (None: none is)

    @property
    def n(self) -> int:
        return int(self.templates.shape[0])

    def labels(self) -> list[str]:
        """Each cluster's label: ``noise``, ``good`` or ``mua``."""
        noise = np.zeros(self.n, bool) if self.noise is None else self.noise
        return ["noise" if z else "good" if g else "mua" for g, z in zip(self.good, noise)]


def pad_clusters(table: ClusterTable, n_min: int = MIN_PHY_TEMPLATES) -> ClusterTable:
    """Append empty clusters until there are ``n_min`` (phylib misreads a single template)."""
    n, extra = table.n, max(0, n_min - table.n)
    if extra == 0:
        return table
    _, nt0, nchan = table.templates.shape
    c = table.pc_feature_ind.shape[1]
    k = table.template_feature_ind.shape[1]
    similar = np.zeros((n + extra, n + extra), np.float32)
    similar[:n, :n] = table.similar
    new_ids = np.arange(n, n + extra)
    tf_rows = (new_ids[:, None] + np.arange(k)[None, :]) % (n + extra)
    return ClusterTable(
        np.concatenate([table.templates, np.zeros((extra, nt0, nchan), np.float32)]),
        similar,
        np.concatenate([table.pc_feature_ind, np.tile(np.arange(c), (extra, 1))]),
        np.concatenate([table.template_feature_ind, tf_rows]),
        np.concatenate([table.good, np.zeros(extra, bool)]),
        np.concatenate([table.contamination, np.ones(extra)]),
        table.n_real,
        tuple(table.reasons) + ("no spikes",) * extra if table.reasons else (),
        None if table.noise is None else np.concatenate([table.noise, np.zeros(extra, bool)]),
    )


def pad_template_feature_columns(ind: np.ndarray, k_min: int = MIN_PHY_TEMPLATES) -> np.ndarray:
    """Add columns to ``template_feature_ind`` until it has ``k_min`` (other template ids)."""
    n, k = ind.shape
    if k >= k_min or n == 0:
        return ind
    base = ind[:, :1] if k else np.arange(n)[:, None]  # no columns at all: a sort without spikes
    extra = (base + np.arange(1, k_min - k + 1)[None, :]) % n
    return np.concatenate([ind, extra], axis=1)


def phy_templates(templates: np.ndarray, nt0min: int) -> np.ndarray:
    """Templates with ``nt0min + 1`` leading zeros (the peak lands in the middle of the window)."""
    n, nt0, nchan = templates.shape
    out = np.zeros((n, nt0 + nt0min + 1, nchan), np.float32)
    out[:, nt0min + 1 :, :] = templates
    return out


def relative_dat_path(dat, folder) -> str:
    """``dat`` relative to ``folder``, with forward slashes (absolute if on another drive)."""
    dat_abs, folder_abs = os.path.abspath(dat), os.path.abspath(folder)
    try:
        rel = os.path.relpath(dat_abs, folder_abs)
    except ValueError:  # another drive on Windows
        rel = dat_abs
    return Path(rel).as_posix()


def params_py_text(
    dat_path: str,
    n_channels_dat: int,
    dtype: str,
    sample_rate: float,
    template_scaling: float,
    offset: int = 0,
) -> str:
    """The text of ``params.py``; every value written with ``repr()``."""
    values = {
        "dat_path": dat_path,
        "n_channels_dat": int(n_channels_dat),
        "dtype": str(dtype),
        "offset": int(offset),
        "sample_rate": float(sample_rate),
        "hp_filtered": False,
        "template_scaling": float(template_scaling),
    }
    return "".join(f"{k} = {v!r}\n" for k, v in values.items())


def tsv_text(field: str, values) -> str:
    """A two-column ``cluster_id<TAB>field`` table for every cluster id."""
    rows = [f"cluster_id\t{field}"] + [f"{i}\t{v}" for i, v in enumerate(values)]
    return "\n".join(rows) + "\n"


def cluster_amplitudes(amp_sums: np.ndarray, counts: np.ndarray, gain: float) -> np.ndarray:
    """Mean over a cluster's spikes of ``amplitude × ptp(unwhitened template) × gain`` (or 0),
    from the per-cluster sums of ``amplitude × ptp`` and spike counts."""
    return np.where(counts > 0, amp_sums / np.maximum(counts, 1), 0.0) * gain


def inverse_whitening(w: np.ndarray) -> np.ndarray:
    """Inverse of the whitening matrix (pseudo-inverse if singular)."""
    try:
        return np.linalg.inv(w)
    except np.linalg.LinAlgError:
        logger.warning("whitening matrix is singular; writing its pseudo-inverse")
        return np.linalg.pinv(w)


class PhyExportError(KilosnakeError):
    """The Phy folder would be invalid; the message says which file and why."""
