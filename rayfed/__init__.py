"""rayfed: privacy-preserving federated learning and edge/cloud offloading on Ray."""

from rayfed.naming import register_resolver as _register_resolver

__version__ = "0.1.0"

# conf/config.yaml's default `name` interpolates ${rayfed.run_name:...}.
_register_resolver()
