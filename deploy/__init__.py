"""The deploy side of edgekit: fabric over SSH to push, run, watch and benchmark the device daemon."""

__version__ = "0.1.0"
