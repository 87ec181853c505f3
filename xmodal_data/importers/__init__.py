"""Importers for real datasets: each writes images under an output folder plus a manifest.

* :mod:`xmodal_data.importers.nyud2`: the NYU Depth V2 labeled set with Gupta et al.'s splits and 19 classes.
* :mod:`xmodal_data.importers.video`: videos or frame folders as (t, t+step) pairs with flow images.
* :mod:`xmodal_data.importers.nyud2_raw`: NYUD2 raw video of the train/val scenes as the NYU toolbox syncs,
  registers and fills it (:mod:`~xmodal_data.importers.nyu_toolbox`, :mod:`~xmodal_data.importers.depth_fill`,
  :mod:`~xmodal_data.importers.nyud2_raw_files`, :mod:`~xmodal_data.importers.nyud2_scenes`), with HHA.
* :mod:`xmodal_data.importers.ucf101`: evenly spaced frame pairs of the videos of a UCF101 split list.
* :mod:`xmodal_data.importers.jhmdb`: one JHMDB split: person boxes from the puppet masks, flow images.

Every importer is resumable: an output file already under its final name is kept (writes are temp +
rename, so a present file is complete), and :func:`xmodal_data.importers.stamp.check_stamp` refuses to resume
into a folder made with settings that change the files' content. The real-data importers run their frames or
videos in processes (:mod:`xmodal_data.importers.parallel`) and write the manifest only when all succeeded.
"""
