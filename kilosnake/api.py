"""pykilosort's Python API on top of the kilosnake workflow.

A pykilosort script runs unchanged once its import line reads
``from kilosnake import add_default_handler, run, Bunch``::

    probe = Bunch()
    probe.NchanTOT = 385
    probe.chanMap = np.load(dir_path / 'chanMap.npy').squeeze().astype(np.int64) - 1
    probe.xc = np.load(dir_path / 'xc.npy').squeeze()
    probe.yc = np.load(dir_path / 'yc.npy').squeeze()
    probe.kcoords = np.load(dir_path / 'kcoords.npy').squeeze()
    run(dat_path, probe=probe, dir_path=dir_path, n_channels=385, dtype=np.int16, sample_rate=3e4)

:func:`run` drives the same Snakemake workflow as the ``snakemake`` command, through Snakemake's
Python API, in a working folder ``output_dir`` (default ``dir_path / "kilosnake_output"``):

* the probe given as a Bunch or dict is written there as a probe folder (``probe/chanMap.npy``,
  ``xc.npy``, ``yc.npy``, ``kcoords.npy``, 0-based); a path is used as it is;
* everything for the recording lands in ``output_dir/results/<name>/`` (``<name>`` = the raw
  file name without ``.bin``); the Phy folder is ``output_dir/results/<name>/phy`` and its
  ``params.py`` points at the raw file by a relative path;
* running again reuses finished stages: only stages whose inputs or parameters changed rerun.

``params`` overrides entries of the parameter table (``kilosnake/params.py``; Kilosort names such
as ``Th``, ``fshigh``, ``AUCsplit``); ``stop_after`` names the last stage to run.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np

from kilosnake.errors import KilosnakeError
from kilosnake.io.probe import load_probe, write_npy_folder
from kilosnake.runtime.logs import add_default_handler
from kilosnake.workflow.recordings import recording_name
from kilosnake.workflow.summary import recent_failure

logger = logging.getLogger(__name__)

__all__ = ["Bunch", "RunError", "RunResult", "add_default_handler", "run"]

#: the workflow's entry point (the repository's Snakefile)
SNAKEFILE = Path(__file__).resolve().parents[1] / "Snakefile"

#: what each stage leaves in results/<name>/ (``stop_after`` values)
STAGE_OUTPUTS = {
    "check_input": "input.json",
    "whitening": "whitening.zarr",
    "preprocess": "preprocessed.zarr",
    "drift": "drift.zarr",
    "detect": "detect.zarr",
    "learn": "templates.zarr",
    "final_pass": "spikes.zarr",
    "merge": "merge.zarr",
    "split": "split.zarr",
    "cutoff": "cutoff.zarr",
    "export_phy": "phy",
}


class RunError(KilosnakeError):
    """A stage of the workflow failed; its log names the problem."""


class Bunch(dict):
    """A dict whose keys are also attributes (``probe.xc`` is ``probe['xc']``)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        self[name] = value

    def __delattr__(self, name):
        try:
            del self[name]
        except KeyError:
            raise AttributeError(name) from None

    def copy(self) -> Bunch:
        return Bunch(self)


@dataclasses.dataclass
class RunResult:
    """What :func:`run` produced.

    Attributes
    ----------
    recording : str
        Name of the recording's results folder.
    output_dir : Path
        Snakemake working folder.
    results_dir : Path
        ``output_dir/results/<recording>``: every stage's output and log.
    phy_dir : Path or None
        The Phy folder (None when ``stop_after`` stopped before the export).
    n_units, n_good_units, n_spikes : int
        Units with spikes, those labelled good, spikes in the Phy folder (0 without one).
    timings : dict
        Seconds per stage from Snakemake's benchmark files (stages run now or before).
    wall_time_s : float
        Duration of this call.
    """

    recording: str
    output_dir: Path
    results_dir: Path
    phy_dir: Path | None
    n_units: int
    n_good_units: int
    n_spikes: int
    timings: dict
    wall_time_s: float

    @property
    def params_py(self) -> Path | None:
        """``params.py`` of the Phy folder (what ``phy template-gui`` opens)."""
        return None if self.phy_dir is None else self.phy_dir / "params.py"


def run(
    dat_path=None,
    dir_path=None,
    output_dir=None,
    probe=None,
    params=None,
    stop_after=None,
    n_channels=None,
    dtype=None,
    sample_rate=None,
    cores=None,
    snakefile=None,
    **kwargs,
) -> RunResult:
    """Sort a raw recording, pykilosort style; return where the results are.

    Parameters
    ----------
    dat_path : str or Path
        Raw binary file (samples x channels interleaved).
    dir_path : str or Path, optional
        Folder of the recording; default: the raw file's folder.
    output_dir : str or Path, optional
        Working folder of the workflow; default ``dir_path / "kilosnake_output"``.
    probe : Bunch, dict or path
        ``chanMap`` (0-based rows of the raw file), ``xc``, ``yc`` (µm), optional ``kcoords`` and
        ``NchanTOT``; or a probe file/folder kilosnake reads.
    params : dict, optional
        Parameter overrides (names of ``kilosnake/params.py``).
    stop_after : str, optional
        Last stage to run (a key of :data:`STAGE_OUTPUTS`); default: through the Phy export.
    n_channels : int, optional
        Total channels in the file (default ``probe.NchanTOT``).
    dtype : numpy dtype or str, optional
        Sample type of the raw file (default int16).
    sample_rate : float, optional
        Hz (default 30000, or a SpikeGLX ``.meta`` beside the file).
    cores : int, optional
        CPU cores Snakemake may use (default: all).
    snakefile : path, optional
        The workflow to run (default: kilosnake's own).
    **kwargs
        Accepted for pykilosort compatibility and ignored with a warning.

    Returns
    -------
    RunResult

    Raises
    ------
    RunError
        When a stage fails: the message names the stage, the first line of its error and its
        log.
    """
    t0, started = time.perf_counter(), time.time()
    if dat_path is None:
        raise ValueError("run() needs dat_path, the raw recording")
    if probe is None:
        raise ValueError("run() needs a probe (a Bunch with chanMap, xc, yc, kcoords)")
    last_output = STAGE_OUTPUTS[stage_or_default(stop_after)]
    if kwargs:
        logger.warning("run(): ignoring unsupported arguments %s", ", ".join(sorted(kwargs)))
    dat_path = Path(dat_path).resolve()
    dir_path = Path(dir_path).resolve() if dir_path is not None else dat_path.parent
    workdir = (
        Path(output_dir).resolve() if output_dir is not None else dir_path / "kilosnake_output"
    )
    workdir.mkdir(parents=True, exist_ok=True)
    name = recording_name(str(dat_path))
    config = run_config(
        dat_path,
        probe_source(probe, workdir),
        n_channels or _nchan_tot(probe),
        dtype,
        sample_rate,
        params,
    )
    target = f"results/{name}/{last_output}"
    logger.info("kilosnake run: %s -> %s (%s)", dat_path, workdir / target, workdir)
    try:
        execute(Path(snakefile or SNAKEFILE), workdir, config, [target], cores or os.cpu_count())
    except Exception as exc:
        raise RunError(failure_message(exc, workdir / "results" / name, started)) from exc
    return collect_result(name, workdir, stop_after, time.perf_counter() - t0)


def failure_message(exc: Exception, results_dir: Path, started: float) -> str:
    """Why a run failed: the failing stage and the first line of its error, from the rule log
    written during this run, else what Snakemake raised."""
    failure = recent_failure(results_dir, started)
    if failure is not None:
        stage, message, log = failure
        return f"{stage} failed: {message} (log: {log})"
    return f"the workflow failed: {exc} (the stages' logs are in {results_dir / 'logs'})"


def stage_or_default(stop_after) -> str:
    """The last stage to run; refuses unknown names."""
    stage = stop_after or "export_phy"
    if stage not in STAGE_OUTPUTS:
        raise ValueError(f"stop_after={stop_after!r}: choose one of {', '.join(STAGE_OUTPUTS)}")
    return stage


def _nchan_tot(probe):
    value = probe.get("NchanTOT") if isinstance(probe, dict) else getattr(probe, "NchanTOT", None)
    return None if value is None else int(value)


def probe_source(probe, workdir: Path) -> str:
    """A probe path for the workflow: mappings are written as a probe folder in ``workdir``."""
    if isinstance(probe, (str, os.PathLike)):
        return str(Path(probe).resolve())
    folder = workdir / "probe"
    write_probe_folder_if_changed(load_probe(probe), folder)
    return str(folder)


def write_probe_folder_if_changed(probe, folder: Path) -> None:
    """Write the probe folder, leaving files with unchanged content untouched (no rerun)."""
    staging = folder.with_name(folder.name + ".tmp")
    if staging.exists():
        shutil.rmtree(staging)
    write_npy_folder(probe, staging)
    folder.mkdir(parents=True, exist_ok=True)
    for new in sorted(staging.iterdir()):
        old = folder / new.name
        if not old.is_file() or old.read_bytes() != new.read_bytes():
            os.replace(new, old)
    shutil.rmtree(staging)


def _plain(value):
    """Config values as YAML/JSON types (numpy scalars and tuples converted)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (tuple, list, np.ndarray)):
        return [_plain(v) for v in value]
    return value


def run_config(dat_path: Path, probe: str, n_channels, dtype, sample_rate, params) -> dict:
    """The Snakemake config of one run."""
    config = {"dat": str(dat_path), "probe": probe}
    if n_channels is not None:
        config["n_channels"] = int(n_channels)
    if dtype is not None:
        config["dtype"] = np.dtype(dtype).name
    if sample_rate is not None:
        config["sample_rate"] = float(sample_rate)
    config.update({str(k): _plain(v) for k, v in dict(params or {}).items()})
    return config


def execute(snakefile: Path, workdir: Path, config: dict, targets: list, cores: int) -> None:
    """Run the workflow in-process with Snakemake's Python API; raise if a job failed."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import (
        ConfigSettings,
        DAGSettings,
        ExecutionSettings,
        OutputSettings,
        ResourceSettings,
    )

    if not snakefile.is_file():
        raise FileNotFoundError(
            f"the kilosnake workflow {snakefile} is missing; run() needs a "
            "source checkout (pip install -e .)"
        )
    with SnakemakeApi(OutputSettings(show_failed_logs=True)) as api:
        workflow = api.workflow(
            resource_settings=ResourceSettings(cores=cores),
            config_settings=ConfigSettings(config=config),
            snakefile=snakefile,
            workdir=workdir,
        )
        # stages run as threads of this process, as the workflow's default profile has it
        workflow.dag(DAGSettings(targets=frozenset(targets))).execute_workflow(
            executor="local", execution_settings=ExecutionSettings(use_threads=True)
        )


def read_benchmark_seconds(results_dir: Path) -> dict:
    """Seconds per stage from ``benchmarks/<stage>.tsv``."""
    timings = {}
    for path in sorted((results_dir / "benchmarks").glob("*.tsv")):
        with path.open() as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        if rows and rows[-1].get("s"):
            timings[path.stem] = float(rows[-1]["s"])
    return timings


def phy_counts(phy_dir: Path) -> tuple[int, int, int]:
    """Units with spikes, good units among them, and spikes of a Phy folder."""
    clusters = np.load(phy_dir / "spike_clusters.npy")
    units = np.unique(clusters)
    with (phy_dir / "cluster_KSLabel.tsv").open() as f:
        good = {
            int(r["cluster_id"])
            for r in csv.DictReader(f, delimiter="\t")
            if r["KSLabel"] == "good"
        }
    return int(units.size), int(sum(int(u) in good for u in units)), int(clusters.size)


def collect_result(name: str, workdir: Path, stop_after, wall_s: float) -> RunResult:
    """The :class:`RunResult` of a finished run."""
    results_dir = workdir / "results" / name
    phy_dir = results_dir / "phy"
    if stage_or_default(stop_after) != "export_phy" or not phy_dir.is_dir():
        phy_dir = None
    n_units, n_good, n_spikes = phy_counts(phy_dir) if phy_dir else (0, 0, 0)
    result = RunResult(
        name,
        workdir,
        results_dir,
        phy_dir,
        n_units,
        n_good,
        n_spikes,
        read_benchmark_seconds(results_dir),
        wall_s,
    )
    logger.info(
        "kilosnake run done in %.1f s: %d units (%d good), %d spikes; Phy folder %s",
        wall_s,
        n_units,
        n_good,
        n_spikes,
        phy_dir,
    )
    return result
