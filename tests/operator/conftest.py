"""Fixtures of the operator tests: the kmock API emulator, and the emulated cluster around it.

``emulated_cluster`` is what every end-to-end module's ``cluster`` fixture starts from: the namespace's
S3 Secret (empty: the tests' stores are ``file://``), a kubeconfig, and a maker of the controller process
(``coe-ctl operator``, not started). At teardown it kills the controller and prints what each harness's
pods printed and the controller's log (pytest shows it when a test fails).
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from tests.operator.harness import NS, ControllerProcess
from tests.support.kmock_api import KubeAPI
from tests.support.kubelet import Kubelet


@pytest.fixture()
def api():
    server = KubeAPI().start()
    yield server
    server.stop()


@pytest.fixture()
def emulated_cluster(api, tmp_path):
    from kubernetes import client

    core = client.CoreV1Api(api.api_client())
    core.create_namespaced_secret(
        NS, {"metadata": {"name": "coe-s3", "namespace": NS}, "stringData": {}, "data": {}}
    )
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig", NS)
    log = tmp_path / "controller.log"
    made: list[tuple[ControllerProcess, list[Kubelet]]] = []

    def make(harnesses: Iterable[Kubelet], env: dict | None = None) -> ControllerProcess:
        controller = ControllerProcess(kubeconfig, NS, env=env, log=log)
        made.append((controller, list(harnesses)))
        return controller

    yield make
    for controller, harnesses in made:
        controller.kill()
        for h in harnesses:  # shown when a test fails: what each step's pod printed
            for job, text in h.logs.items():
                print(f"--- pod log of {job} ---\n{text[-2000:]}")
    print(log.read_text()[-5000:] if log.exists() else "")
