"""GPU speed against Kilosort 4: one generated recording sorted by kilosnake and by Kilosort 4.

    python benchmarks/gpu_speed.py --json out/gpu_speed.json             # np: 384 ch, 300 s
    python benchmarks/gpu_speed.py --duration 60 --config gpu_memory_gb=2  # shorter, extra config
    python benchmarks/gpu_speed.py --skip-kilosnake    # Kilosort 4 only (kilosnake figures of an
                                                       # earlier run in --workdir are reused)
    python benchmarks/gpu_speed.py --device cpu --preset demo --duration 10 --skip-ks4  # smoke test
    python benchmarks/gpu_speed.py --ks4-dry-run       # print Kilosort 4's probe and settings

Steps:

1. The preset's recording (``kilosnake.groundtruth.generate``; ``np`` = 384 channels + sync
   column, 300 s, 150 units) is generated into ``--workdir`` unless it is already there. Noise
   blocks are independent random streams, so the chunks of the file are written by a pool of
   processes (``--gen-workers``); the bytes are those of
   ``kilosnake.groundtruth.generate.generate``. Generation time is reported on its own and is
   part of neither sorter's time.
2. kilosnake: the whole workflow (what ``snakemake`` builds by default for the recording: Phy
   folder, input check picture, QC report; ``--target phy`` for the Phy folder only) runs with
   Snakemake in a subprocess, ``--cores`` all, in a fresh run folder every time. Measured: wall
   time of the Snakemake command (the kilosnake total), time until the Phy folder is done, per
   rule the ``benchmark:`` wall time and ``max_rss`` and the closing line of its log (wall, CPU,
   peak host memory, peak GPU pool), the peak RSS of the process tree (``wait4``), and the GPU
   memory of the device sampled every ``--poll-s`` seconds (NVML, else ``nvidia-smi``) minus its
   idle level.
3. Kilosort 4 (``kilosort.run_kilosort``) sorts the same file with the same probe (its probe
   dict built from the probe JSON), ``n_chan_bin`` = the file's columns, default settings
   otherwise, in a subprocess: wall time from start to exit (imports included), its own total and
   per-step runtimes (``ops['runtime_*']``), ``torch.cuda.max_memory_allocated``, the sampled
   device peak and the peak RSS of the process.
4. Both Phy folders are scored against the ground truth with :mod:`kilosnake.groundtruth.score`:
   all units, and only the units labelled ``good`` (``cluster_KSLabel.tsv``).
5. One table is printed (per-stage times, total, x real time, speed-up, GPU and host memory,
   accuracy); ``--json`` writes it with every raw figure (rewritten after each sorter, so an
   interrupted run keeps what was measured), and ``--record`` appends the row to
   ``benchmarks/RESULTS.md`` (the row is always printed).

The figures of each sorter are also kept in ``--workdir``; a sorter left out with
``--skip-kilosnake`` / ``--skip-ks4`` is taken from there (or from ``--reuse`` a JSON file of an
earlier run) when it was measured on the same recording, so a long comparison can be split over
two calls.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import importlib.util
import json
import math
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from kilosnake.params import RULE_ORDER

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

SECTION = "## GPU speed vs Kilosort 4 (benchmarks/gpu_speed.py)"
#: kilosnake rules in workflow order (others found in the benchmark folder come after them)
KILOSNAKE_RULES = RULE_ORDER
#: Kilosort 4 steps: ops key suffix (``runtime_<key>``) and label
KS4_STEPS = (
    ("preproc", "preprocessing (filter, whitening)"),
    ("drift", "drift correction"),
    ("st0", "detection (universal templates)"),
    ("clu0", "first clustering"),
    ("st", "detection (learned templates)"),
    ("clu", "final clustering"),
    ("merge", "merging"),
    ("postproc", "Phy export"),
)
#: settings run_kilosort accepts besides those of kilosort.parameters.DEFAULT_SETTINGS
KS4_EXTRA_SETTINGS = ("filename", "data_dir", "results_dir", "probe_name", "probe_path")
#: closing line of a kilosnake rule log (kilosnake.runtime.logs.log_closing)
CLOSING = re.compile(
    r"(?P<stage>\S+) done in (?P<wall>[\d.]+) s \(CPU (?P<cpu>[\d.]+) s\), "
    r"peak host memory (?P<host>\d+) MB(?:, peak GPU pool (?P<pool>\d+) MB)?"
)
SCORE_KEYS = (
    "n_gt_units",
    "n_sorted_units",
    "n_matched",
    "n_well_detected",
    "n_false_positive",
    "n_redundant",
    "n_overmerged",
    "mean_accuracy",
    "median_accuracy",
    "mean_recall",
    "mean_precision_matched",
    "n_snr_ge_5",
    "n_snr_ge_5_recall_ge_0.9",
    "n_snr_ge_5_well_detected",
    "mean_recall_snr_ge_5",
)


# --------------------------------------------------------------------------------------------
# command line


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="np", help="generator preset (default np)")
    parser.add_argument(
        "--duration", type=float, default=None, help="recording length in s (default: the preset's)"
    )
    parser.add_argument(
        "--seed", type=int, default=42, help="seed of the recording and of kilosnake"
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path("/tmp/gpu-speed"),
        help="recordings, run folders and stored figures (default %(default)s)",
    )
    parser.add_argument(
        "--device",
        default="gpu",
        choices=("gpu", "cpu", "auto"),
        help="kilosnake device; Kilosort 4 uses CUDA unless this is cpu",
    )
    parser.add_argument(
        "--cores",
        type=int,
        default=os.cpu_count() or 1,
        help="snakemake --cores (default: all, %(default)s)",
    )
    parser.add_argument(
        "--target",
        choices=("all", "phy"),
        default="all",
        help="all: what snakemake builds by default (Phy folder, input check, "
        "QC report); phy: the Phy folder only",
    )
    parser.add_argument(
        "--config",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="extra snakemake --config entries, e.g. gpu_memory_gb=2",
    )
    parser.add_argument(
        "--ks4-set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="Kilosort 4 settings besides the defaults (JSON values), e.g. batch_size=60000",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before the timed run, sort a SECONDS-long recording of the same "
        "preset once (untimed in the comparison; its wall time is reported) so "
        "that CuPy's compiled-kernel cache is filled, as on any machine that "
        "has sorted before (default 0: the timed run starts cold)",
    )
    parser.add_argument("--skip-kilosnake", action="store_true")
    parser.add_argument("--skip-ks4", action="store_true")
    parser.add_argument(
        "--reuse",
        type=Path,
        default=None,
        metavar="JSON",
        help="take the figures of a skipped sorter from this --json file",
    )
    parser.add_argument(
        "--ks4-dry-run",
        action="store_true",
        help="print Kilosort 4's probe dict, settings and call, and the snakemake "
        "command; sort nothing",
    )
    parser.add_argument(
        "--gen-workers",
        type=int,
        default=os.cpu_count() or 1,
        help="processes writing the recording (default %(default)s)",
    )
    parser.add_argument("--poll-s", type=float, default=0.2, help="GPU memory sampling period")
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="write the table and every "
        "figure here (e.g. out/gpu_speed.json); every log goes beside it in "
        "one file, <name>_logs.txt",
    )
    parser.add_argument(
        "--record", action="store_true", help="append the row to benchmarks/RESULTS.md"
    )
    parser.add_argument("--ks4-child", type=Path, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# --------------------------------------------------------------------------------------------
# the recording


def recording_files(args) -> dict:
    """Paths and figures of the generated recording of ``args`` (generated when missing)."""
    from kilosnake.groundtruth.generate import generate
    from kilosnake.groundtruth.presets import preset_config

    overrides = {} if args.duration is None else {"duration_s": float(args.duration)}
    config = preset_config(args.preset, **overrides)
    name = f"{args.preset}_{config.duration_s:g}s_seed{args.seed}"
    folder = args.workdir.resolve() / "recordings"
    rec = {
        "name": name,
        "dat": folder / f"{name}.bin",
        "probe": folder / f"{name}.probe.json",
        "gt": folder / f"{name}_gt.npz",
        "meta": folder / f"{name}.meta.json",
    }
    expected = config.n_samples * config.n_channels_total * 2
    present = (
        all(rec[k].is_file() for k in ("dat", "probe", "gt", "meta"))
        and rec["dat"].stat().st_size == expected
    )
    gen = {"reused": present, "seconds": None, "workers": None}
    if not present:
        workers = max(1, min(args.gen_workers, os.cpu_count() or 1))
        print(
            f"generating {rec['dat']} ({config.n_channels_total} columns, "
            f"{config.duration_s:g} s, {config.n_units} units) with {workers} processes",
            flush=True,
        )
        t0 = time.perf_counter()
        generate(config, folder, name=name, seed=args.seed, workers=workers)
        gen.update(seconds=time.perf_counter() - t0, workers=workers)
        print(f"generated in {gen['seconds']:.1f} s", flush=True)
    else:
        print(f"reusing {rec['dat']}", flush=True)
    meta = json.loads(rec["meta"].read_text())
    rec.update(
        n_channels=int(meta["n_channels_total"]),
        n_probe_channels=int(meta["n_channels"]),
        sample_rate=float(meta["sample_rate"]),
        duration_s=float(meta["duration_s"]),
        n_units=int(meta["n_units"]),
        n_gt_spikes=int(meta["n_spikes"]),
        uv_per_bit=float(meta["uv_per_bit"]),
        preset=args.preset,
        seed=args.seed,
        generation=gen,
    )
    return rec


# --------------------------------------------------------------------------------------------
# sampling GPU memory and watching stage completion


class Monitor(threading.Thread):
    """Samples the device's used memory every ``period`` s; notes when files appear in a folder.

    Memory comes from NVML (``nvidia-ml-py``) when importable, else from ``nvidia-smi``; without
    either, :attr:`source` is None and nothing is sampled.
    """

    def __init__(self, period: float = 0.2, watch: Path | None = None, gpu_index: int = 0):
        super().__init__(daemon=True)
        self.period = period
        self.watch = watch
        self.gpu_index = gpu_index
        self.samples: list[tuple[float, float]] = []  # (seconds since start, MB used)
        self.seen: dict[str, float] = {}  # file name -> seconds since start when first seen
        self._halt = threading.Event()
        self._read = None
        self.source = None
        self.gpu_name = None
        self._setup()
        self.t0 = time.perf_counter()

    def _setup(self) -> None:
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(self.gpu_index)
            self._read = lambda: pynvml.nvmlDeviceGetMemoryInfo(handle).used / 1e6
            name = pynvml.nvmlDeviceGetName(handle)
            self.gpu_name = name.decode() if isinstance(name, bytes) else str(name)
            self.source = "NVML"
            return
        except Exception:  # no NVML binding or no driver: try nvidia-smi
            pass
        smi = shutil.which("nvidia-smi")
        if smi is None:
            return
        cmd = [
            smi,
            "--query-gpu=memory.used",
            "--format=csv,noheader,nounits",
            "-i",
            str(self.gpu_index),
        ]

        def read():
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=5).stdout
            return float(out.strip().splitlines()[0]) * 1.048576  # MiB -> MB

        try:
            read()
            name = subprocess.run(
                [smi, "--query-gpu=name", "--format=csv,noheader", "-i", str(self.gpu_index)],
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout.strip()
        except Exception:
            return
        self._read, self.source, self.gpu_name = read, "nvidia-smi", name or None

    def read(self) -> float | None:
        if self._read is None:
            return None
        try:
            return float(self._read())
        except Exception:
            return None

    def baseline(self, n: int = 5) -> float | None:
        """Median used memory over ``n`` samples, taken before the sorter starts (MB)."""
        values = []
        for _ in range(n):
            v = self.read()
            if v is not None:
                values.append(v)
            time.sleep(self.period)
        return sorted(values)[len(values) // 2] if values else None

    def start(self) -> None:
        self.t0 = time.perf_counter()
        super().start()

    def run(self) -> None:
        while not self._halt.is_set():
            t = time.perf_counter() - self.t0
            v = self.read()
            if v is not None:
                self.samples.append((t, v))
            if self.watch is not None:
                try:
                    for name in os.listdir(self.watch):
                        self.seen.setdefault(name, t)
                except OSError:
                    pass
            self._halt.wait(self.period)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)

    def peak(self, t_from: float = -math.inf, t_to: float = math.inf) -> float | None:
        """Largest sample in ``[t_from, t_to]`` (MB), or None."""
        values = [v for t, v in self.samples if t_from <= t <= t_to]
        return max(values) if values else None


def _above(peak, baseline):
    return None if peak is None or baseline is None else max(0.0, peak - baseline)


def run_measured(cmd, log_path: Path, monitor: Monitor, cwd=ROOT, env=None) -> dict:
    """Run ``cmd`` (output to ``log_path``) under ``monitor``; wall time, exit code, peak RSS."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        monitor.start()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        monitor.stop()
    return {
        "wall_s": wall,
        "returncode": proc.returncode,
        "largest_process_rss_mb": usage.ru_maxrss / 1024.0,
        "start_offset_s": t0 - monitor.t0,
    }


def tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return f"({path} not readable)"


# --------------------------------------------------------------------------------------------
# kilosnake


def kilosnake_command(args, rec: dict, rundir: Path) -> list[str]:
    targets = [f"results/{rec['name']}/phy"] if args.target == "phy" else []
    config = [
        f"dat={rec['dat']}",
        f"probe={rec['probe']}",
        f"n_channels={rec['n_channels']}",
        f"sample_rate={rec['sample_rate']:g}",
        f"uv_per_bit={rec['uv_per_bit']:g}",
        f"device={args.device}",
        f"seed={args.seed}",
        *args.config,
    ]
    return [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(ROOT / "Snakefile"),
        "-d",
        str(rundir),
        "--cores",
        str(args.cores),
        *targets,
        "--config",
        *config,
    ]


def warm_kernel_cache(args) -> dict:
    """Sort a short recording of the same preset once so that the kernels the sort compiles are
    in CuPy's on-disk cache (``~/.cupy/kernel_cache``, or ``CUPY_CACHE_DIR``); returns its
    wall time (the cold-start cost) and the recording's name."""
    short = argparse.Namespace(**{**vars(args), "duration": args.warmup})
    rec = recording_files(short)
    rundir = args.workdir.resolve() / "warmup"
    if rundir.exists():
        shutil.rmtree(rundir)
    rundir.mkdir(parents=True)
    cmd = kilosnake_command(short, rec, rundir)
    print("warm-up:", " ".join(shlex.quote(c) for c in cmd), flush=True)
    log_path = args.workdir.resolve() / "logs" / "warmup_snakemake.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        code = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - t0
    print(
        f"warm-up sort of {rec['name']} {'done' if code == 0 else 'FAILED'} in {wall:.1f} s",
        flush=True,
    )
    return {
        "recording": rec["name"],
        "duration_s": rec["duration_s"],
        "wall_s": wall,
        "returncode": code,
    }


def run_kilosnake(args, rec: dict) -> dict:
    warmup = warm_kernel_cache(args) if args.warmup > 0 and args.device != "cpu" else None
    rundir = args.workdir.resolve() / "kilosnake"
    if rundir.exists():
        shutil.rmtree(rundir)  # a full rerun every time
    rundir.mkdir(parents=True)
    results = rundir / "results" / rec["name"]
    cmd = kilosnake_command(args, rec, rundir)
    print("kilosnake:", " ".join(shlex.quote(c) for c in cmd), flush=True)
    monitor = Monitor(args.poll_s, watch=results / "benchmarks")
    base = monitor.baseline()
    run = run_measured(cmd, args.workdir.resolve() / "logs" / "kilosnake_snakemake.log", monitor)
    out = {
        "command": cmd,
        "wall_s": run["wall_s"],
        "returncode": run["returncode"],
        "largest_process_rss_mb": run["largest_process_rss_mb"],
        "gpu_source": monitor.source,
        "gpu_name": monitor.gpu_name,
        "gpu_baseline_mb": base,
        "gpu_device_peak_mb": monitor.peak(),
        "results": str(results),
        "recording": rec["name"],
        "duration_s": rec["duration_s"],
        "warmup": warmup,
    }
    out["gpu_device_peak_above_idle_mb"] = _above(out["gpu_device_peak_mb"], base)
    stages = {}
    for rule, bench in read_benchmarks(results / "benchmarks").items():
        stage = dict(bench)
        stage.update(read_closing_line(results / "logs" / f"{rule}.log"))
        end = monitor.seen.get(f"{rule}.tsv")
        if end is not None:
            stage["done_at_s"] = end - run["start_offset_s"]
            if stage["wall_s"] is not None:
                stage["gpu_device_peak_above_idle_mb"] = _above(
                    monitor.peak(end - stage["wall_s"] - args.poll_s, end), base
                )
        stages[rule] = stage
    out["stages"] = stages
    out["to_phy_s"] = stages.get("export_phy", {}).get("done_at_s")
    out["host_peak_mb"] = max(
        (s["max_rss_mb"] for s in stages.values() if s["max_rss_mb"] is not None), default=None
    )
    pools = [s["gpu_pool_mb"] for s in stages.values() if s.get("gpu_pool_mb") is not None]
    out["gpu_pool_peak_mb"] = max(pools) if pools else None
    status = "done" if run["returncode"] == 0 else f"FAILED (exit {run['returncode']})"
    print(f"kilosnake {status} in {run['wall_s']:.1f} s", flush=True)
    if run["returncode"] != 0:
        print(tail(args.workdir.resolve() / "logs" / "kilosnake_snakemake.log"), flush=True)
        return out
    phy = results / "phy"
    out["phy"] = str(phy)
    out["scores"] = score_folder(phy, rec)
    return out


def read_benchmarks(folder: Path) -> dict:
    """``{rule: {wall_s, max_rss_mb, cpu_time_s}}`` from Snakemake's benchmark files."""
    if not folder.is_dir():
        return {}
    found = {p.stem: p for p in folder.glob("*.tsv")}
    order = [r for r in KILOSNAKE_RULES if r in found] + sorted(set(found) - set(KILOSNAKE_RULES))
    out = {}
    for rule in order:
        with open(found[rule]) as f:
            row = next(csv.DictReader(f, delimiter="\t"), None)
        if not row:
            continue
        out[rule] = {
            "wall_s": _num(row.get("s")),
            "max_rss_mb": _num(row.get("max_rss")),
            "cpu_time_s": _num(row.get("cpu_time")),
        }
    return out


def read_closing_line(log: Path) -> dict:
    """Wall, CPU, peak host memory and peak GPU pool from the last closing line of a rule log."""
    try:
        matches = list(CLOSING.finditer(log.read_text(errors="replace")))
    except OSError:
        return {}
    if not matches:
        return {}
    m = matches[-1]
    return {
        "log_wall_s": float(m["wall"]),
        "log_cpu_s": float(m["cpu"]),
        "log_host_mb": float(m["host"]),
        "gpu_pool_mb": float(m["pool"]) if m["pool"] is not None else None,
    }


def _num(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


# --------------------------------------------------------------------------------------------
# Kilosort 4


def ks4_probe(rec: dict) -> dict:
    """Kilosort 4's probe dict (lists) from the recording's probe file."""
    from kilosnake.io.probe import load_probe

    probe = load_probe(rec["probe"])
    return {
        "chanMap": probe.chan_map.astype(int).tolist(),
        "xc": probe.xc.tolist(),
        "yc": probe.yc.tolist(),
        "kcoords": probe.kcoords.tolist(),
        "n_chan": int(probe.n_channels),
    }


def ks4_spec(args, rec: dict) -> dict:
    """Everything the Kilosort 4 subprocess needs (JSON)."""
    settings = {"n_chan_bin": rec["n_channels"], "fs": rec["sample_rate"]}
    for item in args.ks4_set:
        key, _, value = item.partition("=")
        try:
            settings[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            settings[key.strip()] = value
    work = args.workdir.resolve()
    return {
        "settings": settings,
        "probe": ks4_probe(rec),
        "filename": str(rec["dat"]),
        "results_dir": str(work / "ks4" / rec["name"]),
        "data_dtype": "int16",
        "device": "cpu" if args.device == "cpu" else "cuda",
        "downloads_dir": str(work / "ks4_downloads"),
        "result_json": str(work / "ks4" / f"{rec['name']}.child.json"),
    }


def check_ks4_spec(spec: dict) -> list[str]:
    """Problems Kilosort 4 would raise on this probe and these settings (empty: none found).

    Mirrors the checks of ``run_kilosort`` (``set_files``, ``_sort``, ``initialize_ops``); the
    recognised settings are read from the installed package's ``parameters.py`` when it is
    there (found without importing the package, which needs torch).
    """
    problems = []
    probe, settings = spec["probe"], spec["settings"]
    n = len(probe["chanMap"])
    for key in ("chanMap", "xc", "yc", "kcoords"):
        if len(probe[key]) != n:
            problems.append(f"probe[{key!r}] has {len(probe[key])} entries, chanMap {n}")
    if probe["n_chan"] != n:
        problems.append(f"probe['n_chan'] = {probe['n_chan']}, chanMap has {n} entries")
    if max(probe["chanMap"]) >= settings["n_chan_bin"] or min(probe["chanMap"]) < 0:
        problems.append("chanMap must be 0-based rows of the file, below n_chan_bin")
    if len(set(probe["chanMap"])) != n:
        problems.append("chanMap has repeated rows")
    defaults = ks4_default_settings()
    if defaults is None:
        problems.append("(kilosort not found: settings names not checked)")
    else:
        unknown = sorted(set(settings) - set(defaults) - set(KS4_EXTRA_SETTINGS))
        if unknown:
            problems.append(f"settings Kilosort 4 does not know: {unknown}")
        nearest = {**defaults, **settings}.get("nearest_chans")
        if nearest is not None and nearest > n:
            problems.append(f"(nearest_chans {nearest} > {n} channels: Kilosort 4 lowers it)")
    size = Path(spec["filename"]).stat().st_size
    if size % (2 * settings["n_chan_bin"]):
        problems.append(
            f"file size {size} is not a whole number of int16 rows of "
            f"{settings['n_chan_bin']} channels"
        )
    return problems


def ks4_default_settings() -> dict | None:
    """``kilosort.parameters.DEFAULT_SETTINGS`` of the installed package, or None."""
    found = importlib.util.find_spec("kilosort")
    if found is None or not found.submodule_search_locations:
        return None
    path = Path(list(found.submodule_search_locations)[0]) / "parameters.py"
    spec = importlib.util.spec_from_file_location("_ks4_parameters", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # numpy only
    return dict(module.DEFAULT_SETTINGS)


def ks4_version() -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version("kilosort")
    except importlib.metadata.PackageNotFoundError:
        return None


def print_ks4_dry_run(args, rec: dict) -> int:
    spec = ks4_spec(args, rec)
    probe = spec["probe"]
    print(
        f"Kilosort {ks4_version() or '(not installed)'} would be called in a subprocess as\n"
        f"  run_kilosort(settings={spec['settings']!r},\n"
        f"               probe=<dict below>, filename={spec['filename']!r},\n"
        f"               results_dir={spec['results_dir']!r}, data_dtype="
        f"{spec['data_dtype']!r}, device=torch.device({spec['device']!r}))"
    )
    print("probe dict:")
    for key in ("chanMap", "xc", "yc", "kcoords"):
        v = probe[key]
        dtype = "int32" if key == "chanMap" else "float32"
        print(
            f"  {key:8s} {dtype} ({len(v)},) first {v[:4]} last {v[-2:]} "
            f"range [{min(v):g}, {max(v):g}]"
        )
    print(f"  n_chan   {probe['n_chan']}")
    defaults = ks4_default_settings()
    if defaults is not None:
        merged = {**defaults, **spec["settings"]}
        print(
            "settings after Kilosort 4's defaults: "
            + ", ".join(
                f"{k}={merged[k]!r}"
                for k in (
                    "n_chan_bin",
                    "fs",
                    "batch_size",
                    "nblocks",
                    "Th_universal",
                    "Th_learned",
                    "nt",
                    "nt0min",
                    "templates_from_data",
                    "nearest_chans",
                    "tmin",
                    "tmax",
                )
                if k in merged
            )
        )
    problems = check_ks4_spec(spec)
    print("checks: " + ("passed" if not problems else "; ".join(problems)))
    cmd = kilosnake_command(args, rec, args.workdir.resolve() / "kilosnake")
    print("kilosnake would run: " + " ".join(shlex.quote(c) for c in cmd))
    return 0 if not [p for p in problems if not p.startswith("(")] else 1


def run_ks4(args, rec: dict) -> dict:
    spec = ks4_spec(args, rec)
    results = Path(spec["results_dir"])
    if results.exists():
        shutil.rmtree(results)
    Path(spec["result_json"]).unlink(missing_ok=True)
    spec_path = results.parent / f"{rec['name']}.spec.json"
    spec_path.parent.mkdir(parents=True, exist_ok=True)
    spec_path.write_text(json.dumps(spec))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--ks4-child", str(spec_path)]
    print(f"Kilosort {ks4_version()}: run_kilosort on {rec['dat'].name} -> {results}", flush=True)
    monitor = Monitor(args.poll_s)
    base = monitor.baseline()
    log = args.workdir.resolve() / "logs" / "ks4_console.log"
    run = run_measured(cmd, log, monitor)
    out = {
        "version": ks4_version(),
        "settings": spec["settings"],
        "wall_s": run["wall_s"],
        "returncode": run["returncode"],
        "largest_process_rss_mb": run["largest_process_rss_mb"],
        "gpu_source": monitor.source,
        "gpu_name": monitor.gpu_name,
        "gpu_baseline_mb": base,
        "gpu_device_peak_mb": monitor.peak(),
        "results": str(results),
        "recording": rec["name"],
        "duration_s": rec["duration_s"],
    }
    out["gpu_device_peak_above_idle_mb"] = _above(out["gpu_device_peak_mb"], base)
    child = Path(spec["result_json"])
    if child.is_file():
        out.update(json.loads(child.read_text()))
    out["host_peak_mb"] = out["largest_process_rss_mb"]
    status = "done" if run["returncode"] == 0 else f"FAILED (exit {run['returncode']})"
    print(f"Kilosort 4 {status} in {run['wall_s']:.1f} s", flush=True)
    if run["returncode"] != 0 or not (results / "spike_times.npy").is_file():
        print(tail(log), flush=True)
        return out
    out["phy"] = str(results)
    out["scores"] = score_folder(results, rec)
    return out


def ks4_child(spec_path: Path) -> int:
    """Runs in the Kilosort 4 subprocess: sort, then write the figures to the spec's JSON."""
    t_start = time.perf_counter()
    spec = json.loads(Path(spec_path).read_text())
    downloads = Path(spec["downloads_dir"])
    downloads.mkdir(parents=True, exist_ok=True)
    os.environ["KILOSORT_LOCAL_DOWNLOADS_PATH"] = str(downloads)  # never fetch anything
    import resource

    import kilosort
    import numpy as np
    import torch
    from kilosort import run_kilosort

    packaged = Path(kilosort.__file__).parent / "wTEMP.npz"
    if packaged.is_file() and not (downloads / "wTEMP.npz").is_file():
        shutil.copyfile(packaged, downloads / "wTEMP.npz")
    t_imported = time.perf_counter()
    p = spec["probe"]
    probe = {
        "chanMap": np.asarray(p["chanMap"], dtype=np.int32),
        "xc": np.asarray(p["xc"], dtype=np.float32),
        "yc": np.asarray(p["yc"], dtype=np.float32),
        "kcoords": np.asarray(p["kcoords"], dtype=np.float32),
        "n_chan": int(p["n_chan"]),
    }
    device = torch.device(spec["device"] if torch.cuda.is_available() else "cpu")
    peaks = {"allocated": 0, "reserved": 0}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        reset = torch.cuda.reset_peak_memory_stats

        def note_peaks_then_reset(*a, **k):  # Kilosort 4 resets the peaks after each step
            peaks["allocated"] = max(peaks["allocated"], torch.cuda.max_memory_allocated(device))
            peaks["reserved"] = max(peaks["reserved"], torch.cuda.max_memory_reserved(device))
            return reset(*a, **k)

        torch.cuda.reset_peak_memory_stats = note_peaks_then_reset
    t0 = time.perf_counter()
    ops, st, clu, *_ = run_kilosort(
        settings=dict(spec["settings"]),
        probe=probe,
        filename=Path(spec["filename"]),
        results_dir=Path(spec["results_dir"]),
        data_dtype=spec["data_dtype"],
        device=device,
    )
    t1 = time.perf_counter()
    out = {
        "import_s": t_imported - t_start,
        "run_kilosort_s": t1 - t0,
        "own_runtime_s": _float(ops.get("runtime")),
        "steps": {key: _float(ops.get(f"runtime_{key}")) for key, _ in KS4_STEPS},
        "n_units_total": _int(ops.get("n_units_total")),
        "n_units_good": _int(ops.get("n_units_good")),
        "n_spikes": _int(ops.get("n_spikes")),
        "torch_device": str(device),
        "torch_version": torch.__version__,
        "child_max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }
    if device.type == "cuda":
        out["torch_max_allocated_mb"] = (
            max(peaks["allocated"], torch.cuda.max_memory_allocated(device)) / 1e6
        )
        out["torch_max_reserved_mb"] = (
            max(peaks["reserved"], torch.cuda.max_memory_reserved(device)) / 1e6
        )
    Path(spec["result_json"]).write_text(json.dumps(out, indent=1))
    return 0


def _float(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _int(v):
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


# --------------------------------------------------------------------------------------------
# scoring


def good_clusters(phy: Path) -> set | None:
    """Cluster ids labelled ``good`` in ``cluster_KSLabel.tsv`` (None without the file)."""
    path = phy / "cluster_KSLabel.tsv"
    if not path.is_file():
        return None
    with open(path, newline="") as f:
        return {
            int(r["cluster_id"])
            for r in csv.DictReader(f, delimiter="\t")
            if (r.get("KSLabel") or "").strip() == "good"
        }


def score_folder(phy: Path, rec: dict) -> dict:
    """Score summaries of a Phy folder: all units, and the units labelled good."""
    import numpy as np

    from kilosnake.groundtruth.score import score_spike_trains
    from kilosnake.groundtruth.truth import load_ground_truth
    from kilosnake.io.phy import load_phy_sorting

    gt = load_ground_truth(rec["gt"])
    times, clusters = load_phy_sorting(phy)
    out = {}
    good = good_clusters(phy)
    subsets = {"all": np.ones(len(times), bool)}
    if good is not None:
        subsets["good"] = np.isin(clusters, np.array(sorted(good), dtype=np.int64))
    for label, keep in subsets.items():
        result = score_spike_trains(
            gt.times, gt.units, times[keep], clusters[keep], rec["sample_rate"], gt_snr=gt.snr
        )
        s = result.summary
        out[label] = {k: s[k] for k in SCORE_KEYS if k in s}
        out[label]["n_spikes"] = int(keep.sum())
        if label == "all":
            detail = result.to_dict()
            out[label].update(
                {
                    k: detail[k]
                    for k in (
                        "per_unit",
                        "false_positive_units",
                        "redundant_units",
                        "overmerged_units",
                    )
                }
            )
    return out


# --------------------------------------------------------------------------------------------
# report


def _f(v, spec=".1f", unit=""):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return format(v, spec) + unit


def _gb(mb):
    return "-" if mb is None else f"{mb / 1000:.2f} GB"


def _score_cell(s: dict | None) -> str:
    if not s:
        return "-"
    return (
        f"{s['n_well_detected']} / {s['n_gt_units']} well detected, "
        f"{s['n_false_positive']} FP, {s['n_redundant']} redundant, "
        f"{s['n_overmerged']} overmerged, mean acc {_f(s['mean_accuracy'], '.3f')} "
        f"({s['n_sorted_units']} units)"
    )


def build_table(rec: dict, ksn: dict | None, ks4: dict | None) -> str:
    """The comparison as one Markdown table."""
    rows = [("", "kilosnake", "Kilosort 4")]
    dur = rec["duration_s"]
    gen = rec["generation"]
    rows.append(
        (
            "recording",
            f"{rec['name']}: {rec['n_channels']} columns, {dur:g} s, {rec['n_units']} units",
            "same file, same probe",
        )
    )
    rows.append(
        (
            "generation (not in either time)",
            "reused" if gen["reused"] else f"{gen['seconds']:.1f} s, {gen['workers']} processes",
            "",
        )
    )
    warm = (ksn or {}).get("warmup")
    if warm:
        rows.append(
            (
                "kernel-cache warm-up (not in the time): first sort on this machine",
                f"{warm['wall_s']:.1f} s for {warm['duration_s']:g} s of the same preset",
                "",
            )
        )
    if ksn and ksn.get("stages"):
        for rule, s in ksn["stages"].items():
            extra = []
            if s.get("gpu_pool_mb") is not None:
                extra.append(f"pool {s['gpu_pool_mb']:.0f} MB")
            if s.get("gpu_device_peak_above_idle_mb") is not None:
                extra.append(f"device {s['gpu_device_peak_above_idle_mb']:.0f} MB")
            extra.append(f"RSS {_f(s.get('max_rss_mb'), '.0f')} MB")
            rows.append((f"kilosnake {rule}", f"{_f(s['wall_s'])} s ({', '.join(extra)})", ""))
    if ks4 and ks4.get("steps"):
        for key, label in KS4_STEPS:
            rows.append((f"Kilosort 4 {label}", "", f"{_f(ks4['steps'].get(key))} s"))
        own = ks4.get("own_runtime_s")
        steps = sum(v for v in ks4["steps"].values() if v)
        if own is not None:
            rows.append(
                ("Kilosort 4 plots and setup (own total - steps)", "", f"{_f(own - steps)} s")
            )
            rows.append(("Kilosort 4 own total runtime", "", f"{_f(own)} s"))
        rows.append(("Kilosort 4 imports (torch, kilosort)", "", f"{_f(ks4.get('import_s'))} s"))
    kw = ksn.get("wall_s") if ksn else None
    kw4 = ks4.get("wall_s") if ks4 else None
    rows.append(
        (
            "total wall time (process start to exit)",
            f"{_f(kw)} s"
            + (
                f" (Phy folder at {_f(ksn.get('to_phy_s'))} s)"
                if ksn and ksn.get("to_phy_s")
                else ""
            ),
            f"{_f(kw4)} s",
        )
    )
    rows.append(
        (
            "x real time (duration / wall)",
            _f(dur / kw if kw else None, ".2f", "x"),
            _f(dur / kw4 if kw4 else None, ".2f", "x"),
        )
    )
    if kw and kw4:
        speed = f"{kw4 / kw:.2f}x (Kilosort 4 wall / kilosnake wall)"
        if ksn.get("to_phy_s"):
            speed += f"; to the Phy folder {kw4 / ksn['to_phy_s']:.2f}x"
        rows.append(("speed-up of kilosnake over Kilosort 4", speed, ""))
    rows.append(
        (
            "GPU device peak above idle (sampled)",
            _gb(ksn.get("gpu_device_peak_above_idle_mb")) if ksn else "-",
            _gb(ks4.get("gpu_device_peak_above_idle_mb")) if ks4 else "-",
        )
    )
    rows.append(
        (
            "GPU peak inside the process",
            f"CuPy pool {_gb(ksn.get('gpu_pool_peak_mb'))}" if ksn else "-",
            (
                f"torch max allocated {_gb(ks4.get('torch_max_allocated_mb'))}, reserved "
                f"{_gb(ks4.get('torch_max_reserved_mb'))}"
            )
            if ks4
            else "-",
        )
    )
    rows.append(
        (
            "host memory peak",
            (
                f"{_gb(ksn.get('host_peak_mb'))} (largest rule max_rss; largest single "
                f"process {_gb(ksn.get('largest_process_rss_mb'))})"
            )
            if ksn
            else "-",
            _gb(ks4.get("host_peak_mb")) if ks4 else "-",
        )
    )
    for label in ("all", "good"):
        a = (ksn or {}).get("scores", {}).get(label)
        b = (ks4 or {}).get("scores", {}).get(label)
        rows.append((f"accuracy, {label} units", _score_cell(a), _score_cell(b)))
        if (a and "n_snr_ge_5" in a) or (b and "n_snr_ge_5" in b):
            rows.append(
                (
                    f"SNR >= 5, {label} units: recall >= 0.9 / well detected",
                    _snr_cell(a),
                    _snr_cell(b),
                )
            )
    lines = ["| " + " | ".join(rows[0]) + " |", "| --- | --- | --- |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(lines)


def _snr_cell(s):
    if not s or "n_snr_ge_5" not in s:
        return "-"
    return f"{s['n_snr_ge_5_recall_ge_0.9']} / {s['n_snr_ge_5_well_detected']} of {s['n_snr_ge_5']}"


def machine_label(ksn, ks4) -> str:
    gpu = (ksn or {}).get("gpu_name") or (ks4 or {}).get("gpu_name")
    parts = [f"{platform.node()} ({os.cpu_count()} CPUs)"]
    if gpu:
        parts.append(gpu)
    versions = package_versions()
    parts += [f"{k} {v}" for k, v in versions.items() if v]
    return ", ".join(parts)


def package_versions() -> dict:
    import importlib.metadata

    out = {}
    for label, names in (("CuPy", ("cupy-cuda13x", "cupy-cuda12x", "cupy")), ("torch", ("torch",))):
        for name in names:
            try:
                out[label] = importlib.metadata.version(name)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return out


def figures_text(rec, ksn, ks4, args) -> str:
    dur = rec["duration_s"]
    parts = [
        f"{rec['preset']} ({rec['n_probe_channels']} ch, {dur:g} s, {rec['n_units']} units)"
        + (
            f", generation {rec['generation']['seconds']:.0f} s (excluded)"
            if rec["generation"]["seconds"]
            else ""
        )
    ]
    if ksn and ksn.get("wall_s"):
        text = (
            f"kilosnake device={args.device} {ksn['wall_s']:.0f} s "
            f"({dur / ksn['wall_s']:.2f}x real time"
        )
        if ksn.get("to_phy_s"):
            text += f"; Phy folder at {ksn['to_phy_s']:.0f} s"
        stages = ", ".join(
            f"{r} {s['wall_s']:.0f}"
            for r, s in ksn.get("stages", {}).items()
            if s.get("wall_s") is not None
        )
        warm = ksn.get("warmup")
        if warm:
            text += (
                f"; CuPy kernel cache warmed by sorting {warm['duration_s']:g} s first, "
                f"{warm['wall_s']:.0f} s cold"
            )
        parts.append(text + f"; stages s: {stages})")
    if ks4 and ks4.get("wall_s"):
        text = (
            f"Kilosort {ks4.get('version')} {ks4['wall_s']:.0f} s "
            f"({dur / ks4['wall_s']:.2f}x real time"
        )
        if ks4.get("own_runtime_s"):
            text += f"; own runtime {ks4['own_runtime_s']:.0f} s"
        parts.append(text + ")")
    if ksn and ks4 and ksn.get("wall_s") and ks4.get("wall_s"):
        parts.append(f"speed-up {ks4['wall_s'] / ksn['wall_s']:.2f}x")
    mem = []
    for name, d, inner in (
        ("kilosnake", ksn, "gpu_pool_peak_mb"),
        ("KS4", ks4, "torch_max_allocated_mb"),
    ):
        if d and d.get("wall_s"):
            mem.append(
                f"{name} GPU {_gb(d.get('gpu_device_peak_above_idle_mb'))} above idle "
                f"(in process {_gb(d.get(inner))}), host {_gb(d.get('host_peak_mb'))}"
            )
    parts += mem
    for name, d in (("kilosnake", ksn), ("KS4", ks4)):
        sc = (d or {}).get("scores") or {}
        if sc.get("all"):
            a, g = sc["all"], sc.get("good")
            text = (
                f"{name}: {a['n_well_detected']} / {a['n_gt_units']} well detected, "
                f"{a['n_false_positive']} FP, {a['n_redundant']} redundant, mean accuracy "
                f"{a['mean_accuracy']:.3f}"
            )
            if g:
                text += (
                    f" (good units only: {g['n_well_detected']} well detected, "
                    f"{g['n_false_positive']} FP, {g['n_sorted_units']} units)"
                )
            parts.append(text)
    return "; ".join(parts)


def results_row(rec, ksn, ks4, args) -> str:
    cmd = " ".join(shlex.quote(c) for c in ["python", "benchmarks/gpu_speed.py", *sys.argv[1:]])
    return (
        f"| {datetime.date.today().isoformat()} | {machine_label(ksn, ks4)} | `{cmd}` | "
        f"{figures_text(rec, ksn, ks4, args)} |\n"
    )


# --------------------------------------------------------------------------------------------
# stored figures


def stored_path(args, sorter: str) -> Path:
    return args.workdir.resolve() / f"{sorter}_figures.json"


def store(args, sorter: str, figures: dict) -> None:
    stored_path(args, sorter).write_text(json.dumps(figures, indent=1, default=str))


def earlier(args, sorter: str, rec: dict) -> dict | None:
    """Figures of ``sorter`` measured earlier on the same recording (``--reuse`` first)."""
    candidates = []
    if args.reuse is not None and args.reuse.is_file():
        candidates.append(json.loads(args.reuse.read_text()).get(sorter))
    path = stored_path(args, sorter)
    if path.is_file():
        candidates.append(json.loads(path.read_text()))
    for c in candidates:
        if c and c.get("recording") == rec["name"] and c.get("returncode") == 0:
            return {**c, "earlier_run": True}
    return None


def write_json(args, rec, ksn, ks4, table, row) -> None:
    if args.json is None:
        return
    args.json.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "argv": sys.argv[1:],
        "machine": machine_label(ksn, ks4),
        "recording": {k: (str(v) if isinstance(v, Path) else v) for k, v in rec.items()},
        "kilosnake": ksn,
        "ks4": ks4,
        "table": table,
        "results_row": row,
    }
    args.json.write_text(json.dumps(doc, indent=1, default=str))
    logs = sorted((args.workdir.resolve() / "logs").glob("*.log"))
    if ksn and ksn.get("results") and not ksn.get("earlier_run"):
        logs += sorted((Path(ksn["results"]) / "logs").glob("*.log"))
    if ks4 and ks4.get("results") and not ks4.get("earlier_run"):
        logs.append(Path(ks4["results"]) / "kilosort4.log")
    bundle = args.json.with_name(args.json.stem + "_logs.txt")  # one file: few files come back
    with open(bundle, "w") as out:
        for path in logs:
            if path.is_file():
                out.write(f"\n===== {path} =====\n")
                out.write(log_text(path))


def log_text(path: Path, limit: int = 200_000) -> str:
    """A log's text (progress-bar redraws dropped), its end when longer than ``limit``."""
    text = path.read_bytes().decode(errors="replace")  # read_text would turn \r into \n
    text = "\n".join(line.rstrip("\r").rsplit("\r", 1)[-1] for line in text.split("\n"))
    return text if len(text) <= limit else "[...]\n" + text[-limit:]


# --------------------------------------------------------------------------------------------


def warn_without_bytecode_cache() -> None:
    """Both sorters' times include their imports: without a bytecode cache (an environment
    with ``PYTHONDONTWRITEBYTECODE`` set and packages installed without ``.pyc`` files) every
    run compiles its imports from source again, 2 s and more of each time."""
    if sys.flags.dont_write_bytecode:
        print(
            "warning: PYTHONDONTWRITEBYTECODE is set: each run may compile its imports again; "
            "unset it (and set PYTHONPYCACHEPREFIX to a writable folder where the packages' own "
            "folders are read-only) to time the imports as an installed environment runs them",
            file=sys.stderr,
        )


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.ks4_child is not None:
        return ks4_child(args.ks4_child)
    warn_without_bytecode_cache()
    args.workdir.mkdir(parents=True, exist_ok=True)
    rec = recording_files(args)
    if args.ks4_dry_run:
        return print_ks4_dry_run(args, rec)
    ksn = ks4 = None
    status = 0
    if args.skip_kilosnake:
        ksn = earlier(args, "kilosnake", rec)
    else:
        ksn = run_kilosnake(args, rec)
        store(args, "kilosnake", ksn)
        status |= ksn["returncode"] != 0
        write_json(args, rec, ksn, None, None, None)
    if args.skip_ks4:
        ks4 = earlier(args, "ks4", rec)
    else:
        problems = [p for p in check_ks4_spec(ks4_spec(args, rec)) if not p.startswith("(")]
        if problems:
            print("Kilosort 4 not run: " + "; ".join(problems), file=sys.stderr)
            status = 1
        else:
            ks4 = run_ks4(args, rec)
            store(args, "ks4", ks4)
            status |= ks4["returncode"] != 0
    for name, d in (("kilosnake", ksn), ("Kilosort 4", ks4)):
        if d and d.get("earlier_run"):
            print(f"({name} figures from an earlier run on the same recording)")
    table = build_table(rec, ksn, ks4)
    row = results_row(rec, ksn, ks4, args)
    print()
    print(table)
    print()
    print("RESULTS.md row:")
    print(row, end="")
    write_json(args, rec, ksn, ks4, table, row)
    if args.json is not None:
        print(f"figures written to {args.json}")
    if args.record:
        from results_table import append_row

        append_row(SECTION, row)
        print("appended the row to benchmarks/RESULTS.md")
    return int(status)


if __name__ == "__main__":
    raise SystemExit(main())
