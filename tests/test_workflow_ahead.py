"""Imports started beside the first stage: done on their own thread, a failure left for later."""

import sys

from kilosnake.workflow.ahead import import_ahead


def test_modules_are_imported_on_a_thread_of_their_own(tmp_path, monkeypatch):
    (tmp_path / "ahead_probe.py").write_text(
        "import threading\nBY = threading.current_thread().name\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "ahead_probe", raising=False)
    import_ahead("no_such_module_here", "ahead_probe").join(timeout=30)
    assert sys.modules["ahead_probe"].BY == "import-ahead"  # after a failed import, the next
    assert "no_such_module_here" not in sys.modules
