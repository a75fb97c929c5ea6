"""Fixtures: a real MariaDB (a private one the suite starts, or DATABASE_URL when given),
the application driven through WebTest with its lint on, and the stacks and cluster the
end-to-end tests and the fault suite share. What test modules import lives in tests/helpers.

A test is also given the markers of what its fixtures start (a `stack` is MariaDB, uwsgi and
nginx), so `-m 'not mariadb'` leaves out every test that gets a server from a fixture; a test
that starts one itself says so in its module's pytestmark."""
import os
import shutil
from dataclasses import replace

import pytest
import webtest

from launcher.mariadb import MariaDB
from launcher.process import free_port
from launcher.single import Stack
from tests.helpers.servers import TOKEN, admin_session, new_base
from wsgiapp import config, schema
from wsgiapp.app import Application

# Fixture -> the markers of what it starts (setup.cfg registers them).
STARTS = {'stack': ('e2e', 'uwsgi', 'mariadb'), 'cluster': ('e2e', 'uwsgi', 'mariadb'),
          'mariadb': ('mariadb',)}


def pytest_collection_modifyitems(items):
    for item in items:
        for fixture, markers in STARTS.items():
            if fixture in getattr(item, 'fixturenames', ()):
                for marker in markers:
                    if item.get_closest_marker(marker) is None:
                        item.add_marker(marker)


@pytest.fixture(scope='session')
def mariadb(tmp_path_factory):
    """The private server, or None when the suite runs against a given DATABASE_URL."""
    if os.environ.get('DATABASE_URL'):
        yield None
        return
    server = MariaDB(tmp_path_factory.mktemp('db'))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope='session')
def database_url(mariadb):
    """The application's own URL: a user with SELECT, INSERT, UPDATE, DELETE only."""
    return mariadb.url() if mariadb else os.environ['DATABASE_URL']


@pytest.fixture(scope='session')
def admin_url(mariadb):
    """A user allowed to create and truncate the table."""
    return mariadb.admin_url() if mariadb else os.environ['DATABASE_URL']


@pytest.fixture(scope='session')
def admin_kwargs(admin_url):
    schema.initdb(config.from_environ({'DATABASE_URL': admin_url}))
    return dict(config.parse_database_url(admin_url), charset='utf8mb4', autocommit=True)


@pytest.fixture
def sql(admin_kwargs):
    """Run SQL as the admin user, outside the application: to arrange and to check."""
    session = admin_session(admin_kwargs)  # one session: sql('LOCK TABLES ...') holds until unlocked
    session('TRUNCATE TABLE vc_admin')
    session('TRUNCATE TABLE idempotency_key')
    session('TRUNCATE TABLE failed_token')  # the wrong-token count outlives a request
    yield session
    session.close()


@pytest.fixture
def settings(database_url):
    return config.from_environ({'DATABASE_URL': database_url, 'WSGIAPP_API_TOKEN': TOKEN})


@pytest.fixture
def make_app(settings):
    """make_app(**changes): a TestApp over an Application built with changed settings."""
    apps = []

    def make(**changes):
        application = Application(replace(settings, **changes))
        apps.append(application)
        return webtest.TestApp(application, lint=True)
    return make


@pytest.fixture
def app(make_app, sql):
    """The application over an empty vc_admin."""
    return make_app()


@pytest.fixture
def auth():
    return {'Authorization': f'Bearer {TOKEN}'}


@pytest.fixture
def add(sql):
    """add(name, email=None) -> id: a row inserted the seed's way, outside the application."""
    def insert(name, email=None):
        sql('INSERT INTO vc_admin (name, email) VALUES (%s, %s)', (name, email or 'someone@example.com'))
        return sql('SELECT LAST_INSERT_ID()')[0][0]
    return insert


@pytest.fixture(scope='module')
def stack():
    """MariaDB, uwsgi and nginx, as `make run` starts them, on free ports: one per test module."""
    running = Stack(new_base(), free_port())
    try:
        running.up()
        yield running
    finally:
        running.down()
        shutil.rmtree(running.base, ignore_errors=True)


@pytest.fixture(scope='session')
def cluster(tmp_path_factory):
    """make cluster's hosts: an edge, three app hosts, a primary and a replica, each a booted
    Debian 12 server provisioned by deploy/site.yml (launcher/cluster.py), shared by the
    playbook's tests, the cluster tests and the fault scenarios, each of which puts back what
    it breaks. `first_run` is the provisioning's (output, recap)."""
    from launcher.cluster import Cluster, recap
    from tests.helpers.fleet import needs_a_fleet
    needs_a_fleet()
    running = Cluster(tmp_path_factory.mktemp('cluster'), apps=3, replicas=1)
    try:
        running.up()
        running.first_run = running.last_run.stdout, recap(running.last_run.stdout)
        yield running
    finally:
        running.down()


@pytest.fixture(scope='session')
def cluster_monitor(cluster):
    """make cluster-monitor on the shared cluster: Prometheus on this machine scraping every
    host's exporters (deploy/roles/monitoring), for the scenarios that check their alerts."""
    from launcher.monitor import ClusterMonitor
    running = ClusterMonitor.of(cluster)
    try:
        running.up()
        yield running
    finally:
        running.down()


@pytest.fixture(scope='module')
def pair(tmp_path_factory):
    """A MariaDB primary and a replica following it by GTID on 127.0.0.1 TCP, as `make
    cluster` runs them (launcher.replication.local_pair): one pair per test module."""
    from launcher.replication import local_pair
    primary, replica = local_pair(tmp_path_factory.mktemp('replication'))
    try:
        yield primary, replica
    finally:
        replica.stop()
        primary.stop()


@pytest.fixture
def replicated_app(pair):
    """build(**environ) -> a TestApp over the pair's primary and replica, both running and
    caught up (the replica following again if a test stopped it)."""
    from launcher.replication import caught_up
    primary, replica = pair
    primary.start()
    replica.start()
    replica.sql('START SLAVE')
    caught_up(primary, replica)

    def build(**environ):
        settings = config.from_environ({'DATABASE_URL': primary.url(tcp=True), 'WSGIAPP_API_TOKEN': TOKEN,
                                        'DATABASE_REPLICA_URL': replica.url(tcp=True), **environ})
        return webtest.TestApp(Application(settings), lint=True)
    return build
