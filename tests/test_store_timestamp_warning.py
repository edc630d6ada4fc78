"""Snakemake's timestamp file inside a store: no Zarr warning, whichever thread lists it."""

import threading
import warnings

import zarr

from kilosnake.io.store import open_store
from kilosnake.runtime.logs import describe_input


def _store_with_timestamp(path):
    g = zarr.open_group(str(path), mode="w", zarr_format=3)
    g.create_array("x", shape=(3,), dtype="int16")
    g.attrs["complete"] = True
    (path / ".snakemake_timestamp").write_text("")
    return path


def test_listing_a_store_with_snakemakes_timestamp_warns_of_nothing_else(tmp_path):
    store = _store_with_timestamp(tmp_path / "a.zarr")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        group = open_store(store)  # adds the filter in front of "always"
        assert [name for name, _ in group.arrays()] == ["x"]
        warnings.warn("another warning", UserWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["another warning"]


def test_stages_side_by_side_list_stores_without_the_warning(tmp_path):
    stores = [_store_with_timestamp(tmp_path / f"s{k}.zarr") for k in range(4)]
    described = []

    def list_many(path):
        described.extend(describe_input(path) for _ in range(50))

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an escaping warning makes a description fail
        threads = [threading.Thread(target=list_many, args=(p,)) for p in stores]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(described) == 200
    assert all(d.endswith(": x (3,) int16, 1 arrays") for d in described), set(described)
