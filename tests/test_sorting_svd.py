"""Batched rank-3 factorisation, peak alignment and template cross-correlations."""

import numpy as np
from backends import backends_agree

from kilosnake.sorting import svd, toy, waveforms

NT0, NT0MIN = 61, 20


def _kernels():
    return waveforms.kriging_kernels(NT0, NT0MIN, 10, 1.0)


def _rank3_templates(n_chan=16, n_filt=5, seed=0, peak_shift=0):
    """Rank-3 templates whose first temporal factor peaks at nt0min + peak_shift."""
    rng = np.random.default_rng(seed)
    probe = toy.linear_probe(n_chan)
    iC, _, _ = waveforms.closest_channels(probe.xc, probe.yc, 8, 30.0)
    out = np.zeros((n_filt, NT0, n_chan))
    for f in range(n_filt):
        base = np.stack(
            [toy.temporal_shape(NT0, NT0MIN + peak_shift, w) for w in (2.0, 3.0, 4.5)], axis=1
        )
        centre = rng.integers(n_chan)
        spatial = np.zeros((n_chan, 3))
        spatial[iC[:4, centre]] = rng.standard_normal((4, 3)) * [1.0, 0.4, 0.2]
        spatial[centre, 0] = 3.0
        out[f] = 15 * base @ spatial.T
    return out, iC


@backends_agree(rtol=1e-3, atol=1e-3)
def test_factorisation_reconstructs_rank3_templates(be):
    dWU, iC = _rank3_templates()
    Ka, Kb = _kernels()
    lr = svd.factorise_templates(be, be.asarray(dWU), iC, Ka, Kb, NT0MIN)
    W, U, mu = be.to_host(lr.W), be.to_host(lr.U), be.to_host(lr.mu)
    recon = np.einsum("fsk,fck->fsc", W, U) * mu[:, None, None]
    err = np.linalg.norm((recon - dWU).reshape(len(mu), -1), axis=1)
    assert (err / np.linalg.norm(dWU.reshape(len(mu), -1), axis=1) < 0.02).all()
    np.testing.assert_allclose(
        np.einsum("fsk,fsl->fkl", W, W), np.broadcast_to(np.eye(3), (len(mu), 3, 3)), atol=1e-6
    )
    np.testing.assert_allclose((U**2).sum(axis=(1, 2)), 1, atol=1e-6)
    assert (W[:, NT0MIN, 0] < 0).all()
    # spatial factors vanish outside the peak channel's neighbourhood
    iW = be.to_host(lr.iW)
    for f in range(len(mu)):
        outside = np.setdiff1d(np.arange(U.shape[1]), iC[:, iW[f]])
        assert np.abs(U[f, outside]).max() == 0
    return recon, mu, iW  # the factors themselves only up to the signs of factors 2 and 3


@backends_agree(rtol=1e-4, atol=1e-4)
def test_factorisation_moves_the_peak_to_nt0min(be):
    dWU, iC = _rank3_templates(peak_shift=4)
    Ka, Kb = _kernels()
    lr = svd.factorise_templates(be, be.asarray(dWU), iC, Ka, Kb, NT0MIN)
    W = be.to_host(lr.W)
    assert (np.argmax(np.abs(W[:, :, 0]), axis=1) == NT0MIN).all()
    return W[:, :, 0]  # the first factor's sign is fixed (negative trough)


@backends_agree(
    rtol={"ctc": 1e-4, "T": 1e-4, "similarity": 1e-4},
    atol={"ctc": 1e-2, "T": 1e-4, "similarity": 1e-5},  # ctc: sums of ~1e5
)
def test_cross_correlations_match_dense_templates(be):
    dWU, iC = _rank3_templates(n_filt=4, seed=3)
    Ka, Kb = _kernels()
    lr = svd.factorise_templates(be, be.asarray(dWU), iC, Ka, Kb, NT0MIN)
    ctc = be.to_host(svd.template_cross_correlations(be, lr.W, lr.U))
    T = be.to_host(svd.full_templates(be, lr.W, lr.U))
    assert ctc.shape == (4, 2 * NT0 - 1, 4)
    for i, j, tau in [(0, 0, 0), (0, 1, 3), (2, 1, -7), (3, 3, 20), (1, 2, -60)]:
        a = T[i, max(0, -tau) : NT0 - max(0, tau)]
        b = T[j, max(0, tau) : NT0 - max(0, -tau)]
        assert abs(ctc[j, tau + NT0 - 1, i] - (a * b).sum()) < 1e-4
    similarity = be.to_host(svd.similarity_scores(be.asarray(ctc)))
    np.testing.assert_allclose(similarity.diagonal(), 1, atol=1e-5)
    return {"ctc": ctc, "T": T, "similarity": similarity}
