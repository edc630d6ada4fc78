"""Recordings SpikeInterface reads, sorted from the command line (``snakemake`` and the
``kilosnake`` command) and through ``run()``: ``--config recording=... format=... stream=...``.

* a SpikeGLX folder (.bin + .meta) is sorted from its .bin, in place: no copy under results/;
* a SpikeInterface recording with no flat binary behind it (a channel selection dumped to JSON)
  and an NWB file are written once to results/<name>/recording.dat, and a second run plans
  nothing;
* a bad format or a missing stream stops the run before any job, naming the choices, with
  nothing written.

Every sort is scored against its ground truth.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from spikeglx_meta import np1_meta, write_meta
from workflow_runs import snakemake

from kilosnake.groundtruth.generate import generate
from kilosnake.groundtruth.presets import preset_config
from kilosnake.groundtruth.score import score_phy_folder
from kilosnake.io.probe import load_probe

si = pytest.importorskip("spikeinterface.core")
se = pytest.importorskip("spikeinterface.extractors")
sc = pytest.importorskip("spikeinterface.comparison")

pytestmark = pytest.mark.slow

NP1 = preset_config("demo", sync_channel=True, sync_mode="zeros")
N_UNITS = 6


def spikeglx_run(folder: Path) -> tuple[Path, Path, Path]:
    """``folder/run_g0`` holding a generated NP1.0 recording as SpikeGLX writes it; returns the
    run folder, the .bin and the ground truth."""
    probe_dir = folder / "run_g0" / "run_g0_imec0"
    probe_dir.mkdir(parents=True)
    bin_path = probe_dir / "run_g0_t0.imec0.ap.bin"
    meta = write_meta(bin_path, np1_meta(range(32), n_samples=NP1.n_samples))
    paths = generate(NP1, folder / "gen", name="gen", seed=5, probe=load_probe(meta))
    paths.bin.rename(bin_path)
    return folder / "run_g0", bin_path, paths.gt


@pytest.fixture(scope="module")
def ground_truth(tmp_path_factory):
    """A SpikeInterface ground-truth recording saved as a binary folder, and its sorting."""
    recording, sorting = si.generate_ground_truth_recording(
        durations=[30.0], sampling_frequency=30000.0, num_channels=32, num_units=N_UNITS, seed=2
    )
    folder = tmp_path_factory.mktemp("gt") / "binary"
    return recording.save(folder=folder, n_jobs=1, progress_bar=False), sorting


def well_detected(gt_sorting, phy: Path) -> int:
    sorting = se.read_kilosort(phy, keep_good_only=False)
    comparison = sc.compare_sorter_to_ground_truth(gt_sorting, sorting, exhaustive_gt=True)
    return len(comparison.get_well_detected_units(well_detected_score=0.8))


def test_spikeglx_folder_is_sorted_in_place(tmp_path):
    run_folder, bin_path, gt = spikeglx_run(tmp_path)
    work = tmp_path / "work"
    snakemake(work, config=("device=cpu", f"recording={run_folder}", "format=spikeglx"))
    results = work / "results" / "run_g0_imec0.ap"
    phy = results / "phy"
    assert (phy / "params.py").is_file() and (results / "report.html").is_file()
    params = (phy / "params.py").read_text()
    dat_path = params.split("dat_path = ")[1].splitlines()[0].strip("'\"")
    assert (phy / dat_path).resolve() == bin_path.resolve()  # Phy opens the .bin itself
    assert not list((work / "results").rglob("*.dat"))  # nothing was copied
    assert "read in place" in (results / "logs" / "recording_probe.log").read_text()
    summary = score_phy_folder(phy, gt).summary
    # measured: 8 of 10, as with dat= and the .meta beside it (test_spikeglx_workflow)
    assert summary["n_well_detected"] >= 0.6 * summary["n_gt_units"], summary


def kilosnake_command(workdir: Path, *config: str, args=()) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "kilosnake.cli", "--cores", "2", *args, "--config", *config]
    workdir.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=1800)
    result.output = result.stdout + result.stderr
    return result


def test_computed_recording_is_written_once_and_sorted(ground_truth, tmp_path):
    saved, gt_sorting = ground_truth
    computed = saved.select_channels(saved.channel_ids)  # no flat binary behind it
    computed.dump_to_json(tmp_path / "selection.json")
    work = tmp_path / "work"
    config = ("device=cpu", f"recording={tmp_path / 'selection.json'}", "format=spikeinterface")
    result = kilosnake_command(work, *config)
    assert result.returncode == 0, result.output[-4000:]
    results = work / "results" / "selection"
    dat = results / "recording.dat"
    assert dat.stat().st_size == saved.get_num_samples() * 32 * 2  # int16, every channel
    log = (results / "logs" / "convert_recording.log").read_text()
    assert "writing the recording once as int16" in log and "(100%)" in log
    assert well_detected(gt_sorting, results / "phy") >= N_UNITS - 1  # measured: 6 of 6

    again = kilosnake_command(work, *config, args=("-n",))
    assert again.returncode == 0 and "Nothing to be done" in again.output, again.output[-2000:]


def test_nwb_file_is_sorted_through_run(ground_truth, tmp_path):
    pytest.importorskip("pynwb")
    from test_recording_formats import write_nwb

    import kilosnake

    saved, gt_sorting = ground_truth
    path = tmp_path / "session.nwb"
    write_nwb(saved, path)
    result = kilosnake.run(
        recording=path, format="nwb", output_dir=tmp_path / "out", cores=2, params={"device": "cpu"}
    )
    assert result.recording == "session" and result.phy_dir.is_dir()
    assert (result.results_dir / "recording.dat").is_file()
    assert well_detected(gt_sorting, result.phy_dir) >= N_UNITS - 1  # measured: 6 of 6


def two_probe_run(folder: Path) -> Path:
    for k in (0, 1):
        probe_dir = folder / "run_g0" / f"run_g0_imec{k}"
        probe_dir.mkdir(parents=True)
        bin_path = probe_dir / f"run_g0_t0.imec{k}.ap.bin"
        np.zeros((30000, 33), np.int16).tofile(bin_path)
        write_meta(bin_path, np1_meta(range(32), n_samples=30000).replace("imec0", f"imec{k}"))
    return folder / "run_g0"


@pytest.mark.parametrize(
    "extra, expected",
    [
        (("format=spikeglz",), "one of 'spikeglx', 'openephys', 'nwb', 'intan'"),
        (("format=spikeglx",), "several streams: imec0.ap, imec1.ap"),
        (("format=spikeglx", "stream=imec0.lf"), "its streams are: imec0.ap, imec1.ap"),
    ],
    ids=["bad_format", "missing_stream", "unknown_stream"],
)
def test_bad_format_or_stream_stops_before_any_job(tmp_path, extra, expected):
    run_folder = two_probe_run(tmp_path)
    work = tmp_path / "work"
    result = kilosnake_command(work, "device=cpu", f"recording={run_folder}", *extra)
    assert result.returncode != 0
    assert expected in result.output, result.output[-3000:]
    assert "fix:" in result.output
    assert not (work / "results").exists()  # nothing half-written
