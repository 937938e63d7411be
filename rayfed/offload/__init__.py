"""Edge/cloud offloading: a scheduler actor places a stream of real tasks on an
emulated fleet by predicted completion time (see docs/offloading.md).

Pure parts: ``profiles``, ``tasks``, ``cost``, ``policies``, ``bounds``, ``metrics``.
Ray at the edges: ``devices`` (device actors), ``scheduler`` (the scheduler actor),
``runner`` (one experiment), ``job`` (what ``jobs/offload.py`` runs).
"""
