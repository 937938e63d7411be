"""A job's local Ray: it starts without waiting on a port another Ray holds, and a
finished job leaves none of its processes behind (issue #18).

``exit_now`` ends a job with ``os._exit`` to spare the user Ray's graceful
shutdown. Before :func:`rayfed.runtime.kill_local_ray`, that left the local Ray's
dashboard and runtime-env agents running for about a minute after the job (~200 MB,
their fixed ports held), and the next run's ``ray.init`` took ~7 s instead of
~2.5 s. This runs a real local Ray in a child process, as a job does.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import psutil

CHILD = r"""
import json, sys
import psutil, ray
from rayfed.runtime import RaySettings, exit_now, start
start(RaySettings(num_cpus=1, log_to_driver=False))
@ray.remote
def ping():
    return 1
assert ray.get(ping.remote()) == 1
node = ray._private.worker._global_node
pids = set()
for infos in node.all_processes.values():
    for info in infos:
        top = psutil.Process(info.process.pid)
        pids |= {top.pid, *(c.pid for c in top.children(recursive=True))}
names = {p: psutil.Process(p).name() for p in pids}
print(json.dumps(names), flush=True)
exit_now(0)
"""


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_exit_now_leaves_no_local_ray_process_behind():
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    started = {int(k): v for k, v in json.loads(out.strip().splitlines()[-1]).items()}
    # The local Ray is the GCS, the raylet and the raylet's agents and workers.
    assert len(started) >= 4, started
    assert any("agent" in name.lower() for name in started.values()), started
    deadline = time.monotonic() + 3.0
    while (left := [p for p in started if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert left == [], {p: started[p] for p in left}


AGENT_PORT_CHILD = r"""
import json, time
import ray
from rayfed.runtime import RaySettings, exit_now, start
t0 = time.perf_counter()
start(RaySettings(num_cpus=1, log_to_driver=False))
seconds = time.perf_counter() - t0
port = ray._private.worker._global_node.dashboard_agent_listen_port
print(json.dumps({"port": port, "seconds": seconds}), flush=True)
exit_now(0)
"""


def test_a_local_ray_starts_beside_another_ray_without_waiting_for_its_agent_port():
    """Ray gives every dashboard agent port 52365; beside another Ray (here: a
    socket holding it) a new agent retried for ~3.5 s, gave up (port -1), and
    ``ray.init`` waited for it."""
    import socket

    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        holder.bind(("0.0.0.0", 52365))
        holder.listen()
    except OSError:
        pass  # another Ray on this machine already holds it: the same situation
    try:
        out = subprocess.run([sys.executable, "-c", AGENT_PORT_CHILD], capture_output=True,
                             text=True, timeout=120, check=True).stdout
    finally:
        holder.close()
    got = json.loads(out.strip().splitlines()[-1])
    assert got["port"] > 0 and got["port"] != 52365, got
