"""package.py: the S3 bundle and the swap Lambda's zip, against moto's S3."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from pipeline import package

pytestmark = pytest.mark.infra
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def tree(tmp_path) -> Path:
    """A repository root with templates, the pipeline and some build debris."""
    root = tmp_path / "repo"
    (root / "cloudformation" / "nested").mkdir(parents=True)
    (root / "cloudformation" / "root.yaml").write_text("AWSTemplateFormatVersion: '2010-09-09'\n")
    (root / "cloudformation" / "nested" / "service.yaml").write_text("Resources: {}\n")
    shutil.copytree(
        ROOT / "pipeline", root / "pipeline", ignore=shutil.ignore_patterns("__pycache__")
    )
    (root / "pipeline" / "__pycache__").mkdir()
    (root / "pipeline" / "__pycache__" / "scan_gate.cpython-311.pyc").write_bytes(b"\0")
    (root / "pipeline" / "stray.pyc").write_bytes(b"\0")
    (root / "tests").mkdir()
    (root / "tests" / "not_bundled.py").write_text("")
    return root


@pytest.fixture
def s3(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="artifacts")
        yield client


def names(data: bytes) -> list[str]:
    return zipfile.ZipFile(io.BytesIO(data)).namelist()


def test_bundle_contents(tree):
    bundle = package.build_bundle(tree)
    listed = names(bundle)
    assert "cloudformation/root.yaml" in listed
    assert "cloudformation/nested/service.yaml" in listed
    assert "pipeline/buildspec-build.yml" in listed
    assert "pipeline/swap_lambda.py" in listed
    assert "pipeline/scan-allowlist.json" in listed
    assert "pipeline/base-image.txt" in listed
    assert "swap_lambda.zip" in listed
    assert not [n for n in listed if "__pycache__" in n or n.endswith(".pyc")]
    assert not [n for n in listed if n.startswith("tests/")]
    inner = zipfile.ZipFile(io.BytesIO(bundle)).read("swap_lambda.zip")
    assert names(inner) == ["swap_lambda.py"]
    assert (
        zipfile.ZipFile(io.BytesIO(inner)).read("swap_lambda.py")
        == (ROOT / "pipeline" / "swap_lambda.py").read_bytes()
    )


def test_bundle_holds_everything_the_build_runs(tree):
    """The Build action runs from the bundle (its primary source): every file the
    build buildspec names and every pipeline module it runs must be in it."""
    listed = set(names(package.build_bundle(tree)))
    spec = (ROOT / "pipeline" / "buildspec-build.yml").read_text()
    files = set(re.findall(r"(?<![\w/$])pipeline/[\w.-]+\.(?:txt|json|yml)", spec))
    assert {
        "pipeline/requirements.txt",
        "pipeline/scan-allowlist.json",
        "pipeline/base-image.txt",
    } <= files
    modules = set(re.findall(r"python3 -m (pipeline\.\w+)", spec))
    assert modules == {"pipeline.scan_gate"}
    needed = files | {"pipeline/__init__.py"} | {m.replace(".", "/") + ".py" for m in modules}
    assert needed <= listed, needed - listed


def test_zips_are_reproducible(tree):
    assert package.build_bundle(tree) == package.build_bundle(tree)
    os.utime(tree / "cloudformation" / "root.yaml", (1, 1))
    assert package.build_lambda_zip(tree) == package.build_lambda_zip(tree)


def test_dry_run_lists_and_uploads_nothing(s3, tree, capsys):
    argv = ["--bucket", "artifacts", "--environment", "staging", "--root", str(tree), "--dry-run"]
    code = package.main(argv)
    out = capsys.readouterr().out
    assert code == 0
    assert "bundle: s3://artifacts/chatsvc/staging/bundle.zip" in out
    assert "lambda: s3://artifacts/chatsvc/staging/swap_lambda.zip" in out
    assert "s3://artifacts/chatsvc/staging/templates/" in out
    assert "  cloudformation/root.yaml" in out
    assert "dry run: nothing uploaded" in out
    assert s3.list_objects_v2(Bucket="artifacts").get("KeyCount") == 0


def test_environments_of_one_account_upload_to_their_own_keys(s3, tree, capsys):
    """dev, staging and production share the account's bucket, never an object: an
    upload for one environment starts (and deploys) that environment's pipeline only."""
    for environment in package.ENVIRONMENTS:
        argv = ["--bucket", "artifacts", "--environment", environment, "--root", str(tree)]
        assert package.main(argv) == 0, capsys.readouterr()
    listed = {o["Key"] for o in s3.list_objects_v2(Bucket="artifacts")["Contents"]}
    assert listed == {
        f"chatsvc/{environment}/{name}"
        for environment in ("dev", "staging", "production")
        for name in ("bundle.zip", "swap_lambda.zip")
    }
    bundle = s3.get_object(Bucket="artifacts", Key="chatsvc/production/bundle.zip")["Body"].read()
    assert bundle == package.build_bundle(tree)
    lam = s3.get_object(Bucket="artifacts", Key="chatsvc/dev/swap_lambda.zip")["Body"].read()
    assert names(lam) == ["swap_lambda.py"]


def test_the_environment_is_required(tree, capsys):
    with pytest.raises(SystemExit) as exit_:
        package.main(["--bucket", "artifacts", "--root", str(tree), "--dry-run"])
    assert exit_.value.code == 2
    assert "--environment" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        package.main(["--bucket", "b", "--environment", "qa", "--root", str(tree), "--dry-run"])


def test_uploads_bundle_and_lambda_zip_to_explicit_keys(s3, tree, capsys):
    argv = ["--bucket", "artifacts", "--environment", "dev", "--root", str(tree)]
    code = package.main([*argv, "--project", "chat", "--key", "x/b.zip"])
    assert code == 0, capsys.readouterr()
    bundle = s3.get_object(Bucket="artifacts", Key="x/b.zip")["Body"].read()
    assert bundle == package.build_bundle(tree)
    lam = s3.get_object(Bucket="artifacts", Key="chat/dev/swap_lambda.zip")["Body"].read()
    assert names(lam) == ["swap_lambda.py"]


def test_missing_bucket_is_an_aws_error(s3, tree, capsys):
    argv = ["--bucket", "no-such-bucket", "--environment", "dev", "--root", str(tree)]
    assert package.main(argv) == 4
    assert "upload to s3://no-such-bucket failed" in capsys.readouterr().err


def test_missing_templates_is_a_usage_error(tree, capsys):
    shutil.rmtree(tree / "cloudformation")
    argv = ["--bucket", "b", "--environment", "dev", "--root", str(tree), "--dry-run"]
    assert package.main(argv) == 2
    assert "cloudformation is missing" in capsys.readouterr().err


def test_lambda_zip_imports_alone_as_top_level_swap_lambda(tmp_path):
    """What Lambda does: swap_lambda.py at the root, handler swap_lambda.handler, boto3 only."""
    zipfile.ZipFile(io.BytesIO(package.build_lambda_zip(ROOT))).extractall(tmp_path / "task")
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import swap_lambda; "
        "assert callable(swap_lambda.handler); "
        "assert swap_lambda.__file__.startswith(sys.argv[1]); "
        "assert not [m for m in sys.modules if m == 'pipeline' or m.startswith('pipeline.')]; "
        "print('ok')"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-c", code, str(tmp_path / "task")],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
