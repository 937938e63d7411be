"""rayfed: privacy-preserving federated learning and edge/cloud offloading on Ray."""

__version__ = "0.1.0"
