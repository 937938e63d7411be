"""Federated learning: participants, their placement on Ray, and the round loop.

``Orchestrator`` is imported lazily so that ``rayfed.fl.participant`` and the
pure round rules load without Ray.
"""
