"""A multi-node Ray cluster on one machine: a head and worker raylets on this host.

``python -m rayfed.cluster.local up`` starts a head (plain CPUs) and worker
raylets advertising the custom resources that ``cluster.yaml`` gives real
machines (``{"edge": 1}`` on edge nodes, ``{"cloud": 1}`` on cloud nodes), so
that placement, ``ray job submit`` and the dashboard can be tried without a
cloud account. The dashboard and job API listen on 127.0.0.1 only (Ray itself
advertises the host's address for its nodes). ``down`` stops exactly the
processes of that cluster: they are found by the cluster's own temp dir in their
command line, never by name, so other Ray sessions on the machine are left alone.

Every port is picked free at start-up. Token authentication (Ray >= 2.52) is on,
with a token generated into the cluster's state dir; ``env`` prints the three
variables a client needs (``RAY_ADDRESS``, ``RAY_AUTH_MODE``,
``RAY_AUTH_TOKEN_PATH``).
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

STATE_FILE = "cluster.json"
# Ray's own minimum for a node's object store; the workloads here are small.
OBJECT_STORE_BYTES = 80 * 1024 * 1024


@dataclass(frozen=True)
class NodeSpec:
    name: str
    num_cpus: int
    resources: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ClusterState:
    """What ``up`` leaves in ``<state_dir>/cluster.json`` for ``env`` and ``down``."""

    state_dir: str
    temp_dir: str
    gcs_address: str
    dashboard_url: str
    token_path: str
    nodes: list[NodeSpec]

    def client_env(self) -> dict[str, str]:
        """Environment a driver or ``ray job submit`` needs to reach this cluster."""
        return {"RAY_ADDRESS": self.dashboard_url, "RAY_AUTH_MODE": "token",
                "RAY_AUTH_TOKEN_PATH": self.token_path}


def plan(*, edge_nodes: int, cloud_nodes: int, cpus_per_node: int,
         head_cpus: int, site_nodes: int = 0) -> list[NodeSpec]:
    """The head first, then ``edge-i``, ``cloud-j`` and ``site-k`` workers; site *k*
    advertises ``site_k`` (``runtime.participant_resources``)."""
    nodes = [NodeSpec("head", head_cpus)]
    nodes += [NodeSpec(f"edge-{i}", cpus_per_node, {"edge": 1.0}) for i in range(edge_nodes)]
    nodes += [NodeSpec(f"cloud-{j}", cpus_per_node, {"cloud": 1.0}) for j in range(cloud_nodes)]
    nodes += [NodeSpec(f"site-{k}", cpus_per_node, {f"site_{k}": 1.0})
              for k in range(site_nodes)]
    return nodes


def start_command(node: NodeSpec, *, temp_dir: str, ports: Mapping[str, int],
                  gcs_address: str | None) -> list[str]:
    """``ray start`` for one node; ``gcs_address`` None starts the head."""
    cmd = ["ray", "start", f"--num-cpus={node.num_cpus}",
           "--num-gpus=0", f"--resources={json.dumps(node.resources)}",
           f"--temp-dir={temp_dir}", f"--object-store-memory={OBJECT_STORE_BYTES}",
           f"--dashboard-agent-listen-port={ports['agent']}", "--disable-usage-stats"]
    if gcs_address is None:
        cmd += ["--head", f"--port={ports['gcs']}", "--include-dashboard=true",
                "--dashboard-host=127.0.0.1", f"--dashboard-port={ports['dashboard']}",
                f"--ray-client-server-port={ports['client']}"]
    else:
        cmd += [f"--address={gcs_address}"]
    return cmd


def free_port() -> int:
    # Bound then released: another process could take it before Ray does, but
    # only within milliseconds; a fixed port would collide every time.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(cmd: list[str], env: Mapping[str, str]) -> None:
    proc = subprocess.run(cmd, env=dict(env), capture_output=True, text=True, timeout=180)
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd[:3])} ...` failed ({proc.returncode}):\n"
                           f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")


def _server_env(token_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_path))
    return env


def state_api(state: ClusterState, path: str) -> dict:
    """GET ``path`` from the head's dashboard (jobs, state API) with the cluster's
    token: a plain HTTP call, because this process's own Ray client may be set up
    for another cluster or another auth mode."""
    token = Path(state.token_path).read_text().strip()
    req = urllib.request.Request(f"{state.dashboard_url}{path}",
                                 headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)


def list_state(state: ClusterState, kind: str) -> list[dict]:
    """Ray's state API listing of ``kind`` ("nodes", "actors", ...), dead ones included."""
    return state_api(state, f"/api/v0/{kind}?limit=10000&detail=1")["data"]["result"]["result"]


def alive_nodes(state: ClusterState) -> list[dict]:
    return [n for n in list_state(state, "nodes") if n["state"] == "ALIVE"]


def wait_for_nodes(state: ClusterState, timeout_s: float = 60.0) -> None:
    """Block until every node is alive (workers register asynchronously)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            alive = len(alive_nodes(state))
        except OSError:  # the dashboard is still starting
            alive = 0
        if alive >= len(state.nodes):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {alive} of {len(state.nodes)} nodes came up within "
                               f"{timeout_s:.0f} s; see {state.temp_dir}/session_latest/logs")
        time.sleep(0.2)  # polling an external process, not synchronising our own threads


def up(state_dir: Path, *, edge_nodes: int = 2, cloud_nodes: int = 1, cpus_per_node: int = 1,
       head_cpus: int = 1, site_nodes: int = 0) -> ClusterState:
    """Start the cluster and record it in ``state_dir``; returns once all nodes are alive."""
    state_dir.mkdir(parents=True, exist_ok=True)
    if (state_dir / STATE_FILE).exists():
        raise RuntimeError(f"{state_dir / STATE_FILE} exists: a cluster is already up there; "
                           f"run `python -m rayfed.cluster.local down --dir {state_dir}` first")
    # Unix socket paths are limited to 107 bytes, so the temp dir is short.
    temp_dir = tempfile.mkdtemp(prefix="rf-", dir="/tmp")
    token_path = state_dir / "auth_token"
    token_path.write_text(secrets.token_hex(32))
    token_path.chmod(0o600)
    env = _server_env(token_path)
    nodes = plan(edge_nodes=edge_nodes, cloud_nodes=cloud_nodes, cpus_per_node=cpus_per_node,
                 head_cpus=head_cpus, site_nodes=site_nodes)
    head_ports = {"gcs": free_port(), "dashboard": free_port(), "client": free_port(),
                  "agent": free_port()}
    gcs_address = f"127.0.0.1:{head_ports['gcs']}"
    state = ClusterState(state_dir=str(state_dir), temp_dir=temp_dir, gcs_address=gcs_address,
                         dashboard_url=f"http://127.0.0.1:{head_ports['dashboard']}",
                         token_path=str(token_path), nodes=nodes)
    # Written first, so that `down` can clean up after a start that failed half-way.
    (state_dir / STATE_FILE).write_text(json.dumps(asdict(state), indent=2) + "\n")
    try:
        _run(start_command(nodes[0], temp_dir=temp_dir, ports=head_ports, gcs_address=None), env)
        for node in nodes[1:]:
            # A temp dir per node: raylets sharing one would unpack every job's
            # working_dir into the same folder, replacing it under a running driver.
            _run(start_command(node, temp_dir=f"{temp_dir}/{node.name}",
                               ports={"agent": free_port()}, gcs_address=gcs_address), env)
        wait_for_nodes(state)
    except BaseException:
        down(state_dir)
        raise
    return state


def load(state_dir: Path) -> ClusterState:
    path = state_dir / STATE_FILE
    if not path.exists():
        raise FileNotFoundError(f"no local cluster recorded in {state_dir}; start one with "
                                f"`python -m rayfed.cluster.local up --dir {state_dir}`")
    data = json.loads(path.read_text())
    data["nodes"] = [NodeSpec(**n) for n in data["nodes"]]
    return ClusterState(**data)


def cluster_pids(temp_dir: str) -> list[int]:
    """Processes of the cluster rooted at ``temp_dir`` (each names it in its arguments)."""
    import psutil

    pids = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if any(temp_dir in arg for arg in cmdline):
            pids.append(int(proc.info["pid"]))
    return pids


def down(state_dir: Path, *, timeout_s: float = 5.0) -> int:
    """Stop this cluster's processes (SIGTERM, then SIGKILL after ``timeout_s``: some
    of Ray's helper processes outlive SIGTERM); returns how many there were."""
    import psutil

    state = load(state_dir)
    procs = [psutil.Process(p) for p in cluster_pids(state.temp_dir) if p != os.getpid()]
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=timeout_s)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive, timeout=timeout_s)
    shutil.rmtree(state.temp_dir, ignore_errors=True)
    (state_dir / STATE_FILE).unlink()
    return len(procs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rayfed.cluster.local",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("up", "down", "env"))
    # Outside the repo, so that `ray job submit --working-dir .` never uploads the token.
    default_dir = Path(tempfile.gettempdir()) / f"rayfed-cluster-{getpass.getuser()}"
    parser.add_argument("--dir", type=Path, default=default_dir,
                        help="state dir: cluster.json and the auth token (default: %(default)s)")
    parser.add_argument("--edge", type=int, default=2, help="edge worker nodes")
    parser.add_argument("--cloud", type=int, default=1, help="cloud worker nodes")
    parser.add_argument("--sites", type=int, default=0,
                        help="site worker nodes, site-k advertising {site_k: 1}")
    parser.add_argument("--cpus", type=int, default=1, help="CPUs each worker node advertises")
    parser.add_argument("--head-cpus", type=int, default=1, help="CPUs of the head node")
    args = parser.parse_args(argv)
    if args.command == "up":
        state = up(args.dir.resolve(), edge_nodes=args.edge, cloud_nodes=args.cloud,
                   cpus_per_node=args.cpus, head_cpus=args.head_cpus, site_nodes=args.sites)
        print(f"local cluster up: {len(state.nodes)} nodes, dashboard {state.dashboard_url}")
        print("use it from a shell with: "
              f"eval $(python -m rayfed.cluster.local env --dir {args.dir})")
    elif args.command == "env":
        for k, v in load(args.dir.resolve()).client_env().items():
            print(f"export {k}={v}")
    else:
        print(f"stopped {down(args.dir.resolve())} processes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
