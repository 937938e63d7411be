"""Where rayfed meets a Ray cluster: the one module that calls ``ray.init``.

Three ways to get a Ray, in this order of precedence:

* ``address`` given (a job's ``runtime.address`` / ``ray_address``), else the
  ``RAY_ADDRESS`` environment variable (set by ``ray job submit`` and by
  ``python -m rayfed.cluster.local env``): join that cluster. Token
  authentication needs no code here: Ray reads ``RAY_AUTH_MODE`` and
  ``RAY_AUTH_TOKEN_PATH`` from the environment the cluster's ``env`` prints.
* ``address="auto"``: join the cluster that ``ray start`` recorded on this
  machine. Ray's own ``auto`` falls back to *any* ``gcs_server`` process it finds
  (another user's test session on a shared machine); rayfed does not.
* neither: start a private local Ray (``address="local"``) with ``num_cpus``.

A cluster that cannot be reached ends in one :class:`ClusterUnreachableError`
naming the config key and how to start a cluster, at once rather than after
Ray's minute or more of retries.

:func:`available_resources` is the one place that drops custom resources (``edge``,
``cloud``, a decryptor's node label) the cluster does not have, so that actors
fall back to plain CPUs instead of hanging unschedulable.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from rayfed.errors import ClusterUnreachableError
from rayfed.fl.config import RuntimeConfig

log = logging.getLogger(__name__)

START_HINT = ("start one with `ray start --head`, or with `python -m rayfed.cluster.local up` "
              "and submit the job to it (docs/cluster.md); or leave the key empty to run "
              "on a new local Ray")

@dataclass(frozen=True)
class RaySettings:
    """How a job gets its Ray. ``key`` is the config key ``address`` came from,
    named in errors."""

    address: str | None = None
    num_cpus: int | None = None
    include_dashboard: bool = False
    log_to_driver: bool = True
    key: str = "runtime.address"
    connect_timeout_s: float = 5.0

    @classmethod
    def of(cls, runtime: RuntimeConfig) -> RaySettings:
        """The federated job's Ray, from its ``runtime`` section."""
        return cls(address=runtime.address, num_cpus=runtime.num_cpus,
                   include_dashboard=runtime.include_dashboard, key="runtime.address")


def resolve_address(address: str | None, *, key: str = "runtime.address") -> str | None:
    """The cluster address to join, or ``None`` to start a local Ray.

    ``RAY_ADDRESS`` counts only when the config leaves the key empty; ``auto``
    means the cluster ``ray start`` recorded (Ray's ``ray_current_cluster`` file).
    """
    chosen = address or os.environ.get("RAY_ADDRESS") or None
    if chosen in (None, "local"):
        return None
    if chosen != "auto":
        return chosen
    from ray._private.utils import read_ray_address

    recorded = read_ray_address()
    if not recorded:
        raise ClusterUnreachableError(
            f"{key}=auto, but no Ray cluster was started on this machine; {START_HINT}")
    return recorded


def start(settings: RaySettings) -> None:
    """Join or start Ray as ``settings`` says; a no-op if Ray is already up."""
    import ray

    if ray.is_initialized():
        return
    from rayfed.tracking.console import quiet_library_notices

    with quiet_library_notices():
        _start(ray, settings)


def _start(ray: Any, settings: RaySettings) -> None:
    address = resolve_address(settings.address, key=settings.key)
    if address is None:
        # "local": without it ray.init joins whatever cluster /tmp/ray/ray_current_cluster
        # names (left by `ray start` or ray.cluster_utils), and then refuses num_cpus.
        with _dynamic_agent_port():
            ray.init(address="local", num_cpus=settings.num_cpus,
                     include_dashboard=settings.include_dashboard,
                     log_to_driver=settings.log_to_driver, configure_logging=False)
        return
    where = f"{settings.key}={settings.address or address!r}"
    if not reachable(address, timeout_s=settings.connect_timeout_s):
        raise ClusterUnreachableError(
            f"{where}: nothing answers at {address}; check the address, or {START_HINT}")
    _token_auth_if_token()
    try:
        ray.init(address=address, log_to_driver=settings.log_to_driver)
    except ConnectionError as exc:
        raise ClusterUnreachableError(
            f"{where}: cannot join the Ray cluster at {address} "
            f"({' '.join(str(exc).split())[:200]}); check the address, or {START_HINT}"
        ) from exc


@contextlib.contextmanager
def _dynamic_agent_port() -> Iterator[None]:
    """Let a new local Ray's dashboard agent listen on a free port, not 52365.

    Every Ray on a machine gives its dashboard agent the fixed port 52365 unless
    told otherwise, and ``ray.init`` has no argument for it. With any other Ray
    running (a ``ray start`` cluster, another job, Flower's simulation, a test
    session), the new agent fails to bind, retries with back-off for ~3.5 s and
    gives up, and ``ray.init`` waits for it: 6.4-7.6 s instead of 3.5-3.6 s
    (measured, issue #18). Ray's agent takes port 0 as "any free port"; this sets
    that default on the parameters ``ray.init`` builds (a private class: if a Ray
    release moves it, the local Ray starts as before).
    """
    from ray._private import parameter

    base = getattr(parameter, "RayParams", None)
    if not isinstance(base, type):
        yield
        return

    class DynamicAgentPort(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("dashboard_agent_listen_port", 0)
            super().__init__(*args, **kwargs)

    setattr(parameter, "RayParams", DynamicAgentPort)  # noqa: B010 (a module's class)
    try:
        yield
    finally:
        setattr(parameter, "RayParams", base)  # noqa: B010


def exit_now(code: int = 0) -> NoReturn:
    """End a finished job's process without the teardown its user would wait for.

    By then every output is written (summary, checkpoints, MLflow flushed and its
    run ended). What a normal interpreter exit adds is seconds of work nobody
    needs (measured in issue #18, 2 loaded cores: ~3-7 s): Ray's ``atexit``
    ``ray.shutdown`` waiting for its GCS, raylet and workers to stop, MLflow's
    ``atexit`` handlers, and finalising torch's and MLflow's module graphs. A local
    Ray started by :func:`start` is killed outright (:func:`kill_local_ray`); a
    joined cluster sees its driver disconnect, as after any exit. Log handlers (Hydra's
    ``<job>.log``) and stdio are flushed first.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    kill_local_ray()
    os._exit(code)


def kill_local_ray() -> int:
    """SIGKILL the processes of the local Ray this driver started; how many.

    Without this, ``os._exit`` leaves Ray's dashboard and runtime-env agents
    behind: the raylet dies with the driver, but its agents notice only after
    about a minute, holding their fixed ports and ~200 MB all the while, and the
    next run's ``ray.init`` then takes ~7 s instead of ~2.5 s (measured, issue
    #18, 2 cores). ``ray.shutdown`` stops them too, but gracefully (~1.4 s).
    A joined cluster's processes are not this driver's (Ray's ``Node`` started
    none of them) and are left alone.
    """
    worker = sys.modules.get("ray._private.worker")  # no Ray imported: none started
    node = getattr(worker, "_global_node", None)
    if node is None:
        return 0
    import signal

    import psutil

    procs: list[psutil.Process] = []
    for infos in list(node.all_processes.values()):
        for info in infos:
            try:
                top = psutil.Process(info.process.pid)
                procs.extend([top, *top.children(recursive=True)])
            except psutil.Error:
                continue
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGKILL)
    return len(procs)


def _token_auth_if_token() -> None:
    """Send the local token when joining, as ``ray start`` used it.

    Ray >= 2.52's ``ray start`` turns token authentication on by itself when
    ``RAY_AUTH_MODE`` is unset (token in ``~/.ray/auth_token``), but a driver that
    joins with the mode unset sends no token and is refused; a user who ran plain
    ``ray start --head`` (the fast path of docs/cluster.md) means to join it. Ray's
    own helper does what ``ray.init`` does for a new local Ray (and refreshes the
    settings Ray read when imported); an explicit ``RAY_AUTH_MODE`` is left alone.
    """
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # a Ray without token authentication
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def reachable(address: str, *, timeout_s: float) -> bool:
    """Whether something accepts a TCP connection at ``address`` (``[scheme://]host:port``).

    Ray retries an address where nothing listens for over a minute, and the C++
    settings that shorten that are read once when ``ray`` is imported; a plain
    connect answers in milliseconds. An address this cannot parse is left to Ray.
    """
    import socket

    host, _, port = address.split("://")[-1].rstrip("/").rpartition(":")
    if not host or not port.isdigit():
        return True
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return True
    except OSError:
        return False


def split_resources(requested: Mapping[str, float],
                    have: Mapping[str, float]) -> tuple[dict[str, float], list[str]]:
    """``requested`` minus what ``have`` cannot satisfy, and the names dropped."""
    keep = {k: float(v) for k, v in requested.items() if have.get(k, 0.0) >= v}
    return keep, sorted(set(requested) - set(keep))


def available_resources(requested: Mapping[str, float], *, what: str,
                        have: Mapping[str, float] | None = None) -> dict[str, float]:
    """The custom resources of ``requested`` that the cluster has enough of.

    ``what`` names who asked (``runtime.resources``, ``offload device edge-0``) in
    the one warning listing the dropped ones. ``have`` defaults to the running
    cluster's total resources.
    """
    if not requested:
        return {}
    if have is None:
        import ray

        have = ray.cluster_resources()
    keep, missing = split_resources(requested, have)
    if missing:
        log.warning("cluster has no %s resource(s) for %s; running on plain CPUs instead",
                    ", ".join(missing), what)
    return keep
