"""Drift-corrected traces: the reader of ``preprocessed.zarr`` with the displacement of
``drift.zarr`` taken out on every read (kriging interpolation across channels), a wrapper around
:class:`kilosnake.io.traces.PreprocessedReader`; :func:`open_reader` gives the plain or the
corrected reader; :func:`write_corrected_traces` writes the corrected traces as a new store.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kilosnake.errors import KilosnakeError
from kilosnake.io.drift_store import KERNELS, KRIGING_KERNEL, KRIGING_RIDGE
from kilosnake.io.probe import Probe, write_probe_arrays
from kilosnake.io.store import open_store, own_attrs, writing_store
from kilosnake.io.traces import PreprocessedReader, create_traces, n_batches
from kilosnake.runtime.backend import Backend, cpu_backend


def open_reader(preprocessed, drift=None, be=None):
    """The reader of the whitened traces, with the drift taken out when ``drift`` is given.

    Parameters
    ----------
    preprocessed : str or Path
        ``preprocessed.zarr``.
    drift : str or Path, optional
        ``drift.zarr``; reads then go through :class:`DriftCorrectedReader`.
    be : Backend, optional
        Where the drift correction's matrix products run.

    Returns
    -------
    PreprocessedReader or DriftCorrectedReader
    """
    if drift:
        return DriftCorrectedReader(preprocessed, drift, backend=be)

    return PreprocessedReader(preprocessed)


# --------------------------------------------------------------------------------------------
# correction: kriging interpolation across channels


def channel_shifts(dshift_batch, yblk, probe: Probe, shank_list) -> np.ndarray:
    """Displacement (µm) at every channel for one batch.

    Parameters
    ----------
    dshift_batch : (n_shanks, n_blocks) array
        Block displacements of the batch.
    yblk : (n_shanks, n_blocks) array
        Block centres.
    probe : Probe
    shank_list : (n_shanks,) array
        Shank id of each row of ``dshift_batch``.

    Returns
    -------
    (Nchan,) float64
        Linear interpolation between block centres, constant beyond the outer ones (no
        extrapolation, which would invent drift at the probe's ends).
    """
    out = np.zeros(probe.n_channels)
    for k, s in enumerate(shank_list):
        on = probe.kcoords == s
        out[on] = np.interp(probe.yc[on], yblk[k], dshift_batch[k])
    return out


def kriging_kernel(a, b, shank_a, shank_b, sig: float, kind: str = KRIGING_KERNEL):
    """Kernel between contact positions ``a`` (n, 2) and ``b`` (m, 2), zero across shanks.

    ``exponential``: ``exp(−|Δx|/σ − |Δy|/(1.5σ))`` (Kilosort 2.5); ``gaussian``:
    ``exp(−(Δx² + Δy²)/(2σ²))`` (Kilosort 4).
    """
    dx = a[:, None, 0] - b[None, :, 0]
    dy = a[:, None, 1] - b[None, :, 1]
    if kind == "exponential":
        k = np.exp(-np.abs(dx) / sig - np.abs(dy) / (1.5 * sig))
    elif kind == "gaussian":
        k = np.exp(-(dx * dx + dy * dy) / (2 * sig * sig))
    else:
        raise ValueError(f"kernel must be one of {KERNELS}, not {kind!r}")
    return k * (np.asarray(shank_a)[:, None] == np.asarray(shank_b)[None, :])


class KrigingInterpolator:
    """Matrices resampling the channels at positions moved along y.

    ``M(d) = I + (K(Y + d, Y) − K(Y, Y)) (K(Y, Y) + λI)⁻¹``, ``corrected = data @ M(d).T``: at
    every contact, the data at the contact's position moved by ``d``, so a unit that drifted by
    ``d`` is brought back to where it was. This is Kilosort's kriging matrix
    ``K(Y + d, Y)(K + λI)⁻¹`` plus the residual ``I − K(K + λI)⁻¹`` that the smooth
    interpolant cannot represent, kept in place: zero displacement is exactly the identity and
    the data are not smoothed where they are not moved.
    """

    def __init__(
        self, probe: Probe, sig: float, kind: str = KRIGING_KERNEL, ridge: float = KRIGING_RIDGE
    ):
        self.probe, self.sig, self.kind = probe, float(sig), kind
        pos = probe.positions
        self.kxx = kriging_kernel(pos, pos, probe.kcoords, probe.kcoords, self.sig, kind)
        self.inv_kxx = np.linalg.inv(self.kxx + ridge * np.eye(probe.n_channels))

    def matrix(self, shifts) -> np.ndarray:
        """``M`` (Nchan, Nchan) float64 for per-channel displacements ``shifts`` (µm)."""
        pos = self.probe.positions
        moved = pos + np.stack([np.zeros_like(shifts), np.asarray(shifts, np.float64)], axis=1)
        kyx = kriging_kernel(
            moved, pos, self.probe.kcoords, self.probe.kcoords, self.sig, self.kind
        )
        return np.eye(self.probe.n_channels) + (kyx - self.kxx) @ self.inv_kxx


class DriftCorrectedReader:
    """Windows of the preprocessed traces with the drift taken out.

    Same interface as :class:`~kilosnake.io.traces.PreprocessedReader` (``read``,
    ``read_int16``, ``n_samples``, ``n_channels``, ``NT``, ``probe``, ``sample_rate``,
    ``scaleproc``). Every sample is multiplied by the kriging matrix
    (:class:`KrigingInterpolator`) of the batch that owns it: a window spanning several
    batches is cut at the batch edges and each piece gets its own batch's matrix, so a sample
    reads the same in every window. With the drift off (``enabled = False``) or zero
    displacement the arrays are exactly those of the plain reader.

    Parameters
    ----------
    preprocessed_path : str or Path
        ``preprocessed.zarr``.
    drift_path : str or Path
        ``drift.zarr`` (or any store with its ``dshift``, ``yblk``, ``shank_ids`` arrays and
        ``enabled``, ``NT``, ``n_samples`` attributes, e.g. an external motion estimate).
    backend : Backend, optional
        Where the matrix products run (default: the CPU); results are host arrays either way.
    sig : float, optional
        Kriging length scale (µm); default: the store's ``sig_datashift`` attribute.
    """

    #: batch matrices kept (a learning pass revisits batches)
    CACHE_SIZE = 8

    def __init__(
        self,
        preprocessed_path,
        drift_path,
        backend: Backend | None = None,
        sig: float | None = None,
    ):

        self.plain = PreprocessedReader(preprocessed_path)
        self.path, self.group, self.traces = self.plain.path, self.plain.group, self.plain.traces
        self.scaleproc, self.NT, self.sample_rate = (
            self.plain.scaleproc,
            self.plain.NT,
            self.plain.sample_rate,
        )
        self.n_samples, self.n_channels = self.plain.n_samples, self.plain.n_channels
        self.probe = self.plain.probe
        self.drift_path = Path(drift_path)
        g = open_store(drift_path)
        self.dshift = np.asarray(g["dshift"][...], np.float64)
        self.yblk = np.asarray(g["yblk"][...], np.float64)
        self.shank_ids = np.asarray(g["shank_ids"][...])
        self._check_matches(g.attrs)
        # zero displacement everywhere: nothing to move
        self.enabled = bool(g.attrs.get("enabled", False)) and bool(self.dshift.any())
        self.be = backend or cpu_backend()
        sig = float(g.attrs["sig_datashift"]) if sig is None else float(sig)
        kind = str(g.attrs.get("kernel", KRIGING_KERNEL))
        self.interpolator = KrigingInterpolator(self.probe, sig, kind) if self.enabled else None
        self._cache: dict[int, object] = {}

    def _check_matches(self, attrs) -> None:
        """Refuse a drift store made for other batches or another recording."""
        if int(attrs["NT"]) != self.NT or int(attrs["n_samples"]) != self.n_samples:
            raise KilosnakeError(
                f"drift store {str(self.drift_path)!r} was made for NT={attrs['NT']}, "
                f"n_samples={attrs['n_samples']}, but {str(self.path)!r} has NT={self.NT}, "
                f"n_samples={self.n_samples}; rerun the drift rule "
                "(snakemake --forcerun drift)"
            )
        probe_shanks = np.unique(self.probe.kcoords)
        if not np.array_equal(np.sort(self.shank_ids), probe_shanks):
            raise KilosnakeError(
                f"drift store {str(self.drift_path)!r} describes shanks "
                f"{self.shank_ids.tolist()}, the probe has "
                f"{probe_shanks.tolist()}"
            )
        expected = (self.shank_ids.size, n_batches(self.n_samples, self.NT))
        if self.dshift.shape[:2] != expected or self.yblk.shape != (
            expected[0],
            self.dshift.shape[2],
        ):
            raise KilosnakeError(
                f"drift store {str(self.drift_path)!r}: dshift has shape "
                f"{self.dshift.shape} and yblk {self.yblk.shape}, expected "
                f"(n_shanks, n_batches, n_blocks) = {expected + ('n',)} and "
                "(n_shanks, n_blocks)"
            )

    def batch_matrix(self, b: int):
        """``M.T`` of batch ``b`` (backend array, float32), or None when it does not move."""
        if b in self._cache:
            return self._cache[b]
        shifts = channel_shifts(self.dshift[:, b], self.yblk, self.probe, self.shank_ids)
        mt = None
        if shifts.any():
            mt = self.be.asarray(self.interpolator.matrix(shifts).T, self.be.xp.float32)
        if len(self._cache) >= self.CACHE_SIZE:
            self._cache.pop(next(iter(self._cache)))
        self._cache[b] = mt
        return mt

    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples [start, stop) in whitened units (float32), drift-corrected."""
        x = self.plain.read(start, stop)
        if not self.enabled:
            return x
        return self.correct(x, start)

    def read_device(self, be: Backend, start: int, stop: int):
        """:meth:`read` as an array of ``be`` (the matrix products run there; the same values
        as :meth:`read` when ``be`` is the reader's backend)."""
        x = self.plain.read_device(be, start, stop)
        if not self.enabled:
            return x
        return self._apply_batch_matrices(x, start, lambda part, mt: part @ be.asarray(mt))

    def read_int16(self, start: int, stop: int) -> np.ndarray:
        """Samples [start, stop) drift-corrected, scaled and rounded like the stored traces."""
        if not self.enabled:
            return self.plain.read_int16(start, stop)
        y = np.rint(self.read(start, stop) * np.float32(self.scaleproc))
        return np.clip(y, -32768, 32767).astype(np.int16)

    def correct(self, x: np.ndarray, start: int) -> np.ndarray:
        """Apply each batch's matrix to the samples it owns (``x`` starts at sample ``start``)."""
        return self._apply_batch_matrices(
            x, start, lambda part, mt: self.be.to_host(self.be.asarray(part) @ mt)
        )

    def _apply_batch_matrices(self, x, start: int, apply):
        """A copy of ``x`` (starting at sample ``start``) with ``apply(part, M.T)`` on the part
        of every batch that moves."""
        lo, hi = max(start, 0), min(start + x.shape[0], self.n_samples)
        out = x.copy()
        for b in range(lo // self.NT, (hi - 1) // self.NT + 1) if hi > lo else ():
            a, z = max(lo, b * self.NT) - start, min(hi, (b + 1) * self.NT) - start
            mt = self.batch_matrix(b)
            if mt is not None:
                out[a:z] = apply(x[a:z], mt)
        return out


def write_corrected_traces(
    reader: DriftCorrectedReader, out, p: dict | None = None, device: str = "cpu"
) -> None:
    """Write the drift-corrected traces as a new ``preprocessed.zarr`` (same layout).

    The alternative to correcting on every read: one extra pass and a second copy of the
    traces on disk, after which later stages read with the plain reader.
    """

    NT = reader.NT
    attrs = own_attrs(reader.group.attrs)
    attrs["drift"] = str(reader.drift_path)
    with writing_store(out, "drift_apply", p or {}, device, (p or {}).get("seed"), attrs) as g:
        traces = create_traces(g, reader.n_samples, reader.n_channels, NT)
        write_probe_arrays(g, reader.probe)
        for start in range(0, reader.n_samples, NT):
            stop = min(start + NT, reader.n_samples)
            traces[start:stop] = reader.read_int16(start, stop)
