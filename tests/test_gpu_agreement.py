"""The GPU sort agrees with the CPU sort: same units, the same spikes at the same samples.

The generated demo recording (or the preset named by ``KILOSNAKE_AGREEMENT_PRESET``, e.g.
``small``) is sorted twice through the workflow, with ``device=cpu`` and ``device=gpu``, in two
folders. Run on a machine with CuPy and a CUDA device::

    pytest -m gpu tests/test_gpu_agreement.py -v

Without a usable GPU the test is skipped.
"""

import os
from pathlib import Path

import numpy as np
import pytest
from workflow_runs import snakemake

from kilosnake.groundtruth.score import score_phy_folder
from kilosnake.io.store import open_store
from kilosnake.runtime.backend import _gpu_backend_or_reason

pytestmark = [pytest.mark.gpu, pytest.mark.slow]

PRESET = os.environ.get("KILOSNAKE_AGREEMENT_PRESET", "demo")
#: fraction of the CPU's spike times the GPU must find at exactly the same sample
SAME_SAMPLE_FRACTION = 0.99
#: a unit's template must correlate at least this much with its best match on the other device
TEMPLATE_CORRELATION = 0.9
#: units with fewer spikes than this are left out of the template comparison
MIN_UNIT_SPIKES = 50


def sort_on(device: str, workdir: Path) -> Path:
    """Sort the generated recording up to its scorecard on ``device``; return its results."""
    target = f"results/{PRESET}/scorecard.txt"
    config = (f"device={device}", f"demo_preset={PRESET}")
    snakemake(workdir, target, config=config, cores=4, timeout=3600)
    return workdir / "results" / PRESET


@pytest.fixture(scope="module")
def sorts(tmp_path_factory):
    backend, reason = _gpu_backend_or_reason()
    if backend is None:
        pytest.skip(f"no GPU backend: {reason}")
    base = tmp_path_factory.mktemp("agreement")
    return {device: sort_on(device, base / device) for device in ("cpu", "gpu")}


def well_detected_units(results: Path) -> set:
    """Ground-truth units the sort found well (accuracy >= the scorecard's threshold)."""
    workdir = results.parents[1]  # the workflow generated the recording in its folder
    score = score_phy_folder(results / "phy", workdir / "resources" / "demo" / f"{PRESET}_gt.npz")
    threshold = score.summary["well_detected_accuracy"]
    return {row["gt_unit"] for row in score.per_unit if row["accuracy"] >= threshold}


def unit_templates(phy: Path) -> tuple[np.ndarray, np.ndarray]:
    """Ids of the clusters with at least ``MIN_UNIT_SPIKES`` spikes and their flattened,
    centred, unit-norm templates."""
    clusters = np.load(phy / "spike_clusters.npy")
    counts = np.bincount(clusters.astype(np.int64))
    ids = np.flatnonzero(counts >= MIN_UNIT_SPIKES)
    t = np.load(phy / "templates.npy")[ids].reshape(ids.size, -1).astype(np.float64)
    t -= t.mean(axis=1, keepdims=True)
    t /= np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)
    return ids, t


def unmatched_templates(a: Path, b: Path) -> list:
    """Units of folder ``a`` whose best correlation with a unit of ``b`` is too low."""
    ids_a, ta = unit_templates(a)
    ids_b, tb = unit_templates(b)
    if ids_b.size == 0:
        return [(int(i), 0.0) for i in ids_a]
    best = (ta @ tb.T).max(axis=1)
    return [(int(i), round(float(c), 3)) for i, c in zip(ids_a, best) if c < TEMPLATE_CORRELATION]


def same_sample_fraction(cpu_times: np.ndarray, gpu_times: np.ndarray) -> float:
    """Fraction of the CPU's spike times found at exactly the same sample by the GPU."""
    if cpu_times.size == 0:
        return 1.0
    return float(np.isin(cpu_times, gpu_times).mean())


def test_gpu_finds_the_same_ground_truth_units_as_the_cpu(sorts):
    cpu, gpu = well_detected_units(sorts["cpu"]), well_detected_units(sorts["gpu"])
    assert cpu == gpu, (
        f"well-detected ground-truth units differ: CPU only {sorted(cpu - gpu)}, "
        f"GPU only {sorted(gpu - cpu)} (CPU {len(cpu)}, GPU {len(gpu)})"
    )


def test_every_unit_has_a_matching_template_on_the_other_device(sorts):
    cpu_phy, gpu_phy = sorts["cpu"] / "phy", sorts["gpu"] / "phy"
    missing = {
        "CPU units without a GPU match": unmatched_templates(cpu_phy, gpu_phy),
        "GPU units without a CPU match": unmatched_templates(gpu_phy, cpu_phy),
    }
    assert not any(missing.values()), (
        f"(unit, best correlation) below {TEMPLATE_CORRELATION}: {missing}"
    )


def test_gpu_spike_times_are_the_cpu_spike_times(sorts):
    times = {
        d: np.asarray(open_store(sorts[d] / "spikes.zarr")["time"][...], np.int64) for d in sorts
    }
    final = same_sample_fraction(times["cpu"], times["gpu"])
    phy = same_sample_fraction(
        np.load(sorts["cpu"] / "phy" / "spike_times.npy"),
        np.load(sorts["gpu"] / "phy" / "spike_times.npy"),
    )
    assert final >= SAME_SAMPLE_FRACTION, (
        f"only {100 * final:.2f} % of the CPU's {times['cpu'].size} final-pass spike times have "
        f"a GPU spike at the same sample (GPU: {times['gpu'].size} spikes; after curation "
        f"{100 * phy:.2f} %); required {100 * SAME_SAMPLE_FRACTION:g} %"
    )
    print(
        f"same-sample fraction: final pass {100 * final:.3f} % ({times['cpu'].size} CPU / "
        f"{times['gpu'].size} GPU spikes), Phy folder {100 * phy:.3f} %"
    )
