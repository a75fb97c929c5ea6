"""Fixtures: a real MariaDB (a private one the suite starts, or DATABASE_URL when given)
and the application driven through WebTest with its lint on."""
import os
import shutil
import uuid
from dataclasses import replace

import MySQLdb
import pytest
import webtest

from wsgiapp import config, db
from wsgiapp.app import Application
from launcher.mariadb import MariaDB
from launcher.process import ROOT, free_port
from launcher.single import Stack

TOKEN = 's3cret-token'


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
    db.initdb(config.from_environ({'DATABASE_URL': admin_url}))
    return dict(config.parse_database_url(admin_url), charset='utf8mb4', autocommit=True)


@pytest.fixture
def sql(admin_kwargs):
    """Run SQL as the admin user, outside the application: to arrange and to check."""
    con = MySQLdb.connect(**admin_kwargs)

    def run(statement, args=None):
        cursor = con.cursor()
        cursor.execute(statement, args)
        return cursor.fetchall()
    run.connection = con
    run('TRUNCATE TABLE vc_admin')
    run('TRUNCATE TABLE idempotency_key')
    yield run
    con.close()


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


def new_base():
    """A directory of its own under var/ for a stack the tests start."""
    return ROOT / 'var' / f'test-{uuid.uuid4().hex[:8]}'


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


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason='network namespaces need root')


def needs_namespaces(cluster):
    """For a scenario that cuts a host's link or adds a host of its own: not on loopback."""
    if not cluster.network.namespaces:
        pytest.skip('needs the network namespaces (root)')


@pytest.fixture(scope='session')
def cluster():
    """make cluster's hosts (an edge, three app hosts, a primary and a replica, each a network
    namespace; without root, or with WSGIAPP_CLUSTER_NETWORK=loopback, loopback addresses),
    shared by the cluster tests and scenarios, each of which puts back what it breaks."""
    from launcher.cluster import Cluster
    namespaces = os.geteuid() == 0 and os.environ.get('WSGIAPP_CLUSTER_NETWORK') != 'loopback'
    running = Cluster(new_base() / 'cluster', apps=3, namespaces=namespaces)
    try:
        running.up()
        yield running
    finally:
        running.down()
        shutil.rmtree(running.base.parent, ignore_errors=True)
