"""The unit tier (make test-unit): every test here is marked `unit`, and none may start or
reach a server. tests/conftest.py's server fixtures are replaced by ones that fail, and a
program of MariaDB, nginx or uwsgi refuses to start while a unit test runs."""
import os
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SERVERS = frozenset({'mariadbd', 'mysqld', 'mariadb-install-db', 'mysql_install_db', 'nginx', 'uwsgi'})


def pytest_collection_modifyitems(items):
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.unit)


def _refuse(fixture):
    pytest.fail(f'a unit test asked for the {fixture!r} fixture, which starts a server; '
                'put it outside tests/unit', pytrace=False)


@pytest.fixture
def mariadb():
    _refuse('mariadb')


@pytest.fixture
def stack():
    _refuse('stack')


@pytest.fixture
def cluster():
    _refuse('cluster')


class _NoServerPopen(subprocess.Popen):
    def __init__(self, args, *rest, **kwargs):
        argv = os.fsdecode(args).split() if isinstance(args, (str, bytes, os.PathLike)) else args
        programs = {os.path.basename(os.fsdecode(arg)) for arg in argv}  # also behind `ip netns exec`
        if programs & SERVERS:
            raise AssertionError(f'a unit test tried to start a server: {sorted(programs & SERVERS)}')
        super().__init__(args, *rest, **kwargs)


@pytest.fixture(autouse=True)
def _no_server_processes(monkeypatch):
    monkeypatch.setattr(subprocess, 'Popen', _NoServerPopen)
