"""The OpenStack provider: Nova servers through openstacksdk."""

from pitrix.providers.openstack.provider import OpenStackProvider

__all__ = ["OpenStackProvider"]
