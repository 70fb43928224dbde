"""``python -m pulumi_dbos.resources``: Pulumi's dynamic provider server with pulumi-dbos's extensions
(``_server.serve``); ``tools/pulumi-bin/pulumi-resource-pulumi-python`` runs it when the project's virtualenv
has pulumi-dbos."""

from ._server import serve

serve()
