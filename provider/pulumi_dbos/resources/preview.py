"""``PreviewEnvironment``: a pull request's own database and app, restored from a source instance.

A component (no provider of its own): a :class:`RestoredInstance` of the source instance at ``latest``
(or a given time) and an :class:`App` deployed from the pull request's source onto it, both named
``<app>_pr<N>`` (``config.rules.preview_name``). The source is only named (typically read from the
source stack through ``pulumi.StackReference``): this stack never registers it, so ``pulumi destroy``
of the pull request's stack deletes the restore and the app it made and nothing else. Names another
stack owns are refused at preview by the engine's ownership check; nothing here ever adopts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pulumi

from ..appsource import staged_copy
from ..config.rules import check_name, check_pr_number, check_restore_time, preview_name
from ..dbos_config import read_app
from ..errors import ValidationError
from .app import App
from .restored import RestoredInstance

#: where the pull request's copy of the app is staged (under the project directory: stable across runs, so
#: an unchanged source is no new version)
STAGING_DIR = Path(".pulumi-dbos") / "preview"


class PreviewEnvironment(pulumi.ComponentResource):
    """Pull request ``pr_number``'s preview: ``source_instance``'s data as of ``restore_time`` in a new
    instance, and the app in ``app_source`` (the pull request's code) deployed on it.

    - ``source_instance``: the source instance's name (a string or an Output, e.g.
      ``pulumi.StackReference("dev").require_output("instance_name")``); read, never written.
    - ``password``: the password of the restore's user (the source's user), e.g. the source's own.
    - ``app_source``: the app directory; the app is deployed as ``<name>_pr<N>`` (a staged copy whose
      config says that name), using the database the source app uses (``app_db_name``, by default the
      config's, else its name), which the restore holds with the source's data.
    - ``name``: the base of the names (default: the config's app name); see ``preview_name`` for how long
      bases and numbers fit in 16 characters.

    Outputs: ``instance_name``, ``app_name`` (plain), ``app_url``, ``app_version``, ``restored_to``.
    Every input problem is reported at construction, i.e. at preview, each with its field and rule.
    """

    instance: RestoredInstance
    app: App
    instance_name: str
    app_name: str
    app_url: pulumi.Output[str]
    app_version: pulumi.Output[str]
    restored_to: pulumi.Output[str]

    def __init__(self, resource_name: str, *, source_instance: pulumi.Input[str], pr_number: int | str,
                 app_source: str, password: pulumi.Input[str], restore_time: str = "latest",
                 name: str | None = None, app_db_name: str | None = None,
                 env: Mapping[str, pulumi.Input[str]] | None = None,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        problems: list[tuple[str, str]] = []
        source = Path(os.path.abspath(app_source))
        base = name
        try:
            cfg = read_app(source)
            base = name or cfg.name
            app_db_name = app_db_name or cfg.app_db_name or cfg.name
        except ValidationError as exc:
            problems += [("app_source" if f == "source" else f, m) for f, m in exc.problems]
        checks: list[tuple[str, Any, Any]] = [("pr_number", check_pr_number, pr_number),
                                              ("restore_time", check_restore_time, restore_time)]
        if base is not None:
            checks.append(("name", lambda v: check_name(v, "name"), base))
        for field, rule, value in checks:
            try:
                rule(value)
            except ValueError as exc:
                problems.append((field, str(exc)))
        derived = "" if problems else preview_name(str(base), pr_number)
        if isinstance(source_instance, str) and source_instance == derived:
            problems.append(("source_instance", f"the preview's name {derived!r} is the source instance's: "
                             "pass another name= base"))
        if problems:
            raise pulumi.RunError(f"PreviewEnvironment {resource_name!r}: {len(problems)} problem(s); nothing was "
                                  "changed:\n  " + "\n  ".join(f"{f}: {m}" for f, m in problems))
        super().__init__("dbos:index:PreviewEnvironment", resource_name, None, opts)
        self.instance_name = self.app_name = derived
        child = pulumi.ResourceOptions(parent=self)
        self.instance = RestoredInstance(derived, opts=child, instance_name=derived, source=source_instance,
                                         restore_time=restore_time, password=password)
        staged = staged_copy(source, Path.cwd() / STAGING_DIR / derived, name=derived, app_db_name=str(app_db_name))
        self.app = App(derived, opts=child, app_name=derived, source=str(staged), instance=self.instance,
                       app_db_name=app_db_name, env=dict(env or {}))
        self.app_url, self.app_version = self.app.app_url, self.app.version
        self.restored_to = self.instance.restored_to
        self.register_outputs({"instance_name": derived, "app_name": derived, "app_url": self.app_url,
                               "app_version": self.app_version, "restored_to": self.restored_to})
