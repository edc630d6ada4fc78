"""Reading the sorting core's stores for curation, and the small array helpers curation shares.

The sorting core writes ``spikes.zarr`` (per-spike arrays sorted by time) and ``templates.zarr``
(low-rank templates); see ``docs/stores.md``. Curation never rewrites them: it writes label maps
and keep masks. The helpers here read what curation needs, check that the arrays agree with each
other, build dense templates, group spikes by label and carry per-spike features from the channel
(or template) list they were computed on to another one.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from kilosnake.errors import KilosnakeError
from kilosnake.io.probe import probe_from_store
from kilosnake.io.store import open_store
from kilosnake.io.streaming import blocks

logger = logging.getLogger(__name__)


class StoreMismatchError(KilosnakeError):
    """Two stores (or two arrays of one store) disagree about a shape."""


@dataclasses.dataclass
class Spikes:
    """The per-spike columns of ``spikes.zarr`` that curation reads (features aside)."""

    time: np.ndarray  # (n,) uint64, sorted
    template: np.ndarray  # (n,) uint32
    amplitude: np.ndarray  # (n,) float32
    score: np.ndarray  # (n,) float32
    n_templates: int

    @property
    def n_spikes(self) -> int:
        return int(self.time.size)


@dataclasses.dataclass
class Templates:
    """Low-rank templates of ``templates.zarr``."""

    W: np.ndarray  # (nt0, Nfilt, rank) temporal factors
    U: np.ndarray  # (Nchan, Nfilt, rank) spatial factors
    mu: np.ndarray  # (Nfilt,)
    wPCA: np.ndarray  # (nt0, nPCs)
    nt0: int
    nt0min: int

    @property
    def n_templates(self) -> int:
        return int(self.W.shape[1])

    @property
    def n_channels(self) -> int:
        return int(self.U.shape[0])

    def dense(self) -> np.ndarray:
        """Unit-norm whitened waveforms, shape (Nfilt, nt0, Nchan), float32 (``mu`` left out)."""
        return dense_templates(self.W, self.U)


def dense_templates(W: np.ndarray, U: np.ndarray) -> np.ndarray:
    """``Σ_k outer(W[:, i, k], U[:, i, k])`` for every template i → (Nfilt, nt0, Nchan) float32."""
    return np.einsum("tik,cik->itc", np.asarray(W, np.float64), np.asarray(U, np.float64)).astype(
        np.float32
    )


def read_spikes(path) -> Spikes:
    """Time, template, amplitude and score of every spike, checked for consistency."""
    g = open_store(path)
    time = np.asarray(g["time"][...], dtype=np.uint64)
    template = np.asarray(g["template"][...], dtype=np.uint32)
    amplitude = np.asarray(g["amplitude"][...], dtype=np.float32)
    score = np.asarray(g["score"][...], dtype=np.float32)
    n_templates = int(g["similar_templates"].shape[0])
    lengths = {len(time), len(template), len(amplitude), len(score)}
    if len(lengths) != 1:
        raise StoreMismatchError(f"{path}: per-spike arrays have different lengths {lengths}")
    if template.size and int(template.max()) >= n_templates:
        raise StoreMismatchError(
            f"{path}: template id {int(template.max())} >= number of "
            f"templates {n_templates} (similar_templates)"
        )
    return Spikes(time, template, amplitude, score, n_templates)


@dataclasses.dataclass
class SpikeArrays:
    """The per-spike columns of ``spikes.zarr`` left in the store, read in blocks or by rows
    (:mod:`kilosnake.io.streaming`), so that curation memory does not grow with the recording."""

    time: object  # (n,) uint64, sorted
    template: object  # (n,) uint32
    amplitude: object  # (n,) float32
    score: object  # (n,) float32
    n_templates: int

    @property
    def n_spikes(self) -> int:
        return int(self.time.shape[0])


def open_spikes(path) -> SpikeArrays:
    """The per-spike columns of ``spikes.zarr`` (not read), checked for consistency."""
    g = open_store(path)
    arrays = {name: g[name] for name in ("time", "template", "amplitude", "score")}
    n_templates = int(g["similar_templates"].shape[0])
    lengths = {name: int(a.shape[0]) for name, a in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise StoreMismatchError(f"{path}: per-spike arrays have different lengths {lengths}")
    top = max((int(b.max()) for _, b in blocks(arrays["template"]) if b.size), default=-1)
    if top >= n_templates:
        raise StoreMismatchError(
            f"{path}: template id {top} >= number of templates {n_templates} (similar_templates)"
        )
    return SpikeArrays(**arrays, n_templates=n_templates)


def read_feature_indices(path) -> dict:
    """``pc_feature_ind``, ``template_feature_ind`` and ``similar_templates`` of ``spikes.zarr``."""
    g = open_store(path)
    return {
        "pc_feature_ind": np.asarray(g["pc_feature_ind"][...], dtype=np.int64),
        "template_feature_ind": np.asarray(g["template_feature_ind"][...], dtype=np.int64),
        "similar_templates": np.asarray(g["similar_templates"][...], dtype=np.float32),
    }


def read_templates(path) -> Templates:
    """The low-rank templates and the PC basis of ``templates.zarr``."""
    g = open_store(path)
    W = np.asarray(g["W"][...], dtype=np.float32)
    U = np.asarray(g["U"][...], dtype=np.float32)
    mu = np.asarray(g["mu"][...], dtype=np.float32)
    wPCA = np.asarray(g["wPCA"][...], dtype=np.float32)
    nt0, nt0min = int(g.attrs["nt0"]), int(g.attrs["nt0min"])
    if W.shape[1] != U.shape[1] or W.shape[2] != U.shape[2] or mu.shape != (W.shape[1],):
        raise StoreMismatchError(f"{path}: W {W.shape}, U {U.shape} and mu {mu.shape} disagree")
    if wPCA.shape[0] != W.shape[0]:
        raise StoreMismatchError(f"{path}: wPCA {wPCA.shape} and W {W.shape} disagree on nt0")
    return Templates(W, U, mu, wPCA, nt0, nt0min)


def read_probe_geometry(whitening_path) -> dict:
    """``chan_map`` (int64), ``xc``, ``yc``, ``kcoords`` (float64) of the sorted channels."""
    probe = probe_from_store(open_store(whitening_path))
    return {"chan_map": probe.chan_map, "xc": probe.xc, "yc": probe.yc, "kcoords": probe.kcoords}


def check_template_counts(spikes: Spikes, templates: Templates, indices: dict) -> None:
    """Raise when spikes.zarr and templates.zarr describe different template sets."""
    counts = {
        "similar_templates": spikes.n_templates,
        "W": templates.n_templates,
        "pc_feature_ind": indices["pc_feature_ind"].shape[0],
        "template_feature_ind": indices["template_feature_ind"].shape[0],
    }
    if len(set(counts.values())) != 1:
        raise StoreMismatchError(f"template counts disagree: {counts}")


# --------------------------------------------------------------------------------------------
# grouping and relabelling


def members_by_label(labels: np.ndarray, n_labels: int) -> list[np.ndarray]:
    """Spike indices of each label 0..n_labels-1, each in ascending (time) order."""
    labels = np.asarray(labels, dtype=np.int64)
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(n_labels + 1))
    return [order[bounds[i] : bounds[i + 1]] for i in range(n_labels)]


def column_permutations(src_rows: np.ndarray, dst_rows: np.ndarray) -> np.ndarray:
    """Where each entry of ``dst_rows[p]`` sits in ``src_rows[p]`` (-1 when absent).

    Parameters
    ----------
    src_rows, dst_rows : ndarray of int, shape (P, C)
        Channel (or template) lists the features were computed on, and the lists wanted.

    Returns
    -------
    ndarray of int64, shape (P, C)
    """
    src_rows = np.asarray(src_rows, dtype=np.int64)
    dst_rows = np.asarray(dst_rows, dtype=np.int64)
    equal = dst_rows[:, :, None] == src_rows[:, None, :]
    found = equal.any(axis=2)
    return np.where(found, equal.argmax(axis=2), -1)


def remap_columns(
    values: np.ndarray,
    src_ids: np.ndarray,
    dst_ids: np.ndarray,
    src_table: np.ndarray,
    dst_table: np.ndarray,
) -> np.ndarray:
    """Carry per-spike features onto another channel (or template) list.

    Spike ``s`` has features ``values[s, ..., j]`` on the entries ``src_table[src_ids[s]]``; the
    result holds them on ``dst_table[dst_ids[s]]``, with 0 where the wanted entry is absent from
    the source list.

    Parameters
    ----------
    values : ndarray, shape (n, ..., C)
    src_ids, dst_ids : ndarray of int, shape (n,)
        Rows of ``src_table`` / ``dst_table`` for each spike.
    src_table, dst_table : ndarray of int, shape (_, C)

    Returns
    -------
    ndarray, same shape and dtype as ``values``
    """
    values = np.asarray(values)
    if values.shape[0] == 0:
        return values.copy()
    src_ids = np.asarray(src_ids, dtype=np.int64)
    dst_ids = np.asarray(dst_ids, dtype=np.int64)
    n_dst = max(1, int(dst_table.shape[0]))
    codes, inverse = np.unique(src_ids * n_dst + dst_ids, return_inverse=True)  # distinct pairs
    perms = column_permutations(src_table[codes // n_dst], dst_table[codes % n_dst])
    if np.array_equal(perms, np.broadcast_to(np.arange(perms.shape[1]), perms.shape)):
        return values.copy()  # every spike keeps its list (the usual case)
    perm = perms[inverse.ravel()]  # (n, C)
    shape = (perm.shape[0],) + (1,) * (values.ndim - 2) + (perm.shape[1],)
    gathered = np.take_along_axis(values, np.maximum(perm, 0).reshape(shape), axis=-1)
    return np.where((perm >= 0).reshape(shape), gathered, 0).astype(values.dtype)


def spike_counts(labels: np.ndarray, n_labels: int, keep: np.ndarray | None = None) -> np.ndarray:
    """Spikes per label (only kept spikes when ``keep`` is given)."""
    labels = np.asarray(labels, dtype=np.int64)
    if keep is not None:
        labels = labels[np.asarray(keep, dtype=bool)]
    return np.bincount(labels, minlength=n_labels)[:n_labels] if n_labels else np.zeros(0, int)
