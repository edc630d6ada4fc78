"""What the sorting stages write when a recording has no spikes.

A recording of pure noise (or one whose spikes all stay under the thresholds) has no isolated
threshold crossings, so no universal waveforms, no templates and no spikes. The sort still
finishes: every stage writes its complete store with zero-length template and spike axes, each
stage logs a warning starting with "no spikes found", and the Phy export writes an empty folder
with every file at its exact shape.

* ``detect.zarr``: the channel neighbourhoods, kernels and learning order as usual; ``wTEMP`` and
  ``wPCA`` all zero (there were no snippets to learn them from); no seed templates;
* ``templates.zarr``: every array with a template axis of length 0;
* ``spikes.zarr``: every per-spike column with 0 rows.
"""

from __future__ import annotations

import logging

import numpy as np

from kilosnake.io.store import write_array
from kilosnake.sorting import waveforms

logger = logging.getLogger(__name__)

#: the start of every warning about an empty sort (tests and users grep for it)
NO_SPIKES = "no spikes found"


def has_universal_waveforms(det: dict) -> bool:
    """False when the detect stage found no snippets (its ``wTEMP`` is all zero)."""
    return bool(np.any(np.asarray(det["wTEMP"])))


def empty_detect(n_snippets: int, spkTh: float, nt0: int, n_channels: int) -> dict:
    """The detect arrays that depend on spikes, for a recording without enough of them.

    Parameters
    ----------
    n_snippets : int
        Isolated threshold crossings found (fewer than the universal waveforms need).
    spkTh : float
        The crossing threshold used, for the warning.
    nt0, n_channels : int
        Samples per waveform and channels of the sort.

    Returns
    -------
    dict
        ``wTEMP``, ``wPCA`` (zeros), ``dWU`` (no templates), ``seed_time``, ``seed_channel``
        (empty).
    """
    logger.warning(
        "%s: only %d isolated threshold crossings (spkTh %g), too few to learn the "
        "universal waveforms (%d needed); every later stage writes an empty result "
        "and the Phy folder has no spikes (is the recording silent, or spkTh too "
        "strict?)",
        NO_SPIKES,
        n_snippets,
        spkTh,
        waveforms.N_UNIVERSAL,
    )
    zeros = np.zeros((nt0, waveforms.N_UNIVERSAL), np.float32)
    return {
        "wTEMP": zeros,
        "wPCA": zeros.copy(),
        "dWU": np.zeros((nt0, n_channels, 0), np.float64),
        "seed_time": np.zeros(0, np.int64),
        "seed_channel": np.zeros(0, np.int64),
    }


def empty_templates(det: dict, nt0: int, n_channels: int, rank: int = 3) -> dict:
    """``templates.zarr`` arrays with no templates (see :mod:`kilosnake.sorting.learn`).

    Parameters
    ----------
    det : dict
        Arrays of ``detect.zarr`` (``wPCA``, ``wTEMP``, ``iC``).
    nt0, n_channels : int
    rank : int
        Rank of the template factors.
    """
    logger.warning(
        "%s: template learning ended with no templates (no spikes above Th[0]); the "
        "final pass, curation and export write empty results (is the recording "
        "silent, or Th too strict?)",
        NO_SPIKES,
    )
    iC = np.asarray(det["iC"]).astype(np.int64)
    wPCA = np.asarray(det["wPCA"]).astype(np.float32)
    return {
        "W": np.zeros((nt0, 0, rank), np.float32),
        "U": np.zeros((n_channels, 0, rank), np.float32),
        "mu": np.zeros(0, np.float32),
        "wPCA": wPCA[:, :rank],
        "wPCA_all": wPCA,
        "wTEMP": np.asarray(det["wTEMP"]).astype(np.float32),
        "iW": np.zeros(0, np.int64),
        "dWU": np.zeros((nt0, n_channels, 0), np.float32),
        "nsp": np.zeros(0, np.float64),
        "similar_templates": np.zeros((0, 0), np.float32),
        "template_neighbours": np.zeros((0, 0), np.int64),
        "pc_channels": np.zeros((0, iC.shape[0]), np.int64),
        "iC": iC,
    }


def write_no_spikes(group, tpl: dict, n_pcs: int, columns: dict) -> int:
    """Write ``spikes.zarr``'s arrays with no spikes (no templates to match); return 0.

    Parameters
    ----------
    group : zarr.Group
        The store being written.
    tpl : dict
        ``templates.zarr`` arrays (``template_neighbours``, ``pc_channels``,
        ``similar_templates``), with no templates.
    n_pcs : int
        PCs per channel of ``pc_features``.
    columns : dict
        ``{name: dtype}`` of the per-spike columns.
    """
    logger.warning("%s: there are no templates to match; spikes.zarr holds no spikes", NO_SPIKES)
    k = int(tpl["template_neighbours"].shape[1])
    c = int(tpl["pc_channels"].shape[1])
    for name, dtype in columns.items():
        write_array(group, name, np.zeros(0, dtype))
    write_array(group, "template_features", np.zeros((0, k), np.float32))
    write_array(group, "pc_features", np.zeros((0, n_pcs, c), np.float32))
    write_array(group, "template_feature_ind", tpl["template_neighbours"].astype(np.uint32))
    write_array(group, "pc_feature_ind", tpl["pc_channels"].astype(np.uint32))
    write_array(group, "similar_templates", tpl["similar_templates"].astype(np.float32))
    return 0
