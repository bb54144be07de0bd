"""Programs that CodeBuild, CodePipeline and the swap Lambda run.

Each module is a small CLI (`python -m pipeline.<name> --help`) built on boto3:

- ``scan_gate``: waits for the ECR image scan and fails the build on findings.
- ``deployment_tags``: tells which color is live and writes ``deployment.json``.
- ``run_migrations``: runs ``migrate`` once as a one-off Fargate task.
- ``smoke_test``: exercises REST and WebSocket through the test listener.
- ``swap_lambda``: makes the test color live through the release stack (also the Lambda handler).
- ``package``: zips templates and scripts into the bundle the pipeline reads.

Exit codes shared by all of them: 0 success, 1 the check failed or the action was
refused, 2 bad usage or configuration, 3 timed out, 4 AWS or scan error.
"""

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_TIMEOUT = 3
EXIT_AWS_ERROR = 4
