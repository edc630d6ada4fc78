"""kilosnake: spike sorting for high-density probes as a resumable Snakemake workflow."""

__version__ = "0.1.0"
