"""Fixtures and hooks of the broker-edge suite; the helpers live in ``helpers.py`` (see there).

The directory is a package (``__init__.py``) so that this conftest and the test modules are
imported as ``edge.*`` and never shadow the conformance suite's ``conftest`` module when both
suites run in one pytest invocation."""

from __future__ import annotations

from typing import Optional

import pytest

from .helpers import CertificateAuthority, EdgeBroker, clients, conformance


@pytest.fixture
def edge_broker(tmp_path):
    """start(listeners=(), config=None, admin_token=..., http=True) -> EdgeBroker (stopped after
    the test)."""
    started = []

    def start(listeners=(), config: Optional[dict] = None, **kwargs) -> EdgeBroker:
        b = EdgeBroker(tmp_path, f"broker{len(started)}", listeners, config, **kwargs)
        started.append(b)
        return b.start()

    yield start
    for b in started:
        b.stop()


@pytest.fixture
def pki(tmp_path):
    """make(name="test-ca") -> CertificateAuthority writing into this test's directory."""
    directory = tmp_path / "pki"
    directory.mkdir()

    def make(name: str = "test-ca") -> CertificateAuthority:
        return CertificateAuthority(directory, name)

    return make


@pytest.fixture(autouse=True)
def _close_clients():
    yield
    clients.close_all()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for b in list(conformance._RUNNING):
            report.sections.append((f"broker log tail ({b.log_path})", b.tail()))

