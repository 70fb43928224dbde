"""DBOS Cloud's control-plane REST API, as its official CLI (``@dbos-inc/dbos-cloud`` 2.10.x) speaks it.

One description of the wire, shared by both ends: the ``dbos-cloud`` engine (a client,
:mod:`pulumi_dbos.engine.dbos_cloud`) and ``pulumi-dbos serve`` (a server over the local engine,
:mod:`pulumi_dbos.serve`). Field names are the API's exact ones (PascalCase for databases,
snake_case for app requests, lower-camel ``captureProvenance``/``supabaseReference``).

See :mod:`.models` for the bodies and :mod:`.paths` for the routes. Fields marked *extension* are
pulumi-dbos additions: ``serve`` fills and honours them; DBOS Cloud omits them (the client then
degrades as documented in the engine). Imports nothing from pulumi or psycopg.
"""
