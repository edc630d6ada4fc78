"""Shared fixtures: the array backends every numerical test runs on."""

import pytest

from kilosnake.runtime.backend import _gpu_backend_or_reason, cpu_backend


def _backends():
    params = [pytest.param("cpu", id="numpy")]
    params.append(pytest.param("gpu", id="cupy", marks=pytest.mark.gpu))
    return params


@pytest.fixture(params=_backends())
def be(request):
    """A :class:`kilosnake.backend.Backend`: NumPy always, CuPy when a GPU is usable."""
    if request.param == "cpu":
        return cpu_backend()
    backend, reason = _gpu_backend_or_reason()
    if backend is None:
        pytest.skip(f"no GPU backend: {reason}")
    return backend
