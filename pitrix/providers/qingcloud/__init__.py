"""The QingCloud provider: QingCloud API v1 (signed HmacSHA256) over aiohttp."""

from pitrix.providers.qingcloud.provider import QingCloudProvider

__all__ = ["QingCloudProvider"]
