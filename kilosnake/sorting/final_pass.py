"""The final_pass stage: matching pursuit with frozen templates over every batch.

Each batch is read with margins, peeled with threshold ``Th[1]``, and only the spikes whose peak
sample the batch owns are kept (see :mod:`kilosnake.sorting.batches`), so every sample is
searched once and no spike is lost or counted twice at batch edges. Spikes are written to
``spikes.zarr`` batch by batch, sorted by (time, template) within each batch; batches own
increasing, disjoint time ranges, so the whole store is sorted without holding it in memory.

Features (computed after peeling, from the residual plus the spike's own template):

* ``template_features[n, j]`` = projection on template ``template_feature_ind[id, j]``;
* ``pc_features[n, k, c]`` = projection on ``wPCA[:, k]`` at channel ``pc_feature_ind[id, c]``.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from kilosnake.io.blocks import block_attrs
from kilosnake.io.corrected_traces import open_reader
from kilosnake.io.prefetch import WritingBehind
from kilosnake.io.store import AppendableArray, open_store, read_arrays, write_array, writing_store
from kilosnake.io.traces import (
    BatchWindow,
    batch_window,
    block_batches,
    n_batches,
    prefetching,
    read_batch,
)
from kilosnake.runtime import gpu_memory
from kilosnake.runtime.backend import Backend, get_backend
from kilosnake.runtime.progress import Progress
from kilosnake.sorting import batches, empty, matching

logger = logging.getLogger(__name__)

SPIKE_COLUMNS = {
    "time": np.uint64,
    "template": np.uint32,
    "amplitude": np.float32,
    "score": np.float32,
    "batch": np.uint32,
}


@dataclasses.dataclass
class FrozenTemplates:
    """Templates and feature neighbourhoods of the final pass (device arrays)."""

    tset: matching.TemplateSet
    wPCA: object  # (nt0, nPCs)
    feature_templates: object  # (Nfilt, K) int64
    pc_channels: object  # (Nfilt, C) int64
    template_pcs: object  # (Nfilt, nPCs, C) PC projections of each unit-norm template
    nt0min: int


def frozen_templates(be: Backend, tpl: dict, nPCs: int, nt0min: int) -> FrozenTemplates:
    """Prepare the learned templates (``templates.zarr`` arrays) for matching."""
    xp = be.xp
    W = np.asarray(tpl["W"]).transpose(1, 0, 2)
    U = np.asarray(tpl["U"]).transpose(1, 0, 2)
    tset = matching.make_template_set(be, W, U, np.asarray(tpl["mu"]))
    wPCA = xp.asarray(tpl["wPCA_all"][:, :nPCs], dtype=xp.float32)
    pc_channels = xp.asarray(tpl["pc_channels"])
    dense = xp.take_along_axis(tset.dense(be), pc_channels[:, None, :], axis=2)
    template_pcs = xp.einsum("fsc,sk->fkc", dense, wPCA)
    return FrozenTemplates(
        tset, wPCA, xp.asarray(tpl["template_neighbours"]), pc_channels, template_pcs, nt0min
    )


def spike_features(be: Backend, result: matching.PeelResult, ft: FrozenTemplates):
    """Template features (n, K) and PC features (n, nPCs, C) of the spikes (float32)."""
    xp = be.xp
    tset = ft.tset
    lag0 = tset.nt0 - 1
    neighbours = ft.feature_templates[result.template]  # (n, K)
    own = tset.ctc[result.template, lag0][xp.arange(result.n_spikes)[:, None], neighbours]
    tfeat = result.projections[result.onset[:, None], neighbours] + result.amplitude[:, None] * own
    channels = ft.pc_channels[result.template]  # (n, C)
    windows = matching.residual_windows(be, result, tset.nt0, channels)  # (n, nt0, C)
    pcfeat = (
        xp.einsum("nsc,sk->nkc", windows, ft.wPCA)
        + result.amplitude[:, None, None] * ft.template_pcs[result.template]
    )
    return tfeat.astype(xp.float32), pcfeat.astype(xp.float32)


def owned_spikes_sorted(be: Backend, result: matching.PeelResult, window: BatchWindow, nt0min: int):
    """Keep the spikes the batch owns, sorted by (time, template); return absolute times too."""
    xp = be.xp
    peaks = result.onset + nt0min + window.read_start
    result = result.select(window.owns(peaks))
    peaks = result.onset + nt0min + window.read_start
    order = xp.lexsort(xp.stack([result.template, peaks]))
    return result.select(order), peaks[order]


def match_batch(be: Backend, reader, ft: FrozenTemplates, b: int, p: dict):
    """Spikes owned by batch ``b``: a dict of host columns and features."""
    margin = batches.read_margin(ft.tset.nt0)
    w = batch_window(b, reader.n_samples, reader.NT, margin)
    X = be.asarray(read_batch(reader, w))
    result = matching.peel(be, X, ft.tset, p["Th"][1], p["lam"])
    result, peaks = owned_spikes_sorted(be, result, w, ft.nt0min)
    tfeat, pcfeat = spike_features(be, result, ft)
    h = be.to_host
    n = result.n_spikes
    return {
        "time": h(peaks).astype(np.uint64),
        "template": h(result.template).astype(np.uint32),
        "amplitude": h(result.amplitude),
        "score": h(result.score),
        "batch": np.full(n, b, dtype=np.uint32),
        "template_features": h(tfeat),
        "pc_features": h(pcfeat),
    }


def run_final_pass(
    preprocessed, templates_store, out, p: dict, drift=None, block: tuple[int, int] = (0, 1)
) -> None:
    """The ``final_pass`` stage: ``preprocessed.zarr`` + ``templates.zarr`` → ``spikes.zarr``.

    Parameters
    ----------
    preprocessed, templates_store : str or Path
        Input stores.
    out : str or Path
        The store to write.
    p : dict
        Resolved parameters (learn and final_pass stages, device, seed).
    drift : str or Path, optional
        The drift store; the traces are read drift-corrected when given.
    block : (int, int)
        ``(i, n)``: match only the batches of block ``i`` of ``n``
        (:func:`kilosnake.io.traces.block_batches`), for a scattered run whose block stores
        :func:`kilosnake.sorting.gather.gather_spikes` joins; ``(0, 1)``: every batch.
    """

    be = get_backend(p["device"])
    reader = open_reader(preprocessed, drift, be)
    tg = open_store(templates_store)
    tpl = read_arrays(
        tg, ("W", "U", "mu", "wPCA_all", "template_neighbours", "pc_channels", "similar_templates")
    )
    nt0, nt0min = int(tg.attrs["nt0"]), int(tg.attrs["nt0min"])
    attrs = {
        "nt0": nt0,
        "nt0min": nt0min,
        "NT": reader.NT,
        "sample_rate": reader.sample_rate,
        "n_samples": reader.n_samples,
    }
    nb = n_batches(reader.n_samples, reader.NT)
    batch_range = block_batches(nb, n_blocks=block[1], block=block[0])
    if block[1] > 1:
        attrs.update(block_attrs(*block, batch_range, reader.NT, reader.n_samples))
    with writing_store(out, "final_pass", p, be.name, p.get("seed"), attrs) as g:
        n = write_final_pass(be, reader, tpl, nt0min, p, g, batch_range)
        g.attrs["n_spikes"] = int(n)


def _append_columns(columns: dict, spikes: dict) -> None:
    for name, arr in columns.items():
        arr.append(spikes[name])


def write_final_pass(
    be: Backend, reader, tpl: dict, nt0min: int, p: dict, group, batch_range: range | None = None
) -> int:
    """Match every batch (or those of ``batch_range``) and append their spikes to ``group``;
    return the spike count."""
    if tpl["W"].shape[1] == 0:  # template learning found no spikes
        return empty.write_no_spikes(group, tpl, int(p["nPCs"]), SPIKE_COLUMNS)
    ft = frozen_templates(be, tpl, int(p["nPCs"]), nt0min)
    n_filt = ft.tset.n_templates
    k, c = ft.feature_templates.shape[1], ft.pc_channels.shape[1]
    columns = {
        name: AppendableArray(group, name, (), dtype, buffered=True)
        for name, dtype in SPIKE_COLUMNS.items()
    }
    # the features (float32 projections) barely compress (about 1.06x): stored as they are,
    # which writes and reads them several times faster
    columns["template_features"] = AppendableArray(
        group, "template_features", (k,), np.float32, buffered=True, compressors=None
    )
    columns["pc_features"] = AppendableArray(
        group, "pc_features", (int(p["nPCs"]), c), np.float32, buffered=True, compressors=None
    )
    if batch_range is None:
        batch_range = range(n_batches(reader.n_samples, reader.NT))
    progress = Progress(len(batch_range), "final pass", logger)
    total = 0
    margin = batches.read_margin(ft.tset.nt0)
    gpu_memory.size_blocks_for(matching.projection_scratch_bytes(reader.NT + 2 * margin), n_filt)
    reader = prefetching(
        reader, [batch_window(b, reader.n_samples, reader.NT, margin) for b in batch_range], be
    )
    # spike columns are encoded and written on a background thread, in batch order
    with WritingBehind(depth=2, workers=1) as behind:
        for b in batch_range:
            spikes = gpu_memory.retry_on_out_of_memory(
                f"final pass, batch {b}", match_batch, be, reader, ft, b, p
            )
            behind.call(_append_columns, columns, spikes)
            total += spikes["time"].size
            progress.update(spikes=total)
    progress.close()
    reader.close()
    for arr in columns.values():
        arr.close()
    write_array(group, "template_feature_ind", tpl["template_neighbours"].astype(np.uint32))
    write_array(group, "pc_feature_ind", tpl["pc_channels"].astype(np.uint32))
    write_array(group, "similar_templates", tpl["similar_templates"].astype(np.float32))
    logger.info("%d spikes of %d templates", total, n_filt)
    return total
