"""Running rayfed on more than one machine: a local multi-node cluster for
trying cluster features on one host (:mod:`rayfed.cluster.local`)."""
