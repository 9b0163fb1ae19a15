"""``coe-ctl artifacts ls|get|cp``: look at and move artifacts on either back-end.

    coe-ctl artifacts ls s3://bucket/exp/erc [--output json]
    coe-ctl artifacts get s3://bucket/exp/erc/adapter ./adapter     # verified against the manifest
    coe-ctl artifacts cp ./coe-runs/demo s3://bucket/demo           # file:// <-> s3:// either way
    coe-ctl artifacts upload-model ./Mistral-7B s3://bucket/models/mistral-7b   # for baseModel.nameOrPath

S3 settings come from the standard AWS environment (see docs/storage.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from coe_runtime.store import MANIFEST, copy, download, get_store, normalize_uri


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "artifacts",
        help="list, download and copy artifacts (file:// or s3://)",
        description="List, download and copy artifacts in the store (file:// paths or s3://bucket/prefix).",
    )
    sub = parser.add_subparsers(dest="artifacts_command", metavar="ACTION", required=True)

    ls = sub.add_parser("ls", help="list the objects under a URI and whether it is published")
    ls.add_argument("uri", help="file or folder URI (plain paths are local)")
    ls.add_argument("--output", "-o", choices=("table", "json"), default="table")
    ls.set_defaults(func=cmd_ls)

    get = sub.add_parser("get", help="download a file or published folder, verified against its manifest")
    get.add_argument("uri")
    get.add_argument("dest", help="local file or folder to write")
    get.set_defaults(func=cmd_get)

    cp = sub.add_parser(
        "cp", help="copy a file or folder between any two URIs (published ones stay published)"
    )
    cp.add_argument("src")
    cp.add_argument("dst")
    cp.set_defaults(func=cmd_cp)

    up = sub.add_parser(
        "upload-model",
        help="publish a local model folder in the store (with sha256 digests) for baseModel.nameOrPath",
        description="Upload a Hugging Face model folder (config.json, weights, tokenizer) to the store "
        "and publish it with a MANIFEST.json, so that every step pod fetches it through its node-local "
        "cache and verifies every file. Use the URI as spec.baseModel.nameOrPath.",
    )
    up.add_argument("local_dir", help="the model folder (e.g. from `hf download --local-dir`)")
    up.add_argument("uri", help="destination, e.g. s3://bucket/models/mistral-7b-instruct-v0.2")
    up.add_argument("--source", help="what the model is, recorded in the manifest (default: the folder name)")
    up.set_defaults(func=cmd_upload_model)


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def listing(uri: str) -> dict:
    """What ``ls`` shows, as data: the objects under ``uri`` and the manifest if it is published."""
    uri = normalize_uri(uri).rstrip("/")
    store = get_store(uri)
    objects = store.list_info(uri)
    manifest = store.manifest(uri)
    return {
        "uri": uri,
        "published": manifest is not None,
        "manifest": manifest,
        "objects": [
            {"uri": u, "path": u[len(uri) + 1 :] or u.rsplit("/", 1)[-1], "size": info["size"]}
            for u, info in objects.items()
        ],
    }


def cmd_ls(args: argparse.Namespace) -> int:
    data = listing(args.uri)
    if args.output == "json":
        print(json.dumps(data, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    manifest = data["manifest"]
    if manifest is not None:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(manifest.get("published_at", 0)))
        status = f"[green]published[/] {len(manifest['files'])} files, {when}"
    else:
        status = f"[yellow]not published[/] (no {MANIFEST})"
    table = Table(title=f"{data['uri']}: {status}", title_justify="left")
    table.add_column("object")
    table.add_column("size", justify="right")
    for obj in data["objects"]:
        table.add_row(obj["path"], _human(obj["size"]))
    console.print(table)
    if not data["objects"]:
        console.print("(no objects)")
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    result = download(args.uri, args.dest)
    if result.published is None:
        print(
            f"warning: {args.uri} is not inside a published prefix: copied without checksum verification",
            file=sys.stderr,
        )
    verified = "verified" if result.published else "not verified"
    print(
        f"{args.uri} -> {result.path}: {result.files} files ({verified}), "
        f"{result.downloaded} downloaded, {_human(result.bytes)}"
    )
    return 0


def cmd_cp(args: argparse.Namespace) -> int:
    result = copy(args.src, args.dst)
    if result.republished:
        state = "verified, published at the destination"
    elif result.published:
        state = "verified"
    else:
        state = "not published: copied without checksum verification"
    print(f"{args.src} -> {result.destination}: {result.files} files, {_human(result.bytes)} ({state})")
    return 0


def cmd_upload_model(args: argparse.Namespace) -> int:
    from coe_runtime.models.hub import upload_model

    manifest = upload_model(args.local_dir, args.uri, source=args.source)
    print(
        f"{args.local_dir} -> {normalize_uri(args.uri)}: {len(manifest['files'])} files, "
        f"{_human(manifest['total_bytes'])} (published with sha256 digests); "
        f"use it as spec.baseModel.nameOrPath"
    )
    return 0
