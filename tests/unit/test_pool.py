"""wsgiapp.pool without a server: fake connections from a fake connect(), each counting
what it was asked. The real thing, against MariaDB, is tests/test_db.py."""
import time

import MySQLdb
import pytest

from wsgiapp import pool
from wsgiapp.config import Settings
from wsgiapp.pool import Pool, Refused, ServerPool, Unavailable

LOST = 2013  # CR_SERVER_LOST: Lost connection to server during query


def lost():
    return MySQLdb.OperationalError(LOST, 'Lost connection to server during query')


class FakeConnection:
    def __init__(self, number, fail_on=()):
        self.number = number
        self.fail_on = set(fail_on)  # 'begin', 'execute', 'commit': those raise a lost connection
        self.closed = False
        self.statements, self.commits, self.rollbacks = [], 0, 0

    def _step(self, name):
        assert not self.closed, 'a closed connection was used'
        if name in self.fail_on:
            raise lost()

    def cursor(self):
        return FakeCursor(self)

    def begin(self):
        self._step('begin')

    def commit(self):
        self._step('commit')
        self.commits += 1

    def rollback(self):
        self.rollbacks += 1

    def close(self):
        self.closed = True


class FakeCursor:
    def __init__(self, con):
        self.con = con

    def execute(self, sql, args=None):
        self.con._step('execute')
        self.con.statements.append(sql)
        return 1

    def fetchall(self):
        return ((self.con.number, 'row'),)


class FakeConnect:
    """connect(**kwargs): FakeConnections numbered 1, 2...; `failing` says which ones fail where."""

    def __init__(self, failing=None):
        self.failing = failing or {}
        self.made = []

    def __call__(self, **kwargs):
        con = FakeConnection(len(self.made) + 1, self.failing.get(len(self.made) + 1, ()))
        self.made.append(con)
        return con


def settings(**changes):
    values = dict(database={'host': 'db.invalid', 'user': 'app', 'database': 'app'}, database_problem='',
                  api_token=None, pool_size=2, pool_timeout=0.05)
    values.update(changes)
    return Settings(**values)


@pytest.fixture
def connect(monkeypatch):
    fake = FakeConnect()
    monkeypatch.setattr(MySQLdb, 'connect', fake)
    return fake


# Pool


def test_a_released_connection_is_used_again_the_most_recent_first():
    connect = FakeConnect()
    connections = Pool(2, 0.05, connect)
    first, second = connections.acquire(), connections.acquire()
    assert (first.number, second.number) == (1, 2)
    connections.release(first)
    connections.release(second)
    assert connections.acquire() is second and connections.acquire() is first
    assert len(connect.made) == 2


def test_fresh_opens_a_new_connection_even_with_idle_ones():
    connect = FakeConnect()
    connections = Pool(2, 0.05, connect)
    connections.release(connections.acquire())
    assert connections.acquire(fresh=True).number == 2


def test_an_exhausted_pool_gives_up_after_its_timeout_then_recovers():
    connections = Pool(1, 0.05, FakeConnect())
    held = connections.acquire()
    started = time.monotonic()
    with pytest.raises(Unavailable, match='pool exhausted'):
        connections.acquire()
    assert 0.04 <= time.monotonic() - started < 0.5
    connections.release(held)
    assert connections.acquire() is held


def test_a_discarded_connection_is_closed_and_frees_its_place():
    connections = Pool(1, 0.05, FakeConnect())
    con = connections.acquire()
    connections.discard(con)
    assert con.closed and connections.acquire() is not con


def test_a_failed_connect_is_unavailable_and_frees_its_place():
    calls = []

    def refuse():
        calls.append(1)
        raise MySQLdb.OperationalError(2002, "Can't connect to server")
    connections = Pool(1, 0.05, refuse)
    for _ in range(2):  # the place came back: the second attempt connects again, no timeout
        with pytest.raises(Unavailable, match="2002: Can't connect"):
            connections.acquire()
    assert len(calls) == 2


def test_drop_idle_closes_every_idle_connection():
    connections = Pool(2, 0.05, FakeConnect())
    idle = [connections.acquire(), connections.acquire()]
    for con in idle:
        connections.release(con)
    connections.drop_idle()
    assert all(con.closed for con in idle)


# ServerPool: fork detection


def test_a_new_pid_gets_a_new_pool_and_the_old_one_is_left_open(connect, monkeypatch):
    server = ServerPool('primary', settings(), settings().database)
    assert server.read('SELECT 1', ()).result == ((1, 'row'),)
    parents = server.pool()
    assert server.pool() is parents
    inherited = connect.made[0]
    monkeypatch.setattr(pool.os, 'getpid', lambda: 999999)  # as in a forked uwsgi worker
    child = server.pool()
    assert child is not parents and server.pool() is child
    assert server.read('SELECT 1', ()).result == ((2, 'row'),)  # its own connection
    assert not inherited.closed  # never closed from the child: no QUIT on the parent's socket
    assert parents in server._abandoned


def test_no_database_configured_is_unavailable_with_the_reason(connect):
    server = ServerPool('primary', settings(database=None, database_problem='DATABASE_URL is not set'), None)
    with pytest.raises(Unavailable, match='DATABASE_URL is not set'):
        server.read('SELECT 1', ())
    assert connect.made == []


# ServerPool: lost connections


def test_a_read_that_lost_its_connection_drops_the_idle_ones_and_runs_once_more(connect):
    server = ServerPool('primary', settings(pool_size=3), settings().database)
    with server.connection() as a, server.connection() as b:
        pass  # two idle connections
    for con in (a, b):
        con.fail_on.add('execute')  # the server restarted: both are dead
    read = server.read('SELECT 1', ())
    assert read == (((3, 'row'),), 'primary')  # on a fresh connection
    assert a.closed and b.closed
    assert len(connect.made) == 3


def test_a_read_that_loses_the_fresh_connection_too_is_unavailable(connect):
    connect.failing = {1: {'execute'}, 2: {'execute'}}
    server = ServerPool('primary', settings(), settings().database)
    with pytest.raises(Unavailable, match=f'^{LOST}: Lost connection'):
        server.read('SELECT 1', ())
    assert len(connect.made) == 2


def test_a_replica_does_not_retry_a_lost_connection(connect):
    connect.failing = {1: {'execute'}}
    replica = ServerPool('replica1', settings(), settings().database, retry_lost=False)
    with pytest.raises(Unavailable):
        replica.read('SELECT 1', ())
    assert len(connect.made) == 1  # the primary is the better second try


def test_an_error_other_than_a_lost_connection_is_not_retried(connect, monkeypatch):
    def refuse(self, sql, args=None):
        raise MySQLdb.OperationalError(1205, 'Lock wait timeout exceeded')
    monkeypatch.setattr(FakeCursor, 'execute', refuse)
    server = ServerPool('primary', settings(), settings().database)
    with pytest.raises(Unavailable, match='1205'):
        server.read('SELECT 1', ())
    assert len(connect.made) == 1 and connect.made[0].closed


# ServerPool: transactions


def test_a_write_is_committed_and_returns_its_result_and_token(connect):
    server = ServerPool('primary', settings(), settings().database)
    written = server.transaction(lambda cursor: cursor.execute('INSERT'), lambda cursor, con: '0-1-7')
    assert written == (1, '0-1-7') and connect.made[0].commits == 1
    assert server.transaction(lambda cursor: 'done') == ('done', None)  # no token asked for
    assert len(connect.made) == 1  # the connection went back to the pool


def test_a_write_that_lost_its_connection_after_begin_is_not_retried(connect):
    connect.failing = {1: {'execute'}}
    server = ServerPool('primary', settings(), settings().database)
    runs = []

    def work(cursor):
        runs.append(1)
        cursor.execute('INSERT')
    with pytest.raises(Unavailable, match=str(LOST)):
        server.transaction(work)
    assert runs == [1] and len(connect.made) == 1  # its outcome is unknown: reported, never repeated
    assert connect.made[0].closed


def test_a_write_whose_begin_lost_the_connection_runs_on_a_fresh_one(connect):
    connect.failing = {1: {'begin'}}
    server = ServerPool('primary', settings(), settings().database)
    assert server.transaction(lambda cursor: cursor.execute('INSERT')) == (1, None)
    assert len(connect.made) == 2 and connect.made[1].commits == 1  # nothing had run: safe to retry


def test_a_refused_write_is_rolled_back_and_its_connection_kept(connect):
    server = ServerPool('primary', settings(), settings().database)

    def work(cursor):
        cursor.execute('INSERT')
        raise Refused('taken')
    with pytest.raises(Refused):
        server.transaction(work)
    con = connect.made[0]
    assert con.rollbacks == 1 and con.commits == 0 and not con.closed
    server.transaction(lambda cursor: None)
    assert len(connect.made) == 1  # used again


def test_a_lost_connection_after_the_commit_loses_only_the_token(connect):
    server = ServerPool('primary', settings(), settings().database)

    def token_of(cursor, con):
        raise lost()
    assert server.transaction(lambda cursor: 'committed', token_of) == ('committed', None)
    assert connect.made[0].commits == 1 and connect.made[0].closed
