"""Importers for real datasets: each writes images under an output folder plus a manifest.

* :mod:`xmodal_data.importers.nyud2`: the NYU Depth V2 labeled set with Gupta et al.'s splits and 19 classes.
* :mod:`xmodal_data.importers.video`: videos or frame folders as (t, t+step) pairs with flow images.

Every importer is resumable: an output file already under its final name is kept (writes are temp +
rename, so a present file is complete), and :func:`xmodal_data.importers.stamp.check_stamp` refuses to resume
into a folder made with settings that change the files' content.
"""
