"""Data tools: the built-in synthetic dataset, importers of real datasets, the HHA and flow encoders, and the
``xmodal-data`` command line. They write manifests and images (the contract in :mod:`shared`); neither service
imports them except the trainer's proposal generator, which computes flow for frames that have no flow image.
"""
