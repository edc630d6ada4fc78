"""Phy export: the folder Phy (and phylib, SpikeInterface's ``read_phy``) opens, and its validator.

:func:`export_phy` gathers the sorting core's stores and the curation labels into a Kilosort 2.5
style folder (ALGORITHM.md §5.1). Conventions:

* one cluster id per template: ``spike_templates.npy`` = ``spike_clusters.npy`` = the final label
  (after merges, splits and the score cutoff; only kept spikes), and ``templates.npy`` has one
  waveform per id (ids with no spikes left, e.g. merged-away templates, keep their row);
* PC and template features of a spike that moved to another cluster (merged from another
  template) are carried onto the channel / template lists of its new cluster (entries missing from
  the spike's own list are 0), so ``pc_feature_ind[spike_templates]`` always describes the spike;
* Phy reads the raw file: ``dat_path`` is the raw file relative to the folder, written with forward
  slashes; ``n_channels_dat`` is the file's total channel count; ``hp_filtered = False``;
  ``whitening_mat.npy`` is the whitening matrix (whitened = filtered @ W) and
  ``whitening_mat_inv.npy`` its inverse, so Phy shows un-whitened templates in raw units;
* phylib cannot load one template (it squeezes the array): fewer than two clusters are padded
  with empty clusters (zero template, no spikes, ``mua``); a single template feature column is
  padded likewise;
* phylib cannot load zero or one spike (nor a single channel): such a folder is still written
  with every file at its exact shape (zero- or one-row per-spike arrays) and validated by our own
  shape checks only; the log says that Phy will not open it.

Per-spike arrays are streamed in blocks (:mod:`kilosnake.streaming`): the stores are read and
the ``.npy`` files written block by block, and per-cluster metrics are computed a few clusters at
a time, so memory does not grow with the recording's length.

The folder is written at ``<out>.tmp``, validated (:func:`validate_phy`: our shape and dtype
checks, then phylib's ``TemplateModel`` loading it and reading one waveform of every cluster), and
renamed to ``<out>``; on any failure no folder is left behind. Same inputs give identical bytes.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from pathlib import Path

import numpy as np

from .checks import read_input_json
from .curation.data import read_probe_geometry, read_templates, remap_columns
from .curation.metrics import (CENSORED_S, REFRACTORY_S, format_metrics_tsv,
                               peak_to_peak_unwhitened, peak_whitened, unit_metrics)
from .errors import KilosnakeError
from .store import open_store, publish
from .streaming import (BLOCK_ROWS, NpyWriter, blocks, columns_by_label, npy_blocks,
                        read_rows)

logger = logging.getLogger(__name__)

#: spikes read and written per step when streaming features
SPIKE_STEP = 1 << 15
#: phylib squeezes arrays: it needs at least this many templates and template-feature columns
MIN_PHY_TEMPLATES = 2
PER_SPIKE_FILES = ("spike_times.npy", "spike_templates.npy", "spike_clusters.npy",
                   "amplitudes.npy", "pc_features.npy", "template_features.npy")
TSV_FILES = ("cluster_KSLabel.tsv", "cluster_group.tsv", "cluster_ContamPct.tsv",
             "cluster_Amplitude.tsv")


class PhyExportError(KilosnakeError):
    """The Phy folder would be invalid; the message says which file and why."""


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

    @property
    def n(self) -> int:
        return int(self.templates.shape[0])


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
        np.concatenate([table.templates, np.zeros((extra, nt0, nchan), np.float32)]), similar,
        np.concatenate([table.pc_feature_ind, np.tile(np.arange(c), (extra, 1))]),
        np.concatenate([table.template_feature_ind, tf_rows]),
        np.concatenate([table.good, np.zeros(extra, bool)]),
        np.concatenate([table.contamination, np.ones(extra)]), table.n_real)


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
    out[:, nt0min + 1:, :] = templates
    return out


def relative_dat_path(dat, folder) -> str:
    """``dat`` relative to ``folder``, with forward slashes (absolute if on another drive)."""
    dat_abs, folder_abs = os.path.abspath(dat), os.path.abspath(folder)
    try:
        rel = os.path.relpath(dat_abs, folder_abs)
    except ValueError:  # another drive on Windows
        rel = dat_abs
    return Path(rel).as_posix()


def params_py_text(dat_path: str, n_channels_dat: int, dtype: str, sample_rate: float,
                   template_scaling: float, offset: int = 0) -> str:
    """The text of ``params.py``; every value written with ``repr()``."""
    values = {"dat_path": dat_path, "n_channels_dat": int(n_channels_dat), "dtype": str(dtype),
              "offset": int(offset), "sample_rate": float(sample_rate), "hp_filtered": False,
              "template_scaling": float(template_scaling)}
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


# --------------------------------------------------------------------------------------------
# reading the stores


@dataclasses.dataclass
class ExportSources:
    """Everything the export reads; per-spike arrays stay in their stores (read in blocks)."""

    spikes: object  # zarr group of spikes.zarr
    labels: object  # zarr array (n,): cluster of every spike after merges and splits
    keep: object  # zarr array (n,): spike kept by the score cutoff
    table: ClusterTable
    nt0min: int
    geometry: dict
    whitening: np.ndarray
    report: dict
    src_pc_ind: np.ndarray
    src_tf_ind: np.ndarray

    @property
    def n_spikes(self) -> int:
        return int(self.spikes["time"].shape[0])


def read_sources(spikes_zarr, templates_zarr, whitening_zarr, input_json, split_zarr,
                 cutoff_zarr) -> ExportSources:
    """Open the stores and read the per-cluster arrays of the export."""
    sp, sg, cg = open_store(spikes_zarr), open_store(split_zarr), open_store(cutoff_zarr)
    counts = {"spikes.zarr": sp["time"].shape[0], "split.zarr": sg["cluster"].shape[0],
              "cutoff.zarr": cg["keep"].shape[0]}
    if len(set(counts.values())) != 1:
        raise PhyExportError("spike counts differ: " + ", ".join(
            f"{k} {v}" for k, v in counts.items()))
    table = ClusterTable(
        np.asarray(sg["templates"][...], np.float32),
        np.asarray(sg["similar_templates"][...], np.float32),
        np.asarray(sg["pc_feature_ind"][...], np.int64),
        np.asarray(sg["template_feature_ind"][...], np.int64),
        np.asarray(cg["good"][...], bool), np.asarray(cg["contamination"][...], np.float64),
        int(sg.attrs["n_clusters"]))
    wg = open_store(whitening_zarr)
    n_chan = {"whitening": wg["whitening"].shape[0], "chan_map": wg["chan_map"].shape[0],
              "templates": table.templates.shape[2]}
    if len(set(n_chan.values())) != 1:
        raise PhyExportError(f"channel counts differ between stores: {n_chan}")
    return ExportSources(
        sp, sg["cluster"], cg["keep"], table, int(read_templates(templates_zarr).nt0min),
        read_probe_geometry(whitening_zarr), np.asarray(wg["whitening"][...], np.float64),
        read_input_json(input_json), np.asarray(sp["pc_feature_ind"][...], np.int64),
        np.asarray(sp["template_feature_ind"][...], np.int64))


def kept_order(time: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Indices of the kept spikes in ascending time (stable)."""
    idx = np.flatnonzero(keep)
    t = time[idx]
    if t.size > 1 and np.any(np.diff(t.astype(np.int64)) < 0):
        logger.warning("spikes.zarr is not sorted by time; sorting the export in memory")
        idx = idx[np.argsort(t, kind="stable")]
    return idx


def is_sorted_in_blocks(array, step: int = BLOCK_ROWS) -> bool:
    """True when a per-spike array (Zarr or ``.npy`` blocks) never decreases."""
    last = None
    for _, block in (blocks(array, step) if not isinstance(array, Path) else
                     npy_blocks(array, step)):
        if block.size == 0:
            continue
        b = block.astype(np.int64)
        if (last is not None and b[0] < last) or np.any(np.diff(b) < 0):
            return False
        last = b[-1]
    return True


@dataclasses.dataclass
class KeptSpikes:
    """The kept spikes in Phy's order (ascending time), served in blocks of indices."""

    n: int  # kept spikes
    order: np.ndarray | None  # all kept indices when spikes.zarr is not sorted, else None
    keep: object  # zarr array (n,) bool
    step: int = BLOCK_ROWS

    def blocks(self):
        """Indices into spikes.zarr of consecutive blocks of kept spikes."""
        if self.order is not None:
            for s in range(0, self.order.size, self.step):
                yield self.order[s:s + self.step]
            return
        for start, keep in blocks(self.keep, self.step):
            idx = np.flatnonzero(keep)
            if idx.size:
                yield idx + start


def kept_spikes(s: ExportSources, step: int = BLOCK_ROWS) -> KeptSpikes:
    """Count the kept spikes; fall back to an in-memory order when spikes.zarr is unsorted."""
    n = sum(int(np.count_nonzero(k)) for _, k in blocks(s.keep, step))
    if is_sorted_in_blocks(s.spikes["time"], step):
        return KeptSpikes(n, None, s.keep, step)
    order = kept_order(np.asarray(s.spikes["time"][...], np.uint64),
                       np.asarray(s.keep[...], bool))
    return KeptSpikes(n, order, s.keep, step)


# --------------------------------------------------------------------------------------------
# writing


def save_npy(folder: Path, name: str, array) -> None:
    """``np.save`` without pickles (the bytes depend only on the array)."""
    np.save(folder / name, np.asarray(array), allow_pickle=False)


def write_streamed_features(folder: Path, name: str, source, kept: KeptSpikes, src_ids,
                            dst_ids, src_table, dst_table, k_out: int | None = None) -> None:
    """Write the kept rows of ``source`` carried onto the destination lists, block by block.

    ``src_ids`` and ``dst_ids`` are per-spike arrays (Zarr) of the rows of ``src_table`` and
    ``dst_table`` that apply to each spike.
    """
    tail = tuple(source.shape[1:])
    out_tail = tail if k_out is None else tail[:-1] + (k_out,)
    with NpyWriter(folder / name, np.float32, (kept.n,) + out_tail) as out:
        for idx in kept.blocks():
            for start in range(0, idx.size, SPIKE_STEP):
                block = idx[start:start + SPIKE_STEP]
                moved = remap_columns(read_rows(source, block).astype(np.float32, copy=False),
                                      read_rows(src_ids, block), read_rows(dst_ids, block),
                                      src_table, dst_table)
                if moved.shape[-1] < out_tail[-1]:
                    pad = [(0, 0)] * (moved.ndim - 1) + [(0, out_tail[-1] - moved.shape[-1])]
                    moved = np.pad(moved, pad)
                out.write(moved)


def write_folder(folder: Path, s: ExportSources, params: dict, final_dir: Path) -> dict:
    """Write every file of the Phy folder into ``folder``; return a summary."""
    folder.mkdir(parents=True)
    table = pad_clusters(s.table)
    kept = kept_spikes(s)
    winv = inverse_whitening(s.whitening)
    ptp = peak_to_peak_unwhitened(table.templates, winv)
    counts, amp_sums = write_spike_files(folder, s, kept, ptp, table.n)
    write_template_files(folder, table, s.nt0min)
    write_channel_files(folder, s.geometry, s.whitening, winv)
    write_features(folder, s, table, kept)
    write_cluster_tables(folder, table,
                         cluster_amplitudes(amp_sums, counts, params.get("gain", 1.0)))
    write_metrics(folder, s, table, counts, winv, params)
    (folder / "params.py").write_text(params_py_text(
        relative_dat_path(s.report["dat"], final_dir), s.report["n_channels_total"],
        s.report["dtype"], float(s.report["sample_rate"]), params.get("templateScaling", 20.0)))
    return {"n_spikes": int(kept.n), "n_clusters": table.n,
            "n_channels": int(s.whitening.shape[0]),
            "n_good": int(table.good[counts > 0].sum()),
            "n_units": int(np.count_nonzero(counts))}


def write_spike_files(folder: Path, s: ExportSources, kept: KeptSpikes, ptp: np.ndarray,
                      n_clusters: int) -> tuple[np.ndarray, np.ndarray]:
    """``spike_times``, ``spike_templates``, ``spike_clusters`` and ``amplitudes``, in blocks.

    Returns the kept spikes per cluster and, per cluster, the sum over its spikes of
    ``amplitude × ptp`` (for ``cluster_Amplitude.tsv``).
    """
    counts = np.zeros(n_clusters, np.int64)
    amp_sums = np.zeros(n_clusters, np.float64)
    shape = (kept.n,)
    with NpyWriter(folder / "spike_times.npy", np.uint64, shape) as times, \
            NpyWriter(folder / "spike_templates.npy", np.uint32, shape) as templates, \
            NpyWriter(folder / "spike_clusters.npy", np.uint32, shape) as clusters, \
            NpyWriter(folder / "amplitudes.npy", np.float64, shape) as amplitudes:
        for idx in kept.blocks():
            labels = read_rows(s.labels, idx).astype(np.int64)
            amp = read_rows(s.spikes["amplitude"], idx).astype(np.float64)
            times.write(read_rows(s.spikes["time"], idx).astype(np.uint64))
            templates.write(labels.astype(np.uint32))
            clusters.write(labels.astype(np.uint32))
            amplitudes.write(amp)
            counts += np.bincount(labels, minlength=n_clusters)[:n_clusters]
            amp_sums += np.bincount(labels, weights=amp * ptp[labels],
                                    minlength=n_clusters)[:n_clusters]
    return counts, amp_sums


def write_template_files(folder: Path, table: ClusterTable, nt0min: int) -> None:
    """``templates`` (with leading zeros) and ``similar_templates``."""
    save_npy(folder, "templates.npy", phy_templates(table.templates, nt0min))
    save_npy(folder, "similar_templates.npy", table.similar.astype(np.float32))


def write_channel_files(folder: Path, geometry: dict, whitening, whitening_inv) -> None:
    """Channel map (raw-file rows), positions, shanks and the whitening matrices."""
    save_npy(folder, "channel_map.npy", geometry["chan_map"].astype(np.int32))
    save_npy(folder, "channel_positions.npy",
             np.stack([geometry["xc"], geometry["yc"]], axis=1).astype(np.float64))
    save_npy(folder, "channel_shanks.npy", geometry["kcoords"].astype(np.int32))
    save_npy(folder, "whitening_mat.npy", np.asarray(whitening, np.float64))
    save_npy(folder, "whitening_mat_inv.npy", np.asarray(whitening_inv, np.float64))


def write_metrics(folder: Path, s: ExportSources, table: ClusterTable, counts: np.ndarray,
                  whitening_inv, params: dict) -> None:
    """``cluster_metrics.tsv`` (docs/metrics.md), a few clusters at a time from the spike files
    just written."""
    sample_rate = float(s.report["sample_rate"])
    duration_s = float(s.report["duration_s"])
    uv_per_bit = s.report.get("uv_per_bit")
    refractory_s = params.get("metrics_refractory_ms", REFRACTORY_S * 1e3) * 1e-3
    censored_s = params.get("metrics_censored_ms", CENSORED_S * 1e3) * 1e-3
    ptp = peak_to_peak_unwhitened(table.templates, whitening_inv)
    peak = peak_whitened(table.templates)

    def spike_blocks():
        for (_, labels), (_, times), (_, amps) in zip(
                npy_blocks(folder / "spike_clusters.npy"), npy_blocks(folder / "spike_times.npy"),
                npy_blocks(folder / "amplitudes.npy")):
            yield labels, {"time": times, "amplitude": amps}

    metrics = {c: unit_metrics(v["time"].astype(np.float64) / sample_rate, v["amplitude"],
                               ptp[c], peak[c], duration_s, uv_per_bit, refractory_s, censored_s)
               for c, _, v in columns_by_label(spike_blocks, counts)}
    (folder / "cluster_metrics.tsv").write_text(format_metrics_tsv(metrics, uv_per_bit))


def write_features(folder: Path, s: ExportSources, table: ClusterTable,
                   kept: KeptSpikes) -> None:
    """``pc_features``/``template_features`` and their index files, streamed from spikes.zarr."""
    write_streamed_features(folder, "pc_features.npy", s.spikes["pc_features"], kept,
                            s.spikes["template"], s.labels, s.src_pc_ind, table.pc_feature_ind)
    save_npy(folder, "pc_feature_ind.npy", table.pc_feature_ind.astype(np.uint32))
    tf_ind = pad_template_feature_columns(table.template_feature_ind)
    write_streamed_features(folder, "template_features.npy", s.spikes["template_features"], kept,
                            s.spikes["template"], s.labels, s.src_tf_ind,
                            table.template_feature_ind, k_out=tf_ind.shape[1])
    save_npy(folder, "template_feature_ind.npy", tf_ind.astype(np.uint32))


def write_cluster_tables(folder: Path, table: ClusterTable, amplitudes: np.ndarray) -> None:
    """``cluster_KSLabel``, ``cluster_group``, ``cluster_ContamPct``, ``cluster_Amplitude``
    (``amplitudes``: per cluster, see :func:`cluster_amplitudes`)."""
    labels_text = ["good" if g else "mua" for g in table.good]
    contam = 100.0 * np.clip(np.nan_to_num(table.contamination, nan=1.0), 0.0, 1.0)
    (folder / "cluster_KSLabel.tsv").write_text(tsv_text("KSLabel", labels_text))
    (folder / "cluster_group.tsv").write_text(tsv_text("group", labels_text))
    (folder / "cluster_ContamPct.tsv").write_text(
        tsv_text("ContamPct", [f"{v:.1f}" for v in contam]))
    (folder / "cluster_Amplitude.tsv").write_text(
        tsv_text("Amplitude", [f"{v:.1f}" for v in amplitudes]))


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


def read_params_py(folder: Path) -> dict:
    """The values of ``params.py``, read without executing it (literals only)."""
    import ast

    values = {}
    for node in ast.parse((folder / "params.py").read_text()).body:
        _expect(isinstance(node, ast.Assign) and len(node.targets) == 1,
                "params.py must hold only simple assignments")
        values[node.targets[0].id] = ast.literal_eval(node.value)
    return values


def check_shapes(folder: Path) -> dict:
    """Our own checks of every file's dtype and shape (ALGORITHM.md §5.1); return the sizes."""
    st = _load(folder, "spike_times.npy")
    _expect(st.dtype == np.uint64 and st.ndim == 1, f"spike_times.npy: {st.dtype} {st.shape}")
    _expect(is_sorted_in_blocks(folder / "spike_times.npy"), "spike_times.npy is not sorted")
    n = st.size
    for name, dtype in (("spike_templates.npy", np.uint32), ("spike_clusters.npy", np.uint32),
                        ("amplitudes.npy", np.float64)):
        a = _load(folder, name)
        _expect(a.dtype == dtype and a.shape == (n,), f"{name}: {a.dtype} {a.shape}, want "
                f"{np.dtype(dtype)} ({n},)")
    tmpl = _load(folder, "templates.npy")
    _expect(tmpl.dtype == np.float32 and tmpl.ndim == 3, f"templates.npy: {tmpl.dtype} "
            f"{tmpl.shape}")
    n_t, _, n_c = tmpl.shape
    _expect(n_t >= MIN_PHY_TEMPLATES, f"templates.npy has {n_t} templates (phylib needs 2)")
    _expect(n == 0 or npy_max(folder / "spike_templates.npy") < n_t,
            "spike_templates.npy refers to missing templates")
    cm = _load(folder, "channel_map.npy")
    _expect(cm.dtype == np.int32 and cm.shape == (n_c,), f"channel_map.npy: {cm.dtype} "
            f"{cm.shape}")
    pos = _load(folder, "channel_positions.npy")
    _expect(pos.dtype == np.float64 and pos.shape == (n_c, 2), f"channel_positions.npy: "
            f"{pos.shape}")
    _expect(np.unique(pos, axis=0).shape[0] == n_c, "channel_positions.npy has duplicates")
    _expect(_load(folder, "channel_shanks.npy").shape == (n_c,), "channel_shanks.npy shape")
    _expect(_load(folder, "similar_templates.npy").shape == (n_t, n_t),
            "similar_templates.npy shape")
    for name in ("whitening_mat.npy", "whitening_mat_inv.npy"):
        w = _load(folder, name)
        _expect(w.dtype == np.float64 and w.shape == (n_c, n_c), f"{name}: {w.shape}")
    check_feature_files(folder, n, n_t, n_c)
    check_cluster_tables(folder, n_t)
    params = check_params_py(folder, cm)
    return {"n_spikes": int(n), "n_templates": int(n_t), "n_channels": int(n_c),
            "params": params}


def npy_max(path: Path) -> int:
    """Largest value of a non-empty integer ``.npy`` file, read in blocks."""
    return max(int(block.max()) for _, block in npy_blocks(path) if block.size)


def check_feature_files(folder: Path, n: int, n_t: int, n_c: int) -> None:
    pc, pci = _load(folder, "pc_features.npy"), _load(folder, "pc_feature_ind.npy")
    _expect(pc.dtype == np.float32 and pc.ndim == 3 and pc.shape[0] == n,
            f"pc_features.npy: {pc.dtype} {pc.shape}")
    _expect(pci.dtype == np.uint32 and pci.shape == (n_t, pc.shape[2]),
            f"pc_feature_ind.npy: {pci.dtype} {pci.shape}, want ({n_t}, {pc.shape[2]})")
    _expect(pci.size == 0 or int(pci.max()) < n_c, "pc_feature_ind.npy refers to missing channels")
    tf, tfi = _load(folder, "template_features.npy"), _load(folder, "template_feature_ind.npy")
    _expect(tf.dtype == np.float32 and tf.ndim == 2 and tf.shape[0] == n,
            f"template_features.npy: {tf.dtype} {tf.shape}")
    _expect(tfi.dtype == np.uint32 and tfi.shape == (n_t, tf.shape[1]) and tf.shape[1] >= 2,
            f"template_feature_ind.npy: {tfi.dtype} {tfi.shape}")
    _expect(tfi.size == 0 or int(tfi.max()) < n_t, "template_feature_ind.npy refers to missing "
            "templates")


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
    _expect(isinstance(dat, str) and "\\" not in dat,
            f"params.py dat_path {dat!r} must be one path written with forward slashes")
    _expect(channel_map.size == 0 or int(channel_map.max()) < p["n_channels_dat"],
            "channel_map.npy refers to rows beyond n_channels_dat")
    raw = (folder / dat) if not os.path.isabs(dat) else Path(dat)
    _expect(raw.is_file(), f"params.py dat_path {dat!r} does not resolve to a file from {folder}")
    row = p["n_channels_dat"] * np.dtype(p["dtype"]).itemsize
    _expect((raw.stat().st_size - p["offset"]) % row == 0,
            f"{raw} size is not a multiple of n_channels_dat x itemsize")
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
        raise PhyExportError(f"phylib cannot load the folder: {exc.__class__.__name__}: "
                             f"{exc}") from exc
    try:
        _expect(model.n_spikes == sizes["n_spikes"], f"phylib sees {model.n_spikes} spikes")
        _expect(model.n_templates == sizes["n_templates"],
                f"phylib sees {model.n_templates} templates, the folder has "
                f"{sizes['n_templates']}")
        _expect(model.traces is not None, "phylib did not find the raw data file")
        for c in model.cluster_ids:
            spike = model.get_cluster_spikes(c)[:1]
            channels = model.get_template(int(c)).channel_ids
            w = model.get_waveforms(spike, channels)
            _expect(w is not None and w.shape[0] == 1 and w.shape[2] == len(channels),
                    f"phylib could not read a waveform of cluster {c}")
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
        logger.warning("the folder has %d spike(s) and %d channel(s): phylib (and Phy) cannot "
                       "open it; only shapes and dtypes were checked", sizes["n_spikes"],
                       sizes["n_channels"])
    return sizes


# --------------------------------------------------------------------------------------------
# the stage


def export_phy(spikes_zarr, templates_zarr, whitening_zarr, input_json, split_zarr, cutoff_zarr,
               params: dict, out) -> dict:
    """The ``export_phy`` stage: write, validate and publish the Phy folder ``out``.

    Parameters
    ----------
    spikes_zarr, templates_zarr, whitening_zarr : path
        Sorting-core stores.
    input_json : path
        The recording description (raw file, channels, dtype, sample rate, µV per bit).
    split_zarr, cutoff_zarr : path
        Cluster labels (after merges and splits) and keep mask / unit labels.
    params : dict
        Resolved ``export`` parameters (``templateScaling``, ``gain``; optional
        ``metrics_refractory_ms``, ``metrics_censored_ms``).
    out : path
        The Phy folder to create (replaced if it exists).

    Returns
    -------
    dict
        Counts (spikes, clusters, good units) and whether phylib checked the folder.
    """
    sources = read_sources(spikes_zarr, templates_zarr, whitening_zarr, input_json, split_zarr,
                           cutoff_zarr)
    return publish_phy_folder(sources, params, out)


def publish_phy_folder(sources: ExportSources, params: dict, out) -> dict:
    """Write the Phy folder of ``sources`` at ``<out>.tmp``, validate it, rename it to ``out``
    (the second half of :func:`export_phy`; also used to export joined shanks)."""
    final = Path(out)
    tmp = final.with_name(final.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        summary = write_folder(tmp, sources, params, final)
        summary.update({k: v for k, v in validate_phy(tmp).items() if k != "params"})
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish(tmp, final)
    logger.info("Phy folder %s: %d spikes, %d units (%d good), %d cluster ids", final,
                summary["n_spikes"], summary["n_units"], summary["n_good"],
                summary["n_clusters"])
    if summary["n_spikes"] == 0:
        logger.warning("no spikes found: the Phy folder %s is complete but empty (is the "
                       "recording silent, or are the thresholds spkTh / Th too strict?)", final)
    return summary


def write_scorecard(phy_dir, gt_npz, out) -> str:
    """Score a Phy folder against ground truth; write the scorecard text to ``out``.

    Parameters
    ----------
    phy_dir : path
        The exported Phy folder.
    gt_npz : path
        Ground truth of a generated recording.
    out : path
        Text file to write (atomically).

    Returns
    -------
    str
        The scorecard.
    """
    from .score import score_phy_folder

    text = score_phy_folder(phy_dir, gt_npz).to_text()
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, out)
    logger.info("scorecard of %s written to %s", phy_dir, out)
    return text
