"""Zip the templates and pipeline scripts into the bundle the pipeline reads.

    python -m pipeline.package --bucket BUCKET --environment {dev,staging,production}
        [--project chatsvc] [--key KEY] [--lambda-key KEY] [--dry-run]

Builds two zips, byte-for-byte reproducible (sorted entries, fixed timestamps),
so that an unchanged tree uploads an unchanged object:

- the swap Lambda: ``swap_lambda.py`` at its root, uploaded to
  ``s3://BUCKET/<project>/<environment>/swap_lambda.zip`` (``--lambda-key``);
- the bundle: ``cloudformation/**`` and ``pipeline/**`` (no ``__pycache__``), plus
  ``swap_lambda.zip``, uploaded to ``s3://BUCKET/<project>/<environment>/bundle.zip``
  (``--key``); the environment's pipeline watches this object. It is the primary
  source of the Build action: the build buildspec, the scan gate, its allowlist
  and the base-image pin (``pipeline/base-image.txt``) come from here, not from
  the commit being built.

The keys are per environment (root.yaml derives the same ones from ProjectName
and Environment), so the environments of one account never share a bundle.

The Lambda zip goes up first: the bundle's upload starts a pipeline run that
may deploy the Lambda from it. ``--dry-run`` lists both zips and uploads nothing.

Exit codes: 0 done, 2 bad usage (e.g. no cloudformation/), 4 AWS error.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import zipfile
from pathlib import Path

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from pipeline import EXIT_AWS_ERROR, EXIT_OK, EXIT_USAGE

ROOT = Path(__file__).resolve().parent.parent
BUNDLE_DIRS = ("cloudformation", "pipeline")
ENVIRONMENTS = ("dev", "staging", "production")
DEFAULT_PROJECT = "chatsvc"
BUNDLE_KEY = "{project}/{environment}/bundle.zip"
LAMBDA_KEY = "{project}/{environment}/swap_lambda.zip"
TEMPLATE_PREFIX = "{project}/{environment}/templates/"
LAMBDA_NAME = "swap_lambda.zip"
EXCLUDED_PARTS = {"__pycache__", ".pytest_cache", ".ruff_cache"}
EXCLUDED_SUFFIXES = {".pyc", ".pyo"}
FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # the zip format's epoch: reproducible archives


def keys(environment: str, project: str = DEFAULT_PROJECT) -> dict[str, str]:
    """The environment's S3 keys, as root.yaml derives them."""
    names = {"project": project, "environment": environment}
    return {
        "bundle": BUNDLE_KEY.format(**names),
        "lambda": LAMBDA_KEY.format(**names),
        "templates": TEMPLATE_PREFIX.format(**names),
    }


def bundle_files(root: Path) -> list[tuple[str, Path]]:
    """(archive name, path) for every file to bundle, sorted."""
    files = []
    for top in BUNDLE_DIRS:
        base = root / top
        if not base.is_dir():
            raise FileNotFoundError(f"{base} is missing")
        for path in base.rglob("*"):
            rel = path.relative_to(root)
            if not path.is_file() or EXCLUDED_PARTS & set(rel.parts):
                continue
            if path.suffix in EXCLUDED_SUFFIXES or path.name == ".DS_Store":
                continue
            files.append((rel.as_posix(), path))
    return sorted(files)


def _zip(entries: list[tuple[str, bytes, int]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            info.external_attr = (mode & 0o777 | 0o100000) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return buf.getvalue()


def _mode(path: Path) -> int:
    return 0o755 if path.stat().st_mode & 0o111 else 0o644


def build_lambda_zip(root: Path = ROOT) -> bytes:
    source = root / "pipeline" / "swap_lambda.py"
    return _zip([("swap_lambda.py", source.read_bytes(), 0o644)])


def build_bundle(root: Path = ROOT, lambda_zip: bytes | None = None) -> bytes:
    lambda_zip = lambda_zip if lambda_zip is not None else build_lambda_zip(root)
    entries = [(name, path.read_bytes(), _mode(path)) for name, path in bundle_files(root)]
    entries.append((LAMBDA_NAME, lambda_zip, 0o644))
    return _zip(entries)


def upload(s3, bucket: str, key: str, data: bytes) -> str | None:
    """Upload; return the new object version (None when the bucket is unversioned)."""
    response = s3.put_object(
        Bucket=bucket,
        Key=key,
        Body=data,
        ContentType="application/zip",
        Metadata={"sha256": hashlib.sha256(data).hexdigest()},
    )
    return response.get("VersionId")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.package",
        description=(
            "Zip cloudformation/ and pipeline/ (plus the swap Lambda's zip) into the S3 bundle "
            "the pipeline's second source reads, and upload both."
        ),
        epilog="Exit codes: 0 done, 2 bad usage, 4 AWS error.",
    )
    parser.add_argument("--bucket", required=True, help="the artifacts bucket")
    parser.add_argument(
        "--environment", required=True, choices=ENVIRONMENTS,
        help="the environment whose keys to upload to (root.yaml's Environment)",
    )  # fmt: skip
    parser.add_argument(
        "--project", default=DEFAULT_PROJECT,
        help=f"root.yaml's ProjectName ({DEFAULT_PROJECT})",
    )  # fmt: skip
    parser.add_argument("--key", help=f"bundle key ({BUNDLE_KEY})")
    parser.add_argument("--lambda-key", help=f"Lambda zip key ({LAMBDA_KEY})")
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root")
    parser.add_argument("--dry-run", action="store_true", help="list contents, upload nothing")
    parser.add_argument("--region", help="AWS region (default: from the environment)")
    args = parser.parse_args(argv)
    derived = keys(args.environment, args.project)
    args.key = args.key or derived["bundle"]
    args.lambda_key = args.lambda_key or derived["lambda"]

    try:
        lambda_zip = build_lambda_zip(args.root)
        bundle = build_bundle(args.root, lambda_zip)
    except (OSError, FileNotFoundError) as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return EXIT_USAGE

    for label, key, data in (
        ("lambda", args.lambda_key, lambda_zip),
        ("bundle", args.key, bundle),
    ):
        names = zipfile.ZipFile(io.BytesIO(data)).namelist()
        digest = hashlib.sha256(data).hexdigest()[:16]
        size = f"{len(data)} bytes, {len(names)} files, {digest}"
        print(f"{label}: s3://{args.bucket}/{key} ({size})")
        for name in names:
            print(f"  {name}")
    print(f"root.yaml's nested templates: s3://{args.bucket}/{derived['templates']} (aws s3 sync)")
    if args.dry_run:
        print("dry run: nothing uploaded")
        return EXIT_OK

    s3 = boto3.client("s3", region_name=args.region)
    try:
        for key, data in ((args.lambda_key, lambda_zip), (args.key, bundle)):
            version = upload(s3, args.bucket, key, data)
            print(f"uploaded s3://{args.bucket}/{key}" + (f" version {version}" if version else ""))
    except (ClientError, BotoCoreError) as exc:
        print(f"FAILED: upload to s3://{args.bucket} failed: {exc}", file=sys.stderr)
        return EXIT_AWS_ERROR
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
