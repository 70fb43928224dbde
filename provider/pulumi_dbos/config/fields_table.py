"""Generated from the Specs (config/spec.py) by `python -m pulumi_dbos.config.fields`: do not edit.

tests/unit/test_specs.py fails when this is not what the Specs give.
"""

from __future__ import annotations

from .fields import Fields

TABLE: dict[str, Fields] = {
    'DatabaseInstance': Fields(
        spec='DatabaseInstanceSpec',
        name_field='instance_name',
        is_instance=True,
        inputs=('engine', 'data_dir', 'run_as', 'cloud_domain', 'replace_on_engine_change', 'owner', 'instance_name', 'username', 'password', 'retention_hours', 'deletion_protection', 'port', 'adopt', 'high_availability'),
        defaults=(('engine', 'local'), ('replace_on_engine_change', False), ('retention_hours', 24), ('deletion_protection', False), ('adopt', False), ('high_availability', False)),
        outputs=('status', 'hostname', 'database_url', 'is_linked', 'earliest_restorable_time', 'latest_restorable_time', 'kept_after_destroy_hours', 'members', 'leader', 'sync_standby', 'timeline', 'last_drill'),
        secrets=('database_url', 'password'),
        replace_keys=('engine', 'data_dir', 'run_as', 'cloud_domain', 'instance_name', 'username'),
        diff_keys=('engine', 'data_dir', 'run_as', 'cloud_domain', 'instance_name', 'username', 'password', 'retention_hours', 'deletion_protection', 'port', 'high_availability'),
        arguments=('engine', 'data_dir', 'run_as', 'cloud_domain', 'replace_on_engine_change', 'instance_name', 'username', 'password', 'retention_hours', 'deletion_protection', 'port', 'adopt', 'high_availability'),
        paths=(),
    ),
    'RestoredInstance': Fields(
        spec='RestoredInstanceSpec',
        name_field='instance_name',
        is_instance=True,
        inputs=('engine', 'data_dir', 'run_as', 'cloud_domain', 'replace_on_engine_change', 'owner', 'instance_name', 'source', 'restore_time', 'password', 'retention_hours', 'deletion_protection', 'port', 'high_availability'),
        defaults=(('engine', 'local'), ('replace_on_engine_change', False), ('deletion_protection', False), ('high_availability', False)),
        outputs=('status', 'hostname', 'database_url', 'is_linked', 'earliest_restorable_time', 'latest_restorable_time', 'kept_after_destroy_hours', 'username', 'source_instance', 'restored_to', 'members', 'leader', 'sync_standby', 'timeline'),
        secrets=('database_url', 'password'),
        replace_keys=('engine', 'data_dir', 'run_as', 'cloud_domain', 'instance_name', 'source', 'restore_time'),
        diff_keys=('engine', 'data_dir', 'run_as', 'cloud_domain', 'instance_name', 'source', 'restore_time', 'password', 'retention_hours', 'deletion_protection', 'port', 'high_availability'),
        arguments=('engine', 'data_dir', 'run_as', 'cloud_domain', 'replace_on_engine_change', 'instance_name', 'source', 'restore_time', 'password', 'retention_hours', 'deletion_protection', 'port', 'high_availability'),
        paths=(),
    ),
    'LinkedInstance': Fields(
        spec='LinkedInstanceSpec',
        name_field='instance_name',
        is_instance=True,
        inputs=('engine', 'data_dir', 'run_as', 'cloud_domain', 'replace_on_engine_change', 'owner', 'instance_name', 'hostname', 'port', 'username', 'password'),
        defaults=(('engine', 'local'), ('replace_on_engine_change', False), ('port', 5432)),
        outputs=('status', 'database_url', 'is_linked'),
        secrets=('password', 'database_url'),
        replace_keys=('engine', 'data_dir', 'run_as', 'cloud_domain', 'instance_name'),
        diff_keys=('engine', 'data_dir', 'run_as', 'cloud_domain', 'instance_name', 'hostname', 'port', 'username', 'password'),
        arguments=('engine', 'data_dir', 'run_as', 'cloud_domain', 'replace_on_engine_change', 'instance_name', 'hostname', 'port', 'username', 'password'),
        paths=(),
    ),
    'AppDatabase': Fields(
        spec='AppDatabaseSpec',
        name_field='app_name',
        is_instance=False,
        inputs=('engine', 'data_dir', 'run_as', 'cloud_domain', 'replace_on_engine_change', 'owner', 'instance_name', 'instance_host', 'instance_port', 'instance_user', 'instance_password', 'app_name', 'app_db_name', 'migrate', 'rollback', 'working_dir', 'dbos_config', 'app_version', 'drop_on_delete', 'owner_role'),
        defaults=(('engine', 'local'), ('replace_on_engine_change', False), ('drop_on_delete', False), ('owner_role', False)),
        outputs=('hostname', 'port', 'username', 'database_url', 'owner_database_url', 'owner_password', 'migrated_at'),
        secrets=('instance_password', 'database_url', 'owner_database_url', 'owner_password'),
        replace_keys=('engine', 'data_dir', 'run_as', 'cloud_domain', 'app_name', 'app_db_name'),
        diff_keys=('engine', 'data_dir', 'run_as', 'cloud_domain', 'instance_name', 'instance_host', 'instance_port', 'instance_user', 'instance_password', 'app_name', 'app_db_name', 'migrate', 'rollback', 'working_dir', 'dbos_config', 'app_version', 'drop_on_delete', 'owner_role'),
        arguments=('instance', 'app_name', 'app_db_name', 'migrate', 'rollback', 'working_dir', 'dbos_config', 'app_version', 'drop_on_delete', 'owner_role'),
        paths=('working_dir', 'dbos_config'),
    ),
    'App': Fields(
        spec='AppSpec',
        name_field='app_name',
        is_instance=False,
        inputs=('engine', 'data_dir', 'run_as', 'cloud_domain', 'replace_on_engine_change', 'owner', 'instance_name', 'instance_host', 'instance_port', 'instance_user', 'instance_password', 'app_name', 'source', 'app_db_name', 'previous_version', 'env', 'port', 'drop_on_delete', 'adopt', 'version'),
        defaults=(('engine', 'local'), ('replace_on_engine_change', False), ('env', {}), ('drop_on_delete', False), ('adopt', False)),
        outputs=('versions', 'status', 'app_url', 'database_url', 'system_database_url'),
        secrets=('instance_password', 'env', 'database_url', 'system_database_url'),
        replace_keys=('engine', 'data_dir', 'run_as', 'cloud_domain', 'app_name', 'app_db_name'),
        diff_keys=('engine', 'data_dir', 'run_as', 'cloud_domain', 'instance_name', 'instance_host', 'instance_port', 'instance_user', 'instance_password', 'app_name', 'source', 'app_db_name', 'previous_version', 'env', 'port', 'drop_on_delete', 'version'),
        arguments=('instance', 'app_name', 'source', 'app_db_name', 'previous_version', 'env', 'port', 'drop_on_delete', 'adopt'),
        paths=('source',),
    ),
}
