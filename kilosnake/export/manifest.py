"""What the export wrote, and whether a person has changed it since: curation is never lost.

Every Phy folder the export publishes carries ``.kilosnake_manifest.json``: the name, size and
SHA-256 of every file it wrote (no times: the same inputs still give identical bytes). Phy and
phylib read only the files they know (``params.py``, ``*.npy``, ``cluster_*.tsv``), so they
ignore it.

Curating in Phy changes the folder: its save rewrites ``cluster_group.tsv`` (and
``spike_clusters.npy`` after merges or splits), adds ``cluster_<column>.tsv`` files, the
``.phy/`` cache and ``phy.log``. Before a rerun replaces the folder, :func:`curation_changes`
compares it with its manifest (a folder without one, written by an older version, is compared
with the new export instead); when anything was changed, added or removed,
:func:`keep_curated` moves the old folder aside whole, to ``phy.curated-YYYYmmdd-HHMMSS``
beside it, and the new export takes its place. Nothing is deleted.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import logging
import os
import time
from pathlib import Path

from kilosnake.version import __version__

logger = logging.getLogger(__name__)

MANIFEST_NAME = ".kilosnake_manifest.json"
#: files in the folder that are no one's work: the manifest, and the timestamp Snakemake
#: writes into a ``directory()`` output
BOOKKEEPING = frozenset({MANIFEST_NAME, ".snakemake_timestamp"})
#: the name a kept folder gets: ``<name>.curated-<UTC time>``
CURATED_SUFFIX = ".curated-"
_HASH_BLOCK = 1 << 20
#: files hashed at once (reading and hashing release the GIL)
_HASH_THREADS = 8


@dataclasses.dataclass
class Changes:
    """Files of a folder that differ from what the export wrote (relative paths)."""

    changed: list
    added: list
    removed: list

    def __bool__(self) -> bool:
        return bool(self.changed or self.added or self.removed)

    def describe(self, limit: int = 6) -> str:
        """e.g. ``"changed: cluster_group.tsv; added: .phy/, phy.log"``."""
        parts = []
        for label, names in (
            ("changed", self.changed),
            ("added", _collapse_dirs(self.added)),
            ("removed", self.removed),
        ):
            if names:
                more = f" and {len(names) - limit} more" if len(names) > limit else ""
                parts.append(f"{label}: {', '.join(names[:limit])}{more}")
        return "; ".join(parts)


def _collapse_dirs(names) -> list:
    """Files inside a folder named once as ``folder/`` (``.phy/`` rather than its cache files)."""
    out = []
    for name in names:
        top = name.split("/", 1)[0] + "/" if "/" in name else name
        if top not in out:
            out.append(top)
    return out


def file_sha256(path) -> str:
    """SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def folder_files(folder) -> list:
    """Relative paths (forward slashes) of every file under ``folder``, bookkeeping left out."""
    folder = Path(folder)
    found = []
    for root, _dirs, files in os.walk(folder):
        for name in files:
            rel = (Path(root) / name).relative_to(folder).as_posix()
            if rel not in BOOKKEEPING:
                found.append(rel)
    return sorted(found)


def file_entry(path: Path) -> dict:
    return {"sha256": file_sha256(path), "size": path.stat().st_size}


def file_entries(folder, names: list | None = None) -> dict:
    """:func:`file_entry` of the files ``names`` of ``folder`` (default: every one,
    :func:`folder_files`), several files hashed at once."""
    folder = Path(folder)
    names = folder_files(folder) if names is None else names
    with concurrent.futures.ThreadPoolExecutor(_HASH_THREADS) as pool:
        entries = pool.map(file_entry, [folder / rel for rel in names])
        return dict(zip(names, entries))


def write_manifest(folder, entries: dict | None = None) -> dict:
    """Record every file of ``folder`` in its manifest (written last, atomically);
    ``entries``: its :func:`file_entries`, when already made."""
    folder = Path(folder)
    manifest = {
        "written_by": f"kilosnake {__version__}",
        "note": "files the export wrote; a rerun keeps this folder if any of them changed",
        "files": file_entries(folder) if entries is None else entries,
    }
    tmp = folder / (MANIFEST_NAME + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, folder / MANIFEST_NAME)
    return manifest


def read_manifest(folder) -> dict | None:
    """The manifest of ``folder``, or None when it has none (or an unreadable one)."""
    try:
        manifest = json.loads((Path(folder) / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    return manifest if isinstance(files, dict) else None


def _unchanged(path: Path, entry: dict) -> bool:
    """Whether ``path`` still holds what ``entry`` recorded (sizes first, then the hashes)."""
    if path.stat().st_size != entry.get("size"):
        return False
    return file_sha256(path) == entry.get("sha256")


def changes_since_export(folder, manifest: dict) -> Changes:
    """What differs in ``folder`` from its ``manifest``."""
    folder = Path(folder)
    recorded = manifest["files"]
    present = folder_files(folder)
    kept = [r for r in present if r in recorded]
    with concurrent.futures.ThreadPoolExecutor(_HASH_THREADS) as pool:
        same = pool.map(lambda r: _unchanged(folder / r, recorded[r]), kept)
        changed = [r for r, unchanged in zip(kept, same) if not unchanged]
    return Changes(
        changed=changed,
        added=[r for r in present if r not in recorded],
        removed=sorted(set(recorded) - set(present)),
    )


def changes_from(folder, reference) -> Changes:
    """What differs in ``folder`` from the folder ``reference`` (by content)."""
    folder, reference = Path(folder), Path(reference)
    mine, theirs = folder_files(folder), set(folder_files(reference))
    return Changes(
        changed=[
            r
            for r in mine
            if r in theirs
            and (
                (folder / r).stat().st_size != (reference / r).stat().st_size
                or file_sha256(folder / r) != file_sha256(reference / r)
            )
        ],
        added=[r for r in mine if r not in theirs],
        removed=sorted(theirs - set(mine)),
    )


def curation_changes(old, new) -> Changes:
    """What a person (or anything but the export) changed in the published folder ``old``:
    against its manifest, or, for a folder without one, against the new export ``new``."""
    manifest = read_manifest(old)
    if manifest is None:
        return changes_from(old, new)
    return changes_since_export(old, manifest)


def curated_name(folder: Path, now: float | None = None) -> Path:
    """A free sibling name ``<name>.curated-YYYYmmdd-HHMMSS`` (UTC; ``-2``, ``-3``... if taken)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
    candidate = folder.with_name(f"{folder.name}{CURATED_SUFFIX}{stamp}")
    k = 2
    while candidate.exists():
        candidate = folder.with_name(f"{folder.name}{CURATED_SUFFIX}{stamp}-{k}")
        k += 1
    return candidate


def keep_curated(final, new) -> Path | None:
    """Move ``final`` aside whole when it holds changes the export did not make.

    Parameters
    ----------
    final : path
        The published folder a new export is about to replace.
    new : path
        The new export (used when ``final`` has no manifest).

    Returns
    -------
    Path or None
        Where the old folder now is, or None when there was nothing to keep (no folder, or one
        exactly as the export wrote it).
    """
    final = Path(final)
    if not final.is_dir():
        return None
    changes = curation_changes(final, new)
    if not changes:
        return None
    kept = curated_name(final)
    os.rename(final, kept)
    logger.warning(
        "%s was changed since it was exported (%s): it is kept whole as %s, and the new "
        "export is %s. To carry labels over, see the README (Curation is kept).",
        final,
        changes.describe(),
        kept,
        final,
    )
    return kept


def kept_folders(folder) -> list:
    """The curated folders kept beside ``folder`` (oldest first)."""
    folder = Path(folder)
    return sorted(folder.parent.glob(f"{folder.name}{CURATED_SUFFIX}*"))
