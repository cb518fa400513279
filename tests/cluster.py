"""A Ray cluster on loopback for tests: nodes started with `ray start --block`.

Each node is one `ray start --block` process with its raylet and workers under it;
`stop_node` kills all of them, which is how the tests stop one node of a two-node cluster.
Token authentication is on (RAY_AUTH_MODE=token) for every node and for the `hpo`
processes the tests start.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

from hpo.ray_session import SINGLE_HOST_ENV

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TOKEN = secrets.token_hex(32)  # the loopback clusters' token, as Ray's own are: 64 hex digits


# Ports for the nodes' servers: above Ray's worker ports (10002-19999 by default) and below
# the kernel's ephemeral range, from which every outgoing connection and bind(0) draws. A
# port bind(0) found free was taken again moments later under load (CI saw a node's
# dashboard agent fail with "Address already in use").
NODE_PORTS = range(20000, 32768)
_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port that is free now, outside the ephemeral range, not handed out before."""
    while True:
        port = random.choice(NODE_PORTS)
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port


def cluster_env(multi_node: bool, **extra: str) -> dict[str, str]:
    """Environment of every node and client: token auth, this venv first on PATH (the
    job's `python`), the repository importable (tests.faults).

    One node keeps everything on 127.0.0.1 (Ray's multi-node support off). Ray cannot add
    a second node that way: with it on, Ray rewrites the 127.0.0.1 it is given to this
    host's outward address (services.resolve_ip_for_localhost), so a two-node cluster's
    traffic stays on this host but not on the loopback interface.

    The token is the tests' own (RAY_AUTH_TOKEN): `ray start` does not create one, and a
    fresh machine has no ~/.ray/auth_token until some local Ray has written it."""
    return {
        **os.environ,
        SINGLE_HOST_ENV: "1" if multi_node else "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": TOKEN,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(REPO),
        "RAY_USAGE_STATS_ENABLED": "0",
        **extra,
    }


class LocalCluster:
    def __init__(self, log_dir: Path, env: dict[str, str]):
        self.log_dir, self.env = log_dir, env
        self.nodes: list[subprocess.Popen] = []
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.dashboard_port = free_port()

    def _node_ports(self) -> list[str]:
        """Every per-node port explicit and free: two nodes share one host here."""
        return [
            f"--node-manager-port={free_port()}",
            f"--object-manager-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            f"--metrics-export-port={free_port()}",
        ]

    def _start(
        self, arguments: list[str], name: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "w")  # noqa: SIM115 - closed by the process
        command = [str(BIN / "ray"), "start", "--block", "--node-ip-address=127.0.0.1"]
        process = subprocess.Popen(
            [*command, *arguments, *self._node_ports()],
            env={**self.env, **(env or {})},  # the node's workers inherit it
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.nodes.append(process)
        return process

    def start_head(self, num_cpus: int = 1, dashboard: bool = False) -> None:
        arguments = [
            "--head",
            f"--port={self.port}",
            f"--num-cpus={num_cpus}",
            "--num-gpus=0",
            f"--ray-client-server-port={free_port()}",
            "--disable-usage-stats",
        ]
        if dashboard:
            arguments += [
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.dashboard_port}",
            ]
        else:
            arguments += ["--include-dashboard=false"]
        self._start(arguments, "head")
        self.wait_for_nodes(1)

    def add_node(self, num_cpus: int = 1, env: dict[str, str] | None = None) -> subprocess.Popen:
        process = self._start(
            [f"--address={self.address}", f"--num-cpus={num_cpus}", "--num-gpus=0"],
            f"node-{len(self.nodes)}",
            env,
        )
        self.wait_for_nodes(len(self.nodes))
        return process

    def alive_nodes(self) -> int:
        probe = (
            f"import ray; ray.init(address='{self.address}', logging_level='ERROR'); "
            "print(sum(1 for n in ray.nodes() if n['Alive']))"
        )
        done = subprocess.run(
            [sys.executable, "-c", probe], env=self.env, capture_output=True, text=True
        )
        lines = done.stdout.strip().splitlines()
        return int(lines[-1]) if done.returncode == 0 and lines else 0

    def wait_for_nodes(self, count: int, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while self.alive_nodes() < count:
            for process in self.nodes:
                assert process.poll() is None, (self.log_dir / "head.log").read_text()[-3000:]
            assert time.monotonic() < deadline, f"cluster never had {count} nodes alive"
            time.sleep(1)

    def stop_node(self, process: subprocess.Popen) -> None:
        """Stop one node as a machine failure would: SIGKILL its `ray start` process and
        every process under it at once (its raylet would take the workers down only
        seconds later, while they went on training)."""
        node = [psutil.Process(process.pid), *psutil.Process(process.pid).children(True)]
        os.killpg(process.pid, signal.SIGKILL)
        for member in node:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.kill()
        process.wait(timeout=60)
        psutil.wait_procs(node, timeout=60)

    def shutdown(self) -> None:
        for process in reversed(self.nodes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.nodes:
            try:
                process.wait(timeout=3)
            except subprocess.TimeoutExpired:  # `ray start --block` may ignore SIGTERM
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
