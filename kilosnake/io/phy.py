"""Reading a Phy folder: params.py (parsed, never executed), TSV columns, spike and template
arrays.
"""

from __future__ import annotations

import ast
import csv
import dataclasses
import functools
import logging
from pathlib import Path

import numpy as np

from kilosnake.errors import InputError

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# the sort's outputs


@dataclasses.dataclass
class PhyView:
    """The arrays of a Phy folder the report draws from."""

    spike_times: np.ndarray  # (n,) samples
    spike_clusters: np.ndarray  # (n,)
    amplitudes: np.ndarray  # (n,) template scaling
    templates: np.ndarray  # (n_clusters, nt0, Nchan) un-whitened, unit scaling
    positions: np.ndarray  # (Nchan, 2)
    shanks: np.ndarray  # (Nchan,)
    labels: dict  # cluster → KSLabel
    metrics: dict  # cluster → {column: float}
    amplitude_column: str

    def spikes_of(self, cluster: int) -> np.ndarray:
        """Indices of the spikes of ``cluster``, in time order (no per-spike index is kept)."""
        return np.flatnonzero(self.spike_clusters == cluster)

    @functools.cached_property
    def peak_channels(self) -> np.ndarray:
        """The channel with the largest peak-to-peak of every template (computed once)."""
        ptp = self.templates.max(axis=1) - self.templates.min(axis=1)
        return ptp.argmax(axis=1)

    @functools.cached_property
    def peak_to_peak(self) -> np.ndarray:
        """Peak-to-peak of every un-whitened template on its largest channel (computed once)."""
        return (self.templates.max(axis=1) - self.templates.min(axis=1)).max(axis=1)


#: columns of ``cluster_metrics.tsv`` that hold text (the others are numbers)
TEXT_METRICS = ("label_reason",)


def read_tsv(path) -> list[dict]:
    """Rows of a tab-separated file with a header (empty when the file is missing)."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def _number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return float("nan")


def _signed(values: np.ndarray, dtype) -> np.ndarray:
    """``values`` (1-D) as the signed integer ``dtype``: the same memory when it is the unsigned
    type of that size (Phy's uint64 times, uint32 ids), else a converted copy."""
    values = values.ravel()
    dtype = np.dtype(dtype)
    if values.dtype.kind == "u" and values.dtype.itemsize == dtype.itemsize:
        return values.view(dtype)
    return values.astype(dtype, copy=False)


def read_phy(phy_dir) -> PhyView:
    """Read the Phy folder written by the ``export_phy`` stage."""
    d = Path(phy_dir)
    templates = np.load(d / "templates.npy").astype(np.float32)
    winv = np.load(d / "whitening_mat_inv.npy").astype(np.float32)
    positions = np.load(d / "channel_positions.npy").astype(np.float64)
    shanks_file = d / "channel_shanks.npy"
    shanks = np.load(shanks_file) if shanks_file.is_file() else np.zeros(positions.shape[0])
    rows = read_tsv(d / "cluster_metrics.tsv")
    amp_col = next(
        (c for c in (rows[0] if rows else {}) if c.startswith("amplitude")), "amplitude_uv"
    )
    metrics = {
        int(r["cluster_id"]): {
            k: v if k in TEXT_METRICS else _number(v) for k, v in r.items() if k != "cluster_id"
        }
        for r in rows
    }
    labels = {int(r["cluster_id"]): r["KSLabel"] for r in read_tsv(d / "cluster_KSLabel.tsv")}
    return PhyView(
        _signed(np.load(d / "spike_times.npy"), np.int64),
        _signed(np.load(d / "spike_clusters.npy"), np.int32),
        np.load(d / "amplitudes.npy").ravel().astype(np.float64, copy=False),
        templates @ winv,
        positions,
        np.asarray(shanks).ravel(),
        labels,
        metrics,
        amp_col,
    )


def read_params_py(phy_dir) -> dict:
    """The literal assignments of a Phy folder's ``params.py`` (parsed, never executed).

    Parameters
    ----------
    phy_dir : str or Path
        The Phy folder.

    Returns
    -------
    dict
        ``{name: value}`` for each ``name = <literal>`` line; empty without ``params.py``.
    """
    path = Path(phy_dir) / "params.py"
    if not path.is_file():
        return {}
    text = path.read_text()
    try:
        statements = ast.parse(text).body
    except SyntaxError:
        statements = []
        for line in text.splitlines():
            try:
                statements.extend(ast.parse(line).body)
            except SyntaxError:
                logger.warning("params.py: skipping unreadable line %r", line)
    params = {}
    for node in statements:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
        ):
            try:
                params[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                logger.debug("params.py: %s is not a literal", node.targets[0].id)
    return params


def read_noise_clusters(phy_dir) -> set:
    """Cluster ids labelled ``noise`` in the Phy folder's ``cluster_group.tsv`` (if any)."""
    path = Path(phy_dir) / "cluster_group.tsv"
    if not path.is_file():
        return set()
    noise = set()
    with open(path, newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            cluster = row.get("cluster_id", row.get("id"))
            group = (row.get("group") or row.get("KSLabel") or "").strip().lower()
            if cluster is not None and group == "noise":
                noise.add(int(cluster))
    return noise


def load_phy_sorting(phy_dir):
    """Spike times and cluster ids of a Phy folder, without the clusters labelled noise.

    Reads ``spike_times.npy`` and ``spike_clusters.npy`` (``spike_templates.npy`` when there is
    no cluster file); clusters labelled ``noise`` in ``cluster_group.tsv`` are left out.

    Parameters
    ----------
    phy_dir : str or Path
        The Phy folder.

    Returns
    -------
    times : ndarray of uint64
    clusters : ndarray of int64
    """
    folder = Path(phy_dir)
    times_path = folder / "spike_times.npy"
    if not times_path.is_file():
        raise InputError(
            f"{str(folder)!r} has no spike_times.npy",
            "give a Phy folder (as written by kilosnake's export stage)",
        )
    times = np.load(times_path, allow_pickle=False).ravel().astype(np.uint64, copy=False)
    labels_path = folder / "spike_clusters.npy"
    if not labels_path.is_file():
        labels_path = folder / "spike_templates.npy"
    if not labels_path.is_file():
        raise InputError(
            f"{str(folder)!r} has neither spike_clusters.npy nor spike_templates.npy",
            "give a complete Phy folder",
        )
    clusters = np.load(labels_path, allow_pickle=False).ravel().astype(np.int64)
    if len(clusters) != len(times):
        raise InputError(
            f"{labels_path.name} has {len(clusters)} entries but spike_times.npy {len(times)}",
            "give a consistent Phy folder",
        )
    noise = read_noise_clusters(folder)
    if noise:
        keep = ~np.isin(clusters, np.array(sorted(noise), dtype=np.int64))
        logger.info("leaving out %d noise clusters (%d spikes)", len(noise), int((~keep).sum()))
        times, clusters = times[keep], clusters[keep]
    return times, clusters


def is_phy_folder(path) -> bool:
    """True for a folder holding ``spike_times.npy``."""
    return (Path(path) / "spike_times.npy").is_file()
