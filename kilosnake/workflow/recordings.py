"""Helpers the Snakefile uses to turn the config into recordings and paths (no algorithms)."""

from __future__ import annotations

import csv
import logging
import re
from pathlib import Path

from kilosnake.groundtruth.presets import preset_config
from kilosnake.io import formats
from kilosnake.io.probe import write_probeinterface_json
from kilosnake.io.spikeglx import find_meta, has_geometry, read_meta
from kilosnake.params import PARAMS_BY_NAME
from kilosnake.workflow.location import schema_path
from kilosnake.workflow.shanks import probe_shank_count

DEMO_FOLDER = "resources/demo"

#: Columns of a recordings table (``--config recordings=config/recordings.tsv``).
TABLE_COLUMNS = ("name", "dat", "probe", "n_channels", "sample_rate", "dtype", "uv_per_bit")
#: Columns every table must have (the others may be left out or left empty).
REQUIRED_COLUMNS = ("name", "dat")
#: JSON schema of one table row, shipped with the workflow.
TABLE_SCHEMA = schema_path("recordings.schema.yaml")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class RecordingsTableError(ValueError):
    """A recordings table that cannot be used; the message names the file, row and column."""


def demo_paths(preset: str) -> dict:
    """Where the generated demo recording of ``preset`` and its ground truth live."""
    base = Path(DEMO_FOLDER) / preset
    return {
        "dat": f"{base}.bin",
        "probe": f"{base}.probe.json",
        "gt": f"{base}_gt.npz",
        "meta": f"{base}.meta.json",
    }


def recording_name(dat: str) -> str:
    """Name of a recording's results folder: the raw file name without its extension(s)."""
    name = Path(dat).name
    for suffix in (".bin", ".dat", ".raw"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name.replace(" ", "_") or "recording"


def probe_or_meta(dat, probe):
    """A recording's probe: the one given, else the SpikeGLX ``.meta`` beside the raw file when
    it describes the probe's geometry (``~snsGeomMap`` or a known imro table), else None."""
    if probe or not dat:
        return probe
    meta = find_meta(dat)
    if meta is not None and has_geometry(read_meta(meta)):
        return str(meta)
    return probe


_NUMERIC = ("n_channels", "sample_rate", "uv_per_bit")


def _parse_cell(column: str, text: str):
    """A table cell as the schema expects it: empty -> None, numeric columns -> int/float."""
    text = text.strip()
    if text == "" or text.lower() in ("na", "null", "none"):
        return None
    if column not in _NUMERIC:
        return text
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _load_schema(schema_path):
    import yaml

    with open(schema_path) as f:
        return yaml.safe_load(f)


def read_recordings_table(path, schema_path=None) -> dict:
    """Read a tab-separated recordings table into ``{name: row}``.

    Parameters
    ----------
    path : path
        TSV file with a header row. Columns: ``name``, ``dat`` (required), ``probe``,
        ``n_channels``, ``sample_rate``, ``dtype``, ``uv_per_bit`` (optional; empty cells take
        the config's values, as for a single ``--config dat=...``). Lines starting with ``#`` are
        comments. Relative paths are relative to the working directory, like ``dat`` in the
        config.
    schema_path : path, optional
        JSON schema of one row; defaults to ``workflow/schemas/recordings.schema.yaml``.

    Returns
    -------
    dict
        Rows in table order, keyed by recording name, every column present (missing ones None).

    Raises
    ------
    RecordingsTableError
        Missing file or column, unknown column, duplicate or invalid name, or a value that the
        schema rejects (the message names the row and the column).
    """
    import jsonschema

    path = Path(path)
    if not path.is_file():
        raise RecordingsTableError(f"recordings table {path} not found")
    with open(path, newline="") as f:
        lines = [line for line in f if line.strip() and not line.lstrip().startswith("#")]
    reader = csv.DictReader(lines, delimiter="\t")
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise RecordingsTableError(
            f"{path}: missing column(s) {', '.join(missing)} in the header row "
            f"(columns are tab-separated: {', '.join(TABLE_COLUMNS)})"
        )
    unknown = [c for c in header if c not in TABLE_COLUMNS]
    if unknown:
        raise RecordingsTableError(
            f"{path}: unknown column(s) {', '.join(unknown)}; known: {', '.join(TABLE_COLUMNS)}"
        )
    schema = _load_schema(schema_path or TABLE_SCHEMA)
    rows = {}
    for lineno, raw in enumerate(reader, start=2):
        if None in raw:
            raise RecordingsTableError(
                f"{path}, row {lineno}: more cells than columns "
                "(are the columns separated by tabs?)"
            )
        row = {k.strip(): _parse_cell(k.strip(), v or "") for k, v in raw.items()}
        row = {k: v for k, v in row.items() if v is not None}
        try:
            jsonschema.validate(row, schema)
        except jsonschema.ValidationError as err:
            where = "/".join(str(p) for p in err.absolute_path) or "row"
            raise RecordingsTableError(f"{path}, row {lineno}, {where}: {err.message}") from None
        name = row["name"]
        if not _NAME.match(name):
            raise RecordingsTableError(
                f"{path}, row {lineno}: name {name!r} must start with a letter or digit and "
                "hold only letters, digits, '_', '.' and '-' (it names the results folder)"
            )
        if name in rows:
            raise RecordingsTableError(f"{path}, row {lineno}: name {name!r} used twice")
        rows[name] = {c: row.get(c) for c in TABLE_COLUMNS}
    if not rows:
        raise RecordingsTableError(f"{path}: no recordings (only a header or comments)")
    return rows


def recording_sources(config: dict) -> dict:
    """``{recording name: {dat, probe, n_channels, dtype, sample_rate, uv_per_bit, gt}}``.

    Four sources, in this order:

    * ``recording`` (with ``format`` and ``stream``): a recording SpikeInterface reads
      (:func:`spikeinterface_source`);
    * ``recordings``: a tab-separated table (:func:`read_recordings_table`), one recording per
      row; empty cells take the config's ``probe``, ``n_channels``, ``dtype``, ``sample_rate``,
      ``uv_per_bit``;
    * ``dat``: one recording;

    a recording without a probe takes the SpikeGLX ``.meta`` beside its raw file, when that
    describes the geometry (:func:`probe_or_meta`);
    * neither: the generated demo recording (``demo_preset``), whose ground truth is known
      (``gt``).
    """
    if config.get("recording"):
        return spikeinterface_source(config)
    table = config.get("recordings")
    if table:
        rows = read_recordings_table(table)
        shared = ("probe", "n_channels", "dtype", "sample_rate", "uv_per_bit")
        sources = {
            name: {
                "dat": row["dat"],
                **{k: row[k] if row[k] is not None else config.get(k) for k in shared},
                "gt": None,
                "demo": None,
            }
            for name, row in rows.items()
        }
        for rec in sources.values():
            rec["probe"] = probe_or_meta(rec["dat"], rec["probe"])
        return sources
    dat = config.get("dat")
    if not dat:
        preset = config.get("demo_preset") or PARAMS_BY_NAME["demo_preset"].default
        paths, synth = demo_paths(preset), preset_config(preset)
        return {
            preset: {
                "dat": paths["dat"],
                "probe": paths["probe"],
                "n_channels": synth.n_channels + int(synth.sync_channel),
                "dtype": "int16",
                "sample_rate": synth.sample_rate,
                "uv_per_bit": synth.uv_per_bit,
                "gt": paths["gt"],
                "demo": preset,
            }
        }
    return {
        recording_name(dat): {
            "dat": str(dat),
            "probe": probe_or_meta(dat, config.get("probe")),
            "n_channels": config.get("n_channels"),
            "dtype": config.get("dtype") or PARAMS_BY_NAME["dtype"].default,
            "sample_rate": config.get("sample_rate"),
            "uv_per_bit": config.get("uv_per_bit"),
            "gt": None,
            "demo": None,
        }
    }


def shank_counts(recordings: dict) -> dict:
    """``{recording name: number of shanks of its probe}``, read when the workflow is built.

    A generated recording's count comes from its preset; a recording's from its probe file (1
    when the file is missing or unreadable: the input check then says why).
    """

    counts = {}
    for name, rec in recordings.items():
        if rec.get("n_shanks"):  # a SpikeInterface recording's, before its probe file is made
            counts[name] = int(rec["n_shanks"])
        elif rec.get("demo"):
            counts[name] = int(preset_config(rec["demo"]).n_shanks)
        elif rec.get("probe") and Path(rec["probe"]).exists():
            counts[name] = probe_shank_count(rec["probe"])
        else:
            counts[name] = 1
    return counts


def spikeinterface_source(config: dict) -> dict:
    """``{name: recording}`` of ``--config recording=PATH format=FORMAT [stream=STREAM]``.

    The recording is opened with SpikeInterface (:func:`kilosnake.io.formats.open_recording`)
    while the workflow is read: a bad format, a missing or unknown stream or a missing
    SpikeInterface stops the run before any job, with the choices in the message. Besides the
    usual description the entry has ``source`` (what the rules reopen), ``made`` (the files
    the rules ``recording_probe`` and ``convert_recording`` make) and ``n_shanks``:

    * a flat binary behind the recording is ``dat``, read in place (dtype, columns and
      the file's channel count from the reader);
    * any other recording is written once as int16 to ``results/<name>/recording.dat``;
    * the probe is written from the recording's own to ``results/<name>/probe.json`` unless
      ``probe=`` is given (rows of the flat binary).
    """
    path = Path(config["recording"]).expanduser().resolve()
    fmt = config.get("format")
    recording, stream = formats.open_recording(
        path, fmt, config.get("stream"), need_probe=not config.get("probe")
    )
    name = formats.recording_name(path, stream)
    found = formats.flat_binary(recording)
    gain = formats.uniform_gain_uv(recording)
    if found:
        step, dat = 1.0, found["path"]
        made = []
    else:
        step = formats.int16_mapping(recording)[1]
        dat = f"results/{name}/recording.dat"
        made = [dat]
    probe = config.get("probe")
    if probe:
        n_shanks = probe_shank_count(probe) if Path(probe).exists() else 1
    else:
        own = formats.probe_of(recording, found["columns"] if found else None)
        n_shanks = int(own.shank_ids().size)
        probe = f"results/{name}/probe.json"
        made.append(probe)
    uv_per_bit = None if gain is None else gain * step
    if gain is None and recording.get_dtype().kind == "f":
        uv_per_bit = step  # floating-point traces without gains are taken to be in µV
    return {
        name: {
            "dat": dat,
            "probe": probe,
            "n_channels": int(found["n_channels"]) if found else recording.get_num_channels(),
            "dtype": found["dtype"] if found else "int16",
            "sample_rate": float(recording.get_sampling_frequency()),
            "uv_per_bit": uv_per_bit,
            "gt": None,
            "demo": None,
            "source": {"recording": str(path), "format": fmt, "stream": stream},
            "made": made,
            "n_shanks": n_shanks,
        }
    }


def write_recording_probe(source: dict, out, log=None) -> None:
    """The ``recording_probe`` rule: the probe of a SpikeInterface recording (file columns of
    the flat binary read in place, else channel order) as a probeinterface JSON file."""
    log = log or logging.getLogger(__name__)
    recording, _ = formats.open_recording(source["recording"], source["format"], source["stream"])
    found = formats.flat_binary(recording)
    if found:
        log.info("the recording is read in place from %s (no copy)", found["path"])
    else:
        log.info("the recording is written once as int16 by the rule convert_recording")
    probe = formats.probe_of(recording, found["columns"] if found else None)
    log.info(
        "probe: %d channels, %d shank(s), from the recording's probeinterface probe",
        probe.n_channels,
        probe.shank_ids().size,
    )
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    write_probeinterface_json(probe, out)


def convert_recording(source: dict, out, log=None) -> None:
    """The ``convert_recording`` rule: a recording with no flat binary behind it written once
    as int16 (:func:`kilosnake.io.formats.write_int16`)."""
    recording, _ = formats.open_recording(
        source["recording"], source["format"], source["stream"], need_probe=False
    )
    formats.write_int16(recording, out, log)
