"""Small sorter outputs (spikes.zarr, templates.zarr, whitening.zarr, input.json) with known truth.

The stores follow docs/stores.md. Each unit of a fixture has a spike train, the template the
"sorter" assigned it to, and its true waveform (a spatial footprint around a peak channel times a
fixed temporal shape); PC and template features are computed from the true waveforms, with noise,
exactly as the final pass defines them, so curation sees what it would see on real output.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from kilosnake.io.store import write_array, writing_store

FS = 30000.0
NT0, NT0MIN, NPCS = 61, 20, 3


@dataclasses.dataclass
class Unit:
    """A ground-truth unit: its spike times, the template it was sorted into, its waveform."""

    times: np.ndarray  # samples
    template: int
    peak_channel: int | None = None  # footprint centre; None = the template's
    amplitude: float = 15.0
    scores: np.ndarray | None = None  # None: score = amplitude of each spike


def refractory_train(rng, rate_hz, duration_s, dead_ms=2.0, fs=FS) -> np.ndarray:
    """Poisson spikes with a dead time after each spike (a refractory neuron), in samples."""
    n = int(rate_hz * duration_s * 1.5) + 10
    isi = rng.exponential(1.0 / rate_hz, n) + dead_ms * 1e-3
    t = np.cumsum(isi)
    return np.round(t[t < duration_s - 0.01] * fs).astype(np.int64) + 100


def poisson_train(rng, rate_hz, duration_s, fs=FS) -> np.ndarray:
    """Poisson spikes without a refractory period, in samples."""
    n = rng.poisson(rate_hz * duration_s)
    return np.sort(rng.integers(100, int((duration_s - 0.01) * fs), n))


def pc_basis(nt0=NT0, nt0min=NT0MIN) -> np.ndarray:
    """(nt0, 3) orthonormal temporal basis whose first column is a spike shape."""
    t = np.arange(nt0, dtype=np.float64)
    shape = -np.exp(-((t - nt0min) ** 2) / 8.0) + 0.3 * np.exp(-((t - nt0min - 8) ** 2) / 50.0)
    basis = np.stack([shape, np.gradient(shape), np.gradient(np.gradient(shape))], axis=1)
    q, r = np.linalg.qr(basis)
    q *= np.sign(np.diag(r))
    if q[nt0min, 0] > 0:
        q[:, 0] *= -1
    return q


def probe_geometry(n_channels=16, n_shanks=1):
    """Two columns, 20 µm pitch, shanks 250 µm apart."""
    per = n_channels // n_shanks
    i = np.arange(per)
    x = np.tile(np.where(i % 2 == 0, 0.0, 32.0), n_shanks) + np.repeat(
        np.arange(n_shanks) * 250.0, per
    )
    y = np.tile(20.0 * (i // 2), n_shanks)
    return x, y, np.repeat(np.arange(n_shanks), per).astype(np.float64)


def footprint(xc, yc, peak, sigma_um=25.0) -> np.ndarray:
    """Unit-norm spatial footprint centred on channel ``peak``."""
    d2 = (xc - xc[peak]) ** 2 + (yc - yc[peak]) ** 2
    f = np.exp(-d2 / (2 * sigma_um**2))
    f[d2 > (4 * sigma_um) ** 2] = 0.0
    return f / np.linalg.norm(f)


def nearest_channels(xc, yc, c, n) -> np.ndarray:
    d2 = (xc - xc[c]) ** 2 + (yc - yc[c]) ** 2
    return np.argsort(d2, kind="stable")[:n]


@dataclasses.dataclass
class FixturePaths:
    folder: Path
    spikes: Path
    templates: Path
    whitening: Path
    input_json: Path
    dat: Path


def build_fixture(
    folder,
    units,
    template_peaks,
    n_channels=16,
    n_shanks=1,
    duration_s=60.0,
    seed=0,
    similar=None,
    noise=0.3,
    raw_sd=10.0,
    uv_per_bit=2.34,
    extra_channels=1,
    chan_map=None,
    write_raw=True,
) -> FixturePaths:
    """Write the four inputs of curation: ``units`` sorted into ``len(template_peaks)`` templates.

    Parameters
    ----------
    units : list of Unit
    template_peaks : list of int
        Peak channel of each template (sets W, U).
    similar : ndarray, optional
        similar_templates; by default the zero-lag correlation of the templates.
    noise : float
        SD of the feature noise (whitened units).
    raw_sd : float
        Noise SD of the raw data: the whitening matrix is identity / raw_sd.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    xc, yc, kc = probe_geometry(n_channels, n_shanks)
    n_templates = len(template_peaks)
    wpca = pc_basis()
    W = np.zeros((NT0, n_templates, 3), np.float32)
    U = np.zeros((n_channels, n_templates, 3), np.float32)
    for i, peak in enumerate(template_peaks):
        W[:, i, :] = wpca
        U[:, i, 0] = footprint(xc, yc, peak)
    dense = np.einsum("tik,cik->itc", W.astype(np.float64), U.astype(np.float64))
    C = min(32, n_channels)
    K = min(32, n_templates)
    pc_ind = (
        np.stack([nearest_channels(xc, yc, p, C) for p in template_peaks])
        if n_templates
        else np.zeros((0, C), np.int64)
    )
    flat = dense.reshape(n_templates, NT0 * n_channels)
    corr = flat @ flat.T if n_templates else np.zeros((0, 0))
    sim = corr if similar is None else np.asarray(similar, dtype=np.float64)
    tf_ind = (
        np.argsort(-corr, axis=1, kind="stable")[:, :K]
        if n_templates
        else np.zeros((0, K), np.int64)
    )

    times, temps, amps, scores, pcf, tff = [], [], [], [], [], []
    for u in units:
        t = np.asarray(u.times, dtype=np.int64)
        n = t.size
        peak = template_peaks[u.template] if u.peak_channel is None else u.peak_channel
        wave = np.outer(wpca[:, 0], footprint(xc, yc, peak))  # unit norm
        a = u.amplitude * (1 + 0.1 * rng.standard_normal(n))
        proj = wpca.T @ wave[:, pc_ind[u.template]]  # (3, C)
        pcf.append(a[:, None, None] * proj[None] + noise * rng.standard_normal((n, NPCS, C)))
        tproj = dense[tf_ind[u.template]].reshape(K, -1) @ wave.ravel()  # (K,)
        tff.append(a[:, None] * tproj[None] + noise * rng.standard_normal((n, K)))
        times.append(t)
        temps.append(np.full(n, u.template))
        amps.append(a)
        scores.append(a if u.scores is None else np.asarray(u.scores, dtype=np.float64))

    def cat(xs, shape):
        return np.concatenate(xs) if xs else np.zeros(shape)

    time = cat(times, (0,)).astype(np.uint64)
    template = cat(temps, (0,)).astype(np.uint32)
    order = np.lexsort((template, time))
    spikes = {
        "time": time[order],
        "template": template[order],
        "amplitude": cat(amps, (0,)).astype(np.float32)[order],
        "score": cat(scores, (0,)).astype(np.float32)[order],
        "batch": (time[order] // 65472).astype(np.uint32),
        "template_features": cat(tff, (0, K)).astype(np.float32)[order],
        "pc_features": cat(pcf, (0, NPCS, C)).astype(np.float32)[order],
    }
    if chan_map is None:
        chan_map = np.arange(n_channels)
    n_total = n_channels + extra_channels
    n_samples = int(duration_s * FS)
    paths = FixturePaths(
        folder,
        folder / "spikes.zarr",
        folder / "templates.zarr",
        folder / "whitening.zarr",
        folder / "input.json",
        folder / "rec.bin",
    )
    with writing_store(paths.spikes, "final_pass") as g:
        for name, arr in spikes.items():
            write_array(g, name, arr, chunks=(max(1, min(4096, len(arr))),) + arr.shape[1:])
        write_array(g, "template_feature_ind", tf_ind.astype(np.uint32).reshape(n_templates, K))
        write_array(g, "pc_feature_ind", pc_ind.astype(np.uint32).reshape(n_templates, C))
        write_array(
            g, "similar_templates", sim.astype(np.float32).reshape(n_templates, n_templates)
        )
    with writing_store(paths.templates, "learn", attrs={"nt0": NT0, "nt0min": NT0MIN}) as g:
        write_array(g, "W", W)
        write_array(g, "U", U)
        write_array(g, "mu", np.full(n_templates, 15.0, np.float32))
        write_array(g, "wPCA", wpca.astype(np.float32))
        write_array(g, "iW", np.asarray(template_peaks, dtype=np.int64))
    with writing_store(paths.whitening, "whitening") as g:
        write_array(g, "whitening", np.eye(n_channels) / raw_sd)
        write_array(g, "channel_offset", np.zeros(n_channels))
        write_array(g, "covariance", np.eye(n_channels) * raw_sd**2)
        write_array(g, "chan_map", np.asarray(chan_map, dtype=np.int64))
        write_array(g, "xc", xc)
        write_array(g, "yc", yc)
        write_array(g, "kcoords", kc)
    if write_raw:
        with open(paths.dat, "wb") as f:  # sparse file of zeros
            f.truncate(n_samples * n_total * 2)
    report = {
        "dat": str(paths.dat),
        "n_channels_total": n_total,
        "dtype": "int16",
        "sample_rate": FS,
        "uv_per_bit": uv_per_bit,
        "n_samples": n_samples,
        "duration_s": duration_s,
        "NT": 65472,
        "n_batches": -(-n_samples // 65472),
        "probe": {
            "chan_map": list(map(int, chan_map)),
            "xc": xc.tolist(),
            "yc": yc.tolist(),
            "kcoords": kc.tolist(),
            "n_channels_total": n_total,
            "name": "fixture",
        },
        "rms": [raw_sd] * n_channels,
        "saturation_fraction": [0.0] * n_channels,
    }
    paths.input_json.write_text(json.dumps(report, indent=1))
    return paths


def run_curation(paths: FixturePaths, **overrides) -> dict:
    """Run merge, split and cutoff on a fixture; return the store paths."""
    from kilosnake.curation.cutoff import run_cutoff
    from kilosnake.curation.merge import run_merge
    from kilosnake.curation.split import run_split
    from kilosnake.params import resolve

    p = resolve(overrides)
    out = {name: paths.folder / f"{name}.zarr" for name in ("merge", "split", "cutoff")}
    run_merge(paths.spikes, paths.input_json, p, out["merge"])
    run_split(paths.spikes, paths.templates, out["merge"], paths.input_json, p, out["split"])
    run_cutoff(
        paths.spikes,
        out["split"],
        paths.whitening,
        paths.input_json,
        p,
        p["Th"],
        out["cutoff"],
    )
    return out


def export(paths: FixturePaths, stores: dict, phy_dir=None, **overrides):
    """Export a curated fixture to ``phy_dir`` (default ``<folder>/results/phy``)."""
    from kilosnake.export.writer import export_phy
    from kilosnake.params import resolve

    phy_dir = Path(phy_dir or paths.folder / "results" / "phy")
    summary = export_phy(
        paths.spikes,
        paths.templates,
        paths.whitening,
        paths.input_json,
        stores["split"],
        stores["cutoff"],
        resolve(overrides),
        phy_dir,
    )
    return phy_dir, summary
