"""Fixtures for the artifact-store tests: one real SeaweedFS server per session, a fresh prefix per test."""

from __future__ import annotations

import uuid

import pytest
from boto3.s3.transfer import TransferConfig

from tests.support.seaweed import seaweed_server  # noqa: F401 - re-exported fixture

BUCKET = "coe-store-tests"
MB = 1024 * 1024


def s3_environment(server, monkeypatch, tmp_path, **overrides) -> dict[str, str]:
    """Point boto3 at ``server`` only: no profile, config file or instance metadata can leak in."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_RETRY_MODE"):
        monkeypatch.delenv(name, raising=False)
    env = {
        **server.env(),
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_MAX_ATTEMPTS": "3",
        "COE_S3_CONNECT_TIMEOUT_S": "2",
        "COE_CACHE_DIR": str(tmp_path / "cache"),
        **overrides,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture(scope="session")
def s3_bucket(seaweed_server) -> str:  # noqa: F811 - the fixture imported above
    return seaweed_server.make_bucket(BUCKET)


@pytest.fixture
def s3_env(seaweed_server, s3_bucket, monkeypatch, tmp_path) -> dict[str, str]:  # noqa: F811
    return s3_environment(seaweed_server, monkeypatch, tmp_path)


@pytest.fixture
def s3_root(s3_bucket) -> str:
    """A prefix no other test uses."""
    return f"{s3_bucket}/t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def small_parts() -> TransferConfig:
    # S3's smallest part is 5 MiB: a 12 MiB file goes up in three parts.
    return TransferConfig(multipart_threshold=5 * MB, multipart_chunksize=5 * MB, max_concurrency=3)


@pytest.fixture
def s3_store(s3_env, small_parts):
    from coe_runtime.store.s3 import S3Store

    return S3Store(transfer_config=small_parts)


def count_calls(store, operation: str) -> list[int]:
    """A list that grows by one for every ``operation`` (e.g. "GetObject") the store's client sends."""
    calls: list[int] = []
    store.client.meta.events.register(f"before-call.s3.{operation}", lambda **_: calls.append(1))
    return calls
