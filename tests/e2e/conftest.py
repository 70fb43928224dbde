"""Real pulumi CLI through the Automation API, on a file:// backend with a throwaway passphrase."""

from __future__ import annotations

import functools
import gzip
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from pulumi import automation as auto

from tests.conftest import _short_tmpdir, cleanup_data_dir, kill_servers_under

PASSPHRASE = "e2e-throwaway-passphrase"
REPO = Path(__file__).resolve().parent.parent.parent
VENV = Path(sys.prefix) if (Path(sys.prefix) / "pyvenv.cfg").exists() else None

PROGRAM_HEADER = """
import json
import pulumi
import pulumi_dbos as dbos
from tests.support.noop import Noop
cfg = pulumi.Config()
spec = json.loads(cfg.get("spec") or "{}")
"""

# spec = {"instances": {key: kwargs}, "restores": {key: kwargs}}: an instance's password is the secret config
# `pw_<key>`; a restore's `source` is a resource key of the program (the resource is passed, so its password
# is the source's) or else a plain instance name; `pw` names a secret config key for an explicit password.
INSTANCES_AND_RESTORES = PROGRAM_HEADER + """
insts = {}
for key, s in spec.get("instances", {}).items():
    insts[key] = dbos.DatabaseInstance(key, password=cfg.require_secret("pw_" + key), **s)
for key, s in spec.get("restores", {}).items():
    s = dict(s)
    src = s.pop("source")
    if "pw" in s:
        s["password"] = cfg.require_secret(s.pop("pw"))
    insts[key] = dbos.RestoredInstance(key, source=insts.get(src, src), **s)
"""

INSTANCES_PROGRAM = PROGRAM_HEADER + """
out = {}
for key, s in spec.get("instances", {}).items():
    pw = cfg.require_secret("pw_" + key)
    out[key] = dbos.DatabaseInstance(key, password=pw, **s)
pulumi.export("urls", pulumi.Output.secret({k: v.database_url for k, v in out.items()}))
pulumi.export("status", {k: v.status for k, v in out.items()})
pulumi.export("ports", {k: v.port for k, v in out.items()})
"""


@functools.cache
def pulumi_command() -> auto.PulumiCommand:
    """One ``PulumiCommand`` per test process: constructing one runs ``pulumi version`` (~0.3 s of CPU)."""
    return auto.PulumiCommand()


class _LazyOutputs(Mapping[str, auto.OutputValue]):
    """Stack outputs read from the CLI on first access, not before."""

    def __init__(self, fetch: Callable[[], Mapping[str, auto.OutputValue]]) -> None:
        self._fetch: Callable[[], Mapping[str, auto.OutputValue]] | None = fetch
        self._got: Mapping[str, auto.OutputValue] = {}

    def _values(self) -> Mapping[str, auto.OutputValue]:
        if self._fetch is not None:
            self._got, self._fetch = self._fetch(), None
        return self._got

    def __getitem__(self, key: str) -> auto.OutputValue:
        return self._values()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values())

    def __len__(self) -> int:
        return len(self._values())


class _LazySummary:
    """An operation's ``UpdateSummary`` read from the CLI on first attribute access."""

    def __init__(self, fetch: Callable[[], Any]) -> None:
        self._fetch, self._got = fetch, None

    def __getattr__(self, name: str) -> Any:
        if self._got is None:
            self._got = self._fetch()
        return getattr(self._got, name)


class LeanStack(auto.Stack):
    """``auto.Stack`` whose up/refresh/destroy results read their outputs and summary only when a test looks.

    After every up the Automation API runs ``pulumi stack output`` twice and ``pulumi stack history`` once
    (after refresh and destroy, the history), ~0.3 s of CPU each, for values most tests never read. Here
    they are read on first access, which every test that reads them does right after the operation."""

    def outputs(self) -> Any:
        return _LazyOutputs(lambda: auto.Stack.outputs(self))

    def info(self, show_secrets: bool = True) -> Any:
        return _LazySummary(lambda: auto.Stack.info(self, show_secrets))


class Project:
    """A throwaway Pulumi project + stack in a temp dir."""

    def __init__(self, root: Path, program: str, name: str = "e2e") -> None:
        self.root = root
        self.name = name
        self._reads: dict[str, tuple[tuple[str, int, int], str]] = {}
        # secret config key -> (the value this object set, its ciphertext in the stack's config file then)
        self._secrets: dict[str, tuple[str, Any]] = {}
        self.work = root / "proj"
        self.data_dir = root / "d"
        self.work.mkdir(parents=True)
        (root / "backend").mkdir()
        runtime: dict[str, Any] = {"name": "python"}
        if VENV is not None:
            runtime["options"] = {"virtualenv": str(VENV)}
        (self.work / "Pulumi.yaml").write_text(json.dumps({"name": name, "runtime": runtime}))
        (self.work / "__main__.py").write_text(textwrap.dedent(program))
        env = {
            "PULUMI_BACKEND_URL": f"file://{root / 'backend'}",
            "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE,
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
            "PULUMI_HOME": str(root / "pulumi-home"),
            # programs and the provider process import tests.support.noop
            "PYTHONPATH": str(REPO),
        }
        self.ws_opts = auto.LocalWorkspaceOptions(env_vars=env, work_dir=str(self.work),
                                                  pulumi_command=pulumi_command())
        # `pulumi stack init` only (create_or_select would try a select first: one more CLI call)
        self.stack = auto.Stack.create("test", auto.LocalWorkspace(**vars(self.ws_opts)))
        self.stack.__class__ = LeanStack
        # a plain value goes in the stack's config file, as a user writes it (no CLI call)
        with (self.work / "Pulumi.test.yaml").open("a") as f:
            f.write(f"config:\n  dbos:dataDir: {json.dumps(str(self.data_dir))}\n")

    def set_spec(self, spec: dict[str, Any], passwords: dict[str, str] | None = None) -> None:
        """The program's spec, and the instances' passwords as secrets. When every password is already set to
        that value (as this object set it, and unchanged in the file since), the spec alone is written in
        the stack's config file, as a user edits it; otherwise one pulumi CLI call sets them all."""
        secrets = {f"pw_{k}": v for k, v in (passwords or {}).items()}
        conf_file = self.work / "Pulumi.test.yaml"
        whole = yaml.safe_load(conf_file.read_text()) or {}
        conf = whole.setdefault("config", {})
        if all(self._secrets.get(k) == (v, conf.get(f"{self.name}:{k}")) for k, v in secrets.items()):
            conf[f"{self.name}:spec"] = json.dumps(spec)
            conf_file.write_text(yaml.safe_dump(whole, sort_keys=False))
            return
        values = {"spec": auto.ConfigValue(json.dumps(spec))}
        values.update({k: auto.ConfigValue(v, secret=True) for k, v in secrets.items()})
        self.stack.set_all_config(values)  # one pulumi CLI call (each costs ~0.3 s of CPU), not one per value
        conf = (yaml.safe_load(conf_file.read_text()) or {}).get("config") or {}
        self._secrets.update({k: (v, conf.get(f"{self.name}:{k}")) for k, v in secrets.items()})

    def set_secret(self, key: str, value: str) -> None:
        """Set a secret config value through stdin (the Automation API would put it in argv)."""
        env = {**os.environ, **(self.ws_opts.env_vars or {})}
        subprocess.run(["pulumi", "config", "set", "--secret", key, "--stack", "test", "--cwd", str(self.work)],  # noqa: S603,S607
                       input=value, capture_output=True, text=True, env=env, timeout=120, check=True)

    def up(self, **kw: Any) -> auto.UpResult:
        return self.stack.up(on_output=lambda _: None, **kw)

    def preview(self, **kw: Any) -> auto.PreviewResult:
        return self.stack.preview(on_output=lambda _: None, diff=True, **kw)

    def _checkpoint_version(self) -> tuple[str, int, int] | None:
        """What identifies the state now: the ``file://`` backend's checkpoint file, its mtime and size (every
        operation that writes state rewrites it)."""
        stacks = self.root / "backend" / ".pulumi" / "stacks"
        found = [*stacks.glob("*/test.json"), *stacks.glob("*/test.json.gz")]
        if len(found) != 1:
            return None
        st = found[0].stat()
        return str(found[0]), st.st_mtime_ns, st.st_size

    def _cli_read(self, key: str, args: list[str]) -> str:
        """stdout of a read-only pulumi CLI command, run once per state (``_checkpoint_version``): tests read
        the outputs and resources again and again between two operations (~0.3 s of CPU a call)."""
        version = self._checkpoint_version()
        cached = self._reads.get(key)
        if version is not None and cached is not None and cached[0] == version:
            return cached[1]
        env = {**os.environ, **(self.ws_opts.env_vars or {})}
        out = subprocess.run(["pulumi", *args, "--stack", "test", "--cwd", str(self.work)],  # noqa: S603,S607
                             capture_output=True, text=True, env=env, timeout=120, check=True).stdout
        if version is not None:
            self._reads[key] = (version, out)
        return out

    def outputs(self) -> dict[str, Any]:
        """The stack outputs, secrets in clear (one CLI call per state; the Automation API's ``outputs()`` makes
        two each time)."""
        return dict(json.loads(self._cli_read("outputs", ["stack", "output", "--json", "--show-secrets"])))

    def export_text(self) -> str:
        """`pulumi stack export` (without --show-secrets) plus every file the backend stored."""
        env = {**os.environ, **(self.ws_opts.env_vars or {})}
        cp = subprocess.run(["pulumi", "stack", "export", "--stack", "test", "--cwd", str(self.work)],  # noqa: S603,S607
                            capture_output=True, text=True, env=env, timeout=120, check=True)
        files = [f.read_text(errors="replace") for f in (self.root / "backend").rglob("*") if f.is_file()]
        return cp.stdout + "\n".join(files)

    def resources(self) -> list[dict[str, Any]]:
        """The stack's resources as its state holds them (what ``pulumi stack export`` prints as
        ``deployment.resources``, secrets still encrypted), read from the ``file://`` backend's checkpoint
        rather than through the CLI (~0.3 s of CPU a call, and some tests read it around every step). Secrets'
        ciphertexts are the checkpoint's: an update encrypts them anew, so compare these across previews only."""
        stacks = self.root / "backend" / ".pulumi" / "stacks"
        found = [f for f in (*stacks.glob("*/test.json"), *stacks.glob("*/test.json.gz"))]
        assert len(found) == 1, f"one checkpoint of stack test expected under {stacks}: {found}"
        raw = found[0].read_bytes()
        doc = json.loads(gzip.decompress(raw) if found[0].suffix == ".gz" else raw)
        return list((doc.get("checkpoint") or {}).get("latest", {}).get("resources") or [])

    def resource(self, name: str) -> dict[str, Any] | None:
        """Outputs of resource ``name`` as the state holds them (refresh updates these, not stack outputs), through
        ``pulumi stack export --show-secrets`` (what the Automation API's ``export_stack`` runs): secrets in clear,
        so outputs compare equal across an update that does not change them, while the checkpoint's ciphertexts
        (``resources``) are made anew by every update."""
        deployment = json.loads(self._cli_read("export", ["stack", "export", "--show-secrets"])).get("deployment") or {}
        for r in deployment.get("resources") or []:
            if r["urn"].endswith("::" + name):
                return dict(r.get("outputs") or {})
        return None

    def destroy(self) -> None:
        self.stack.destroy(on_output=lambda _: None)


@pytest.fixture
def make_project() -> Iterator[Any]:
    roots: list[Path] = []

    def make(program: str = INSTANCES_PROGRAM) -> Project:
        root = _short_tmpdir("pe")
        roots.append(root)
        return Project(root, program, name=root.name)

    try:
        yield make
    finally:
        for root in roots:
            cleanup_data_dir(root / "d")
            kill_servers_under(root)  # anything still working in the project (a provider of a killed pulumi)
            shutil.rmtree(root, ignore_errors=True)


def step_ops(preview: auto.PreviewResult) -> dict[str, int]:
    return {str(k): v for k, v in preview.change_summary.items()}


@pytest.fixture(autouse=True)
def _pulumi_on_path() -> None:
    if shutil.which("pulumi") is None:
        pytest.fail("the pulumi CLI is not on PATH: run the tests through `make test` (scripts/setup.sh)")
    os.environ.setdefault("PULUMI_SKIP_UPDATE_CHECK", "true")
