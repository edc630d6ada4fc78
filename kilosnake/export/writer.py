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
A manifest of the files written (:mod:`kilosnake.export.manifest`) goes with them; a published
folder that a person has changed since (curation in Phy) is moved aside whole, never replaced.
"""

from __future__ import annotations

import concurrent.futures
import logging
import shutil
from pathlib import Path

import numpy as np

from kilosnake.curation.data import remap_columns
from kilosnake.curation.metrics import (
    format_metrics_tsv,
    peak_to_peak_unwhitened,
    peak_whitened,
    unit_metrics,
)
from kilosnake.export.manifest import (
    file_entries,
    folder_files,
    keep_curated,
    write_manifest,
)
from kilosnake.export.sources import ExportSources, KeptSpikes, kept_spikes, read_sources
from kilosnake.export.tables import (
    ClusterTable,
    cluster_amplitudes,
    inverse_whitening,
    pad_clusters,
    pad_template_feature_columns,
    params_py_text,
    phy_templates,
    relative_dat_path,
    tsv_text,
)
from kilosnake.export.validate import validate_phy
from kilosnake.io.store import publish
from kilosnake.io.streaming import (
    ChunkCached,
    NpyWriter,
    columns_by_label,
    npy_blocks,
    read_rows,
)

logger = logging.getLogger(__name__)


#: spikes read and written per step when streaming features
SPIKE_STEP = 1 << 15


# --------------------------------------------------------------------------------------------
# writing


def save_npy(folder: Path, name: str, array) -> None:
    """``np.save`` without pickles (the bytes depend only on the array)."""
    np.save(folder / name, np.asarray(array), allow_pickle=False)


def write_streamed_features(
    folder: Path,
    name: str,
    source,
    kept: KeptSpikes,
    src_ids,
    dst_ids,
    src_table,
    dst_table,
    k_out: int | None = None,
) -> None:
    """Write the kept rows of ``source`` carried onto the destination lists, block by block.

    ``src_ids`` and ``dst_ids`` are per-spike arrays (Zarr) of the rows of ``src_table`` and
    ``dst_table`` that apply to each spike.
    """
    tail = tuple(source.shape[1:])
    out_tail = tail if k_out is None else tail[:-1] + (k_out,)
    src_ids, dst_ids = ChunkCached(src_ids), ChunkCached(dst_ids)  # a chunk decoded once
    with NpyWriter(folder / name, np.float32, (kept.n,) + out_tail) as out:
        for idx in kept.blocks():
            for start in range(0, idx.size, SPIKE_STEP):
                block = idx[start : start + SPIKE_STEP]
                moved = remap_columns(
                    read_rows(source, block).astype(np.float32, copy=False),
                    read_rows(src_ids, block),
                    read_rows(dst_ids, block),
                    src_table,
                    dst_table,
                )
                if moved.shape[-1] < out_tail[-1]:
                    pad = [(0, 0)] * (moved.ndim - 1) + [(0, out_tail[-1] - moved.shape[-1])]
                    moved = np.pad(moved, pad)
                out.write(moved)


def write_folder(folder: Path, s: ExportSources, params: dict, final_dir: Path) -> dict:
    """Write every file of the Phy folder into ``folder``; return a summary."""
    table, kept, counts = write_unit_files(folder, s, params)
    write_features(folder, s, table, kept)
    (folder / "params.py").write_text(
        params_py_text(
            relative_dat_path(s.report["dat"], final_dir),
            s.report["n_channels_total"],
            s.report["dtype"],
            float(s.report["sample_rate"]),
            params["templateScaling"],
        )
    )
    noise_with_spikes = (counts > 0) & (np.array(table.labels()) == "noise")
    return {
        "n_spikes": int(kept.n),
        "n_clusters": table.n,
        "n_channels": int(s.whitening.shape[0]),
        "n_good": int(table.good[counts > 0].sum()),
        "n_units": int(np.count_nonzero(counts > 0) - np.count_nonzero(noise_with_spikes)),
        "n_noise": int(np.count_nonzero(noise_with_spikes)),
    }


def write_unit_files(
    folder: Path, s: ExportSources, params: dict
) -> tuple[ClusterTable, KeptSpikes, np.ndarray]:
    """The Phy folder's files but the features and ``params.py`` (spikes, templates, channels,
    cluster tables, metrics: what :func:`kilosnake.io.phy.read_phy` reads) into a new
    ``folder``; returns the padded cluster table, the kept spikes and their count per cluster."""
    folder.mkdir(parents=True)
    table = pad_clusters(s.table)
    kept = kept_spikes(s)
    winv = inverse_whitening(s.whitening)
    ptp = peak_to_peak_unwhitened(table.templates, winv)
    counts, amp_sums = write_spike_files(folder, s, kept, ptp, table.n)
    write_template_files(folder, table, s.nt0min)
    write_channel_files(folder, s.geometry, s.whitening, winv)
    write_cluster_tables(folder, table, cluster_amplitudes(amp_sums, counts, params["gain"]))
    write_metrics(folder, s, table, counts, ptp, params)
    return table, kept, counts


def write_spike_files(
    folder: Path, s: ExportSources, kept: KeptSpikes, ptp: np.ndarray, n_clusters: int
) -> tuple[np.ndarray, np.ndarray]:
    """``spike_times``, ``spike_templates``, ``spike_clusters`` and ``amplitudes``, in blocks.

    Returns the kept spikes per cluster and, per cluster, the sum over its spikes of
    ``amplitude × ptp`` (for ``cluster_Amplitude.tsv``).
    """
    counts = np.zeros(n_clusters, np.int64)
    amp_sums = np.zeros(n_clusters, np.float64)
    shape = (kept.n,)
    with (
        NpyWriter(folder / "spike_times.npy", np.uint64, shape) as times,
        NpyWriter(folder / "spike_templates.npy", np.uint32, shape) as templates,
        NpyWriter(folder / "spike_clusters.npy", np.uint32, shape) as clusters,
        NpyWriter(folder / "amplitudes.npy", np.float64, shape) as amplitudes,
    ):
        for idx in kept.blocks():
            labels = read_rows(s.labels, idx).astype(np.int64)
            amp = read_rows(s.spikes["amplitude"], idx).astype(np.float64)
            times.write(read_rows(s.spikes["time"], idx).astype(np.uint64))
            templates.write(labels.astype(np.uint32))
            clusters.write(labels.astype(np.uint32))
            amplitudes.write(amp)
            counts += np.bincount(labels, minlength=n_clusters)[:n_clusters]
            amp_sums += np.bincount(labels, weights=amp * ptp[labels], minlength=n_clusters)[
                :n_clusters
            ]
    return counts, amp_sums


def write_template_files(folder: Path, table: ClusterTable, nt0min: int) -> None:
    """``templates`` (with leading zeros) and ``similar_templates``."""
    save_npy(folder, "templates.npy", phy_templates(table.templates, nt0min))
    save_npy(folder, "similar_templates.npy", table.similar.astype(np.float32))


def write_channel_files(folder: Path, geometry: dict, whitening, whitening_inv) -> None:
    """Channel map (raw-file rows), positions, shanks and the whitening matrices."""
    save_npy(folder, "channel_map.npy", geometry["chan_map"].astype(np.int32))
    save_npy(
        folder,
        "channel_positions.npy",
        np.stack([geometry["xc"], geometry["yc"]], axis=1).astype(np.float64),
    )
    save_npy(folder, "channel_shanks.npy", geometry["kcoords"].astype(np.int32))
    save_npy(folder, "whitening_mat.npy", np.asarray(whitening, np.float64))
    save_npy(folder, "whitening_mat_inv.npy", np.asarray(whitening_inv, np.float64))


def write_metrics(
    folder: Path,
    s: ExportSources,
    table: ClusterTable,
    counts: np.ndarray,
    ptp: np.ndarray,
    params: dict,
) -> None:
    """``cluster_metrics.tsv`` (docs/metrics.md), a few clusters at a time from the spike files
    just written (``ptp``: :func:`peak_to_peak_unwhitened` of the table's templates)."""
    sample_rate = float(s.report["sample_rate"])
    duration_s = float(s.report["duration_s"])
    uv_per_bit = s.report.get("uv_per_bit")
    refractory_s = params["metrics_refractory_ms"] * 1e-3
    censored_s = params["metrics_censored_ms"] * 1e-3
    peak = peak_whitened(table.templates)

    def spike_blocks():
        for (_, labels), (_, times), (_, amps) in zip(
            npy_blocks(folder / "spike_clusters.npy"),
            npy_blocks(folder / "spike_times.npy"),
            npy_blocks(folder / "amplitudes.npy"),
        ):
            yield labels, {"time": times, "amplitude": amps}

    metrics = {
        c: unit_metrics(
            v["time"].astype(np.float64) / sample_rate,
            v["amplitude"],
            ptp[c],
            peak[c],
            duration_s,
            uv_per_bit,
            refractory_s,
            censored_s,
        )
        for c, _, v in columns_by_label(spike_blocks, counts)
    }
    for c, row in metrics.items():
        row["label_reason"] = label_reason_of(table, c)
    (folder / "cluster_metrics.tsv").write_text(format_metrics_tsv(metrics, uv_per_bit))


def label_reason_of(table: ClusterTable, c: int) -> str:
    """Why cluster ``c`` is good, mua or noise, as the cutoff stage recorded it."""
    if len(table.reasons) > c:
        return str(table.reasons[c])
    return "good" if table.good[c] else "mua (reason not recorded: cutoff.zarr is older)"


def write_features(folder: Path, s: ExportSources, table: ClusterTable, kept: KeptSpikes) -> None:
    """``pc_features``/``template_features`` and their index files, streamed from spikes.zarr."""
    write_streamed_features(
        folder,
        "pc_features.npy",
        s.spikes["pc_features"],
        kept,
        s.spikes["template"],
        s.labels,
        s.src_pc_ind,
        table.pc_feature_ind,
    )
    save_npy(folder, "pc_feature_ind.npy", table.pc_feature_ind.astype(np.uint32))
    tf_ind = pad_template_feature_columns(table.template_feature_ind)
    write_streamed_features(
        folder,
        "template_features.npy",
        s.spikes["template_features"],
        kept,
        s.spikes["template"],
        s.labels,
        s.src_tf_ind,
        table.template_feature_ind,
        k_out=tf_ind.shape[1],
    )
    save_npy(folder, "template_feature_ind.npy", tf_ind.astype(np.uint32))


def write_cluster_tables(folder: Path, table: ClusterTable, amplitudes: np.ndarray) -> None:
    """``cluster_KSLabel``, ``cluster_group``, ``cluster_ContamPct``, ``cluster_Amplitude``
    (``amplitudes``: per cluster, see :func:`cluster_amplitudes`)."""
    labels_text = table.labels()
    contam = 100.0 * np.clip(np.nan_to_num(table.contamination, nan=1.0), 0.0, 1.0)
    (folder / "cluster_KSLabel.tsv").write_text(tsv_text("KSLabel", labels_text))
    (folder / "cluster_group.tsv").write_text(tsv_text("group", labels_text))
    (folder / "cluster_ContamPct.tsv").write_text(
        tsv_text("ContamPct", [f"{v:.1f}" for v in contam])
    )
    (folder / "cluster_Amplitude.tsv").write_text(
        tsv_text("Amplitude", [f"{v:.1f}" for v in amplitudes])
    )


# --------------------------------------------------------------------------------------------
# the stage


def export_phy(
    spikes_zarr,
    templates_zarr,
    whitening_zarr,
    input_json,
    split_zarr,
    cutoff_zarr,
    params: dict,
    out,
) -> dict:
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
    sources = read_sources(
        spikes_zarr, templates_zarr, whitening_zarr, input_json, split_zarr, cutoff_zarr
    )
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
        # the files are hashed while phylib checks them (it adds files of its own, removed after)
        with concurrent.futures.ThreadPoolExecutor(1) as hashing:
            entries = hashing.submit(file_entries, tmp, folder_files(tmp))
            summary.update({k: v for k, v in validate_phy(tmp).items() if k != "params"})
            write_manifest(tmp, entries.result())
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    kept = keep_curated(final, tmp)  # a folder a person changed is moved aside, never replaced
    summary["kept_curated"] = None if kept is None else str(kept)
    publish(tmp, final)
    logger.info(
        "Phy folder %s: %d spikes, %d units (%d good), %d noise clusters, %d cluster ids",
        final,
        summary["n_spikes"],
        summary["n_units"],
        summary["n_good"],
        summary["n_noise"],
        summary["n_clusters"],
    )
    if summary["n_spikes"] == 0:
        logger.warning(
            "no spikes found: the Phy folder %s is complete but empty (is the "
            "recording silent, or are the thresholds spkTh / Th too strict?)",
            final,
        )
    return summary
