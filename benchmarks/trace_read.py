"""How fast the preprocessed traces can be read back, batch by batch (what drift, detect, learn
and the final pass wait for).

    python benchmarks/trace_read.py results/np/preprocessed.zarr [--batches 60]

Reads the first ``--batches`` batches of a ``preprocessed.zarr`` four ways and prints the
median milliseconds per batch of each: through the reader the stages use
(``PreprocessedReader.read_int16``), through Zarr (its decoding of the batch's chunks), the chunk
files alone (the file reads, no decoding: the floor), and the chunk files decoded by Blosc
straight into the batch's buffer on a pool of ``--threads`` threads (one chunk per task).
"""

import argparse
import concurrent.futures
import statistics
import time
from pathlib import Path

import numpy as np
from numcodecs import blosc
from zarr.core.buffer import default_buffer_prototype

from kilosnake.io.traces import PreprocessedReader


def chunk_files(store: Path, first_chunk: int, n_chunks: int) -> list[Path]:
    return [store / "traces" / "c" / str(first_chunk + i) / "0" for i in range(n_chunks)]


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("store", type=Path)
    ap.add_argument("--batches", type=int, default=60)
    ap.add_argument("--threads", type=int, nargs="+", default=[4, 8, 16])
    args = ap.parse_args()
    reader = PreprocessedReader(args.store)
    NT, C = reader.NT, reader.n_channels
    rows = int(reader.traces.chunks[0])
    per_batch = NT // rows
    n = min(args.batches, reader.n_samples // NT)
    out = np.empty((NT, C), np.int16)

    def through_reader():
        for b in range(n):
            reader.read_int16(b * NT, (b + 1) * NT, out=out)

    def through_zarr():
        for b in range(n):
            reader.traces.get_basic_selection(
                (slice(b * NT, (b + 1) * NT),),
                out=default_buffer_prototype().nd_buffer.from_numpy_array(out),
            )

    def files_only():
        for b in range(n):
            for f in chunk_files(args.store, b * per_batch, per_batch):
                f.read_bytes()

    blosc.use_threads = False
    pools = {k: concurrent.futures.ThreadPoolExecutor(k) for k in args.threads}

    def decode_into(path: Path, dest: np.ndarray) -> None:
        blosc.decompress(path.read_bytes(), dest)

    def direct(k):
        def run():
            for b in range(n):
                files = chunk_files(args.store, b * per_batch, per_batch)
                views = [out[i * rows : (i + 1) * rows] for i in range(per_batch)]
                list(pools[k].map(decode_into, files, views))

        return run

    direct(args.threads[0])()
    out_check = out.copy()
    reader.read_int16((n - 1) * NT, n * NT, out=out)
    np.testing.assert_array_equal(out_check, out)  # the direct decode gave the stored values
    figures = {
        "reader": timed(through_reader, 2) / n,
        "Zarr": timed(through_zarr, 2) / n,
        "files only": timed(files_only, 2) / n,
    }
    for k in args.threads:
        figures[f"Blosc direct, {k} threads"] = timed(direct(k), 2) / n
    mb = NT * C * 2 / 1e6
    print(f"{n} batches of {NT} x {C} int16 ({mb:.0f} MB each, {per_batch} chunks):")
    for name, ms in figures.items():
        print(f"  {name}: {ms:.1f} ms per batch ({mb / ms:.2f} GB/s)")


if __name__ == "__main__":
    main()
