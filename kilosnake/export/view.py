"""The unit files of the Phy folder, written from the stores into a temporary folder: what a
reader of the sort's units (the QC report) needs, without waiting for the export's features,
phylib's check and the manifest. The files are those the export writes, by the same code."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

from kilosnake.export.shanks import recording_sources
from kilosnake.export.writer import write_unit_files


@contextlib.contextmanager
def unit_files_folder(
    spikes, templates, whitening, input_json, split, cutoff, shank_inputs, params: dict
):
    """A temporary folder holding the Phy folder's unit files of a recording
    (:func:`kilosnake.export.writer.write_unit_files`; the stores as
    :func:`kilosnake.export.shanks.recording_sources` takes them, ``params`` the export's),
    removed on leaving the context."""
    sources = recording_sources(
        spikes, templates, whitening, input_json, split, cutoff, shank_inputs
    )
    with tempfile.TemporaryDirectory(prefix="kilosnake-units-") as tmp:
        folder = Path(tmp) / "phy"
        write_unit_files(folder, sources, params)
        yield folder
