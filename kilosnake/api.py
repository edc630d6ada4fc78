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

``params`` overrides entries of the parameter table (``kilosnake/params/table.py``; Kilosort
names such as ``Th``, ``fshigh``, ``AUCsplit``); ``stop_after`` names the last stage to run.
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
from kilosnake.io.spikeglx import find_meta, has_geometry, probe_arrays, read_meta
from kilosnake.runtime.logs import add_default_handler
from kilosnake.workflow.config_check import check_config, coerced_config
from kilosnake.workflow.location import default_profile
from kilosnake.workflow.location import snakefile as workflow_snakefile
from kilosnake.workflow.recordings import recording_name, recording_sources
from kilosnake.workflow.summary import recent_failure

logger = logging.getLogger(__name__)

__all__ = [
    "Bunch",
    "RunError",
    "RunResult",
    "add_default_handler",
    "neuropixel_probe_from_metafile",
    "np1_probe",
    "run",
]

#: the workflow's entry point: a source checkout's Snakefile, else the one the package ships
SNAKEFILE = workflow_snakefile()

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
    recording=None,
    format=None,
    stream=None,
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
    probe : Bunch, dict or path, optional
        ``chanMap`` (0-based rows of the raw file), ``xc``, ``yc`` (µm), optional ``kcoords`` and
        ``NchanTOT`` (e.g. :func:`np1_probe`); or a probe file/folder kilosnake reads. Default:
        the SpikeGLX ``.meta`` beside ``dat_path`` (its imro table or ``~snsGeomMap``).
    params : dict, optional
        Parameter overrides (names of ``kilosnake/params/table.py``).
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
    recording, format, stream : optional
        Instead of ``dat_path``: a recording in a format SpikeInterface reads (a SpikeGLX or
        Open Ephys folder, an NWB file, ...), as ``--config recording=... format=...
        stream=...`` (see ``docs/parameters.md``); needs ``kilosnake[spikeinterface]``. Its
        probe comes from the recording unless ``probe`` is given; ``output_dir`` defaults to
        ``kilosnake_output`` beside it.
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
    if recording is not None:
        if dat_path is not None:
            raise ValueError("run() takes dat_path or recording, not both")
        return run_recording(
            recording, format, stream, dir_path, output_dir, probe, params, stop_after, cores,
            snakefile, kwargs, t0, started,
        )  # fmt: skip
    if dat_path is None:
        raise ValueError("run() needs dat_path, the raw recording (or recording= and format=)")
    if probe is None and not _meta_geometry(dat_path):
        raise ValueError(
            "run() needs a probe (a Bunch with chanMap, xc, yc, kcoords, e.g. np1_probe()), or "
            "a SpikeGLX .meta beside dat_path that describes it"
        )
    stage_or_default(stop_after)
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
        None if probe is None else probe_source(probe, workdir),
        n_channels or _nchan_tot(probe),
        dtype,
        sample_rate,
        params,
    )
    return run_workflow(name, dat_path, workdir, config, stop_after, cores, snakefile, t0, started)


def run_workflow(name, source, workdir, config, stop_after, cores, snakefile, t0, started):
    """Run the workflow up to ``stop_after`` for recording ``name``; collect the result."""
    target = f"results/{name}/{STAGE_OUTPUTS[stage_or_default(stop_after)]}"
    logger.info("kilosnake run: %s -> %s (%s)", source, workdir / target, workdir)
    snakefile = Path(snakefile or SNAKEFILE)
    check_snakefile(snakefile)
    try:
        execute(snakefile, workdir, config, [target], cores or os.cpu_count())
    except Exception as exc:
        raise RunError(failure_message(exc, workdir / "results" / name, started)) from exc
    return collect_result(name, workdir, stop_after, time.perf_counter() - t0)


def run_recording(
    recording, fmt, stream, dir_path, output_dir, probe, params, stop_after, cores, snakefile,
    ignored, t0, started,
) -> RunResult:  # fmt: skip
    """:func:`run` of a recording SpikeInterface reads (``recording=``, ``format=``)."""
    stage_or_default(stop_after)
    if ignored:
        logger.warning("run(): ignoring unsupported arguments %s", ", ".join(sorted(ignored)))
    recording = Path(recording).resolve()
    base = Path(dir_path).resolve() if dir_path is not None else recording.parent
    workdir = Path(output_dir).resolve() if output_dir is not None else base / "kilosnake_output"
    workdir.mkdir(parents=True, exist_ok=True)
    config = {"recording": str(recording), "format": fmt}
    if stream is not None:
        config["stream"] = str(stream)
    if probe is not None:
        config["probe"] = probe_source(probe, workdir)
    config.update({str(k): _plain(v) for k, v in dict(params or {}).items()})
    check_config(coerced_config(config))  # names a bad format and the choices
    name = next(iter(recording_sources(config)))  # a missing stream is named here
    return run_workflow(name, recording, workdir, config, stop_after, cores, snakefile, t0, started)


def failure_message(exc: Exception, results_dir: Path, started: float) -> str:
    """Why a run failed: the failing stage and the first line of its error, from the rule log
    written during this run, else what Snakemake raised."""
    failure = recent_failure(results_dir, started)
    if failure is not None:
        stage, message, log = failure
        return f"{stage} failed: {message} (log: {log})"
    return f"the workflow failed: {exc} (the stages' logs are in {results_dir / 'logs'})"


def _meta_geometry(dat_path) -> bool:
    """Whether a SpikeGLX .meta beside ``dat_path`` describes the probe."""
    meta = find_meta(dat_path) if dat_path is not None else None
    return meta is not None and has_geometry(read_meta(meta))


def np1_probe() -> Bunch:
    """A Neuropixels 1.0 probe as pykilosort describes it: 384 channels of a 385-column file
    (the last is the sync channel), bank 0, Kilosort's channel-map coordinates.

    Returns
    -------
    Bunch
        ``NchanTOT`` 385, ``chanMap`` 0..383 (0-based rows), ``xc`` (43, 11, 59, 27 µm
        repeating: two columns 32 µm apart, staggered by 16 µm on alternate rows), ``yc``
        (20 µm rows, 20 to 3840 µm), ``kcoords`` (0: one shank).
    """
    n = 384
    probe = Bunch()
    probe.NchanTOT = n + 1
    probe.chanMap = np.arange(n, dtype=np.int64)
    probe.xc = np.tile(np.array([43.0, 11.0, 59.0, 27.0]), n // 4)
    probe.yc = 20.0 * (np.arange(n) // 2 + 1)
    probe.kcoords = np.zeros(n)
    return probe


def neuropixel_probe_from_metafile(metafile) -> Bunch:
    """The probe a SpikeGLX ``.meta`` describes, as a pykilosort-style Bunch.

    Parameters
    ----------
    metafile : path
        The ``.meta`` of an imec AP (or LF) file: Neuropixels 1.0 and 2.0 (single- and
        four-shank) from the imro table, every probe type from ``~snsGeomMap``.

    Returns
    -------
    Bunch
        ``NchanTOT`` (columns of the file, sync included), ``chanMap`` (0-based rows of the
        neural channels in use), ``xc``, ``yc`` (µm, SpikeGLX coordinates: x from the left edge
        of shank 0, y from the tip), ``kcoords`` (shank), ``name`` (part number).
    """
    a = probe_arrays(metafile)
    probe = Bunch()
    probe.NchanTOT = a["n_channels_total"]
    probe.chanMap = a["chan_map"]
    probe.xc = a["xc"]
    probe.yc = a["yc"]
    probe.kcoords = a["kcoords"]
    probe.name = a["name"]
    return probe


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


def run_config(dat_path: Path, probe: str | None, n_channels, dtype, sample_rate, params) -> dict:
    """The Snakemake config of one run."""
    config = {"dat": str(dat_path)}
    if probe is not None:
        config["probe"] = probe
    if n_channels is not None:
        config["n_channels"] = int(n_channels)
    if dtype is not None:
        config["dtype"] = np.dtype(dtype).name
    if sample_rate is not None:
        config["sample_rate"] = float(sample_rate)
    config.update({str(k): _plain(v) for k, v in dict(params or {}).items()})
    return config


def check_snakefile(snakefile: Path) -> None:
    """Raise FileNotFoundError when the workflow is not there."""
    if not snakefile.is_file():
        raise FileNotFoundError(
            f"the kilosnake workflow {snakefile} is missing: this installation has neither a "
            "source checkout nor the packaged workflow (reinstall kilosnake from its wheel "
            "or with pip install -e . in a checkout)"
        )


def execute(snakefile: Path, workdir: Path, config: dict, targets: list, cores: int) -> None:
    """Run the workflow in-process with Snakemake's Python API; raise if a job failed."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.enums import RerunTrigger
    from snakemake.settings.types import (
        ConfigSettings,
        DAGSettings,
        ExecutionSettings,
        OutputSettings,
        ResourceSettings,
    )

    check_snakefile(snakefile)
    # the rerun triggers of the workflow's default profile, as on the command line
    triggers = default_profile().get("rerun-triggers")
    dag = {"rerun_triggers": RerunTrigger.parse_choices_set(triggers)} if triggers else {}
    with SnakemakeApi(OutputSettings(show_failed_logs=True)) as api:
        workflow = api.workflow(
            resource_settings=ResourceSettings(cores=cores),
            config_settings=ConfigSettings(config=config),
            snakefile=snakefile,
            workdir=workdir,
        )
        # stages run as threads of this process, as the workflow's default profile has it
        workflow.dag(DAGSettings(targets=frozenset(targets), **dag)).execute_workflow(
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
