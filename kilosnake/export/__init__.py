"""Export (rule ``export_phy``, ``export.smk``): the Phy folder from the sort's stores.

``sources`` reads the stores and the kept spikes, ``tables`` builds the per-cluster tables and
file texts (``params.py`` with every value written by ``repr``), ``writer`` writes and publishes
the folder, ``validate`` checks it (shapes, ranges, phylib loading it), ``shanks`` joins the
shanks of a multi-shank recording into one folder.
"""
