"""S3 client settings from the environment (no server needed)."""

from __future__ import annotations

import re

import pytest
from boto3.exceptions import RetriesExceededError, S3UploadFailedError
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from coe_runtime.errors import StoreError, TransientStoreError
from coe_runtime.store.s3 import S3Settings, S3Store, make_client, parse_s3_uri, transfer_config_from_env

MB = 1024 * 1024


def test_settings_from_environment():
    s = S3Settings.from_env(
        {
            "AWS_ENDPOINT_URL": "http://general:1",
            "AWS_ENDPOINT_URL_S3": "http://s3-specific:2",
            "AWS_REGION": "eu-west-1",
            "AWS_DEFAULT_REGION": "us-west-2",
            "AWS_MAX_ATTEMPTS": "4",
        }
    )
    assert (s.endpoint_url, s.region, s.max_attempts, s.retry_mode) == (
        "http://s3-specific:2",
        "eu-west-1",
        4,
        "adaptive",
    )
    assert S3Settings.from_env({}).region == "us-east-1"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"COE_S3_ADDRESSING_STYLE": "sideways"}, "expected path, virtual or auto"),
        ({"AWS_MAX_ATTEMPTS": "many"}, r"\$AWS_MAX_ATTEMPTS='many': expected a whole number"),
        ({"AWS_MAX_ATTEMPTS": "0"}, "expected a number >= 1"),
        ({"AWS_RETRY_MODE": "forever"}, "expected standard, adaptive or legacy"),
    ],
)
def test_bad_settings_name_the_variable(env, message):
    with pytest.raises(StoreError, match=message):
        S3Settings.from_env(env)


def test_custom_endpoint_defaults_to_path_style(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    custom = make_client(S3Settings(endpoint_url="http://127.0.0.1:9000"))
    assert custom.meta.config.s3["addressing_style"] == "path"
    assert custom.meta.config.retries == {"mode": "adaptive", "total_max_attempts": 8}
    aws = make_client(S3Settings(region="eu-central-1"))
    assert aws.meta.config.s3["addressing_style"] == "auto"
    forced = make_client(S3Settings(endpoint_url="http://minio:9000", addressing_style="virtual"))
    assert forced.meta.config.s3["addressing_style"] == "virtual"


def test_transfer_settings_and_uris():
    t = transfer_config_from_env({"COE_S3_MULTIPART_THRESHOLD_MB": "100", "COE_S3_MAX_CONCURRENCY": "3"})
    assert (t.multipart_threshold, t.max_concurrency) == (100 * MB, 3)
    assert parse_s3_uri("s3://bucket/a/b.json") == ("bucket", "a/b.json")
    assert parse_s3_uri("s3://bucket") == ("bucket", "")
    with pytest.raises(StoreError, match="not an s3://bucket/key URI"):
        parse_s3_uri("s3:///key-without-bucket")


def _client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject"
    )


def _wrapped_upload_failure(cause: Exception) -> Exception:
    # boto3's upload_file raises S3UploadFailedError inside its `except ClientError` block.
    try:
        raise cause
    except ClientError:
        try:
            raise S3UploadFailedError("Failed to upload x to b/k: ...")  # noqa: B904 - as boto3 does
        except S3UploadFailedError as wrapped:
            return wrapped


@pytest.mark.parametrize(
    ("exc", "kind", "message"),
    [
        (_client_error("SlowDown", 503), TransientStoreError, "keeps failing \\(SlowDown\\)"),
        (_client_error("InternalError", 500), TransientStoreError, "retry later"),
        (_client_error("Weird", 502), TransientStoreError, "keeps failing"),
        (
            _wrapped_upload_failure(_client_error("AccessDenied", 403)),
            StoreError,
            "AccessDenied.*AWS_PROFILE",
        ),
        (
            RetriesExceededError(ReadTimeoutError(endpoint_url="http://x")),
            TransientStoreError,
            "cannot reach",
        ),
        (EndpointConnectionError(endpoint_url="http://x"), TransientStoreError, "AWS_ENDPOINT_URL"),
        (_client_error("NoSuchBucket", 404), StoreError, "bucket 'bucket' does not exist"),
        (_client_error("PermanentRedirect", 301), StoreError, "set AWS_REGION"),
    ],
)
def test_errors_are_classified(monkeypatch, exc, kind, message):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    store = S3Store(settings=S3Settings(endpoint_url="http://127.0.0.1:9"))
    err = store._translate(exc, "s3://bucket/exp/step/file", "upload")
    assert type(err) is kind
    assert re.search(message, str(err)), str(err)
    assert str(err).startswith("s3://bucket/exp/step/file")
