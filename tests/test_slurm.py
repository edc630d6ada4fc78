"""The workflow through SLURM: a one-node cluster started for the test, profiles/local-slurm.

Needs root (the daemons run as root) and either an installed Slurm or apt-get (Debian packages
slurmctld, slurmd, slurm-client, munge), and snakemake-executor-plugin-slurm (``.[slurm]``).
Sorts a short generated recording twice, locally and through SLURM, and checks that every rule
ran as a SLURM job (in the partition the profile names) and that the Phy folders are identical.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from workflow_runs import snakemake

from kilosnake.groundtruth.generate import generate
from kilosnake.groundtruth.presets import preset_config

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "tests" / "slurm"
PROFILE = ROOT / "profiles" / "local-slurm"
GPU_RULES = {"whitening", "preprocess", "drift", "detect", "learn", "final_pass"}
SORT_RULES = GPU_RULES | {"check_input", "merge", "split", "cutoff", "export_phy"}
SYNTH = preset_config("demo", duration_s=3.0)  # short: ~12 s per SLURM job is overhead
N_CHANNELS = SYNTH.n_channels + int(SYNTH.sync_channel)


def _skip_reason():
    if os.name != "posix" or os.geteuid() != 0:
        return "starts SLURM daemons: needs root"
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        return "SLURM is not installed and apt-get is unavailable to install it"
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        return "snakemake-executor-plugin-slurm missing: pip install -e '.[slurm]'"
    for f in ("slurm.conf", "gres.conf"):
        link = Path("/etc/slurm") / f
        if link.exists() and not (link.is_symlink() and "ks-slurm" in os.readlink(link)):
            return f"{link} belongs to another SLURM installation; not touching it"
    return None


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason())),
]


@pytest.fixture(scope="module")
def cluster():
    state = Path(f"/tmp/ks-slurm-{os.getpid()}")  # short: the munge socket path is limited
    env = dict(os.environ, KILOSNAKE_SLURM_DIR=str(state), FAKE_GPUS="1")
    start = subprocess.run(
        ["bash", str(SCRIPTS / "start_cluster.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    try:
        if start.returncode != 0:
            pytest.fail(
                "the test cluster did not start:\n" + start.stdout + start.stderr, pytrace=False
            )
        yield state
    finally:
        subprocess.run(["bash", str(SCRIPTS / "stop_cluster.sh")], env=env, timeout=120)
        shutil.rmtree(state, ignore_errors=True)


def _workdir(base, data):
    """A working directory holding its own copy of the recording (so params.py paths match)."""
    base.mkdir()
    shutil.copytree(data, base / "data")
    return base


def _snakemake(workdir, *args, cores=None):
    """Run the workflow on the generated recording (``cores=None``: the profile says)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    config = (
        "dat=data/rec.bin",
        "probe=data/rec.probe.json",
        f"n_channels={N_CHANNELS}",
        f"sample_rate={SYNTH.sample_rate:g}",
        "device=cpu",
    )
    done = snakemake(workdir, *args, config=config, cores=cores, timeout=1200, env=env, check=False)
    assert done.returncode == 0, done.output[-5000:]
    return done.output


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory):
    base = tmp_path_factory.mktemp("slurm")
    generate(SYNTH, base / "data", name="rec", seed=4)
    local = _workdir(base / "local", base / "data")
    remote = _workdir(base / "slurm", base / "data")
    local_out = _snakemake(local, cores=2)
    slurm_out = _snakemake(remote, "--profile", str(PROFILE))
    return {"local": local, "slurm": remote, "local_out": local_out, "slurm_out": slurm_out}


def _submissions(out):
    """{rule: SLURM job id} from the submitter's log."""
    found = re.findall(r"submitted with SLURM jobid (\d+) \(log: (\S+)\)", out)
    return {
        re.search(r"/rule_(\w+)/", log).group(1): (int(jobid), Path(log)) for jobid, log in found
    }


def test_every_rule_ran_as_a_slurm_job(runs):
    jobs = _submissions(runs["slurm_out"])
    ran_locally = set(re.findall(r"\(Rule: (\w+)\)", runs["local_out"])) - {"all"}
    assert SORT_RULES <= ran_locally
    assert set(jobs) == ran_locally, runs["slurm_out"][-3000:]
    assert "localrule" not in runs["slurm_out"].replace("localrule all", "")
    # the controller still knows finished jobs (MinJobAge=300): state, partition, GPUs of each
    for rule, (jobid, log) in jobs.items():
        show = subprocess.run(
            ["scontrol", "show", "job", "-o", str(jobid)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        job = dict(kv.split("=", 1) for kv in show.split() if "=" in kv)
        assert job["JobState"] == "COMPLETED", (rule, job["JobState"])
        assert job["Partition"] == ("gpu" if rule in GPU_RULES else "cpu"), (rule, job)
        assert ("gpu:1" in job.get("TresPerJob", "")) == (rule in GPU_RULES), (rule, job)
        assert log.is_file() and f"rule {rule}:" in log.read_text(), log


def test_gpu_jobs_see_their_slurm_gpu(runs):
    log = (runs["slurm"] / "results/rec/logs/preprocess.log").read_text()
    assert "CUDA_VISIBLE_DEVICES=0" in log, log[:2000]


def test_phy_folder_is_identical_to_the_local_run(runs):
    import numpy as np

    a, b = runs["local"] / "results/rec/phy", runs["slurm"] / "results/rec/phy"
    names = sorted(p.name for p in a.iterdir() if not p.name.startswith("."))
    assert names == sorted(p.name for p in b.iterdir() if not p.name.startswith("."))
    assert {"params.py", "spike_times.npy", "spike_templates.npy"} <= set(names)
    for name in names:
        if name.endswith(".npy"):
            x = np.load(a / name, allow_pickle=False)
            y = np.load(b / name, allow_pickle=False)
            assert x.dtype == y.dtype and x.shape == y.shape, name
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
