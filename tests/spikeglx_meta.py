"""SpikeGLX ``.meta`` files for tests, written after SpikeGLX's metadata documentation.

Small recordings: a few dozen AP channels saved (``snsSaveChanSubset``) plus the sync channel,
with the full 384-entry imro table that SpikeGLX always writes, and optionally the
``~snsGeomMap`` (one entry per saved neural channel) of SpikeGLX 2023 and later.
"""

from __future__ import annotations

from pathlib import Path


def _subset(channels, sync_id):
    return ",".join(str(c) for c in channels) + f",{sync_id}"


def _common(n_saved, n_ap, sample_rate, n_samples):
    return [
        "appVersion=20231207",
        "fileName=D:/SGL_DATA/run_g0/run_g0_imec0/run_g0_t0.imec0.ap.bin",
        "typeThis=imec",
        f"imSampRate={sample_rate:g}",
        f"nSavedChans={n_saved}",
        f"snsApLfSy={n_ap},0,1",
        f"fileSizeBytes={n_samples * n_saved * 2}",
        f"fileTimeSecs={n_samples / sample_rate:.6f}",
        "firstSample=0",
    ]


def np1_meta(
    channels=range(32), bank=0, gain=500, geom_map=False, sample_rate=30000.0, n_samples=0
) -> str:
    """An NP1.0 (NP1000) AP-band .meta saving ``channels`` and the sync channel (768)."""
    channels = list(channels)
    imro = "(0,384)" + "".join(f"({c} {bank} 0 {gain} 250 1)" for c in range(384))
    lines = _common(len(channels) + 1, len(channels), sample_rate, n_samples) + [
        "acqApLfSy=384,384,1",
        f"snsSaveChanSubset={_subset(channels, 768)}",
        "imAiRangeMax=0.6",
        "imAiRangeMin=-0.6",
        "imMaxInt=512",
        "imDatPrb_type=0",
        "imDatPrb_pn=NP1000",
        f"~imroTbl={imro}",
        "~snsChanMap=(384,0,1)"
        + "".join(f"(AP{c};{c}:{i})" for i, c in enumerate(channels))
        + f"(SY0;768:{len(channels)})",
        "~snsShankMap=(1,2,480)"
        + "".join(f"(0:{(bank * 384 + c) % 2}:{(bank * 384 + c) // 2}:1)" for c in channels),
    ]
    if geom_map:
        entries = []
        for c in channels:
            row, col = divmod(bank * 384 + c, 2)
            x = (11 if row % 2 else 27) + 32 * col
            entries.append(f"(0:{x}:{20 * row}:1)")
        lines.append("~snsGeomMap=(NP1000,1,0,70)" + "".join(entries))
    return "\n".join(lines) + "\n"


def np2_meta(
    channels=range(32),
    electrodes=None,
    shanks=None,
    geom_map=False,
    sample_rate=30000.0,
    n_samples=0,
) -> str:
    """An NP2.0 AP-band .meta: single-shank (NP2000, imro type 21) when ``shanks`` is None,
    else four-shank (NP2010, type 24) with ``shanks[c]`` the shank of channel ``c``.

    ``electrodes[c]`` is the electrode (per shank) channel ``c`` records from (default: ``c``).
    """
    channels = list(channels)
    electrodes = list(electrodes) if electrodes is not None else list(range(384))
    four = shanks is not None
    if four:
        shanks = list(shanks)
        imro = "(24,384)" + "".join(f"({c} {shanks[c]} 0 0 {electrodes[c]})" for c in range(384))
        pn, kind, n_shanks = "NP2010", 24, 4
    else:
        imro = "(21,384)" + "".join(f"({c} 1 0 {electrodes[c]})" for c in range(384))
        pn, kind, n_shanks = "NP2000", 21, 1
    lines = _common(len(channels) + 1, len(channels), sample_rate, n_samples) + [
        "acqApLfSy=384,0,1",
        f"snsSaveChanSubset={_subset(channels, 384)}",
        "imAiRangeMax=0.5",
        "imAiRangeMin=-0.5",
        "imMaxInt=8192",
        f"imDatPrb_type={kind}",
        f"imDatPrb_pn={pn}",
        f"~imroTbl={imro}",
        "~snsChanMap=(384,0,1)"
        + "".join(f"(AP{c};{c}:{i})" for i, c in enumerate(channels))
        + f"(SY0;384:{len(channels)})",
    ]
    if geom_map:
        entries = []
        for c in channels:
            row, col = divmod(electrodes[c], 2)
            entries.append(f"({shanks[c] if four else 0}:{27 + 32 * col}:{15 * row}:1)")
        lines.append(f"~snsGeomMap=({pn},{n_shanks},250,70)" + "".join(entries))
    return "\n".join(lines) + "\n"


def four_shank_layout(per_shank=8):
    """Channels 0..4*per_shank-1 spread over the four shanks, ``per_shank`` each, with the
    electrodes (rows 0.. of both columns) and shanks a four-shank imro table gives them."""
    electrodes, shanks = [], []
    for c in range(384):
        shank, k = divmod(c, per_shank) if c < 4 * per_shank else (c % 4, c)
        shanks.append(shank)
        electrodes.append(k if c < 4 * per_shank else 640 + c)
    return electrodes, shanks


def write_meta(bin_path, text: str) -> Path:
    """Write ``text`` as the .meta beside ``bin_path``."""
    path = Path(bin_path).with_suffix(".meta")
    path.write_text(text)
    return path
