"""How long one pass over a per-spike column takes, block by block, as the curation stages and
the export make it (``kilosnake.io.streaming.blocks`` and ``read_rows``).

    python benchmarks/stream_reads.py [--spikes 1380000] [--repeats 5]

Writes two columns of ``--spikes`` spikes to a scratch Zarr store, as the sorter writes them: a
cluster label in one chunk (``merge.zarr`` and ``split.zarr``) and a spike time in chunks of
262,144 spikes (``spikes.zarr``). For each it prints the median seconds of a pass of
:func:`blocks` reading whole chunks at once (the sorter's way) and block by block (each read
decoding every chunk it touches), and of :func:`read_rows` over every 50th spike straight from
the array and through :class:`ChunkCached`, in 32,768-spike pieces (the export's features).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import zarr

from kilosnake.io import streaming
from kilosnake.io.store import write_array


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def one_pass(array, whole_chunks: bool) -> int:
    if whole_chunks:
        return sum(int(b.size) for _, b in streaming.blocks(array))
    step = streaming.BLOCK_ROWS
    return sum(int(np.asarray(array[s : s + step]).size) for s in range(0, array.shape[0], step))


def rows_in_pieces(array, idx: np.ndarray, piece: int = 1 << 15) -> int:
    pieces = range(0, idx.size, piece)
    return sum(int(streaming.read_rows(array, idx[s : s + piece]).size) for s in pieces)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spikes", type=int, default=1_380_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as scratch:
        g = zarr.open_group(f"{scratch}/s.zarr", mode="w", zarr_format=3)
        write_array(g, "cluster", rng.integers(0, 150, args.spikes).astype(np.uint32))
        times = np.sort(rng.integers(0, 36_000_000, args.spikes)).astype(np.uint64)
        g.create_array("time", shape=times.shape, chunks=(262_144,), dtype=times.dtype)[...] = times
        idx = np.arange(0, args.spikes, 50)
        for name in ("cluster", "time"):
            report(name, g[name], idx, args.repeats)


def report(name: str, a, idx: np.ndarray, repeats: int) -> None:
    whole = median_seconds(lambda: one_pass(a, True), repeats)
    by_block = median_seconds(lambda: one_pass(a, False), repeats)
    direct = median_seconds(lambda: rows_in_pieces(a, idx), repeats)
    cached = median_seconds(lambda: rows_in_pieces(streaming.ChunkCached(a), idx), repeats)
    print(
        f"{name} ({a.shape[0]} spikes, chunks of {a.chunks[0]}): blocks {whole:.3f} s, "
        f"block by block {by_block:.3f} s; read_rows {direct:.3f} s, "
        f"through ChunkCached {cached:.3f} s"
    )


if __name__ == "__main__":
    main()
