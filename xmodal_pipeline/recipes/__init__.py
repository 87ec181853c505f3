"""The paper's two experiments on real data, one command each (``xmodal-recipe nyud2`` / ``xmodal-recipe jhmdb``).

Each recipe wires the importers, ImageNet teachers, the feature cache service, the students and the detectors end
to end as child processes (:mod:`xmodal_pipeline.procs`), in resumable, timed stages (:mod:`xmodal_pipeline.stages`),
and writes one report with the seeds, stage times and results. Shared stages: :mod:`.base`; the recipes:
:mod:`.nyud2` (Table 1), :mod:`.jhmdb` (Table 3); settings: :mod:`.settings`; the command: :mod:`.cli`.
"""
