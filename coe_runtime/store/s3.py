"""``s3://bucket/prefix`` back-end of the artifact store (AWS S3, MinIO, SeaweedFS, Ceph, ...).

Configuration comes only from the standard AWS environment and config files, never from a
step config or a manifest (in the cluster a Kubernetes Secret is mounted with ``envFrom``):

    AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, or AWS_PROFILE (+ ~/.aws files)
    AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL    custom endpoint (MinIO, SeaweedFS, Ceph ...)
    AWS_REGION or AWS_DEFAULT_REGION           default us-east-1
    COE_S3_ADDRESSING_STYLE                    path | virtual | auto (default: path for a custom endpoint)
    AWS_RETRY_MODE / AWS_MAX_ATTEMPTS          default adaptive / 8 (backoff on throttling, 5xx, resets)
    COE_S3_MULTIPART_THRESHOLD_MB / COE_S3_MULTIPART_CHUNK_MB / COE_S3_MAX_CONCURRENCY
                                               transfer manager settings (default 16 / 16 / 8)

Large files go through boto3's transfer manager (multipart, concurrent parts); every error is
turned into a ``StoreError`` that says what to fix, or a ``TransientStoreError`` (exit code
128-255: the pod is retried) when the endpoint is unreachable or keeps failing with 5xx/throttling.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    CredentialRetrievalError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
)

from coe_runtime.errors import StoreError, TransientStoreError
from coe_runtime.store.base import S3_CREDENTIAL_KEYS, S3_SETTING_KEYS, Store

MB = 1024 * 1024
# Largest number of keys S3 returns in one ListObjectsV2 page (also the DeleteObjects batch limit).
S3_PAGE_MAX = 1000

CREDENTIALS_HINT = (
    "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (plus AWS_SESSION_TOKEN for temporary "
    "credentials) or AWS_PROFILE; in the cluster they come from the Secret named by the "
    "experiment's spec.resources.s3CredentialsSecret"
)
ENDPOINT_HINT = "check AWS_ENDPOINT_URL (or AWS_ENDPOINT_URL_S3) and that the server is up"

_CREDENTIAL_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "InvalidToken",
    "ExpiredToken",
    "TokenRefreshRequired",
    "InvalidClientTokenId",
    "403",
}
_TRANSIENT_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestThrottled",
    "RequestTimeout",
    "ServiceUnavailable",
    "InternalError",
    "OperationAborted",
}
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/key`` -> ``("bucket", "some/key")`` (key may be empty)."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise StoreError(f"{uri}: not an s3://bucket/key URI")
    return parsed.netloc, parsed.path.lstrip("/")


def _int_env(environ: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = environ.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise StoreError(f"${name}={raw!r}: expected a whole number") from None
    if value < minimum:
        raise StoreError(f"${name}={raw!r}: expected a number >= {minimum}")
    return value


@dataclass(frozen=True)
class S3Settings:
    """Everything needed to build a client, read from the environment (no secrets kept here)."""

    endpoint_url: str | None = None
    region: str = "us-east-1"
    addressing_style: str | None = None  # None: path for a custom endpoint, auto for AWS
    profile: str | None = None
    retry_mode: str = "adaptive"
    max_attempts: int = 8
    connect_timeout: float = 10.0
    read_timeout: float = 60.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> S3Settings:
        env = os.environ if environ is None else environ
        style = env.get("COE_S3_ADDRESSING_STYLE") or None
        if style is not None and style not in ("path", "virtual", "auto"):
            raise StoreError(f"$COE_S3_ADDRESSING_STYLE={style!r}: expected path, virtual or auto")
        retry_mode = env.get("AWS_RETRY_MODE") or "adaptive"
        if retry_mode not in ("legacy", "standard", "adaptive"):
            raise StoreError(f"$AWS_RETRY_MODE={retry_mode!r}: expected standard, adaptive or legacy")
        return cls(
            endpoint_url=env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None,
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
            addressing_style=style,
            profile=env.get("AWS_PROFILE") or None,
            retry_mode=retry_mode,
            max_attempts=_int_env(env, "AWS_MAX_ATTEMPTS", 8),
            connect_timeout=float(_int_env(env, "COE_S3_CONNECT_TIMEOUT_S", 10)),
            read_timeout=float(_int_env(env, "COE_S3_READ_TIMEOUT_S", 60)),
        )

    def botocore_config(self, addressing_style: str) -> Config:
        return Config(
            region_name=self.region,
            s3={"addressing_style": addressing_style},
            retries={"mode": self.retry_mode, "total_max_attempts": self.max_attempts},  # incl. the first
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            max_pool_connections=32,  # >= transfer concurrency, or parts wait for a connection
        )


def transfer_config_from_env(environ: Mapping[str, str] | None = None) -> TransferConfig:
    """Multipart settings; S3 requires parts of at least 5 MiB (s3transfer enforces it)."""
    env = os.environ if environ is None else environ
    return TransferConfig(
        multipart_threshold=_int_env(env, "COE_S3_MULTIPART_THRESHOLD_MB", 16) * MB,
        multipart_chunksize=_int_env(env, "COE_S3_MULTIPART_CHUNK_MB", 16) * MB,
        max_concurrency=_int_env(env, "COE_S3_MAX_CONCURRENCY", 8),
        use_threads=True,
    )


CREDENTIAL_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def make_client(settings: S3Settings, credentials: Mapping[str, str] | None = None):
    """A boto3 S3 client; a custom endpoint defaults to path-style addressing (MinIO & co.).

    ``credentials`` (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN) replace boto3's
    own lookup (environment, profile, instance role) when given."""
    try:
        if credentials and credentials.get("AWS_ACCESS_KEY_ID"):
            session = boto3.session.Session(
                aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=credentials.get("AWS_SECRET_ACCESS_KEY"),
                aws_session_token=credentials.get("AWS_SESSION_TOKEN") or None,
            )
        else:
            session = boto3.session.Session(profile_name=settings.profile)
        style = settings.addressing_style
        client = session.client(
            "s3", endpoint_url=settings.endpoint_url, config=settings.botocore_config(style or "auto")
        )
        # An endpoint from ~/.aws/config is only known once the client is built.
        if style is None and not _is_aws_endpoint(client.meta.endpoint_url):
            client = session.client(
                "s3", endpoint_url=settings.endpoint_url, config=settings.botocore_config("path")
            )
        return client
    except ProfileNotFound as e:
        raise StoreError(f"S3 profile not found ({e}); {CREDENTIALS_HINT}") from None
    except (ValueError, BotoCoreError) as e:
        raise StoreError(f"cannot configure the S3 client ({e}); {ENDPOINT_HINT}") from None


def _is_aws_endpoint(url: str | None) -> bool:
    host = urlparse(url or "").hostname or ""
    return host.endswith(".amazonaws.com") or host.endswith(".amazonaws.com.cn")


def _root_cause(exc: BaseException) -> BaseException:
    """The botocore error behind transfer-manager wrappers (S3UploadFailedError, RetriesExceeded)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ClientError | BotoCoreError):
            return current
        current = getattr(current, "last_exception", None) or current.__cause__ or current.__context__
    return exc


class S3Store(Store):
    """Objects under ``s3://bucket/key``; thread-safe (one boto3 client shared by all threads)."""

    def __init__(
        self,
        client=None,
        *,
        settings: S3Settings | None = None,
        transfer_config: TransferConfig | None = None,
        page_size: int = S3_PAGE_MAX,
    ):
        self.settings = settings or S3Settings.from_env()
        self.client = client if client is not None else make_client(self.settings)
        self.transfer_config = transfer_config or transfer_config_from_env()
        self.page_size = page_size
        self._known_buckets: set[str] = set()
        self._lock = threading.Lock()

    _from_env_cache: dict[tuple, S3Store] = {}

    @classmethod
    def from_env(cls) -> S3Store:
        """The store for the current environment; one per distinct configuration per process."""
        keys = (*S3_CREDENTIAL_KEYS, "AWS_PROFILE", *S3_SETTING_KEYS)
        key = tuple(os.environ.get(k) for k in keys)
        store = cls._from_env_cache.get(key)
        if store is None:
            store = cls._from_env_cache[key] = cls()
        return store

    @classmethod
    def from_mapping(cls, environ: Mapping[str, str]) -> S3Store:
        """A store configured by ``environ`` alone, as if it were the environment (credentials, endpoint,
        region, transfer settings): the controller reads each experiment's store with the credentials of
        the Secret the experiment names."""
        settings = S3Settings.from_env(environ)
        credentials = {k: environ[k] for k in CREDENTIAL_KEYS if environ.get(k)}
        return cls(
            make_client(settings, credentials),
            settings=settings,
            transfer_config=transfer_config_from_env(environ),
        )

    # -- error translation ----------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        return self.client.meta.endpoint_url

    @contextmanager
    def _errors(self, uri: str, action: str) -> Iterator[None]:
        try:
            yield
        except StoreError:
            raise
        except Exception as exc:
            raise self._translate(exc, uri, action) from None

    def _translate(self, exc: BaseException, uri: str, action: str) -> StoreError:
        cause = _root_cause(exc)
        where = f"{uri} ({action} at {self.endpoint})"
        if isinstance(cause, NoCredentialsError | PartialCredentialsError | CredentialRetrievalError):
            return StoreError(f"{where}: no usable S3 credentials ({cause}); {CREDENTIALS_HINT}")
        if isinstance(cause, NoRegionError):
            return StoreError(f"{where}: no region configured; set AWS_REGION")
        if isinstance(cause, ConnectionError | HTTPClientError | IncompleteReadError):
            return TransientStoreError(
                f"{where}: cannot reach the S3 endpoint after {self.settings.max_attempts} attempts "
                f"({type(cause).__name__}); {ENDPOINT_HINT}"
            )
        if isinstance(cause, ClientError):
            return self._translate_client_error(cause, uri, where)
        if isinstance(cause, BotoCoreError):
            return StoreError(f"{where}: {cause}")
        if isinstance(cause, OSError):
            return StoreError(f"{where}: local file error: {cause}")
        return StoreError(f"{where}: {type(cause).__name__}: {cause}")

    def _translate_client_error(self, cause: ClientError, uri: str, where: str) -> StoreError:
        """An error the S3 server answered, by its code (or HTTP status when it gives none)."""
        error = cause.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        bucket = parse_s3_uri(uri)[0]
        if code in _CREDENTIAL_CODES:
            return StoreError(
                f"{where}: S3 refused the request ({code}: wrong or insufficient credentials); "
                f"{CREDENTIALS_HINT}"
            )
        if code == "NoSuchBucket":
            return StoreError(
                f"{where}: bucket {bucket!r} does not exist; create it or fix the bucket in the URI"
            )
        if code in _MISSING_CODES:
            return StoreError(f"{uri}: no such artifact")
        if code == "AuthorizationHeaderMalformed" or code == "PermanentRedirect":
            return StoreError(f"{where}: {code}: the bucket is in another region; set AWS_REGION")
        if code in _TRANSIENT_CODES or status >= 500:
            return TransientStoreError(
                f"{where}: the S3 server keeps failing ({code or status}) after "
                f"{self.settings.max_attempts} attempts; retry later"
            )
        return StoreError(f"{where}: S3 error {code or status}: {error.get('Message', cause)}")

    def _check_bucket(self, uri: str) -> None:
        """Tell "no such key" from "no such bucket" (a HEAD 404 carries no error code)."""
        bucket, _ = parse_s3_uri(uri)
        if bucket in self._known_buckets:
            return
        try:
            self.client.head_bucket(Bucket=bucket)
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchBucket", "NotFound"):
                raise StoreError(
                    f"{uri} (at {self.endpoint}): bucket {bucket!r} does not exist; "
                    "create it or fix the bucket in the URI"
                ) from None
            raise self._translate(e, uri, "check bucket") from None
        except Exception as e:
            raise self._translate(e, uri, "check bucket") from None
        with self._lock:
            self._known_buckets.add(bucket)

    # -- primitives -----------------------------------------------------------------------------
    def put_file(self, local: str | Path, uri: str) -> None:
        bucket, key = parse_s3_uri(uri)
        with self._errors(uri, "upload"):
            self.client.upload_file(str(local), bucket, key, Config=self.transfer_config)

    def get_file(self, uri: str, local: str | Path) -> None:
        bucket, key = parse_s3_uri(uri)
        local = Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        # The transfer manager writes to a temporary name and renames on success: no partial files.
        with self._errors(uri, "download"):
            self.client.download_file(bucket, key, str(local), Config=self.transfer_config)

    def read_bytes(self, uri: str) -> bytes:
        bucket, key = parse_s3_uri(uri)
        with self._errors(uri, "read"):
            return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()

    def write_bytes(self, uri: str, data: bytes) -> None:
        bucket, key = parse_s3_uri(uri)
        with self._errors(uri, "write"):
            self.client.put_object(Bucket=bucket, Key=key, Body=data)

    def head(self, uri: str) -> dict | None:
        """``{"size", "version"}`` of an object (version = ETag), or None if there is none."""
        bucket, key = parse_s3_uri(uri)
        if not key:
            return None
        try:
            response = self.client.head_object(Bucket=bucket, Key=key)
        except ClientError as e:
            if str(e.response.get("Error", {}).get("Code", "")) in _MISSING_CODES:
                self._check_bucket(uri)
                return None
            raise self._translate(e, uri, "check existence") from None
        except Exception as e:
            raise self._translate(e, uri, "check existence") from None
        return {"size": response["ContentLength"], "version": response.get("ETag", "").strip('"')}

    def exists(self, uri: str) -> bool:
        return self.head(uri) is not None

    def _iter_objects(self, prefix: str) -> Iterator[dict]:
        bucket, key = parse_s3_uri(prefix)
        key_prefix = key.rstrip("/") + "/" if key else ""
        paginator = self.client.get_paginator("list_objects_v2")
        with self._errors(prefix, "list"):
            pages = paginator.paginate(
                Bucket=bucket, Prefix=key_prefix, PaginationConfig={"PageSize": self.page_size}
            )
            for page in pages:
                for obj in page.get("Contents", []):
                    if not obj["Key"].endswith("/"):  # folder markers made by some consoles
                        yield obj

    def list_info(self, prefix: str) -> dict[str, dict]:
        bucket, _ = parse_s3_uri(prefix)
        info = {
            f"s3://{bucket}/{obj['Key']}": {"size": obj["Size"], "version": obj.get("ETag", "").strip('"')}
            for obj in self._iter_objects(prefix)
        }
        if not info:  # like FileStore: a prefix that is itself an object lists as itself
            single = self.head(prefix)
            if single is not None:
                info[prefix] = single
            else:
                self._check_bucket(prefix)
        return dict(sorted(info.items()))

    def list(self, prefix: str) -> list[str]:
        return list(self.list_info(prefix))

    def delete(self, uri: str) -> None:
        bucket, key = parse_s3_uri(uri)
        with self._errors(uri, "delete"):
            self.client.delete_object(Bucket=bucket, Key=key)

    def delete_prefix(self, prefix: str) -> None:
        bucket, _ = parse_s3_uri(prefix)
        keys = [parse_s3_uri(uri)[1] for uri in self.list(prefix)]
        for start in range(0, len(keys), S3_PAGE_MAX):
            batch = keys[start : start + S3_PAGE_MAX]
            with self._errors(prefix, "delete"):
                response = self.client.delete_objects(
                    Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
                )
            if response.get("Errors"):
                first = response["Errors"][0]
                raise StoreError(
                    f"{prefix}: could not delete {len(response['Errors'])} object(s), "
                    f"e.g. {first.get('Key')}: {first.get('Code')} {first.get('Message', '')}"
                )
