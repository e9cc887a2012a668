"""mammosynth: synthesise realistic, automatically labelled breast lesions in mammograms.

Data flows one way: ``data`` (readers, phantom, store) -> ``train`` + ``models`` ->
``synth`` (sampling, insertion, COCO export) -> ``evaluate`` / ``study``.
"""

__version__ = "0.1.0"
