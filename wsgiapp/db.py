"""The data layer: a per-process pool of MySQL connections and the queries on vc_admin.

Why the pool is built the way it is:
- uwsgi imports this module in its master and forks the workers from it. A connection
  opened before the fork would be shared by every worker, so nothing connects at import,
  and each process builds its own pool the first time it notices a new pid (uwsgi forks
  with a raw fork(), so os.register_at_fork hooks never run there). The parent's pool is
  kept referenced, never closed, so the child never sends QUIT on its parent's sockets.
- mysqlclient's threadsafety is 1: DBUtils' PooledDB hands each thread a dedicated
  connection. A semaphore in front of it bounds the wait for one (PooledDB alone would
  block forever), so an exhausted pool is a 503, not a hang.
- No ping on checkout and no rollback on return (DBUtils' defaults): a healthy request
  costs only its own queries. Connections run in autocommit, so every read sees every
  write committed before it, and no REPEATABLE READ snapshot outlives a statement.
- A dead connection is found when a query fails: DBUtils reconnects and runs a read once
  more on a fresh connection. Writes run inside begin()/commit(), where DBUtils never
  re-executes, so a write whose outcome is unknown is reported (503), never repeated.
"""
import os
import threading
from contextlib import contextmanager, suppress
from datetime import timezone
from importlib.resources import files

import MySQLdb
from dbutils.pooled_db import PooledDB

COLUMNS = 'id, name, email, created_at'
DUPLICATE_KEY = 1062
# Errors that mean "the database cannot serve this now", as opposed to a bug in a query.
UNAVAILABLE = (MySQLdb.OperationalError, MySQLdb.InterfaceError, MySQLdb.InternalError)


SAMPLE_ADMINS = [
    ('alice', 'alice@example.com'),
    ('张三', 'zhangsan@example.cn'),
    ('José Álvarez', 'jose@example.es'),
    ('Zoë 🚀', 'zoe@example.org'),
    ("O'Brien <b>&amp;</b>", 'obrien@example.ie'),
]


class Unavailable(Exception):
    """The database cannot be used now: unset, unreachable, timed out or pool exhausted."""


class DuplicateName(Exception):
    """The name is taken."""


def as_item(row):
    admin_id, name, email, created_at = row
    return {'id': admin_id, 'name': name, 'email': email,
            'created_at': created_at.replace(tzinfo=timezone.utc).isoformat()}


def connect_kwargs(settings, **overrides):
    """Keyword arguments for MySQLdb.connect(): utf8mb4, UTC timestamps, autocommit."""
    kwargs = dict(settings.database, charset='utf8mb4', autocommit=True,
                  connect_timeout=settings.connect_timeout,
                  read_timeout=settings.read_timeout, write_timeout=settings.read_timeout,
                  init_command="SET time_zone = '+00:00', innodb_lock_wait_timeout = 5")
    kwargs.update(overrides)
    return kwargs


def describe(error):
    """A one-line reason for the log: MySQL's own message names user and host, never the password."""
    return ': '.join(str(arg) for arg in error.args) or type(error).__name__


class Database:
    def __init__(self, settings):
        self.settings = settings
        self._lock = threading.Lock()
        self._pid = None
        self._pool = None
        self._slots = None
        self._abandoned = []  # pools inherited across fork(): kept alive, never closed

    def _pool_here(self):
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    if self.settings.database is None:
                        raise Unavailable(self.settings.database_problem)
                    if self._pool is not None:
                        self._abandoned.append(self._pool)
                    size = self.settings.pool_size
                    self._pool = PooledDB(
                        MySQLdb, mincached=0, maxcached=size, maxshared=0, maxconnections=size,
                        blocking=True, reset=False, ping=0, **connect_kwargs(self.settings))
                    self._slots = threading.BoundedSemaphore(size)
                    self._pid = os.getpid()
        return self._pool, self._slots

    @contextmanager
    def connection(self):
        pool, slots = self._pool_here()
        if not slots.acquire(timeout=self.settings.pool_timeout):
            raise Unavailable('no database connection became free in time (pool exhausted)')
        try:
            con = pool.dedicated_connection()
            try:
                yield con
            finally:
                con.close()  # back to the pool
        except UNAVAILABLE as error:
            raise Unavailable(describe(error)) from error
        finally:
            slots.release()

    @contextmanager
    def transaction(self):
        """One transaction: committed when the block ends, rolled back if it raises."""
        with self.connection() as con:
            try:
                con.begin()
            except UNAVAILABLE:
                # BEGIN failed, so nothing ran: the connection is dead (a server restart,
                # KILL). rollback() makes DBUtils open a fresh one; BEGIN again on it.
                with suppress(*UNAVAILABLE):
                    con.rollback()
                con.begin()
            try:
                cursor = con.cursor()
                yield cursor
                cursor.close()
                con.commit()
            except BaseException:
                with suppress(Exception):
                    con.rollback()
                raise

    def _read(self, sql, args):
        with self.connection() as con:
            cursor = con.cursor()
            cursor.execute(sql, args)
            rows = cursor.fetchall()
            cursor.close()
            return rows

    # The queries. Always parameterized.

    def list_admins(self, after, limit):
        """Up to `limit` rows with id > after: a keyset page, an index range scan at any depth."""
        return self._read(f'SELECT {COLUMNS} FROM vc_admin WHERE id > %s ORDER BY id LIMIT %s',
                          (after, limit))

    def get_admin(self, admin_id):
        rows = self._read(f'SELECT {COLUMNS} FROM vc_admin WHERE id = %s', (admin_id,))
        return rows[0] if rows else None

    def create_admin(self, name, email):
        try:
            with self.transaction() as cursor:
                cursor.execute('INSERT INTO vc_admin (name, email) VALUES (%s, %s)', (name, email))
                cursor.execute(f'SELECT {COLUMNS} FROM vc_admin WHERE id = LAST_INSERT_ID()')
                return cursor.fetchone()
        except MySQLdb.IntegrityError as error:
            if error.args[0] == DUPLICATE_KEY:
                raise DuplicateName(name) from None
            raise

    def update_admin(self, admin_id, changes):
        """Apply {'name': ..., 'email': ...} to one row; None when there is no such row."""
        assignments = ', '.join(f'{column} = %s' for column in changes)  # keys are validated names
        try:
            with self.transaction() as cursor:
                if not cursor.execute('SELECT id FROM vc_admin WHERE id = %s FOR UPDATE', (admin_id,)):
                    return None
                cursor.execute(f'UPDATE vc_admin SET {assignments} WHERE id = %s',
                               (*changes.values(), admin_id))
                cursor.execute(f'SELECT {COLUMNS} FROM vc_admin WHERE id = %s', (admin_id,))
                return cursor.fetchone()
        except MySQLdb.IntegrityError as error:
            if error.args[0] == DUPLICATE_KEY:
                raise DuplicateName(changes.get('name')) from None
            raise

    def delete_admin(self, admin_id):
        with self.transaction() as cursor:
            return cursor.execute('DELETE FROM vc_admin WHERE id = %s', (admin_id,)) > 0

    def ping(self, timeout=1):
        """Ready means: a fresh connection answers within `timeout` seconds and the table is there."""
        if self.settings.database is None:
            raise Unavailable(self.settings.database_problem)
        try:
            con = MySQLdb.connect(**connect_kwargs(self.settings, connect_timeout=timeout,
                                                   read_timeout=timeout, write_timeout=timeout))
            try:
                con.query('SELECT 1 FROM vc_admin LIMIT 0')
                con.store_result()
            finally:
                con.close()
        except (MySQLdb.Error) as error:
            raise Unavailable(describe(error)) from error


def initdb(settings, sample=False):
    """Create vc_admin from schema.sql if it is missing; with `sample`, add SAMPLE_ADMINS once.
    Returns the number of rows."""
    if settings.database is None:
        raise Unavailable(settings.database_problem)
    schema = files('wsgiapp').joinpath('schema.sql').read_text(encoding='utf-8')
    schema = '\n'.join(line for line in schema.splitlines() if not line.lstrip().startswith('--'))
    try:
        con = MySQLdb.connect(**connect_kwargs(settings))
        try:
            cursor = con.cursor()
            for statement in filter(str.strip, schema.split(';')):
                cursor.execute(statement)
            if sample:
                cursor.executemany('INSERT IGNORE INTO vc_admin (name, email) VALUES (%s, %s)', SAMPLE_ADMINS)
            cursor.execute('SELECT COUNT(*) FROM vc_admin')
            return cursor.fetchone()[0]
        finally:
            con.close()
    except MySQLdb.Error as error:
        raise Unavailable(describe(error)) from error
