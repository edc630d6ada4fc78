"""The built wheel sorts: ``pip wheel .``, installed (not editable) into a fresh virtual
environment, runs the demo with the ``kilosnake`` command in an empty folder, and ``run()``.

The fresh environment takes its dependencies from the test environment (a ``.pth`` line naming
its site-packages, which does not bring the editable install along), so the test needs no
network; kilosnake itself comes from the wheel alone.
"""

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def check(cmd, **kwargs):
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    out = result.stdout + result.stderr
    assert result.returncode == 0, f"{cmd}:\n{out[-4000:]}"
    return out


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory):
    """``(python, bin folder)`` of a fresh venv with the wheel installed."""
    base = tmp_path_factory.mktemp("wheel")
    check([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(base), str(ROOT)])
    (wheel,) = base.glob("kilosnake-*.whl")
    env = base / "venv"
    check([sys.executable, "-m", "venv", "--without-pip", str(env)])
    python = env / "bin" / "python"
    site = check([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    (Path(site.strip()) / "_kilosnake_test_deps.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n"
    )
    check([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
           str(wheel)])  # fmt: skip
    return python, env / "bin"


def test_installed_package_is_the_wheel(wheel_env, tmp_path):
    python, _ = wheel_env
    out = check(
        [
            str(python),
            "-c",
            "import kilosnake, kilosnake.api as a; print(kilosnake.__file__); print(a.SNAKEFILE)",
        ],  # fmt: skip
        cwd=tmp_path,
    )
    package, snakefile = out.split()
    assert str(ROOT) not in package
    assert snakefile.endswith("kilosnake/_workflow/Snakefile") and Path(snakefile).is_file()


def test_kilosnake_command_sorts_the_demo(wheel_env, tmp_path):
    python, bin_dir = wheel_env
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path)}
    out = check(
        [str(bin_dir / "kilosnake"), "--cores", "2", "--config", "device=cpu"],
        cwd=tmp_path,
        env=env,
        timeout=1800,
    )
    results = tmp_path / "results" / "demo"
    assert (results / "phy" / "params.py").is_file(), out[-3000:]
    assert (results / "report.html").is_file()
    assert (results / "scorecard.txt").is_file()
    # run() drives the same packaged workflow
    code = (
        "from kilosnake import run; "
        "r = run('resources/demo/demo.bin', probe='resources/demo/demo.probe.json', "
        "output_dir='api', n_channels=32, stop_after='check_input', cores=1); "
        "print(r.results_dir)"
    )
    check([str(python), "-c", code], cwd=tmp_path, env=env, timeout=600)
    assert (tmp_path / "api" / "results" / "demo" / "input.json").is_file()
    # the packaged profile is found by its checkout-relative name (a dry run needs no SLURM)
    check(
        [
            str(bin_dir / "kilosnake"),
            "--profile",
            "profiles/slurm",
            "--dry-run",
            "--config",
            "device=cpu",
        ],  # fmt: skip
        cwd=tmp_path,
        env=env,
    )
