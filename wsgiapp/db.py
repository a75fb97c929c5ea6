"""The data layer: a per-process pool of MySQL connections and the queries on vc_admin.

Why the pool is built the way it is:
- uwsgi imports this module in its master and forks the workers from it. A connection
  opened before the fork would be shared by every worker, so nothing connects at import,
  and each process builds its own pool the first time it notices a new pid (uwsgi forks
  with a raw fork(), so os.register_at_fork hooks never run there). The parent's pool is
  kept referenced, never closed, so the child never sends QUIT on its parent's sockets.
- mysqlclient's threadsafety is 1: a connection is checked out by one thread at a time.
  At most `pool_size` are open; a request waits at most `pool_timeout` for one, then 503.
- No ping on checkout and no rollback on return: a healthy request costs only its own
  queries. Connections run in autocommit, so every read sees every write committed before
  it and no REPEATABLE READ snapshot outlives a statement; a write is one explicit
  transaction (BEGIN ... COMMIT).
- A dead connection (server restart, KILL, timeout) is found when a statement fails with
  a lost-connection error. The idle connections are dropped with it (a restart kills them
  all), and a read runs once more on a fresh connection, unseen by the client. A write is
  retried only when its BEGIN failed, since nothing has run yet; after that its outcome
  is unknown, so it is reported (503), never repeated.
Why not DBUtils: see the README ("The pool"): its checkout and cursor wrappers cost more
CPU per request than everything else in the app, measured in `make bench`.
"""
import json
import os
import queue
import random
import re
import threading
from contextlib import contextmanager, suppress
from importlib.resources import files

import MySQLdb

# created_at comes back as the ISO 8601 string the API sends (the session is in UTC):
# parsing it into a datetime and formatting it again cost more than the query's own work.
COLUMNS = "id, name, email, CONCAT(REPLACE(created_at, ' ', 'T'), '+00:00')"
DUPLICATE_KEY = 1062
LOCK_WAIT = 1205  # with innodb_lock_wait_timeout = 0: the row is held by a running transaction
# Server gone away, lost connection during query, killed, closed for inactivity.
CONNECTION_LOST = {2006, 2013, 2055, 1927, 4031}
LIST_PAGE = f'SELECT {COLUMNS} FROM vc_admin WHERE id > %s ORDER BY id LIMIT %s'
GET_ONE = f'SELECT {COLUMNS} FROM vc_admin WHERE id = %s'
GET_NEW = f'SELECT {COLUMNS} FROM vc_admin WHERE id = LAST_INSERT_ID()'
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


class KeyInProgress(Exception):
    """An Idempotency-Key whose first request is still running."""


class KeyReused(Exception):
    """An Idempotency-Key sent before with a different request."""


def as_item(row):
    admin_id, name, email, created_at = row
    return {'id': admin_id, 'name': name, 'email': email, 'created_at': created_at}


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


def connection_lost(error):
    return bool(error.args) and error.args[0] in CONNECTION_LOST


class Pool:
    """The connections of one process: at most `size` open, each used by one thread at a time.

    A request takes one of `size` tokens from a queue.SimpleQueue (written in C: far
    cheaper than a threading.Semaphore), then the most recently used idle connection, or
    opens one. list.append and list.pop are atomic, so the idle list needs no lock."""

    def __init__(self, size, timeout, connect):
        self._connect = connect
        self._timeout = timeout
        self._tokens = queue.SimpleQueue()
        for _ in range(size):
            self._tokens.put(True)
        self._idle = []

    def acquire(self, fresh=False):
        try:
            self._tokens.get(timeout=self._timeout)
        except queue.Empty:
            raise Unavailable('no database connection became free in time (pool exhausted)') from None
        if not fresh:
            with suppress(IndexError):
                return self._idle.pop()
        try:
            return self._connect()
        except BaseException as error:
            self._tokens.put(True)
            if isinstance(error, UNAVAILABLE):
                raise Unavailable(describe(error)) from error
            raise

    def release(self, con):
        self._idle.append(con)
        self._tokens.put(True)

    def discard(self, con):
        with suppress(Exception):
            con.close()
        self._tokens.put(True)

    def drop_idle(self):
        """Close every idle connection: after a server restart none of them works."""
        while True:
            try:
                con = self._idle.pop()
            except IndexError:
                return
            with suppress(Exception):
                con.close()


class Database:
    def __init__(self, settings):
        self.settings = settings
        self._lock = threading.Lock()
        self._pid = None
        self._pool = None
        self._abandoned = []  # pools inherited across fork(): kept alive, never closed

    def _pool_here(self):
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    if self.settings.database is None:
                        raise Unavailable(self.settings.database_problem)
                    if self._pool is not None:
                        self._abandoned.append(self._pool)
                    kwargs = connect_kwargs(self.settings)
                    self._pool = Pool(self.settings.pool_size, self.settings.pool_timeout,
                                      lambda: MySQLdb.connect(**kwargs))
                    self._pid = os.getpid()
        return self._pool

    def _checkout(self, first_step):
        """(pool, connection, what first_step(connection) returned). When the step fails
        because the connection was dead, the idle ones go too and it runs once more on a
        fresh connection."""
        pool = self._pool_here()
        for fresh in (False, True):
            con = pool.acquire(fresh)
            try:
                return pool, con, first_step(con)
            except UNAVAILABLE as error:
                pool.discard(con)
                if fresh or not connection_lost(error):
                    raise Unavailable(describe(error)) from error
                pool.drop_idle()
            except BaseException:
                pool.discard(con)
                raise

    @contextmanager
    def connection(self):
        pool = self._pool_here()
        con = pool.acquire()
        try:
            yield con
        except BaseException:
            pool.discard(con)
            raise
        pool.release(con)

    @contextmanager
    def transaction(self):
        """One transaction: committed when the block ends, rolled back if it raises."""
        pool, con, _ = self._checkout(lambda con: con.begin())
        try:
            cursor = con.cursor()
            yield cursor
            con.commit()
        except (MySQLdb.IntegrityError, KeyInProgress, KeyReused):  # refused; the connection is fine
            try:
                con.rollback()
            except UNAVAILABLE:
                pool.discard(con)
            else:
                pool.release(con)
            raise
        except UNAVAILABLE as error:
            pool.discard(con)
            raise Unavailable(describe(error)) from error
        except BaseException:
            pool.discard(con)
            raise
        pool.release(con)

    def _read(self, sql, args):
        def run(con):
            cursor = con.cursor()
            cursor.execute(sql, args)
            return cursor.fetchall()
        pool, con, rows = self._checkout(run)
        pool.release(con)
        return rows

    # The queries. Always parameterized.

    def list_admins(self, after, limit):
        """Up to `limit` rows with id > after: a keyset page, an index range scan at any depth."""
        return self._read(LIST_PAGE, (after, limit))

    def get_admin(self, admin_id):
        rows = self._read(GET_ONE, (admin_id,))
        return rows[0] if rows else None

    @staticmethod
    def _insert_admin(cursor, name, email):
        cursor.execute('INSERT INTO vc_admin (name, email) VALUES (%s, %s)', (name, email))
        cursor.execute(GET_NEW)
        return cursor.fetchone()

    def create_admin(self, name, email):
        try:
            with self.transaction() as cursor:
                return self._insert_admin(cursor, name, email)
        except MySQLdb.IntegrityError as error:
            if error.args[0] == DUPLICATE_KEY:
                raise DuplicateName(name) from None
            raise

    def create_admin_once(self, key, fingerprint, name, email):
        """create_admin under an Idempotency-Key: (status, item, location, replayed). The key
        is inserted first, in the same transaction as the row, so a second request with it
        finds the first one's answer once that committed (replayed), or its lock while it runs
        (KeyInProgress, at once: the lock wait timeout is 0); a different request under the
        same key is KeyReused."""
        try:
            with self.transaction() as cursor:
                try:
                    cursor.execute('SET STATEMENT innodb_lock_wait_timeout = 0 FOR '
                                   "INSERT INTO idempotency_key (idem_key, fingerprint, status, body, location) "
                                   "VALUES (%s, %s, 0, '', '')", (key, fingerprint))
                except MySQLdb.IntegrityError as error:
                    if error.args[0] != DUPLICATE_KEY:
                        raise
                    cursor.execute('SELECT fingerprint, status, body, location FROM idempotency_key '
                                   'WHERE idem_key = %s', (key,))
                    stored_fingerprint, status, body, location = cursor.fetchone()
                    if stored_fingerprint != fingerprint:
                        raise KeyReused(key) from None
                    return status, json.loads(body), location, True
                except MySQLdb.OperationalError as error:
                    if error.args[0] == LOCK_WAIT:
                        raise KeyInProgress(key) from None
                    raise
                row = self._insert_admin(cursor, name, email)
                item, location = as_item(row), f'/api/admins/{row[0]}'
                cursor.execute('UPDATE idempotency_key SET status = 201, body = %s, location = %s WHERE idem_key = %s',
                               (json.dumps(item, ensure_ascii=False), location, key))
                if random.random() < 0.01:  # now and then, forget keys older than a day (and an hour)
                    cursor.execute('DELETE FROM idempotency_key WHERE created_at < NOW() - INTERVAL 25 HOUR LIMIT 1000')
                return 201, item, location, False
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
                cursor.execute(GET_ONE, (admin_id,))
                return cursor.fetchone()
        except MySQLdb.IntegrityError as error:
            if error.args[0] == DUPLICATE_KEY:
                raise DuplicateName(changes.get('name')) from None
            raise

    def delete_admin(self, admin_id):
        with self.transaction() as cursor:
            return cursor.execute('DELETE FROM vc_admin WHERE id = %s', (admin_id,)) > 0

    def ping(self, timeout=1):
        """Ready means: a fresh connection answers within `timeout` seconds and the tables are there."""
        if self.settings.database is None:
            raise Unavailable(self.settings.database_problem)
        try:
            con = MySQLdb.connect(**connect_kwargs(self.settings, connect_timeout=timeout,
                                                   read_timeout=timeout, write_timeout=timeout))
            try:
                for table in TABLES:
                    con.query(f'SELECT 1 FROM {table} LIMIT 0')
                    con.store_result()
            finally:
                con.close()
        except (MySQLdb.Error) as error:
            raise Unavailable(describe(error)) from error


def schema_statements():
    """{table: its CREATE TABLE statement}, from schema.sql."""
    schema = files('wsgiapp').joinpath('schema.sql').read_text(encoding='utf-8')
    schema = '\n'.join(line for line in schema.splitlines() if not line.lstrip().startswith('--'))
    statements = filter(str.strip, schema.split(';'))
    return {re.search(r'CREATE TABLE IF NOT EXISTS (\w+)', s).group(1): s for s in statements}


TABLES = tuple(schema_statements())


def initdb(settings, sample=False):
    """Create the tables of schema.sql that are missing; with `sample`, add SAMPLE_ADMINS once.
    Returns the number of rows of vc_admin."""
    if settings.database is None:
        raise Unavailable(settings.database_problem)
    try:
        con = MySQLdb.connect(**connect_kwargs(settings))
        try:
            cursor = con.cursor()
            cursor.execute('SHOW TABLES')
            present = {name for (name,) in cursor.fetchall()}
            # Only what is missing: the app's own user (DML grants only) can then run initdb too.
            for table, statement in schema_statements().items():
                if table not in present:
                    cursor.execute(statement)
            if sample:
                cursor.executemany('INSERT IGNORE INTO vc_admin (name, email) VALUES (%s, %s)', SAMPLE_ADMINS)
            cursor.execute('SELECT COUNT(*) FROM vc_admin')
            return cursor.fetchone()[0]
        finally:
            con.close()
    except MySQLdb.Error as error:
        raise Unavailable(describe(error)) from error
