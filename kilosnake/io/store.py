"""Zarr stores written atomically, with provenance, and checked for completeness when read.

Every stage writes one Zarr v3 group. :func:`writing_store` yields a group at ``<out>.tmp``;
when the ``with`` block ends without error the provenance attributes and ``complete = True`` are
written last and the folder is renamed to ``<out>``. On an error the temporary folder is removed,
so no half-written store is ever left behind. :func:`open_store` refuses a store that lacks the
completeness marker.

Provenance attributes (no timestamps, so that two runs give identical bytes): ``stage``,
``kilosnake_version``, ``params``, ``device``, ``seed`` (:data:`PROVENANCE_ATTRS`, the one list of
them).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import numpy as np
import zarr

from kilosnake.errors import KilosnakeError
from kilosnake.io.chunk_reads import read_rows_direct
from kilosnake.runtime.logs import ignore_snakemake_timestamps
from kilosnake.version import __version__


def read_rows_into(array, lo: int, hi: int, out: np.ndarray) -> np.ndarray:
    """Rows ``[lo, hi)`` of ``array`` into ``out`` (C-ordered): a Zarr array decodes its chunks
    straight into ``out`` (Blosc-compressed chunks of whole rows by a pool of threads,
    :mod:`kilosnake.io.chunk_reads`); anything else is copied."""
    if hi <= lo or read_rows_direct(array, lo, hi, out):
        return out
    if hasattr(array, "read_into"):  # e.g. the blocks of a scattered run
        return array.read_into(lo, hi, out)
    if isinstance(array, zarr.Array):
        from zarr.core.buffer import default_buffer_prototype

        array.get_basic_selection(
            (slice(lo, hi),), out=default_buffer_prototype().nd_buffer.from_numpy_array(out)
        )
    else:
        out[...] = array[lo:hi]
    return out


class IncompleteStoreError(KilosnakeError):
    """A store lacks its completeness marker (a crashed or running writer)."""


def package_version() -> str:

    return __version__


#: the provenance attributes every store carries, in the order they are written
PROVENANCE_ATTRS = ("stage", "kilosnake_version", "params", "device", "seed")
#: what :func:`writing_store` adds to a store's own attributes: provenance and the marker
WRITTEN_ATTRS = (*PROVENANCE_ATTRS, "complete")


def provenance(stage: str, params: dict, device: str, seed: int | None) -> dict:
    """The attributes every store carries (keys :data:`PROVENANCE_ATTRS`)."""
    values = (stage, package_version(), _jsonable(params), device, seed)
    return dict(zip(PROVENANCE_ATTRS, values, strict=True))


def own_attrs(attrs) -> dict:
    """A store's attributes without the ones :func:`writing_store` adds (:data:`WRITTEN_ATTRS`)."""
    return {k: v for k, v in dict(attrs).items() if k not in WRITTEN_ATTRS}


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj


@contextlib.contextmanager
def writing_store(
    path,
    stage: str,
    params: dict | None = None,
    device: str = "cpu",
    seed: int | None = None,
    attrs: dict | None = None,
):
    """Yield a Zarr group written at ``<path>.tmp`` and published at ``path`` on success."""
    final = Path(path)
    tmp = final.with_name(final.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    group = zarr.open_group(str(tmp), mode="w", zarr_format=3)
    try:
        yield group
        group.attrs.update(_jsonable(attrs or {}))
        group.attrs.update(provenance(stage, params or {}, device, seed))
        group.attrs["complete"] = True
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish(tmp, final)


def publish(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` to ``final``, replacing an older ``final`` (set aside, then removed)."""
    old = None
    if final.exists():
        old = final.with_name(final.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        os.rename(final, old)
    os.rename(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def open_store(path) -> zarr.Group:
    """Open a finished store read-only; refuse one without the completeness marker."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"store {str(path)!r} does not exist")
    ignore_snakemake_timestamps()  # Snakemake's .snakemake_timestamp inside the folder
    group = zarr.open_group(str(path), mode="r")
    if not group.attrs.get("complete", False):
        raise IncompleteStoreError(
            f"store {str(path)!r} is incomplete (its writer did not finish); delete it and rerun "
            "(snakemake --rerun-incomplete)"
        )
    return group


def write_array(
    group: zarr.Group, name: str, data, chunks=None, compressors="auto", attrs: dict | None = None
) -> zarr.Array:
    """Write a whole (small) array into ``group``."""
    data = np.asarray(data)
    arr = group.create_array(
        name,
        shape=data.shape,
        dtype=data.dtype,
        chunks=chunks or _default_chunks(data.shape),
        compressors=compressors,
        fill_value=0,
        attributes=_jsonable(attrs or {}),
    )
    if data.size:
        arr[...] = data
    return arr


def _default_chunks(shape):
    if len(shape) == 0:
        return ()
    return tuple(max(1, s) for s in shape)


def read_arrays(group: zarr.Group, names) -> dict:
    """Read several arrays of a group into NumPy."""
    return {name: np.asarray(group[name][...]) for name in names}


class AppendableArray:
    """A Zarr array along axis 0 that grows batch by batch (spikes of unknown count).

    With ``buffered=True`` appended rows are held until they fill whole chunks, so each chunk
    is encoded and written once (instead of the last partial chunk being rewritten on every
    append); :meth:`close` must then be called to write the rest. ``compressors``: Zarr's
    (``"auto"``: its default, ``None``: stored as they are).
    """

    def __init__(
        self,
        group: zarr.Group,
        name: str,
        tail_shape: tuple,
        dtype,
        chunk_rows: int = 262144,
        buffered: bool = False,
        compressors="auto",
    ):
        rows = max(1, chunk_rows // max(1, int(np.prod(tail_shape, dtype=np.int64))))
        self.array = group.create_array(
            name,
            shape=(0, *tail_shape),
            dtype=dtype,
            chunks=(rows, *tail_shape),
            fill_value=0,
            compressors=compressors,
        )
        self.n = 0
        self.rows = rows
        self.buffered = buffered
        self._pending: list[np.ndarray] = []
        self._pending_rows = 0

    def append(self, data) -> None:
        data = np.asarray(data)
        if data.shape[0] == 0:
            return
        if not self.buffered:
            self._write(data)
            return
        self._pending.append(data)
        self._pending_rows += data.shape[0]
        if self._pending_rows >= self.rows:
            self._write_pending(whole_chunks_only=True)

    def close(self) -> None:
        """Write the rows still held (a no-op when unbuffered)."""
        self._write_pending(whole_chunks_only=False)

    def _write_pending(self, whole_chunks_only: bool) -> None:
        if not self._pending:
            return
        data = np.concatenate(self._pending)
        cut = (data.shape[0] // self.rows) * self.rows if whole_chunks_only else data.shape[0]
        self._write(data[:cut])
        rest = data[cut:]
        self._pending = [rest] if rest.shape[0] else []
        self._pending_rows = rest.shape[0]

    def _write(self, data: np.ndarray) -> None:
        if data.shape[0] == 0:
            return
        self.array.resize((self.n + data.shape[0], *self.array.shape[1:]))
        self.array[self.n : self.n + data.shape[0]] = data
        self.n += data.shape[0]
