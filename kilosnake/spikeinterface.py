"""SpikeInterface in and out: sort a SpikeInterface recording, get a SpikeInterface Sorting.

Needs the optional extra (``pip install "kilosnake[spikeinterface]"``; on Python < 3.14 also
``pip install --no-deps spikeinterface``: SpikeInterface pins ``zarr<3`` there, which kilosnake
cannot use, although the parts used here work with zarr 3)::

    import kilosnake.spikeinterface as ks
    sorting = ks.run_kilosnake(recording, "ks_out", Th=(9, 8))

    # or through SpikeInterface's own entry point, once this module is imported
    import spikeinterface.sorters as ss
    sorting = ss.run_sorter("kilosnake", recording, folder="ks_out")

A recording folder or file can also be sorted without Python, by the workflow itself:
``snakemake --config recording=/data/run_g0 format=spikeglx stream=imec0.ap`` (see
:mod:`kilosnake.io.formats`, which reads and writes recordings for both routes).

:func:`run_kilosnake` hands the recording to :func:`kilosnake.api.run`:

* **traces**: a recording already backed by one flat binary file kilosnake reads (samples x
  channels, no header, int16/uint16/int32/float32: a SpikeInterface binary folder, or a Neo
  reader's file such as a SpikeGLX ``.bin`` or an Open Ephys binary ``continuous.dat``, whose
  channels may be some of the file's columns) is read in place; any other is written once
  to ``folder/recording.dat`` as int16 (floating-point traces scaled so the noise spans about ten
  steps; the step in µV is passed on as ``uv_per_bit``), with SpikeInterface's progress bar;
* **probe**: the channels' locations and shanks (``get_channel_locations``, the probe's
  ``shank_ids``) in recording channel order, written as a probe folder;
* **result**: ``folder`` is the workflow's working folder; the Phy folder is
  ``folder/results/<name>/phy`` (and the QC report beside it). The returned Sorting is
  SpikeInterface's ``read_kilosort`` of that folder, whose unit properties carry every
  ``cluster_*.tsv`` column: the labels (``KSLabel``, ``group``), ``ContamPct``, ``Amplitude`` and
  the unit metrics of ``cluster_metrics.tsv``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from kilosnake.api import Bunch, run
from kilosnake.io import formats
from kilosnake.io.formats import binary_in_place, neo_buffer_in_place
from kilosnake.params import PARAMS

logger = logging.getLogger(__name__)

__all__ = [
    "KilosnakeSorter",
    "binary_in_place",
    "neo_buffer_in_place",
    "prepare_recording",
    "read_result",
    "run_kilosnake",
]

#: the prepared-input description in the output folder
INPUT_JSON = "kilosnake_input.json"


def _spikeinterface():
    try:
        import spikeinterface.core as si
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "kilosnake.spikeinterface needs SpikeInterface: pip install 'kilosnake[spikeinterface]'"
            " (on Python < 3.14 also: pip install --no-deps spikeinterface)"
        ) from exc
    return si


# --------------------------------------------------------------------------------------------
# recording -> flat binary + probe (kilosnake.io.formats, shared with --config recording=...)


def write_int16(recording, path: Path, job_kwargs=None) -> float:
    """Write the recording to ``path`` as int16 with SpikeInterface's writer (``job_kwargs``:
    ``n_jobs``, ``chunk_duration``...); return the step of one unit in the recording's units
    (1 for integer recordings of at most 16 bits; see ``kilosnake.io.formats.int16_mapping``)."""
    si = _spikeinterface()
    shift, step = formats.int16_mapping(recording)
    out = recording
    if (shift, step) != (0.0, 1.0) or recording.get_dtype() != np.int16:
        from spikeinterface.preprocessing import scale

        out = scale(recording, gain=1.0 / step, offset=-shift / step, dtype="int16")
    logger.info("writing the recording to %s as int16 (read in place next time)", path)
    path.parent.mkdir(parents=True, exist_ok=True)
    kwargs = {"progress_bar": True, **(job_kwargs or {})}
    si.write_binary_recording(out, file_paths=[path], dtype="int16", **kwargs)
    return step


def probe_bunch(recording) -> Bunch:
    """The recording's probe as kilosnake takes it (rows = recording channel order)."""
    probe = formats.probe_of(recording)
    return Bunch(
        chanMap=probe.chan_map,
        xc=probe.xc,
        yc=probe.yc,
        kcoords=probe.kcoords,
        NchanTOT=recording.get_num_channels(),
    )


def prepare_recording(recording, folder, job_kwargs=None) -> dict:
    """The flat binary (read in place or written once) and probe of a recording, described in
    ``folder/kilosnake_input.json``; the description is returned."""
    if recording.get_num_segments() != 1:
        raise ValueError(
            "kilosnake sorts one-segment recordings; join the segments first "
            "(spikeinterface.concatenate_recordings)"
        )
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    probe = probe_bunch(recording)
    gain = formats.uniform_gain_uv(recording)
    found = formats.flat_binary(recording)
    if found:
        logger.info("reading %s in place (a flat binary file)", found["path"])
        dat, dtype, uv_per_bit = found["path"], found["dtype"], gain
        probe.chanMap = np.asarray(found.get("columns", probe.chanMap))
        probe.NchanTOT = int(found["n_channels"])
    else:
        dat = folder / "recording.dat"
        step = write_int16(recording, dat, job_kwargs)
        dat, dtype = str(dat), "int16"
        uv_per_bit = None if gain is None else gain * step
        if gain is None and recording.get_dtype().kind == "f":
            uv_per_bit = step  # floating-point traces without gains are taken to be in µV
    description = {
        "dat": dat,
        "dtype": dtype,
        "n_channels": int(probe.NchanTOT),
        "sample_rate": float(recording.get_sampling_frequency()),
        "uv_per_bit": uv_per_bit,
        "probe": {k: np.asarray(v).tolist() for k, v in probe.items()},
    }
    (folder / INPUT_JSON).write_text(json.dumps(description, indent=1))
    return description


# --------------------------------------------------------------------------------------------
# run and read back


def read_result(result):
    """The Sorting of a finished run (SpikeInterface's ``read_kilosort`` of its Phy folder);
    every ``cluster_*.tsv`` column is a unit property."""
    import spikeinterface.extractors as se

    sorting = se.read_kilosort(result.phy_dir, keep_good_only=False)
    add_metrics(sorting, Path(result.phy_dir) / "cluster_metrics.tsv")
    sorting.annotate(kilosnake_phy_folder=str(result.phy_dir))
    return sorting


def add_metrics(sorting, metrics_tsv: Path) -> None:
    """Every column of ``cluster_metrics.tsv`` as a unit property (by cluster id; NaN for a
    unit without a row), unless the Phy reader has set it already."""
    if not metrics_tsv.is_file():
        return
    lines = metrics_tsv.read_text().splitlines()
    header = lines[0].split("\t")
    rows = {int(r[0]): r[1:] for r in (line.split("\t") for line in lines[1:] if line)}
    ids = sorting.get_unit_ids()
    keys = set(sorting.get_property_keys())
    for j, name in enumerate(header[1:]):
        if name in keys:
            continue
        values = [float(rows[int(u)][j]) if int(u) in rows else np.nan for u in ids]
        sorting.set_property(name, np.asarray(values))


def run_from_description(description: dict, folder, params=None, cores=None):
    """:func:`kilosnake.api.run` on a prepared recording (see :func:`prepare_recording`)."""
    params = dict(params or {})
    if description.get("uv_per_bit") is not None:
        params.setdefault("uv_per_bit", description["uv_per_bit"])
    return run(
        description["dat"],
        output_dir=folder,
        probe=Bunch({k: np.asarray(v) for k, v in description["probe"].items()}),
        params=params,
        n_channels=description["n_channels"],
        dtype=description["dtype"],
        sample_rate=description["sample_rate"],
        cores=cores,
    )


def run_kilosnake(recording, folder, cores=None, job_kwargs=None, **params):
    """Sort a SpikeInterface recording with kilosnake; return a SpikeInterface Sorting.

    Parameters
    ----------
    recording : spikeinterface BaseRecording
        One segment, with a probe (channel locations).
    folder : path
        Working folder: the flat binary when one is written, the workflow's results
        (``results/<name>/phy``, ``report.html``, logs).
    cores : int, optional
        CPU cores Snakemake may use (default: all).
    job_kwargs : dict, optional
        SpikeInterface job arguments for writing the binary (``n_jobs``, ``chunk_duration``...).
    **params
        kilosnake parameters (names of ``kilosnake/params/table.py``, e.g. ``Th=(9, 8)``,
        ``device="cpu"``).

    Returns
    -------
    spikeinterface BaseSorting
        With unit properties ``KSLabel``, ``group``, ``ContamPct``, ``Amplitude`` and the
        metrics of ``cluster_metrics.tsv``.
    """
    description = prepare_recording(recording, folder, job_kwargs)
    result = run_from_description(description, Path(folder).resolve(), params, cores)
    return read_result(result)


# --------------------------------------------------------------------------------------------
# spikeinterface.sorters.run_sorter("kilosnake", ...)


def _sorter_class():
    from spikeinterface.sorters.basesorter import BaseSorter

    class KilosnakeSorter(BaseSorter):
        """kilosnake as a SpikeInterface sorter (``run_sorter("kilosnake", recording)``)."""

        sorter_name = "kilosnake"
        requires_locations = True
        gpu_capability = "nvidia-optional"
        requires_binary_data = False
        compatible_with_parallel = {"loky": False, "multiprocessing": False, "threading": False}
        _default_params = {"cores": None, **{p.name: p.default for p in PARAMS}}
        _params_description = {
            "cores": "CPU cores Snakemake may use (default: all)",
            **{p.name: p.description for p in PARAMS},
        }
        sorter_description = (
            "kilosnake: Kilosort 2.5-style sorting as a resumable Snakemake workflow "
            "with Zarr intermediates and a Phy folder"
        )
        installation_mesg = "pip install kilosnake"

        @classmethod
        def is_installed(cls):
            return True

        @classmethod
        def get_sorter_version(cls):
            from kilosnake.version import __version__

            return __version__

        @classmethod
        def _check_params(cls, recording, output_folder, params):
            return params

        @classmethod
        def _check_apply_filter_in_params(cls, params):
            return True  # kilosnake always high-pass filters

        @classmethod
        def _setup_recording(cls, recording, sorter_output_folder, params, verbose):
            prepare_recording(recording, sorter_output_folder)

        @classmethod
        def _run_from_folder(cls, sorter_output_folder, params, verbose):
            folder = Path(sorter_output_folder)
            description = json.loads((folder / INPUT_JSON).read_text())
            defaults = {p.name: p.default for p in PARAMS}
            changed = {
                k: v for k, v in params.items() if k != "cores" and defaults.get(k, object()) != v
            }
            run_from_description(description, folder, changed, params.get("cores"))

        @classmethod
        def _get_result_from_folder(cls, sorter_output_folder):
            import spikeinterface.extractors as se

            phy = sorted(Path(sorter_output_folder).glob("results/*/phy"))
            if not phy:
                raise FileNotFoundError(f"no Phy folder under {sorter_output_folder}/results")
            return se.read_kilosort(phy[0], keep_good_only=False)

    return KilosnakeSorter


def register() -> type:
    """Register kilosnake with ``spikeinterface.sorters`` (done on import; idempotent)."""
    from spikeinterface.sorters import sorterlist

    existing = sorterlist.sorter_dict.get("kilosnake")
    if existing is not None:
        return existing
    cls = _sorter_class()
    sorterlist.sorter_full_list.append(cls)
    sorterlist.sorter_dict[cls.sorter_name] = cls
    return cls


try:
    KilosnakeSorter = register()
except ImportError:  # SpikeInterface is not installed: run_kilosnake explains when called
    KilosnakeSorter = None
