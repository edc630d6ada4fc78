"""Rows of a Blosc-compressed Zarr array decoded straight into the caller's buffer.

The traces of ``preprocessed.zarr`` are read back batch by batch by every sorting stage. Through
Zarr a 384-channel batch (50 MB, 8 chunks) takes about 16 ms on a 16-core machine, of which the
file reads are 5 ms; Blosc decoding each chunk file into its rows of the output, one chunk per
thread, takes about 6 ms (``benchmarks/trace_read.py``). :func:`read_rows_direct` does that for
the arrays it can (a local store, chunks of whole rows, little-endian bytes then Blosc, no
other codec) and says so by its return value; anything else is left to Zarr.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import zarr
from numcodecs import blosc
from zarr.codecs import BloscCodec, BytesCodec
from zarr.storage import LocalStore

from kilosnake.runtime.threads import shared_thread_pool

#: decoding threads (Blosc releases the GIL; each chunk is decoded on one thread)
DECODE_THREADS = max(1, min(8, os.cpu_count() or 1))


def chunk_folder(array) -> Path | None:
    """The folder of ``array``'s chunk files when it can be read directly, else None."""
    if not isinstance(array, zarr.Array) or not isinstance(array.store, LocalStore):
        return None
    meta = array.metadata
    if getattr(meta, "zarr_format", None) != 3 or len(array.shape) != 2:
        return None
    codecs = tuple(meta.codecs)
    if len(codecs) != 2 or not isinstance(codecs[0], BytesCodec):
        return None
    endian = codecs[0].endian  # an enum up to zarr 3.3, a string from 3.4
    if not isinstance(codecs[1], BloscCodec) or str(getattr(endian, "value", endian)) != "little":
        return None
    if array.chunks[1] != array.shape[1] or meta.encode_chunk_key((0, 0)) != "c/0/0":
        return None
    return Path(array.store.root) / array.path / "c"


def read_rows_direct(array, lo: int, hi: int, out: np.ndarray) -> bool:
    """Rows ``[lo, hi)`` of ``array`` decoded into ``out`` (C-ordered, ``array``'s dtype);
    False, with nothing read, when ``array`` is not one :func:`chunk_folder` can read."""
    folder = chunk_folder(array)
    if folder is None or out.dtype != array.dtype or not out.flags.c_contiguous:
        return False
    if not 0 <= lo < hi <= array.shape[0] or out.shape != (hi - lo, array.shape[1]):
        return False
    rows = int(array.chunks[0])
    tasks = []
    for c in range(lo // rows, (hi - 1) // rows + 1):
        first, stop = c * rows, (c + 1) * rows
        a, z = max(lo, first), min(hi, stop)
        tasks.append((folder / str(c) / "0", out[a - lo : z - lo], a - first))
    pool = shared_thread_pool("decode", DECODE_THREADS)
    for future in [pool.submit(_decode_rows, array, *task) for task in tasks]:
        future.result()
    return True


def _decode_rows(array, path: Path, dest: np.ndarray, skip: int) -> None:
    """Rows ``[skip, skip + len(dest))`` of the chunk in ``path`` into ``dest``; a chunk never
    written reads as the fill value."""
    try:
        encoded = path.read_bytes()
    except FileNotFoundError:
        dest[...] = array.fill_value
        return
    whole = (int(array.chunks[0]), array.shape[1])
    if skip == 0 and dest.shape[0] == whole[0]:
        blosc.decompress(encoded, dest)
        return
    chunk = np.empty(whole, array.dtype)  # stored chunks are whole, the last one too
    blosc.decompress(encoded, chunk)
    dest[...] = chunk[skip : skip + dest.shape[0]]
