"""No spike holes: spikes on and around every batch boundary are found exactly once."""

import numpy as np
import zarr

from kilosnake import params as kparams
from kilosnake.io.traces import PreprocessedReader
from kilosnake.sorting import learn, toy, waveforms
from kilosnake.sorting.final_pass import write_final_pass

NT0, NT0MIN = 61, 20
NT = 4096


def _trains(n_samples):
    """Two units, each firing every 67 / 71 samples: all residues modulo NT are hit."""
    a = np.arange(5, n_samples - NT0, 67)
    b = np.arange(40, n_samples - NT0, 71)
    times = np.concatenate([a, b])
    units = np.concatenate([np.zeros(a.size, int), np.ones(b.size, int)])
    order = np.lexsort((units, times))
    return times[order], units[order]


def _true_templates(be, rec):
    """templates.zarr-like arrays built from the ground-truth waveforms."""
    iC, _, _ = waveforms.closest_channels(rec.probe.xc, rec.probe.yc, 32, 30.0)
    Ka, Kb = waveforms.kriging_kernels(NT0, NT0MIN, 10, 1.0)
    basis = np.linalg.qr(rec.waveforms[:, :, [1, -2]].reshape(NT0, -1) + np.eye(NT0)[:, :4])[0][
        :, :6
    ]
    det = {"iC": iC, "Ka": Ka, "Kb": Kb, "wPCA": basis, "wTEMP": basis}
    state = learn.LearnerState(
        be.asarray(rec.waveforms.astype(np.float64)), be.asarray(np.full(len(rec.waveforms), 100.0))
    )
    p = kparams.resolve({})
    return learn.finalise_templates(be, state, det, p, m0=0.0)


def test_every_boundary_spike_found_exactly_once(be, tmp_path):
    rec = toy.make_toy_recording(
        n_channels=16,
        duration_s=30 * NT / 30000,
        n_units=2,
        amplitudes=(20.0, 24.0),
        rate_hz=0,
        seed=7,
        noise=0.5,
    )
    times, units = _trains(rec.traces.shape[0])
    traces = rec.traces.copy()
    toy.add_spikes(traces, rec.waveforms, times, units, np.ones(times.size), NT0MIN)
    toy.write_preprocessed_store(tmp_path / "pre.zarr", traces, rec.probe, 30000.0, NT)
    reader = PreprocessedReader(tmp_path / "pre.zarr")
    tpl = _true_templates(be, rec)
    unit_of_template = np.argsort(np.argsort(tpl["iW"]))  # templates are ordered by channel
    p = kparams.resolve({"device": be.name})
    group = zarr.open_group(str(tmp_path / "spikes.zarr"), mode="w")
    n = write_final_pass(be, reader, tpl, NT0MIN, p, group)

    found_t = group["time"][...].astype(np.int64)
    found_u = unit_of_template[group["template"][...].astype(np.int64)]
    batch = group["batch"][...]
    assert n == times.size
    np.testing.assert_array_equal(found_t, times)
    np.testing.assert_array_equal(found_u, units)
    np.testing.assert_array_equal(batch, found_t // NT)
    # near every boundary: histogram of times modulo NT equals the injected one, no gap
    edges = np.arange(0, NT + 1, 32)
    hist_found = np.histogram(found_t % NT, edges)[0]
    assert (hist_found > 0).all()
    np.testing.assert_array_equal(hist_found, np.histogram(times % NT, edges)[0])
    # features have the documented shapes
    assert group["template_features"].shape == (n, 2)
    assert group["pc_features"].shape == (n, p["nPCs"], 16)
