"""The ``kilosnake`` command: Snakemake on the workflow, options passed through."""

import subprocess
import sys
from pathlib import Path

from kilosnake.cli import resolve_profiles, snakemake_args
from kilosnake.workflow.location import snakefile, workflow_root

ROOT = Path(__file__).resolve().parents[1]


def test_snakefile_is_added_and_options_kept():
    args = snakemake_args(["--cores", "2", "--config", "dat=a.bin", "probe=p.json"])
    assert args[:2] == ["--snakefile", str(snakefile())]
    assert args[2:] == ["--cores", "2", "--config", "dat=a.bin", "probe=p.json"]
    assert snakemake_args(["-s", "Other", "-n"]) == ["-s", "Other", "-n"]


def test_workflow_is_the_checkout_in_an_editable_install():
    assert workflow_root() == ROOT


def test_profiles_resolve_to_the_workflow_when_not_found_here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    slurm = str(workflow_root() / "profiles" / "slurm")
    assert resolve_profiles(["--profile", "profiles/slurm"]) == ["--profile", slurm]
    assert resolve_profiles(["--profile=slurm"]) == [f"--profile={slurm}"]
    (tmp_path / "profiles" / "slurm").mkdir(parents=True)  # the user's own wins
    assert resolve_profiles(["--profile", "profiles/slurm"]) == ["--profile", "profiles/slurm"]


def test_dry_run_in_an_empty_folder(tmp_path):
    cmd = [sys.executable, "-m", "kilosnake.cli", "--cores", "1", "--dry-run"]
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "demo_recording" in result.stdout + result.stderr


def test_build_step_ships_what_the_package_looks_for():
    import ast

    from kilosnake.workflow.location import WORKFLOW_FILES

    tree = ast.parse((ROOT / "setup.py").read_text())
    shipped = next(
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "WORKFLOW_FILES"
    )
    assert shipped == WORKFLOW_FILES
    assert all((ROOT / name).exists() for name in WORKFLOW_FILES)
