"""Build step: the workflow (Snakefile, rules, schemas, scripts, config, envs, profiles) is copied
into the package as ``kilosnake/_workflow/`` so that an installed wheel can sort; the source tree
keeps these files at its top, where ``snakemake`` finds them in a checkout. Everything else is in
pyproject.toml."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
#: kept in step with kilosnake.workflow.location.WORKFLOW_FILES
WORKFLOW_FILES = ("Snakefile", "workflow", "scripts", "config", "envs", "profiles")
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".snakemake", "*.tmp")


class BuildPyWithWorkflow(build_py):
    """build_py, plus the workflow copied into ``<build>/kilosnake/_workflow``."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install runs the checkout's own workflow
        target = Path(self.build_lib) / "kilosnake" / "_workflow"
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        for name in WORKFLOW_FILES:
            source = ROOT / name
            if source.is_dir():
                shutil.copytree(source, target / name, ignore=IGNORED)
            elif source.is_file():
                shutil.copy2(source, target / name)
            else:
                raise FileNotFoundError(f"workflow file {source} is missing from the source tree")


setup(cmdclass={"build_py": BuildPyWithWorkflow})
