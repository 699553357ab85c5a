"""pitrix-sim: a fake QingCloud/OpenStack over real local VMs."""

import pitrix  # noqa: F401  (first: its warning filter must be in place before asyncssh is imported)
