"""${PROJECT}: a Postgres instance, a point-in-time restore of it, and a DBOS app bound to the instance.

Where they live is the stack's business (Pulumi.<stack>.yaml): `dbos:engine: local` (the default: real
PostgreSQL clusters on this machine) or `dbos:engine: dbos-cloud` (DBOS Cloud, or a `pulumi-dbos serve`).
Every `dbos:*` key is checked when the first resource registers: a typo fails the preview, naming the key.
"""

import pulumi

import pulumi_dbos as dbos

config = pulumi.Config()

if config.get("previewOf"):
    # A pull request's stack (`pr-<N>`, made by .github/workflows/pr-environment.yml or by hand): no instance of
    # its own, but a restore of the source stack's instance at "latest" (or `previewRestoreTime`) with this
    # checkout's ./app deployed on it, both named hello_pr<N>. The source stack is only read, never written.
    source = pulumi.StackReference(config.require("previewOf"))
    preview = dbos.PreviewEnvironment(
        "preview",
        source_instance=source.require_output("instance_name"),
        pr_number=config.require("prNumber"),
        app_source="app",
        password=config.require_secret("dbPassword"),  # the source's user's (the config copied from the source)
        restore_time=config.get("previewRestoreTime") or "latest",
    )
    pulumi.export("instance_name", preview.instance_name)
    pulumi.export("app_name", preview.app_name)
    pulumi.export("app_url", preview.app_url)
    pulumi.export("app_version", preview.app_version)
    pulumi.export("restored_to", preview.restored_to)
    pulumi.export("database_url", preview.instance.database_url)  # a secret
else:
    # An instance (`dbos-cloud db provision`): a password change is an update in place (a reset).
    db = dbos.DatabaseInstance(
        "db",
        instance_name="hello_db",  # 3-16 characters of [a-z0-9_], unique on the engine
        username="hello_user",
        password=config.require_secret("dbPassword"),
        retention_hours=24,  # the point-in-time restore window
    )

    # A restore into a new instance (`dbos-cloud db restore`): "latest", or an RFC3339 time inside the window
    # (`pulumi config set restoreTime 2026-11-25T10:00:00Z`); a new time is a new restore (a replace).
    restore = dbos.RestoredInstance(
        "restore",
        instance_name="hello_r1",
        source=db,
        restore_time=config.get("restoreTime") or "latest",
    )

    # A DBOS app (`dbos-cloud app deploy`), from ./app: each code change is a new version. To move it onto the
    # restore (`app change-database-instance`), make `instance=restore` and run `pulumi up`.
    app = dbos.App("hello", source="app", instance=db)

    pulumi.export("instance_name", db.instance_name)  # what a pull request's stack restores (previewOf)
    pulumi.export("instance", {"host": db.hostname, "port": db.port, "status": db.status})
    pulumi.export("restore", {"host": restore.hostname, "port": restore.port, "restored_to": restore.restored_to})
    pulumi.export("app_url", app.app_url)
    pulumi.export("app_version", app.version)
    pulumi.export("database_url", db.database_url)  # a secret: `pulumi stack output database_url --show-secrets`
