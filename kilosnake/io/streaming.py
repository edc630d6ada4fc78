"""Per-spike arrays read and written in blocks, so memory does not grow with the recording.

A 2-hour recording gives about a million spikes; their PC features alone are 400 MB. Stages after
the final pass therefore never hold a whole per-spike array (nor map one into memory: pages of a
memory-mapped file count in the resident set too). The helpers here:

* :func:`blocks` / :func:`npy_blocks`: consecutive row blocks of a Zarr array / ``.npy`` file;
* :class:`NpyWriter`: a ``.npy`` file of known shape written block by block with plain writes
  (the bytes are those of ``np.save``);
* :func:`read_rows`: the rows ``idx`` of a Zarr array, read block by block;
* :func:`label_counts` and :func:`columns_by_label`: the spikes of each label (a cluster, a
  template), a few labels at a time, in passes over the blocks whose size stays under a budget.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

#: rows per block when streaming per-spike arrays
BLOCK_ROWS = 1 << 16
#: spikes gathered at most per pass of :func:`columns_by_label` (a larger label gets its own pass)
LABEL_BUDGET = 1 << 18


#: :func:`blocks` reads through :class:`ChunkCached` when a chunk holds at most this many bytes
WHOLE_CHUNKS_BYTES = 64 << 20


def blocks(
    array, step: int = BLOCK_ROWS, start: int = 0, stop: int | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """``(first row, rows)`` of consecutive blocks of ``array`` (Zarr or NumPy) along axis 0.

    Where the array's chunks are longer than a block (and small enough, :func:`chunks_fit`),
    the blocks are served from whole chunks (:class:`ChunkCached`): a Zarr read decodes every
    chunk it touches whole, so reading a chunk block by block would decode it once per block.
    """
    stop = array.shape[0] if stop is None else stop
    source = ChunkCached(array) if chunks_fit(array, step) else array
    for s in range(start, stop, step):
        yield s, np.asarray(source[s : min(s + step, stop)])


def chunks_fit(array, step: int) -> bool:
    """Whether ``array`` (Zarr, or a view naming its ``chunks``) has chunks longer than
    ``step`` rows that hold at most :data:`WHOLE_CHUNKS_BYTES` each."""
    chunks = getattr(array, "chunks", None)
    if not chunks or int(chunks[0]) <= step:
        return False
    row_bytes = np.dtype(array.dtype).itemsize * int(np.prod(array.shape[1:], dtype=np.int64))
    return int(chunks[0]) * row_bytes <= WHOLE_CHUNKS_BYTES


def read_rows(array, idx: np.ndarray, step: int = BLOCK_ROWS) -> np.ndarray:
    """``array[idx]``, reading only the blocks of rows that hold ``idx``.

    ``array`` is anything with ``shape`` and slicing along axis 0 (Zarr, NumPy, a joined view).
    """
    idx = np.asarray(idx, dtype=np.int64)
    if idx.size > 1 and np.any(np.diff(idx) < 0):
        order = np.argsort(idx, kind="stable")
        sorted_rows = read_rows(array, idx[order], step)
        out = np.empty_like(sorted_rows)
        out[order] = sorted_rows
        return out
    if idx.size == 0:
        return np.asarray(array[0:0])
    if idx[0] < 0 or idx[-1] >= array.shape[0]:
        raise IndexError(
            f"rows {int(idx[0])}..{int(idx[-1])} outside an array of {array.shape[0]} rows"
        )
    out = None
    pos = 0
    while pos < idx.size:
        lo = int(idx[pos])
        hi = min(lo + step, array.shape[0])
        end = pos + int(np.searchsorted(idx[pos:], hi))
        rows = np.asarray(array[lo:hi])[idx[pos:end] - lo]
        if out is None:
            out = np.empty((idx.size,) + rows.shape[1:], rows.dtype)
        out[pos:end] = rows
        pos = end
    return out


class ChunkCached:
    """Row slices of a chunked array (Zarr, or a view naming its ``chunks``) served from the
    last span of whole chunks read, so that reads of nearby rows, block after block (as
    :func:`read_rows` makes them), decode each chunk once rather than once per read.

    A span covers the chunks a read touches (meant for per-spike columns, whose chunks stay a
    few MB); other reads (index arrays) go to the array itself.
    """

    def __init__(self, array):
        self.array = array
        self.shape, self.dtype = tuple(array.shape), array.dtype
        self.chunks = getattr(array, "chunks", None) or (max(1, self.shape[0]),)
        self._first, self._rows = 0, None

    def __getitem__(self, rows):
        if not isinstance(rows, slice) or rows.step not in (None, 1):
            return self.array[rows]
        lo, hi, _ = rows.indices(self.shape[0])
        hi = max(lo, hi)
        if self._rows is None or lo < self._first or hi > self._first + len(self._rows):
            self._read_span(lo, hi)
        return self._rows[lo - self._first : hi - self._first].copy()  # as a read would give

    def _read_span(self, lo: int, hi: int) -> None:
        step = int(self.chunks[0])
        first = lo - lo % step
        stop = min(self.shape[0], -(-hi // step) * step)
        self._first, self._rows = first, np.asarray(self.array[first:stop])


class MappedLabels:
    """A per-spike label array read through a label map: ``view[rows] == mapping[labels[rows]]``
    (slices and index arrays along axis 0), so a relabelling needs no copy of the spikes."""

    def __init__(self, labels, mapping: np.ndarray):
        self.labels = labels
        self.mapping = np.asarray(mapping)
        self.shape = tuple(labels.shape)
        self.dtype = self.mapping.dtype
        self.chunks = getattr(labels, "chunks", None)

    def __getitem__(self, rows):
        return self.mapping[np.asarray(self.labels[rows], dtype=np.int64)]


class NpyWriter:
    """Write a ``.npy`` file of known shape in blocks along axis 0 (no memory map).

    Use as a context manager; leaving the block without error checks that every row was written.
    """

    def __init__(self, path, dtype, shape: tuple):
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        self.shape = tuple(int(s) for s in shape)
        self.rows = 0
        self._file = open(self.path, "wb")
        header = {
            "descr": np.lib.format.dtype_to_descr(self.dtype),
            "fortran_order": False,
            "shape": self.shape,
        }
        np.lib.format.write_array_header_1_0(self._file, header)

    def write(self, block) -> None:
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.shape[1:] != self.shape[1:]:
            raise ValueError(
                f"{self.path.name}: block of shape {block.shape}, file rows of "
                f"shape {self.shape[1:]}"
            )
        self._file.write(block.tobytes())
        self.rows += block.shape[0]

    def __enter__(self) -> NpyWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._file.close()
        if exc_type is None and self.rows != self.shape[0]:
            raise ValueError(
                f"{self.path.name}: {self.rows} rows written, {self.shape[0]} declared"
            )


def npy_blocks(path, step: int = BLOCK_ROWS) -> Iterator[tuple[int, np.ndarray]]:
    """``(first row, rows)`` of consecutive blocks of a ``.npy`` file, read without a map."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = read_header(f)
        if fortran:
            raise ValueError(f"{path}: Fortran-ordered arrays are not read in blocks")
        tail = tuple(shape[1:])
        per_row = int(np.prod(tail, dtype=np.int64))
        n = shape[0] if shape else 1
        for s in range(0, n, step):
            count = min(step, n - s)
            yield s, np.fromfile(f, dtype=dtype, count=count * per_row).reshape((count,) + tail)


def label_counts(label_blocks: Iterator[tuple[int, np.ndarray]], n_labels: int) -> np.ndarray:
    """Rows per label ``0..n_labels-1`` over blocks of labels."""
    counts = np.zeros(n_labels, np.int64)
    for _, labels in label_blocks:
        counts += np.bincount(np.asarray(labels, np.int64), minlength=n_labels)[:n_labels]
    return counts


def label_groups(counts: np.ndarray, budget: int = LABEL_BUDGET) -> list[np.ndarray]:
    """Labels with rows, in ascending order, cut into groups of at most ``budget`` rows (a label
    with more rows than the budget is a group on its own)."""
    groups, current, size = [], [], 0
    for label in np.flatnonzero(counts):
        n = int(counts[label])
        if current and size + n > budget:
            groups.append(np.array(current, np.int64))
            current, size = [], 0
        current.append(int(label))
        size += n
    if current:
        groups.append(np.array(current, np.int64))
    return groups


def columns_by_label(
    read_blocks: Callable[[], Iterator[tuple[np.ndarray, dict]]],
    counts: np.ndarray,
    budget: int = LABEL_BUDGET,
) -> Iterator[tuple[int, np.ndarray, dict]]:
    """``(label, rows, {column: values})`` of every label with rows, in ascending label order.

    Parameters
    ----------
    read_blocks : callable
        Returns a fresh iterator of ``(labels, {column: values})`` over consecutive blocks (one
        pass over the data); called once per group of labels.
    counts : ndarray (n_labels,)
        Rows per label (:func:`label_counts`).
    budget : int
        Rows gathered at most per pass.

    Yields
    ------
    label : int
    rows : ndarray of int64
        The label's row indices (ascending).
    columns : dict
        The label's values of each column, in row order.
    """
    n_labels = counts.size
    for group in label_groups(counts, budget):
        wanted = np.zeros(n_labels, bool)
        wanted[group] = True
        parts = {int(label): [] for label in group}
        start = 0
        for labels, columns in read_blocks():
            labels = np.asarray(labels, np.int64)
            hit = np.flatnonzero(wanted[labels])
            if hit.size:
                order = hit[np.argsort(labels[hit], kind="stable")]
                ids, first = np.unique(labels[order], return_index=True)
                bounds = np.append(first, order.size)
                for k, label in enumerate(ids):
                    sel = order[bounds[k] : bounds[k + 1]]
                    parts[int(label)].append(
                        (sel + start, {name: np.asarray(v)[sel] for name, v in columns.items()})
                    )
            start += labels.size
        for label in group:
            pieces = parts.pop(int(label))
            rows = np.concatenate([p[0] for p in pieces])
            values = {name: np.concatenate([p[1][name] for p in pieces]) for name in pieces[0][1]}
            yield int(label), rows, values
