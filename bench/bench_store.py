"""Upload/download throughput of one large artifact to a local SeaweedFS server.

Compares a single stream (one PutObject / one streamed GetObject) with what the store uses:
boto3's transfer manager (multipart upload, concurrent ranged downloads), through
``S3Store.put_file``/``get_file`` with the default transfer settings.

    python bench/bench_store.py                       # 200 MB, 3 repeats, writes bench/results/store.md
    python bench/bench_store.py --size-mb 50 --repeats 1 --output -

Every download is checked against the sha256 of the uploaded file.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench._machine import cpu_model  # noqa: E402
from coe_runtime.store.s3 import S3Store, transfer_config_from_env  # noqa: E402
from tests.support.seaweed import SeaweedServer, find_weed  # noqa: E402

MB = 1024 * 1024
BUCKET = "coe-bench"


def make_file(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, 8 * MB))  # incompressible, like model weights
            f.write(block)
            digest.update(block)
            left -= len(block)
    return digest.hexdigest()


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(8 * MB):
            digest.update(block)
    return digest.hexdigest()


def single_stream_upload(store: S3Store, local: Path, key: str) -> None:
    with local.open("rb") as body:
        store.client.put_object(Bucket=BUCKET, Key=key, Body=body)


def single_stream_download(store: S3Store, key: str, local: Path) -> None:
    body = store.client.get_object(Bucket=BUCKET, Key=key)["Body"]
    with local.open("wb") as f:
        for chunk in body.iter_chunks(MB):
            f.write(chunk)


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def machine() -> str:
    cpu = cpu_model()
    weed = subprocess.run([find_weed(), "version"], capture_output=True, text=True).stdout.strip()
    import boto3

    return (
        f"{cpu}, {os.cpu_count()} CPU cores, Linux {platform.release()}; Python {platform.python_version()}, "
        f"boto3 {boto3.__version__}; SeaweedFS `{weed}` (`weed mini`, 127.0.0.1, data on local disk)"
    )


def run(size_mb: int, repeats: int) -> tuple[list[dict], str]:
    with tempfile.TemporaryDirectory(prefix="coe-bench-store-") as tmp:
        tmp = Path(tmp)
        server = SeaweedServer(tmp / "seaweed")
        with server:
            server.make_bucket(BUCKET)
            os.environ.update(server.env())
            store = S3Store()
            transfer = transfer_config_from_env()
            settings = (
                f"transfer manager: multipart threshold {transfer.multipart_threshold // MB} MiB, "
                f"part size {transfer.multipart_chunksize // MB} MiB, {transfer.max_concurrency} threads"
            )
            src = tmp / "artifact.bin"
            expected = make_file(src, size_mb * MB)
            rows = []
            methods = {
                "single stream (PutObject / GetObject)": (
                    lambda key: single_stream_upload(store, src, key),
                    lambda key, dest: single_stream_download(store, key, dest),
                ),
                "transfer manager (S3Store.put_file / get_file)": (
                    lambda key: store.put_file(src, f"s3://{BUCKET}/{key}"),
                    lambda key, dest: store.get_file(f"s3://{BUCKET}/{key}", dest),
                ),
            }
            for name, (upload, download) in methods.items():
                ups, downs = [], []
                for i in range(repeats):
                    key = f"bench/{i}-{name.split()[0]}.bin"
                    ups.append(timed(upload, key))
                    dest = tmp / "back.bin"
                    downs.append(timed(download, key, dest))
                    if sha256(dest) != expected:
                        raise SystemExit(f"{name}: downloaded bytes differ from the uploaded file")
                    dest.unlink()
                    store.client.delete_object(Bucket=BUCKET, Key=key)
                rows.append({"method": name, "upload_s": ups, "download_s": downs})
                print(
                    f"{name}: upload {size_mb / statistics.median(ups):.0f} MB/s, "
                    f"download {size_mb / statistics.median(downs):.0f} MB/s",
                    flush=True,
                )
    return rows, settings


def report(rows: list[dict], size_mb: int, repeats: int, settings: str, command: str) -> str:
    lines = [
        "# Artifact store throughput: one large artifact to a local S3 server",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {machine()}.",
        "",
        f"Artifact: {size_mb} MiB of random bytes; {repeats} repeats per method, each download "
        f"checked against the upload's sha256. {settings}.",
        "MB/s are MiB per second of the median repeat (best in brackets).",
        "",
        "Client and server share this machine's cores, so the figures measure CPU (request signing,",
        "checksums, the server's writes) more than a network; on a real network the transfer manager",
        "also hides per-request latency, retries one failed part instead of the whole file, and is",
        "required above 5 GB (the largest single PUT S3 accepts).",
        "",
        "| method | upload MB/s | download MB/s | upload s (median) | download s (median) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        up, down = statistics.median(r["upload_s"]), statistics.median(r["download_s"])
        lines.append(
            f"| {r['method']} | {size_mb / up:.0f} ({size_mb / min(r['upload_s']):.0f}) "
            f"| {size_mb / down:.0f} ({size_mb / min(r['download_s']):.0f}) | {up:.2f} | {down:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--output", default=str(REPO / "bench" / "results" / "store.md"), help="'-' for stdout"
    )
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]
    rows, settings = run(args.size_mb, args.repeats)
    settings += f". 1-minute load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    command = "python bench/bench_store.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = report(rows, args.size_mb, args.repeats, settings, command.strip())
    if args.output == "-":
        print(text)
    else:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text)
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
