"""pitrix-metad: the metadata service of a metadata cluster, over one etcd.

``server.Metad`` serves two aiohttp apps: the instance API agents long-poll (``/self``, a
per-instance projection answered from an in-memory mirror kept by one etcd watch) and the
management API pitrixd drives (``/v1/data``, ``/v1/mapping``, ``/v1/watch``), for which
``client.MetadManagementClient`` is the client. ``main`` is the ``pitrix-metad`` command.

Modules: ``tree`` (mirror tree with per-subtree revisions and render caches), ``mirror`` (the
watch, identity index), ``selfview`` (the /self projection and its dependencies), ``waiters``
(long-polls indexed by dependency), ``render`` (JSON/text/YAML), ``status`` (write-back
validation), ``leases`` (heartbeat leases), ``data`` (documents → etcd ops), ``instance_api``,
``manage_api``.
"""
