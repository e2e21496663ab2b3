"""The on-device side of edgekit: runs on a Raspberry Pi with numpy and a TFLite runtime only.

Nothing in this package imports TensorFlow, fabric, picamera2 (except lazily in
``pi_camera``), or anything from ``host``/``deploy``; ``tests/device/test_isolation.py``
enforces it.
"""

__version__ = "0.1.0"
