"""The QingCloud provider: QingCloud API v1 (signed HmacSHA256) over aiohttp."""

from pitrix.providers.qingcloud.provider import KeyPair, QingCloudProvider

__all__ = ["KeyPair", "QingCloudProvider"]
