"""Numerical tests on both backends, compared: :func:`backends_agree`.

In the manner of CuPy's ``numpy_cupy_allclose``: a test written against a backend ``be`` (its
first parameter) runs as two cases,

* ``[numpy]``: the body on NumPy, with its own assertions (always runs);
* ``[cupy]``: the body on NumPy and on CuPy, both with their own assertions, and then the
  arrays the two returned compared: integer and boolean arrays exactly, floating ones within
  ``rtol``/``atol``. Skipped, saying why, where no GPU is usable (marked ``gpu``).

The body returns what is to be compared: an array, or a tuple, list or dict of them (host or
device arrays, scalars); returning nothing only runs the assertions on both. ``rtol`` and
``atol`` are numbers, or dicts that give a dict result's entries their own (0 for the others).
"""

import functools
import inspect

import numpy as np
import pytest

from kilosnake.runtime.backend import _gpu_backend_or_reason, cpu_backend

_CASES = [
    pytest.param("numpy", id="numpy"),
    pytest.param("cupy", id="cupy", marks=pytest.mark.gpu),
]


def gpu_backend_or_skip(needed_for: str = "the CuPy half"):
    """The CuPy backend, or a skip of the calling test that says what needs it and why there is
    none."""
    backend, reason = _gpu_backend_or_reason()
    if backend is None:
        pytest.skip(f"{needed_for} needs a GPU backend: {reason}")
    return backend


def to_host(value):
    """A NumPy array of a NumPy or CuPy array (or scalar)."""
    if type(value).__module__.startswith("cupy"):
        return value.get()
    return np.asarray(value)


def assert_agree(expected, got, rtol, atol, where: str = "result") -> None:
    """``got`` (CuPy's result) equals ``expected`` (NumPy's): same structure, shapes and dtypes;
    exact for integers and booleans, within ``rtol``/``atol`` for floating values."""
    if isinstance(expected, dict):
        assert isinstance(got, dict) and set(got) == set(expected), where
        for key in expected:
            r = rtol.get(key, 0.0) if isinstance(rtol, dict) else rtol
            a = atol.get(key, 0.0) if isinstance(atol, dict) else atol
            assert_agree(expected[key], got[key], r, a, f"{where}[{key!r}]")
        return
    if isinstance(expected, (tuple, list)):
        assert isinstance(got, (tuple, list)) and len(got) == len(expected), where
        for i, (e, g) in enumerate(zip(expected, got)):
            assert_agree(e, g, rtol, atol, f"{where}[{i}]")
        return
    e, g = to_host(expected), to_host(got)
    assert e.shape == g.shape, f"{where}: shape {g.shape} on CuPy, {e.shape} on NumPy"
    assert e.dtype == g.dtype, f"{where}: dtype {g.dtype} on CuPy, {e.dtype} on NumPy"
    if e.dtype.kind in "biuUS":
        np.testing.assert_array_equal(g, e, err_msg=f"{where} (CuPy vs NumPy)")
    else:
        np.testing.assert_allclose(g, e, rtol=rtol, atol=atol, err_msg=f"{where} (CuPy vs NumPy)")


def backends_agree(rtol=1e-6, atol=0.0):
    """Decorator: run the test on NumPy, and on CuPy compared with NumPy (module docstring).

    The decorated test takes the backend as its first parameter, ``be``; its other parameters
    (fixtures, parametrize arguments) are passed on.
    """

    def decorate(test):
        signature = inspect.signature(test)
        names = list(signature.parameters)
        assert names and names[0] == "be", "the test's first parameter must be be"
        rest = [signature.parameters[n] for n in names[1:]]

        @functools.wraps(test)
        def run_cases(backend_case, *args, **kwargs):
            gpu = gpu_backend_or_skip() if backend_case == "cupy" else None
            on_numpy = test(cpu_backend(), *args, **kwargs)
            if gpu is not None:
                assert_agree(on_numpy, test(gpu, *args, **kwargs), rtol, atol)

        first = inspect.Parameter("backend_case", inspect.Parameter.POSITIONAL_OR_KEYWORD)
        run_cases.__signature__ = signature.replace(parameters=[first, *rest])
        return pytest.mark.parametrize("backend_case", _CASES)(run_cases)

    return decorate
