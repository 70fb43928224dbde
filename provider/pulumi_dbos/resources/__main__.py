"""``python -m pulumi_dbos.resources``: Pulumi's dynamic provider server with pulumi-dbos's extensions
(``_server.serve``); ``tools/pulumi-bin/pulumi-resource-pulumi-python`` runs it when the project's virtualenv
has pulumi-dbos."""

from .._startup import defer_unused_sdk_modules

defer_unused_sdk_modules()

from ._server import serve  # noqa: E402 - after the line above, which must precede the pulumi SDK's import

serve()
