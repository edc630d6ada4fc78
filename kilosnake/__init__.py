"""kilosnake: spike sorting for high-density probes as a resumable Snakemake workflow.

``from kilosnake import add_default_handler, run, Bunch, np1_probe`` gives pykilosort's Python
API (:mod:`kilosnake.api`, with ``neuropixel_probe_from_metafile``), imported on first use so
that ``import kilosnake`` stays light.
"""

from kilosnake.version import __version__ as __version__

_API_NAMES = (
    "Bunch",
    "add_default_handler",
    "neuropixel_probe_from_metafile",
    "np1_probe",
    "run",
    "RunResult",
    "RunError",
)


def __getattr__(name):
    if name in _API_NAMES:
        from kilosnake import api

        return getattr(api, name)
    raise AttributeError(f"module 'kilosnake' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_API_NAMES))
