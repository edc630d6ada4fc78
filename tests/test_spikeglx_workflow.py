"""A SpikeGLX-style folder (.bin + .meta) sorts with no probe= (NP1.0, NP2.0 four-shank).

The recordings are generated on the contacts the .meta describes (the generator renders the units
on that probe), the .meta beside the .bin is the only description of the recording: channel
count, rate, gain and geometry all come from it.
"""

from pathlib import Path

import numpy as np
import pytest
from spikeglx_meta import four_shank_layout, np1_meta, np2_meta, write_meta
from workflow_runs import snakemake

from kilosnake.groundtruth.generate import generate
from kilosnake.groundtruth.presets import preset_config
from kilosnake.groundtruth.score import score_phy_folder
from kilosnake.io.probe import load_probe

pytestmark = pytest.mark.slow

NP1 = preset_config("demo", sync_channel=True, sync_mode="zeros")
NP24 = preset_config("shanks4", sync_channel=True, sync_mode="zeros")


def spikeglx_folder(folder: Path, synth, meta_text: str) -> Path:
    """``folder/run_g0/run_g0_imec0/run_g0_t0.imec0.ap.{bin,meta}`` on the meta's probe."""
    probe_dir = folder / "run_g0" / "run_g0_imec0"
    probe_dir.mkdir(parents=True)
    bin_path = probe_dir / "run_g0_t0.imec0.ap.bin"
    meta = write_meta(bin_path, meta_text)
    probe = load_probe(meta)
    paths = generate(synth, folder / "gen", name="gen", seed=5, probe=probe)
    paths.bin.rename(bin_path)
    return bin_path, paths.gt


def sort(workdir: Path, bin_path: Path) -> str:
    """Sort ``bin_path`` with no probe given (its ``.meta`` supplies one)."""
    config = ("device=cpu", f"dat={bin_path}")
    return snakemake(workdir, config=config, timeout=1800).output


@pytest.mark.parametrize(
    "synth, meta_text, n_shanks",
    [
        (NP1, np1_meta(range(32), n_samples=NP1.n_samples), 1),
        (NP24, np2_meta(range(64), *four_shank_layout(16), n_samples=NP24.n_samples), 4),
    ],
    ids=["np1", "np2_4shank"],
)
def test_spikeglx_folder_sorts_without_probe(tmp_path, synth, meta_text, n_shanks):
    bin_path, gt = spikeglx_folder(tmp_path, synth, meta_text)
    sort(tmp_path, bin_path)
    results = tmp_path / "results" / "run_g0_t0.imec0.ap"
    phy = results / "phy"
    assert (results / "input_check.png").is_file()
    assert (results / "report.html").is_file()
    expected = load_probe(bin_path.with_suffix(".meta"))
    np.testing.assert_allclose(np.load(phy / "channel_positions.npy")[:, 1], expected.yc)
    assert np.unique(np.load(phy / "channel_shanks.npy")).size == n_shanks
    summary = score_phy_folder(phy, gt).summary
    # measured: NP1.0 8 of 10, NP2.0 four-shank 16 of 16
    assert summary["n_well_detected"] >= 0.6 * summary["n_gt_units"], summary
