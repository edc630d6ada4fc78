"""Shared fixtures: the array backends every numerical test runs on, and one sort of the demo
recording per test session."""

import pytest
from workflow_runs import fresh_run

from kilosnake.runtime.backend import _gpu_backend_or_reason, cpu_backend


def _backends():
    params = [pytest.param("cpu", id="numpy")]
    params.append(pytest.param("gpu", id="cupy", marks=pytest.mark.gpu))
    return params


@pytest.fixture(params=_backends())
def be(request):
    """A :class:`kilosnake.runtime.backend.Backend`: NumPy always, CuPy when a GPU is usable."""
    if request.param == "cpu":
        return cpu_backend()
    backend, reason = _gpu_backend_or_reason()
    if backend is None:
        pytest.skip(f"no GPU backend: {reason}")
    return backend


@pytest.fixture(scope="session")
def demo_sort(tmp_path_factory):
    """The workflow folder of one CPU sort of the demo recording: every output of ``rule all``
    (stores, Phy folder, scorecard, report), made once per session by the first test that asks.

    Shared: tests read it and dry-run the workflow in it; one that changes a file puts it back
    (or works on a copy).
    """
    return fresh_run(tmp_path_factory.mktemp("demo_sort"), "all")
