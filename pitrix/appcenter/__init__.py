"""QingCloud AppCenter packages: turning their config.json and cluster.json.mustache into pitrix specs.

``importer.import_package`` is what the CLI (``pitrix apps import``) and the API
(``POST /v1/apps/import``) call; docs/appcenter.md ("Importing a package") says what maps to what.
"""
