"""The ``kilosnake`` command: Snakemake on kilosnake's workflow, in the current folder.

``kilosnake ARGS`` is ``snakemake --snakefile <workflow>/Snakefile ARGS``: every Snakemake option
passes through unchanged (``--cores``, ``--config``, ``--dry-run``, ``--profile``, targets...),
and results land in the current folder (or ``--directory``) as with ``snakemake`` in a checkout.
The workflow is the source checkout's in an editable install, else the copy the wheel ships
(:mod:`kilosnake.workflow.location`).

``--profile`` is resolved as Snakemake does (a path, or a name in the current folder or the user's
Snakemake config folders); a profile found nowhere there is looked up among the workflow's own
(``--profile profiles/slurm`` or ``--profile slurm`` find the shipped SLURM profile).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from kilosnake.workflow.location import snakefile, workflow_root

_SNAKEFILE_FLAGS = ("-s", "--snakefile", "--snakefile=")
_PROFILE_FLAGS = ("--profile", "--workflow-profile")


def _user_profile_exists(name: str) -> bool:
    """Whether Snakemake would find ``name`` in the current folder or the config folders."""
    if os.path.exists(name):
        return True
    try:
        from snakemake.common import get_appdirs

        dirs = get_appdirs()
        folders = [dirs.user_config_dir, dirs.site_config_dir]
    except Exception:  # an older or newer Snakemake without it: the current folder only
        folders = []
    return any((Path(d) / name).exists() for d in folders)


def packaged_profile(name: str) -> str | None:
    """The workflow's own profile called ``name`` (``profiles/slurm`` or ``slurm``), or None."""
    root = workflow_root()
    for candidate in (root / name, root / "profiles" / name):
        if candidate.is_dir() and not Path(name).is_absolute():
            return str(candidate)
    return None


def resolve_profiles(args: list[str]) -> list[str]:
    """``args`` with profiles missing from the user's folders pointed at the workflow's own."""
    out = list(args)
    for i, arg in enumerate(out):
        flag, eq, value = arg.partition("=")
        if flag not in _PROFILE_FLAGS:
            continue
        if eq:
            if not _user_profile_exists(value) and packaged_profile(value):
                out[i] = f"{flag}={packaged_profile(value)}"
        elif i + 1 < len(out):
            value = out[i + 1]
            if not _user_profile_exists(value) and packaged_profile(value):
                out[i + 1] = packaged_profile(value)
    return out


def snakemake_args(argv: list[str]) -> list[str]:
    """The Snakemake command line of ``kilosnake argv``."""
    args = resolve_profiles(argv)
    if not any(a in _SNAKEFILE_FLAGS[:2] or a.startswith(_SNAKEFILE_FLAGS[2]) for a in args):
        args = ["--snakefile", str(snakefile()), *args]
    return args


def main(argv=None) -> int:
    """Run Snakemake on the kilosnake workflow; return its exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not snakefile().is_file():
        print(
            f"kilosnake: the workflow {snakefile()} is missing; reinstall kilosnake "
            "(pip install kilosnake-*.whl, or pip install -e . in a checkout)",
            file=sys.stderr,
        )
        return 1
    from snakemake.cli import main as snakemake_main

    try:
        snakemake_main(snakemake_args(argv))
    except SystemExit as exc:  # Snakemake exits with its status
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
