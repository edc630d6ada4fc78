"""Run one stage job in this interpreter: ``python scripts/run_stage.py JOB.json``.

The workflow runs its stages inside the Snakemake process; it uses this script only for a job
that must run in another Python (its conda environment with ``--use-conda``, or
``in_process=false``). The job file is what the rule hands to every stage
(:class:`kilosnake.workflow.stages.StageJob`).
"""

import sys

from kilosnake.workflow.stages import main

sys.exit(main())
