"""The one line an operator reads when the lake's store refuses a request: throttling is
named only when the store says so."""

from __future__ import annotations

import pytest

from workbench.config import Config
from workbench.lake.tables import describe_store_error

S3 = Config.from_env({"WORKBENCH_LAKE": "s3://lake-prod/lake"})
AZURE = Config.from_env({"WORKBENCH_LAKE": "az://lake/lake"})


@pytest.mark.parametrize(
    ("config", "text", "line"),
    [
        (
            S3,
            "Generic S3 error: Error after 3 retries\n 503 Service Unavailable\n"
            "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.",
            "store throttling requests (503 SlowDown) on s3://lake-prod/lake",
        ),
        (
            AZURE,
            "Generic MicrosoftAzure error\n 503 Service Unavailable\n"
            "<Error><Code>ServerBusy</Code><Message>Ingress is over the account limit.",
            "store throttling requests (503 ServerBusy) on az://lake/lake",
        ),
        (
            S3,
            "Generic S3 error\n 429 Too Many Requests",
            "store throttling requests (429) on s3://lake-prod/lake",
        ),
        (  # a proxy or load balancer answering for a store that is down
            S3,
            "Generic S3 error\n 503 Service Unavailable\n<html>no healthy upstream</html>",
            "store unavailable (503 Service Unavailable) on s3://lake-prod/lake",
        ),
        (
            S3,
            "Generic S3 error\n 503 Service Unavailable\n<Error><Code>ServiceUnavailable</Code>",
            "store unavailable (503 ServiceUnavailable) on s3://lake-prod/lake",
        ),
    ],
    ids=["s3-slowdown", "azure-serverbusy", "429", "503-bare", "503-other-code"],
)
def test_throttling_is_named_only_when_the_store_says_so(
    config: Config, text: str, line: str
) -> None:
    assert describe_store_error(config, OSError(text)) == line
