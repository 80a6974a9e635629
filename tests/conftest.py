"""Options shared by all tests."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Everything under tests/integration needs the control plane; marking by folder lets
    # `pytest -m "not integration"` run the unit tests alone in seconds. Tests under
    # tests/live call real providers and skip unless their keys are set (`pytest -m live`).
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.integration)
        if "live" in item.path.parts:
            item.add_marker(pytest.mark.live)
