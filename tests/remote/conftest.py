import pytest

from face_migration.remote import ApiKey
from tests.remote.fake_moark import FakeMoArk

# Looks like a real token (upper-case alphanumerics); every test checks it never leaks.
SECRET = "fake-test-key-7q2wx9zk4m1p-8r3t6v0y5b2n"


@pytest.fixture
def fake():
    server = FakeMoArk().start()
    yield server
    server.stop()


@pytest.fixture
def key():
    return ApiKey(SECRET, "environment variable MOARK_API_KEY")


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    # A proxy from the environment would capture requests to 127.0.0.1.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
