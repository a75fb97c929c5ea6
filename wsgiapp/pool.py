"""Connections to a database server: the arguments MySQLdb.connect() gets, the Pool of one
process, and ServerPool, which gives each process (each uwsgi worker) a pool of its own.

Why, in short (the manual's "Design notes" page, docs/design.rst, says it at length):
nothing connects at import, since uwsgi forks its workers from the master after it; a
connection serves one thread at a time; there is no ping on checkout, so a dead connection
is found when a statement fails, and only a statement whose outcome is known runs again.
"""
import os
import queue
import threading
import time
from contextlib import contextmanager, suppress
from typing import Any, NamedTuple, Optional

import MySQLdb

from wsgiapp import metrics
from wsgiapp.metrics import sample

# Server gone away, lost connection during query, killed, closed for inactivity.
CONNECTION_LOST = {2006, 2013, 2055, 1927, 4031}
# Errors that mean "the database cannot serve this now", as opposed to a bug in a query.
UNAVAILABLE = (MySQLdb.OperationalError, MySQLdb.InterfaceError, MySQLdb.InternalError)


class Unavailable(Exception):
    """The database cannot be used now: unset, unreachable, timed out or pool exhausted."""


class Refused(Exception):
    """The database said no to this request (a name taken, a key in use...): raised in a
    transaction, it is rolled back and its connection, which is fine, is used again."""


class Read(NamedTuple):
    """What a read found, and the name of the server that answered ('primary', 'replica1'...)."""
    result: Any
    source: str


class Written(NamedTuple):
    """What a write returned, and the consistency token of its commit (None without one)."""
    result: Any
    token: Optional[str]


def connect_kwargs(settings, server=None, **overrides):
    """Keyword arguments for MySQLdb.connect() to `server` (the primary by default): utf8mb4,
    UTC timestamps, autocommit; its URL's TLS as config parsed it (ssl={'ca', 'cert', 'key'}
    and ssl_mode, which mysqlclient turns into MariaDB Connector/C's TLS options)."""
    kwargs = dict(settings.database if server is None else server, charset='utf8mb4', autocommit=True,
                  connect_timeout=settings.connect_timeout,
                  read_timeout=settings.read_timeout, write_timeout=settings.read_timeout,
                  init_command="SET time_zone = '+00:00', innodb_lock_wait_timeout = 5")
    kwargs.update(overrides)
    return kwargs


def describe(error):
    """A one-line reason for the log: MySQL's own message names user and host, never the password."""
    return ': '.join(str(arg) for arg in error.args) or type(error).__name__


def connection_lost(error):
    return bool(error.args) and error.args[0] in CONNECTION_LOST


class Pool:
    """The connections of one process: at most `size` open, each used by one thread at a time.

    A request takes one of `size` tokens from a queue.SimpleQueue (written in C: far
    cheaper than a threading.Semaphore), then the most recently used idle connection, or
    opens one. list.append and list.pop are atomic, so the idle list needs no lock."""

    def __init__(self, size, timeout, connect, name='primary'):
        self._connect = connect
        # The metrics of this pool, by the name of its server (wsgiapp/metrics.py).
        self._in_use = sample('wsgiapp_pool_connections_in_use', server=name)
        self._waits = sample('wsgiapp_pool_waits_total', server=name)
        self._wait_seconds = sample('wsgiapp_pool_wait_seconds_total', server=name)
        self._timeouts = sample('wsgiapp_pool_timeouts_total', server=name)
        self._errors = {kind: sample('wsgiapp_database_errors_total', server=name, kind=kind)
                        for kind in ('connect', 'lost', 'other')}
        self._timeout = timeout
        self._tokens = queue.SimpleQueue()
        for _ in range(size):
            self._tokens.put(True)
        self._idle = []

    def acquire(self, fresh=False):
        """A connection: an idle one, or with `fresh` (or none idle) a new one."""
        recorder = metrics.recorder
        try:
            self._tokens.get(block=False)
        except queue.Empty:  # every connection is taken: wait, and count the wait
            recorder.add(self._waits)
            started = time.perf_counter()
            try:
                self._tokens.get(timeout=self._timeout)
            except queue.Empty:
                recorder.add(self._timeouts)
                raise Unavailable('no database connection became free in time (pool exhausted)') from None
            finally:
                recorder.add(self._wait_seconds, time.perf_counter() - started)
        con = None
        if not fresh:
            with suppress(IndexError):
                con = self._idle.pop()
        if con is None:
            try:
                con = self._connect()
            except BaseException as error:
                self._tokens.put(True)
                if isinstance(error, UNAVAILABLE):
                    recorder.add(self._errors['connect'])
                    raise Unavailable(describe(error)) from error
                raise
        recorder.add(self._in_use)
        return con

    def release(self, con):
        metrics.recorder.add(self._in_use, -1.0)
        self._idle.append(con)
        self._tokens.put(True)

    def discard(self, con):
        metrics.recorder.add(self._in_use, -1.0)
        with suppress(Exception):
            con.close()
        self._tokens.put(True)

    def failed(self, error):
        """Count a statement's failure: its connection lost, or another database error."""
        metrics.recorder.add(self._errors['lost' if connection_lost(error) else 'other'])

    def drop_idle(self):
        """Close every idle connection: after a server restart none of them works."""
        while True:
            try:
                con = self._idle.pop()
            except IndexError:
                return
            with suppress(Exception):
                con.close()


class ServerPool:
    """One database server, named `name` ('primary', 'replica1'...) and reached with
    `connect_args` (settings.database or one of settings.replica_databases), and this
    process's Pool of connections to it: built anew when os.getpid() changes (uwsgi forks
    with a raw fork(), so os.register_at_fork hooks never run there). The parent's pool is
    kept referenced, never closed, so the child never sends QUIT on its parent's sockets."""

    def __init__(self, name, settings, connect_args, retry_lost=True, timeouts=None):
        self.name, self.settings, self.connect_args = name, settings, connect_args
        self._reads = sample('wsgiapp_reads_total', server=name)
        self.timeouts = timeouts or {}  # connect() overrides: a replica's reads give up sooner
        # Whether a statement that lost its connection runs once more on a fresh one: not on
        # a replica, where the primary is the better second try.
        self.retry_lost = retry_lost
        self._lock = threading.Lock()
        self._pid = None
        self._pool = None
        self._abandoned = []  # pools inherited across fork(): kept alive, never closed

    def pool(self):
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    if self.connect_args is None:
                        raise Unavailable(self.settings.database_problem)
                    if self._pool is not None:
                        self._abandoned.append(self._pool)
                    kwargs = connect_kwargs(self.settings, self.connect_args, **self.timeouts)
                    self._pool = Pool(self.settings.pool_size, self.settings.pool_timeout,
                                      lambda: MySQLdb.connect(**kwargs), self.name)
                    self._pid = os.getpid()
        return self._pool

    @contextmanager
    def connection(self):
        """A connection of the pool, for the block: kept if the block ends well, else closed."""
        pool = self.pool()
        con = pool.acquire()
        try:
            yield con
        except BaseException:
            pool.discard(con)
            raise
        pool.release(con)

    def checkout(self, first_step):
        """(pool, connection, what first_step(connection) returned). When the step fails
        because the connection was dead, the idle ones go too (a restart kills them all) and,
        with retry_lost, it runs once more on a fresh connection: nothing has run yet."""
        pool = self.pool()
        fresh = False
        while True:
            con = pool.acquire(fresh)
            try:
                return pool, con, first_step(con)
            except UNAVAILABLE as error:
                pool.discard(con)
                pool.failed(error)
                lost = connection_lost(error)
                if lost:
                    pool.drop_idle()
                if fresh or not lost or not self.retry_lost:
                    raise Unavailable(describe(error)) from error
            except BaseException:
                pool.discard(con)
                raise
            fresh = True  # the connection was dead: once more, on a new one

    def read(self, sql, args, position=None, wait=0.0):
        """Read(rows of one query, this server's name); with a GTID `position`, only once this
        server has applied it (MASTER_GTID_WAIT), else None: not caught up within `wait` s."""
        def run(con):
            cursor = con.cursor()
            if position is not None:
                cursor.execute('SELECT MASTER_GTID_WAIT(%s, %s)', (position, wait))
                if cursor.fetchone()[0] != 0:  # -1: timed out; NULL: not a position it knows
                    return None
            cursor.execute(sql, args)
            return cursor.fetchall()
        pool, con, rows = self.checkout(run)
        pool.release(con)
        if rows is None:
            return None
        metrics.recorder.add(self._reads)
        return Read(rows, self.name)

    def transaction(self, work, token_of=None):
        """work(cursor) in one transaction (BEGIN ... COMMIT), rolled back if it raises:
        Written(what work returned, token_of(cursor, con) after the commit, else None).

        Only a failed BEGIN is tried again (checkout): once work has run, the outcome of a
        lost connection is unknown, so it is reported (Unavailable, a 503), never repeated."""
        pool, con, _ = self.checkout(lambda con: con.begin())
        try:
            cursor = con.cursor()
            result = work(cursor)
            con.commit()
        except (MySQLdb.IntegrityError, Refused):  # refused; the connection is fine
            try:
                con.rollback()
            except UNAVAILABLE:
                pool.discard(con)
            else:
                pool.release(con)
            raise
        except UNAVAILABLE as error:
            pool.discard(con)
            pool.failed(error)
            raise Unavailable(describe(error)) from error
        except BaseException:
            pool.discard(con)
            raise
        token = None
        if token_of is not None:
            try:
                token = token_of(cursor, con)
            except UNAVAILABLE:  # committed all the same: the answer says so, without a token
                pool.discard(con)
                return Written(result, None)
        pool.release(con)
        return Written(result, token)
