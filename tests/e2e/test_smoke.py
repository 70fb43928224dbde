"""The toolchain works: preview, up, refresh, destroy of a trivial dynamic resource."""

from __future__ import annotations

from typing import Any

from tests.e2e.conftest import PROGRAM_HEADER

PROGRAM = PROGRAM_HEADER + """
r = Noop("hello", value=spec.get("value", "a"))
pulumi.export("length", r.length)
"""


def test_preview_up_refresh_destroy(make_project: Any) -> None:
    p = make_project(PROGRAM)
    p.set_spec({"value": "abc"})
    pv = p.preview()
    assert pv.change_summary.get("create") == 2  # stack + resource
    up = p.up()
    assert up.summary.result == "succeeded"
    assert p.outputs()["length"] == 3
    p.set_spec({"value": "abcdef"})
    assert p.preview().change_summary.get("update") == 1
    p.up()
    assert p.outputs()["length"] == 6
    ref = p.stack.refresh(on_output=lambda _: None)
    assert ref.summary.result == "succeeded"
    p.destroy()
    assert p.stack.export_stack().deployment.get("resources") in (None, [])
