from tests.e2e.conftest import _pulumi_on_path, make_project  # noqa: F401 - shared fixtures
