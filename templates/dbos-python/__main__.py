"""${PROJECT}: a Postgres instance, a point-in-time restore of it, and a DBOS app bound to the instance.

Where they live is the stack's business (Pulumi.<stack>.yaml): `dbos:engine: local` (the default: real
PostgreSQL clusters on this machine) or `dbos:engine: dbos-cloud` (DBOS Cloud, or a `pulumi-dbos serve`).
Every `dbos:*` key is checked when the first resource registers: a typo fails the preview, naming the key.
"""

import pulumi

import pulumi_dbos as dbos

config = pulumi.Config()

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

pulumi.export("instance", {"host": db.hostname, "port": db.port, "status": db.status})
pulumi.export("restore", {"host": restore.hostname, "port": restore.port, "restored_to": restore.restored_to})
pulumi.export("app_url", app.app_url)
pulumi.export("app_version", app.version)
pulumi.export("database_url", db.database_url)  # a secret: `pulumi stack output database_url --show-secrets`
