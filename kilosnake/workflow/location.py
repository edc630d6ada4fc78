"""Where the workflow's files are: a source checkout's, or the copy inside the installed package.

A checkout runs with plain ``snakemake`` in its top folder (``Snakefile``, ``workflow/``,
``scripts/``, ``config/``, ``envs/``, ``profiles/``). A built wheel carries the same files, laid
out the same way, in ``kilosnake/_workflow/`` (copied there by ``setup.py`` at build time), so
every relative path inside the workflow (rules to scripts, schemas, envs) holds in both.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[1]
#: the files and folders that make up the workflow (what a wheel ships in ``_workflow/``)
WORKFLOW_FILES = ("Snakefile", "workflow", "scripts", "config", "envs", "profiles")


def checkout_root() -> Path | None:
    """The source checkout the package was imported from (editable install), or None."""
    root = _PACKAGE.parent
    if (root / "Snakefile").is_file() and (root / "workflow" / "rules").is_dir():
        return root
    return None


def packaged_root() -> Path:
    """The workflow shipped inside the package (present in an installed wheel)."""
    return _PACKAGE / "_workflow"


def workflow_root() -> Path:
    """The folder holding the ``Snakefile``: the checkout's when there is one, else the
    package's own copy."""
    return checkout_root() or packaged_root()


def snakefile() -> Path:
    """The workflow's entry point."""
    return workflow_root() / "Snakefile"


def schema_path(name: str) -> Path:
    """A JSON schema of the workflow (``workflow/schemas/<name>``)."""
    return workflow_root() / "workflow" / "schemas" / name


def default_profile() -> dict:
    """The workflow's default profile (``profiles/default/config.yaml``): what Snakemake's
    command line reads on every run, and :func:`kilosnake.api.run` applies too."""
    import yaml

    path = workflow_root() / "profiles" / "default" / "config.yaml"
    return yaml.safe_load(path.read_text()) or {} if path.is_file() else {}
