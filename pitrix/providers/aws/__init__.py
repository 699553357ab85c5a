"""The AWS provider: EC2 through aioboto3."""

from pitrix.providers.aws.provider import AwsProvider

__all__ = ["AwsProvider"]
