"""The QC report (rules ``input_report`` and ``report``, ``report.smk``).

``input_check`` (``input_check.png``, before the sort), ``build`` (``report.html``: its sections),
``figures`` (the pictures, matplotlib Agg), ``units`` (the unit table and panels), ``run_log``
(time and memory per stage from the logs), ``html`` (a small HTML toolkit).
"""
