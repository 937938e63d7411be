"""rayfed.runtime: the custom-resource filter and cluster address resolution, no Ray."""

from __future__ import annotations

import logging

import pytest

from rayfed.errors import ClusterUnreachableError, RayfedError
from rayfed.runtime import available_resources, resolve_address, split_resources

CLUSTER = {"CPU": 8.0, "memory": 1e10, "edge": 2.0}


def test_resources_the_cluster_has_are_kept_and_the_rest_dropped():
    keep, missing = split_resources({"edge": 1.0, "cloud": 1.0, "gpu_node": 0.5}, CLUSTER)
    assert keep == {"edge": 1.0}
    assert missing == ["cloud", "gpu_node"]


def test_a_resource_the_cluster_has_too_little_of_is_dropped():
    keep, missing = split_resources({"edge": 3.0}, CLUSTER)
    assert (keep, missing) == ({}, ["edge"])


def test_available_resources_logs_what_was_dropped_once(caplog):
    with caplog.at_level(logging.WARNING, logger="rayfed.runtime"):
        keep = available_resources({"edge": 2.0, "cloud": 1.0, "decryptor": 1.0},
                                   what="runtime.resources", have=CLUSTER)
    assert keep == {"edge": 2.0}
    (record,) = caplog.records
    assert "cloud, decryptor" in record.getMessage()
    assert "runtime.resources" in record.getMessage()


def test_nothing_requested_needs_no_cluster_and_logs_nothing(caplog):
    with caplog.at_level(logging.WARNING, logger="rayfed.runtime"):
        assert available_resources({}, what="runtime.resources") == {}
    assert caplog.records == []


@pytest.fixture
def no_recorded_cluster(tmp_path, monkeypatch):
    """A Ray temp dir of our own, so a `ray start` elsewhere on the machine is not seen."""
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return tmp_path


def test_empty_or_local_address_starts_a_local_ray(no_recorded_cluster):
    assert resolve_address(None) is None
    assert resolve_address("local") is None


def test_ray_address_env_is_used_when_the_key_is_empty(no_recorded_cluster, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert resolve_address(None) == "10.0.0.1:6379"
    assert resolve_address("10.0.0.2:6379") == "10.0.0.2:6379"


def test_auto_without_a_cluster_names_the_key_and_how_to_start_one(no_recorded_cluster):
    with pytest.raises(ClusterUnreachableError) as info:
        resolve_address("auto", key="runtime.address")
    message = str(info.value)
    assert "runtime.address=auto" in message
    assert "python -m rayfed.cluster.local up" in message and "ray start --head" in message
    assert isinstance(info.value, RayfedError)


def test_auto_joins_the_cluster_ray_start_recorded(no_recorded_cluster):
    (no_recorded_cluster / "ray").mkdir()
    (no_recorded_cluster / "ray" / "ray_current_cluster").write_text("10.0.0.3:6379\n")
    assert resolve_address("auto") == "10.0.0.3:6379"


def test_reachable_tells_a_listening_port_from_a_closed_one():
    import socket

    from rayfed.runtime import reachable

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert reachable(f"127.0.0.1:{port}", timeout_s=2)
        assert reachable(f"ray://127.0.0.1:{port}", timeout_s=2)
    assert not reachable(f"127.0.0.1:{port}", timeout_s=2)
