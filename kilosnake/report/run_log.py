"""The report's run section: per-stage time and memory from the rule logs, and the problems they
logged.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from kilosnake.params import RULE_ORDER
from kilosnake.report.html import Section, html_table

#: warnings and errors quoted from the logs, at most
MAX_LOG_LINES = 60
#: stages in pipeline order (for the run table)
STAGE_ORDER = tuple(r for r in RULE_ORDER if r != "report")


_DONE_LINE = re.compile(
    r"done in ([\d.]+) s(?: \(CPU ([\d.]+) s\))?, peak host memory "
    r"(\d+) MB(?:, (?:peak )?GPU pool (\d+) MB)?"
)
#: the line :func:`kilosnake.runtime.backend.get_backend` logs (its logger is the module's)
_BACKEND_LINE = re.compile(r"kilosnake\.runtime\.backend: backend: (.*)$")


def stage_table(run_dir: Path) -> list[list]:
    """Per stage: wall and CPU time, peak host and GPU memory, backend (from the logs).

    The report's own log is left out: it is still being written.
    """
    logs = (
        {p.stem: p for p in (run_dir / "logs").glob("*.log") if p.stem != "report"}
        if run_dir
        else {}
    )
    names = [s for s in STAGE_ORDER if s in logs] + sorted(set(logs) - set(STAGE_ORDER))
    rows = []
    for name in names:
        text = logs[name].read_text(errors="replace")
        done = _DONE_LINE.findall(text)
        backend = [m.group(1) for m in map(_BACKEND_LINE.search, text.splitlines()) if m]
        wall, cpu, rss, gpu = done[-1] if done else ("", "", "", "")
        rows.append(
            [name, wall or "—", cpu or "—", rss or "—", gpu or "—", backend[-1] if backend else "—"]
        )
    return rows


def log_problems(run_dir: Path) -> list[str]:
    """The WARNING and ERROR lines of every stage's log, prefixed with the stage."""
    lines = []
    for p in sorted((run_dir / "logs").glob("*.log")) if run_dir else ():
        for line in p.read_text(errors="replace").splitlines():
            if " WARNING " in line or " ERROR " in line:
                lines.append(f"[{p.stem}] {line}")
    return lines


def run_section(run_dir: Path | None) -> Section:
    """How the stages ran: time, memory, backend, and what they warned about."""
    rows = stage_table(run_dir) if run_dir else []
    body = (
        html_table(
            [
                "stage",
                "wall (s)",
                "CPU (s)",
                "peak host memory (MB)",
                "peak GPU pool (MB)",
                "backend",
            ],
            rows,
        )
        if rows
        else '<p class="note">No stage logs found.</p>'
    )
    problems = log_problems(run_dir) if run_dir else []
    if problems:
        shown = problems[:MAX_LOG_LINES]
        more = len(problems) - len(shown)
        body += (
            "<h3>Warnings and errors in the logs</h3><pre>"
            + html.escape("\n".join(shown))
            + (f"\n... and {more} more (see logs/)" if more else "")
            + "</pre>"
        )
    else:
        body += '<p class="note">No warnings or errors in the logs.</p>'
    return Section("run", "Run", body)
