"""Object-store helpers for `k8s/smoke.sh` (the smoke test a user runs on their own cluster).

    python -m litedet.kfp.smoke upload DIR s3://BUCKET/PREFIX    copies a folder's files there
    python -m litedet.kfp.smoke versions s3://BUCKET/MODELS      pushed versions, one per line

S3 through boto3 with the standard AWS environment (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY; the script sets them from a port-forward and the namespace's Secret). A
pushed version is a folder `<n>/` holding `manifest.json` (components/pusher/store.py): the store
writes the manifest last, so a version without one was never completed. Errors: one line, exit 1.
"""

from __future__ import annotations

import os
import sys
from typing import List

MANIFEST = "manifest.json"  # components/pusher/store.py, MANIFEST


def _client():
    import boto3
    import botocore.config

    return boto3.client(
        "s3",
        endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None,
        config=botocore.config.Config(
            connect_timeout=5, read_timeout=60, retries={"max_attempts": 2}
        ),
    )


def _split(uri: str):
    if not uri.startswith("s3://"):
        raise ValueError(f"{uri}: expected s3://BUCKET/PREFIX")
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    return bucket, prefix.strip("/")


def upload(folder: str, uri: str) -> int:
    """Copies every file under `folder` to `uri`; returns how many."""
    bucket, prefix = _split(uri)
    s3 = _client()
    count = 0
    for directory, _, files in os.walk(folder):
        for name in sorted(files):
            path = os.path.join(directory, name)
            key = "/".join(p for p in (prefix, os.path.relpath(path, folder)) if p)
            s3.upload_file(path, bucket, key.replace(os.sep, "/"))
            count += 1
    if not count:
        raise ValueError(f"{folder}: no files to upload")
    return count


def versions(uri: str) -> List[int]:
    """The completed versions (folders with a manifest.json) under a model store."""
    bucket, prefix = _split(uri)
    s3 = _client()
    found = set()
    base = f"{prefix}/" if prefix else ""
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=base):
        for item in page.get("Contents", []):
            parts = item["Key"][len(base) :].split("/")
            if len(parts) == 2 and parts[1] == MANIFEST and parts[0].isdigit():
                found.add(int(parts[0]))
    return sorted(found)


def main(argv: List[str]) -> int:
    try:
        if len(argv) == 3 and argv[0] == "upload":
            print(f"uploaded {upload(argv[1], argv[2])} files to {argv[2]}")
            return 0
        if len(argv) == 2 and argv[0] == "versions":
            for number in versions(argv[1]):
                print(number)
            return 0
        print(
            "usage: python -m litedet.kfp.smoke upload DIR s3://BUCKET/PREFIX | "
            "versions s3://BUCKET/MODELS",
            file=sys.stderr,
        )
        return 2
    except Exception as error:  # network, credentials, a missing bucket: one line
        print(f"litedet smoke: error: {type(error).__name__}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
