"""Appending a row to a section of benchmarks/RESULTS.md (shared by the benchmark scripts)."""

from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
TABLE_HEADER = "| date | machine | command | figure |\n| --- | --- | --- | --- |\n"


def append_row(section: str, row: str, results: Path = RESULTS) -> None:
    """Add ``row`` at the end of ``section`` (a ``## `` heading) of RESULTS.md, creating it."""
    text = results.read_text() if results.exists() else "# Benchmark results\n"
    lines = text.splitlines(keepends=True)
    if section not in text:
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        lines += ["\n", section + "\n", "\n", TABLE_HEADER, row]
    else:
        start = next(i for i, line in enumerate(lines) if line.strip() == section)
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
        )
        while end > start and not lines[end - 1].strip():
            end -= 1
        lines.insert(end, row)
    results.write_text("".join(lines))
