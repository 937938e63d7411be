"""Without `edge`/`cloud` nodes (a laptop), participants asking for them run on
plain CPUs, and the job says so in one log line instead of hanging unschedulable."""

from __future__ import annotations

import logging

from rayfed.config import RuntimeConfig
from rayfed.fl.placement import ParticipantActors, _resource_options
from rayfed.plan import resolve
from tests.conftest import small_config


def test_missing_custom_resource_falls_back_to_cpus_with_one_log_line(ray_session, tmp_path,
                                                                      caplog):
    cfg = small_config(tmp_path, fl={"num_clients": 2, "clients_per_round": 2,
                                     "min_clients": 1},
                       runtime=RuntimeConfig(placement="dedicated", actor_num_cpus=0.5,
                                             resources={"edge": 1.0}))
    with caplog.at_level(logging.WARNING, logger="rayfed.runtime"):
        placement = ParticipantActors(resolve(cfg))
        try:
            placement.wait_ready(timeout_s=120)  # scheduled, not pending on `edge`
            assert len(placement.actors) == 2
        finally:
            placement.shutdown()
    lines = [r.getMessage() for r in caplog.records if r.name == "rayfed.runtime"]
    assert lines == ["cluster has no edge resource(s) for runtime.resources; running on plain "
                     "CPUs instead"]


def test_no_requested_resources_means_no_options_and_no_log(ray_session, caplog):
    with caplog.at_level(logging.WARNING, logger="rayfed.runtime"):
        assert _resource_options(RuntimeConfig()) == {}
        assert _resource_options(RuntimeConfig(resources={"edge": 1.0})) == {}
    assert len(caplog.records) == 1 and "no edge resource" in caplog.records[0].getMessage()
