"""The engine interface: where instances live.

Shaped like DBOS Cloud's database operations (provision, info, list, reset
credentials, restore-to-new, link, unlink, destroy) so that a remote engine
speaking ``/v1alpha1/{org}/databases/...`` fits without touching the resources.
Nothing here imports pulumi.
"""

from __future__ import annotations

import abc
from dataclasses import asdict, dataclass, field
from typing import Any

STATUS_AVAILABLE = "available"
STATUS_STOPPED = "stopped"
STATUS_CREATING = "creating"
STATUS_RESTORING = "restoring"
STATUS_DELETING = "deleting"
STATUS_UNREACHABLE = "unreachable"


@dataclass
class InstanceInfo:
    name: str
    status: str
    hostname: str
    port: int
    username: str
    is_linked: bool = False
    retention_hours: int = 24
    created_at: str | None = None
    earliest_restorable_time: str | None = None
    latest_restorable_time: str | None = None
    source_instance: str | None = None
    restored_to: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class BackupInfo:
    instance: str
    backup_id: str
    started_at: str
    finished_at: str
    path: str


class Engine(abc.ABC):
    """What the resources need from wherever instances live."""

    @abc.abstractmethod
    def provision(self, name: str, username: str, password: str, *, port: int | None = None,
                  retention_hours: int = 24) -> InstanceInfo: ...

    @abc.abstractmethod
    def info(self, name: str) -> InstanceInfo | None: ...

    @abc.abstractmethod
    def list(self) -> list[InstanceInfo]: ...

    @abc.abstractmethod
    def reset_credentials(self, name: str, username: str, password: str) -> InstanceInfo: ...

    @abc.abstractmethod
    def set_retention(self, name: str, retention_hours: int) -> InstanceInfo: ...

    @abc.abstractmethod
    def start(self, name: str) -> InstanceInfo: ...

    @abc.abstractmethod
    def stop(self, name: str) -> InstanceInfo: ...

    @abc.abstractmethod
    def destroy(self, name: str) -> None: ...

    @abc.abstractmethod
    def restore_to_new(self, source: str, name: str, restore_time: str, *, port: int | None = None,
                       retention_hours: int | None = None) -> InstanceInfo: ...

    @abc.abstractmethod
    def backup(self, name: str) -> BackupInfo: ...

    @abc.abstractmethod
    def link(self, name: str, hostname: str, port: int, username: str, password: str) -> InstanceInfo: ...

    @abc.abstractmethod
    def unlink(self, name: str) -> None: ...
