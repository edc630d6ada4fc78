"""Workflow glue, used by the Snakefile and the rule files (no algorithms): the recordings table
and paths (``recordings``), the config check (``config_check``), shank naming and per-shank
dispatch (``shanks``), the run summary (``summary``). The top layer below :mod:`kilosnake.api`.
"""
