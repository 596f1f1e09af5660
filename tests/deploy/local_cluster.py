"""Run rendered Deployments as local processes: a kubelet and cluster DNS small enough to read.

What a pod is here, and the only things rewritten on the way from the manifests to the processes:

* **One process per container and replica**, started from the container's own `command`, `args` and `env`; init
  containers first, each to exit 0. A Deployment of `replicas: N` is N pods, `<name>-0` .. `<name>-<N-1>`
  (one pod keeps the Deployment's name). `python` is this virtual environment's interpreter, and the
  image's `PYTHONPATH=/app` is the repository (the image copies services/ there).
* **Addresses and ports**: `--host 0.0.0.0` becomes `127.0.0.1`; every containerPort gets a free local
  port, and `--port N` / `*_PORT=N` naming a port of the same container are rewritten to it.
* **Paths (volumes)**: every volume becomes a local directory (emptyDir: empty; configMap: its files),
  and a value that starts with a mountPath (args, env, and the mounted models.yaml) starts with that
  directory instead.
* **Cluster DNS**: an engine `endpoint` in the mounted models.yaml, `dns:///<svc>.<ns>.svc.cluster.local:<p>`,
  becomes the local address of the pod that Service selects, through the Service's port -> targetPort
  -> the container port of that name; exactly as the Service would route it, so a wrong selector, port
  or name fails here. With several replicas it becomes `ipv4:<pod 0>,<pod 1>,...`: the addresses a headless
  Service's DNS name resolves to.
* **Probes**: readiness is checked with the rendered probe (gRPC health on its port, HTTP GET on its path and
  named port, or a TCP connect), on the local port.
* **The shared caption cache**: the chart's Redis URL in models.yaml (`redis://<svc>.<ns>.svc.cluster.local:<p>`)
  becomes its pod's local address, as the engine endpoints do; its container runs the local `redis-server`.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import yaml

from tests.support.metrics import Scrape, scrape as scrape_url
from tests.support.processes import REPO_ROOT, ServiceProcess, free_port, grpc_serving, start_process, wait_until

from .chart import Rendered, main_container

_DNS = re.compile(r"dns:///([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.cluster\.local:(\d+)")
_REDIS = re.compile(r"redis://([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.cluster\.local:(\d+)(/\d+)?")


@dataclass
class LocalPod:
    """One replica of a Deployment: its volumes as directories, its ports, its main process."""

    deployment: dict
    root: Path
    replica: int = 0
    volumes: dict[str, Path] = field(default_factory=dict)
    ports: dict[int, int] = field(default_factory=dict)  # containerPort -> local port
    process: ServiceProcess | None = None

    @property
    def proc(self) -> subprocess.Popen | None:
        return self.process.proc if self.process else None

    @property
    def name(self) -> str:
        """The Deployment's name, with `-<replica>` when it has several."""
        name = self.deployment["metadata"]["name"]
        return f"{name}-{self.replica}" if self.deployment["spec"].get("replicas", 1) > 1 else name

    @property
    def container(self) -> dict:
        return main_container(self.deployment)

    @property
    def spec(self) -> dict:
        return self.deployment["spec"]["template"]["spec"]

    def log_text(self) -> str:
        return self.process.log_text() if self.process else ""

    def local_port(self, port: int | str) -> int:
        """A probe's or Service's port (number or container port name) on this machine."""
        if isinstance(port, str):
            port = next(p["containerPort"] for p in self.container["ports"] if p["name"] == port)
        return self.ports[port]

    def local_path(self, container: dict, value: str) -> str:
        """`value` with the container's mountPath prefixes replaced by the volumes' directories."""
        for mount in sorted(container.get("volumeMounts", []), key=lambda m: -len(m["mountPath"])):
            path = mount["mountPath"].rstrip("/")
            if value == path or value.startswith(path + "/"):
                return str(self.volumes[mount["name"]]) + value[len(path) :]
        return value


class LocalCluster:
    """The rendered Deployments of one release, one local pod each."""

    def __init__(self, rendered: Rendered, tmp: Path, namespace: str) -> None:
        self.rendered = rendered
        self.namespace = namespace
        pods = [
            LocalPod(d, tmp, replica)
            for d in rendered.of_kind("Deployment")
            for replica in range(d["spec"].get("replicas", 1))
        ]
        self.pods = {pod.name: pod for pod in pods}
        for pod in self.pods.values():
            pod.root = tmp / pod.name
            for container in [pod.container, *pod.spec.get("initContainers", [])]:
                for port in container.get("ports", []):
                    pod.ports[port["containerPort"]] = free_port()
        for pod in self.pods.values():
            self._make_volumes(pod)

    # --- cluster DNS and Services -------------------------------------------------------------------
    def pods_behind(self, service_name: str) -> list[LocalPod]:
        """Every replica of the one Deployment a Service selects."""
        service = self.rendered.get("Service", service_name)
        (deployment,) = self.rendered.deployments_selected_by(service)
        return [pod for pod in self.pods.values() if pod.deployment is deployment]

    def pod_behind(self, service_name: str) -> LocalPod:
        """The first replica behind a Service."""
        return self.pods_behind(service_name)[0]

    def service_addresses(self, service_name: str, port: int | str) -> list[str]:
        """host:port of a Service port (by number or name) on each pod it selects."""
        service = self.rendered.get("Service", service_name)
        (spec,) = [p for p in service["spec"]["ports"] if port in (p["port"], p["name"])]
        return [f"127.0.0.1:{pod.local_port(spec['targetPort'])}" for pod in self.pods_behind(service_name)]

    def service_address(self, service_name: str, port: int | str) -> str:
        """host:port of a Service port on its first pod."""
        return self.service_addresses(service_name, port)[0]

    def resolve(self, target: str) -> str:
        match = _DNS.fullmatch(target)
        assert match, f"not an in-cluster engine address: {target}"
        service, namespace, port = match[1], match[2], int(match[3])
        assert namespace == self.namespace, f"{target}: not this release's namespace"
        addresses = self.service_addresses(service, port)
        return addresses[0] if len(addresses) == 1 else "ipv4:" + ",".join(addresses)

    # --- volumes ---------------------------------------------------------------------------------------
    def _make_volumes(self, pod: LocalPod) -> None:
        volumes = pod.spec.get("volumes", [])
        for volume in volumes:
            pod.volumes[volume["name"]] = pod.root / "volumes" / volume["name"]
            pod.volumes[volume["name"]].mkdir(parents=True)
        for volume in volumes:
            if "configMap" in volume:
                (configmap,) = [
                    c
                    for c in self.rendered.of_kind("ConfigMap")
                    if c["metadata"]["name"] == volume["configMap"]["name"]
                ]
                for filename, text in configmap["data"].items():
                    (pod.volumes[volume["name"]] / filename).write_text(self._localize_config(pod, filename, text))
            else:
                assert set(volume) == {"name", "emptyDir"}, f"{pod.name}: volume kind not emulated: {volume}"

    def _localize_config(self, pod: LocalPod, filename: str, text: str) -> str:
        if filename != "models.yaml":
            return text
        config = yaml.safe_load(text)
        for model in config["models"]:
            model["endpoint"] = self.resolve(model["endpoint"])
            if "local_path" in model:
                model["local_path"] = pod.local_path(pod.container, model["local_path"])
            shared = model.get("capabilities", {}).get("vision_proxy", {}).get("shared_cache")
            if shared:  # the chart's Redis Service, as its pod serves it here
                match = _REDIS.fullmatch(shared["url"])
                assert match and match[2] == self.namespace, f"not this release's Redis: {shared['url']}"
                shared["url"] = f"redis://{self.service_address(match[1], int(match[3]))}{match[4] or ''}"
        return yaml.safe_dump(config, sort_keys=False)

    # --- processes ---------------------------------------------------------------------------------------
    def _argv_env(self, pod: LocalPod, container: dict) -> tuple[list[str], dict[str, str]]:
        ports = {str(p["containerPort"]) for p in container.get("ports", [])}
        command = [sys.executable if part == "python" else part for part in container["command"]]
        args = list(container.get("args", []))
        for i, arg in enumerate(args):
            previous = args[i - 1] if i else ""
            if previous == "--host" and arg == "0.0.0.0":
                args[i] = "127.0.0.1"
            elif previous == "--port" and arg in ports:
                args[i] = str(pod.ports[int(arg)])
            else:
                args[i] = pod.local_path(container, arg)
        env = {"PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT)}
        for var in container.get("env", []):
            assert "value" in var, f"{pod.name}: {var['name']} is not a plain value (secrets are not emulated)"
            value = var["value"]
            if var["name"].endswith("_PORT") and value in ports:
                value = str(pod.ports[int(value)])
            env[var["name"]] = pod.local_path(container, value)
        return [*command, *args], env

    def run_init_containers(self, timeout: float = 180) -> None:
        for pod in self.pods.values():
            for container in pod.spec.get("initContainers", []):
                argv, env = self._argv_env(pod, container)
                result = subprocess.run(argv, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)
                assert result.returncode == 0, f"{pod.name} init {container['name']}: {result.stdout}{result.stderr}"

    def start(self) -> None:
        for pod in self.pods.values():
            argv, env = self._argv_env(pod, pod.container)
            pod.process = start_process(
                pod.name, argv, 0, pod.root / "container.log", env, inherit_env=False, new_session=True
            )

    def wait_ready(self, timeout: float = 180) -> None:
        """Every pod passes its rendered readiness probe (after its startup probe) within `timeout`."""
        deadline = time.monotonic() + timeout
        for pod in self.pods.values():
            for probe in ("startupProbe", "readinessProbe"):
                if probe not in pod.container:
                    continue
                wait_until(
                    lambda: self.probe(pod, pod.container[probe]),
                    max(0.0, deadline - time.monotonic()),
                    f"{pod.name}: {probe} passing",
                    interval=0.2,
                    watch=[pod.process],
                )

    def probe(self, pod: LocalPod, probe: dict) -> bool:
        if "grpc" in probe:
            with grpc.insecure_channel(f"127.0.0.1:{pod.local_port(probe['grpc']['port'])}") as channel:
                return grpc_serving(channel, probe["grpc"].get("service", ""), probe["timeoutSeconds"])
        if "tcpSocket" in probe:
            try:
                socket.create_connection(
                    ("127.0.0.1", pod.local_port(probe["tcpSocket"]["port"])), timeout=probe["timeoutSeconds"]
                ).close()
            except OSError:
                return False
            return True
        get = probe["httpGet"]
        try:
            response = httpx.get(
                f"http://127.0.0.1:{pod.local_port(get['port'])}{get['path']}", timeout=probe["timeoutSeconds"]
            )
        except httpx.HTTPError:
            return False
        return 200 <= response.status_code < 400

    def stop(self) -> dict[str, int | None]:
        """SIGTERM every pod (as Kubernetes does) and wait its terminationGracePeriodSeconds; exit codes."""
        for pod in self.pods.values():
            if pod.proc is not None and pod.proc.poll() is None:
                pod.proc.send_signal(signal.SIGTERM)
        codes = {}
        for pod in self.pods.values():
            if pod.proc is None:
                continue
            try:
                codes[pod.name] = pod.proc.wait(pod.spec.get("terminationGracePeriodSeconds", 30))  # k8s default: 30
            except subprocess.TimeoutExpired:
                os.killpg(pod.proc.pid, signal.SIGKILL)
                pod.proc.wait(10)
                codes[pod.name] = None
        return codes


def scrape(address: str) -> Scrape:
    """GET http://address/metrics (tests/support/metrics.py)."""
    return scrape_url(f"http://{address}/metrics")


def sample(samples: Scrape, name: str, **labels: str) -> float:
    """The sum of `name`'s samples that carry `labels`."""
    return samples.value(name, **labels)
