"""edge: a streaming runtime for recurrent, state-space and spiking models.

Importing this package is light on purpose (no torch, no exporter): the daemon imports it.
"""
__version__ = "0.1.0"
