"""Reading raw recordings batch by batch.

A raw file is flat binary, samples x channels interleaved (C order), with ``n_channels_total``
columns (385 for Neuropixels with the sync channel). It is read window by window, never whole;
:meth:`RawRecording.read` returns any window of samples, and pads windows that stick out of the
recording by repeating the first or last sample, so that every batch can be read with margins on
both sides.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from kilosnake.errors import InputError
from kilosnake.io.spikeglx import find_meta, read_meta, recording_fields
from kilosnake.params import PARAMS_BY_NAME
from kilosnake.runtime.threads import shared_thread_pool

SUPPORTED_DTYPES = ("int16", "uint16", "int32", "float32")


@dataclasses.dataclass(frozen=True)
class RecordingInfo:
    """What the sorter needs to know about a raw file."""

    path: str
    n_channels_total: int
    dtype: str = "int16"
    sample_rate: float = 30000.0
    uv_per_bit: float | None = None
    offset: int = 0

    @property
    def itemsize(self) -> int:
        return np.dtype(self.dtype).itemsize


class RawRecording:
    """A raw recording read window by window.

    Windows are read with plain file reads rather than a memory map, so the process's resident
    memory does not grow with the part of the file already visited.
    """

    def __init__(self, info: RecordingInfo):
        self.info = info
        n_bytes = os.path.getsize(info.path) - info.offset
        self._row_bytes = info.n_channels_total * info.itemsize
        self.n_samples = n_bytes // self._row_bytes

    def _read_into(self, lo: int, hi: int, out: np.ndarray) -> None:
        """Samples [lo, hi) of every column (inside the recording) into ``out`` (C-ordered);
        a large window in pieces read side by side (:func:`read_pieces_into`)."""
        want = (hi - lo) * self._row_bytes
        with open(self.info.path, "rb", buffering=0) as f:
            n = read_pieces_into(f.fileno(), self.info.offset + lo * self._row_bytes, out)
        if n != want:
            raise OSError(
                f"{self.info.path}: short read ({n} of {want} bytes); was the file truncated "
                "while being sorted?"
            )

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.info.sample_rate

    def read_rows(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        """Samples ``[start, stop)`` of every column of the file, edges padded by repetition.

        Parameters
        ----------
        start, stop : int
            Window (may reach outside the recording).
        out : ndarray, optional
            C-ordered ``(stop - start, n_channels_total)`` array of the file's dtype to read
            into (e.g. a reused, page-locked buffer); a new one when None.
        """
        if stop <= start:
            raise ValueError(f"empty window [{start}, {stop})")
        shape = (stop - start, self.info.n_channels_total)
        if out is None:
            out = np.empty(shape, dtype=self.info.dtype)
        elif out.shape != shape or not out.flags.c_contiguous:
            raise ValueError(f"read buffer of shape {out.shape}, need {shape} C-ordered")
        lo, hi = max(start, 0), min(stop, self.n_samples)
        if hi <= lo:  # window entirely outside: repeat the nearest edge sample
            lo = hi = 0 if stop <= 0 else self.n_samples - 1
            hi += 1
            self._read_into(lo, hi, out[:1])
            out[1:] = out[0]
            return out
        self._read_into(lo, hi, out[lo - start : hi - start])
        out[: lo - start] = out[lo - start]
        out[hi - start :] = out[hi - start - 1]
        return out

    def read(self, start: int, stop: int, channels=None) -> np.ndarray:
        """Samples ``[start, stop)`` of ``channels`` (all if None), edges padded by repetition.

        Returns a new C-ordered array of the file's dtype, shape ``(stop - start, n_ch)``.
        """
        rows = self.read_rows(start, stop)
        return rows if channels is None else select_columns(rows, column_selector(channels))


#: a read of more bytes than this is split into pieces of about this size, read by threads:
#: one thread copies about 5 GB/s out of the page cache, a 384-channel batch is 50 MB
READ_PIECE_BYTES = 8 << 20
#: threads reading the pieces of one window
READ_THREADS = 4


def read_pieces_into(fd: int, offset: int, out: np.ndarray) -> int:
    """Fill ``out``'s bytes from file ``fd`` at ``offset``; returns the bytes read (fewer at the
    end of the file). Above :data:`READ_PIECE_BYTES` the pieces are read by
    :data:`READ_THREADS` threads (``os.preadv`` releases the GIL); the bytes are the same."""
    view = memoryview(out).cast("B")
    size = len(view)
    n_pieces = min(READ_THREADS, max(1, size // READ_PIECE_BYTES))
    if n_pieces == 1:
        return _read_fully(fd, view, offset)
    edges = [size * k // n_pieces for k in range(n_pieces + 1)]
    pieces = [(view[a:b], offset + a) for a, b in zip(edges[:-1], edges[1:])]
    pool = shared_thread_pool("raw-read", READ_THREADS)
    # only the piece holding the end of the file reads short; those after it read nothing
    return sum(pool.map(lambda piece: _read_fully(fd, *piece), pieces))


def _read_fully(fd: int, view: memoryview, offset: int) -> int:
    """Read into all of ``view`` from ``offset`` (several calls if the system returns less),
    stopping at the end of the file."""
    done = 0
    while done < len(view):
        n = os.preadv(fd, [view[done:]], offset + done)
        if n == 0:
            break
        done += n
    return done


def column_selector(channels):
    """``channels`` as a slice when they are consecutive ascending columns (a view, no gather),
    else as an index array."""
    channels = np.asarray(channels, dtype=np.int64).ravel()
    if channels.size and np.array_equal(
        channels, np.arange(channels[0], channels[0] + channels.size)
    ):
        return slice(int(channels[0]), int(channels[0]) + channels.size)
    return channels


def select_columns(rows, selector, xp=np):
    """The ``selector`` columns (see :func:`column_selector`) of ``rows`` as a new C-ordered
    array of the same module (``take`` gathers rows at a time, faster than fancy indexing)."""
    if isinstance(selector, slice):
        return xp.ascontiguousarray(rows[:, selector])
    return xp.take(rows, xp.asarray(selector), axis=1)


def read_spikeglx_meta(raw_path) -> dict:
    """Channel count, sample rate and µV per bit from a SpikeGLX ``.meta`` beside the file.

    Returns an empty dict when there is no ``.meta``. Keys: ``n_channels``, ``sample_rate``,
    ``uv_per_bit`` (see :mod:`kilosnake.io.spikeglx`).
    """
    path = find_meta(raw_path)
    return {} if path is None else recording_fields(read_meta(path))


def recording_info(
    dat, n_channels=None, dtype=PARAMS_BY_NAME["dtype"].default, sample_rate=None, uv_per_bit=None
) -> RecordingInfo:
    """Resolve a recording's description from config values and a SpikeGLX ``.meta``.

    Values given explicitly win over the ``.meta``; the sample rate defaults to 30 kHz.
    """
    if dat is None or str(dat) == "":
        raise InputError("no raw recording given", "pass --config dat=PATH/TO/recording.bin")
    path = Path(os.fspath(dat))
    if not path.exists():
        raise InputError(
            f"raw file {str(path)!r} does not exist",
            "check the path given as dat (relative paths are relative to the "
            "folder snakemake runs in)",
        )
    if path.is_dir():
        raise InputError(f"raw file {str(path)!r} is a folder", "pass the .bin/.dat file itself")
    if dtype not in SUPPORTED_DTYPES:
        raise InputError(
            f"dtype {dtype!r} is not supported", f"use one of {', '.join(SUPPORTED_DTYPES)}"
        )
    meta = read_spikeglx_meta(path)
    n_channels = n_channels or meta.get("n_channels")
    if not n_channels:
        raise InputError(
            f"the channel count of {str(path)!r} is unknown",
            "pass --config n_channels=N (total columns in the file, e.g. 385 for "
            "Neuropixels with the sync channel) or keep the SpikeGLX .meta beside it",
        )
    return RecordingInfo(
        str(path),
        int(n_channels),
        dtype,
        float(sample_rate or meta.get("sample_rate") or 30000.0),
        uv_per_bit if uv_per_bit is not None else meta.get("uv_per_bit"),
    )


def batch_starts(n_samples: int, batch_size: int) -> np.ndarray:
    """First sample of each contiguous batch (the last one may be short)."""
    return np.arange(0, n_samples, batch_size, dtype=np.int64)
