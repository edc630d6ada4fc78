"""Helpers the Snakefile uses to turn the config into recordings and paths (no algorithms)."""

from __future__ import annotations

from pathlib import Path

DEMO_FOLDER = "resources/demo"


def demo_paths(preset: str) -> dict:
    """Where the generated demo recording of ``preset`` and its ground truth live."""
    base = Path(DEMO_FOLDER) / preset
    return {"dat": f"{base}.bin", "probe": f"{base}.probe.json", "gt": f"{base}_gt.npz",
            "meta": f"{base}.meta.json"}


def recording_name(dat: str) -> str:
    """Name of a recording's results folder: the raw file name without its extension(s)."""
    name = Path(dat).name
    for suffix in (".bin", ".dat", ".raw"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name.replace(" ", "_") or "recording"


def recording_sources(config: dict) -> dict:
    """``{recording name: {dat, probe, n_channels, dtype, sample_rate, uv_per_bit, gt}}``.

    With no ``dat`` in the config the generated demo recording (``demo_preset``) is sorted, and
    its ground truth is known (``gt``).
    """
    dat = config.get("dat")
    if not dat:
        from .synth import preset_config

        preset = config.get("demo_preset", "demo")
        paths, synth = demo_paths(preset), preset_config(preset)
        return {preset: {"dat": paths["dat"], "probe": paths["probe"],
                         "n_channels": synth.n_channels + int(synth.sync_channel),
                         "dtype": "int16", "sample_rate": synth.sample_rate,
                         "uv_per_bit": synth.uv_per_bit, "gt": paths["gt"], "demo": preset}}
    return {recording_name(dat): {
        "dat": str(dat), "probe": config.get("probe"), "n_channels": config.get("n_channels"),
        "dtype": config.get("dtype", "int16"), "sample_rate": config.get("sample_rate"),
        "uv_per_bit": config.get("uv_per_bit"), "gt": None, "demo": None}}
