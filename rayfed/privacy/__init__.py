"""Differential privacy: accounting, clipping, noise, releases and Opacus glue.

Pure of ``rayfed.fl``: the round loop calls in through a few small hooks.
"""
