"""The fields of AppCenter's cluster file the importer knows: what it maps, refuses or drops, and why."""

from __future__ import annotations

DEFAULT_TIMEOUT = 600  # AppCenter's service timeout when a package gives none
MAX_TIMEOUT = 86400
LIFECYCLE = ("init", "start", "stop", "restart", "scale_out", "scale_in", "destroy", "upgrade", "rollback")
BACKUP_SERVICES = ("backup", "restore", "delete_snapshot")
SERVICE_FIELDS = {
    "cmd",
    "type",
    "order",
    "timeout",
    "nodes_to_execute_on",
    "post_start_service",
    "post_stop_service",
    "pre_check",
    "allow_force",
    "service_params",
    "event",
    "selector",
}
ENDPOINT_FIELDS = {"port", "protocol"}
VOLUME_FIELDS = {"size", "mount_point", "mount_options", "filesystem", "class"}
HEALTH_FIELDS = {
    "enable",
    "interval_sec",
    "timeout_sec",
    "action_timeout_sec",
    "healthy_threshold",
    "unhealthy_threshold",
    "check_cmd",
    "action_cmd",
}
TAB_FIELDS = {"cmd", "roles_to_execute_on", "description", "timeout"}
# Fields that mean something only on QingCloud, and why pitrix leaves them out.
DROPPED_APP = {
    "vxnet": "the network comes from the runtime (metadata publishes the runtime's vxnet)",
    "upgrade_policy": "QingCloud app version ids; declare pitrix versions with upgrade.from_versions",
    "upgrading_policy": "upgrades go by the spec's upgrade canary and max_in_flight",
    "multi_zone_policy": "placement is the runtime's (its placement setting)",
    "incremental_backup_supported": "backups are full volume snapshots",
    "advanced_services": "update_nodes_names has no pitrix counterpart",
    "metadata_root_access": "a cluster reads only its own metadata and its links'",
    "need_tag": "QingCloud console setting",
    "need_intranet_api_server": "QingCloud console setting",
    "exclude_node_columns": "QingCloud console setting",
    "custom_tags": "QingCloud console setting",
    "unsupported_actions": "QingCloud console setting",
    "in-place-upgrade-nodes": "upgrades are per spec (upgrade.policy)",
}
DROPPED_NODE = {
    "instance_class": "QingCloud instance class; the cloud picks an instance type from cpu and memory",
    "gpu": "no GPUs",
    "gpu_class": "no GPUs",
    "cpu_model": "QingCloud CPU model",
    "extra_quota": "QingCloud quota",
    "user_access": "nodes are not offered for user log-in",
    "server_id_upper_bound": "node indexes are not capped",
    "replica": "replica roles are not made",
    "loadbalancer": "no load balancer is attached",
    "agent_installed": "every pitrix node runs the agent",
    "custom_metadata": "published metadata comes from a service's publish: true",
    "unsupported_actions": "QingCloud console setting",
}
