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
import math
import os
import queue
import random
import re
import threading
import time
import weakref
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


def connect_kwargs(settings, server=None, **overrides):
    """Keyword arguments for MySQLdb.connect() to `server` (the primary by default): utf8mb4,
    UTC timestamps, autocommit."""
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


class Source:
    """One database server, and this process's pool of connections to it."""

    def __init__(self, name, settings, server, retry_lost=True, **timeouts):
        self.name, self.settings, self.server = name, settings, server
        self.timeouts = timeouts  # connect() overrides: a replica's reads give up sooner
        # Whether a statement that lost its connection runs once more on a fresh one: not on
        # a replica, where the primary is the better second try.
        self.attempts = (False, True) if retry_lost else (False,)
        self._lock = threading.Lock()
        self._pid = None
        self._pool = None
        self._abandoned = []  # pools inherited across fork(): kept alive, never closed

    def pool(self):
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    if self.server is None:
                        raise Unavailable(self.settings.database_problem)
                    if self._pool is not None:
                        self._abandoned.append(self._pool)
                    kwargs = connect_kwargs(self.settings, self.server, **self.timeouts)
                    self._pool = Pool(self.settings.pool_size, self.settings.pool_timeout,
                                      lambda: MySQLdb.connect(**kwargs))
                    self._pid = os.getpid()
        return self._pool

    def checkout(self, first_step):
        """(pool, connection, what first_step(connection) returned). When the step fails
        because the connection was dead, the idle ones go too and it runs once more on a
        fresh connection."""
        pool = self.pool()
        for fresh in self.attempts:
            con = pool.acquire(fresh)
            try:
                return pool, con, first_step(con)
            except UNAVAILABLE as error:
                pool.discard(con)
                if connection_lost(error):
                    pool.drop_idle()
                if fresh or not connection_lost(error) or len(self.attempts) == 1:
                    raise Unavailable(describe(error)) from error
            except BaseException:
                pool.discard(con)
                raise

    def read(self, sql, args, token=None, wait=0.0):
        """The rows of one query; with a token, only once this server has applied it
        (MASTER_GTID_WAIT), else None: it did not catch up within `wait` seconds."""
        def run(con):
            cursor = con.cursor()
            if token is not None:
                cursor.execute('SELECT MASTER_GTID_WAIT(%s, %s)', (token, wait))
                if cursor.fetchone()[0] != 0:  # -1: timed out; NULL: not a position it knows
                    return None
            cursor.execute(sql, args)
            return cursor.fetchall()
        pool, con, rows = self.checkout(run)
        pool.release(con)
        return rows


class Database:
    def __init__(self, settings):
        self.settings = settings
        self.primary = Source('primary', settings, settings.database)
        # A replica that does not answer within the time to connect and to wait for a token
        # is left for the primary, which has every row: a partitioned replica costs that
        # much, once (the monitor is told), instead of the primary's 10 s read timeout.
        patience = settings.connect_timeout + math.ceil(settings.replica_wait)
        self.replicas = [Source(f'replica{n}', settings, server, retry_lost=False, read_timeout=patience,
                                write_timeout=patience) for n, server in enumerate(settings.replicas, 1)]
        self.monitor = ReplicaMonitor(self.primary, self.replicas, settings.replica_max_lag) if self.replicas else None
        # Per request, for app.py and views.py: where the last read came from, and the
        # consistency token of the last write (both per thread: one request per thread).
        self.local = threading.local()

    def _checkout(self, first_step):
        return self.primary.checkout(first_step)

    def _pool_here(self):
        return self.primary.pool()

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
        if self.replicas:
            try:
                self.local.token = self._commit_position(cursor, con)
            except UNAVAILABLE:  # committed all the same: the answer says so, without a token
                pool.discard(con)
                return
        pool.release(con)

    @staticmethod
    def _commit_position(cursor, con):
        """The consistency token of what just committed: @@last_gtid, this session's last
        write, when this transaction wrote (it changed); else the primary's whole position
        (a transaction that only read, such as an idempotent replay, still gets a token
        that covers everything committed so far)."""
        cursor.execute('SELECT @@last_gtid, @@gtid_binlog_pos')
        last, everything = cursor.fetchone()
        wrote = last != getattr(con, 'wsgiapp_last_gtid', '')
        con.wsgiapp_last_gtid = last
        return last if wrote and last else everything

    def _read(self, sql, args, token=None):
        """A GET's query. Without replicas, on the primary. With them (README: "Replicas"):
        - with a consistency token (the client's last write): on a replica that has applied
          it, waiting up to replica_wait; else on the primary, and a 503 if it is away, never
          a stale answer. A token that is empty or malformed goes to the primary at once.
        - without one: on a replica at most replica_max_lag behind; else on the primary; and
          while the primary is away, on any replica that still applies what it has (and on
          the primary again, should it be back before the monitor has seen it)."""
        if not self.replicas:
            return self.primary.read(sql, args)
        self.monitor.start()
        if token is not None:
            position = gtid_position(token)
            candidates = self.monitor.applying() if position else []
            for replica in candidates:
                try:
                    rows = replica.read(sql, args, position, self.settings.replica_wait)
                except Unavailable:
                    self.monitor.failed(replica)
                    continue
                if rows is not None:
                    return self._from(replica, rows)
            return self._from(self.primary, self.primary.read(sql, args))
        # The monitor orders the servers; it never rules one out that might answer: a host
        # just back from a partition answers before the next check says so.
        fresh = self.monitor.fresh()
        behind = [replica for replica in self.monitor.applying() if replica not in fresh]
        primary_first = not self.monitor.primary_down()
        problem = Unavailable('no database server answers')
        for source in fresh + [self.primary] * primary_first + behind + [self.primary] * (not primary_first):
            try:
                return self._from(source, source.read(sql, args))
            except Unavailable as error:
                problem = error
                if source is not self.primary:
                    self.monitor.failed(source)
        raise problem

    def _from(self, source, rows):
        self.local.source = source.name
        return rows

    # The queries. Always parameterized.

    def list_admins(self, after, limit, token=None):
        """Up to `limit` rows with id > after: a keyset page, an index range scan at any depth."""
        return self._read(LIST_PAGE, (after, limit), token)

    def get_admin(self, admin_id, token=None):
        rows = self._read(GET_ONE, (admin_id,), token)
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


GTID = re.compile(r'(\d{1,10})-(\d{1,10})-(\d{1,20})')


def gtid_position(token):
    """A consistency token as a GTID position MASTER_GTID_WAIT can wait for (GTIDs D-S-N,
    comma-separated, at most one per domain), or None. MASTER_GTID_WAIT('') returns at once,
    as if the replica had caught up: an empty or malformed token must never reach it."""
    gtids = [GTID.fullmatch(part.strip()) for part in token.split(',')] if len(token) <= 512 else [None]
    if not gtids or not all(gtids):
        return None
    domains = [int(gtid[1]) for gtid in gtids]
    if (len(set(domains)) != len(domains) or any(int(gtid[1]) >= 2**32 or int(gtid[2]) >= 2**32
                                                 or int(gtid[3]) >= 2**64 for gtid in gtids)):
        return None
    return ','.join(gtid[0] for gtid in gtids)


class ReplicaMonitor:
    """Each replica's state, and whether the primary answers, checked once a second by a
    thread of this process (started on its first read, so after uwsgi's fork), on
    connections of its own: the requests only read what it found."""

    PERIOD = 1.0

    def __init__(self, primary, replicas, max_lag):
        self.primary, self.replicas, self.max_lag = primary, replicas, max_lag
        self.state = {}  # replica name -> (checked at, SQL thread running, seconds behind or None)
        self.primary_failed_at = None
        self._pid = None
        self._lock = threading.Lock()

    def start(self):
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    self._pid = os.getpid()
                    self.state, self.primary_failed_at = {}, None
                    self.check()  # once before the first read, then in the background
                    threading.Thread(target=ReplicaMonitor._run, args=(weakref.ref(self), os.getpid()),
                                     daemon=True, name='wsgiapp-replica-monitor').start()

    @staticmethod
    def _run(monitor_ref, pid):
        """Until the monitor is gone (an Application that is thrown away, in tests)."""
        connections = {}
        while os.getpid() == pid:
            time.sleep(ReplicaMonitor.PERIOD)
            monitor = monitor_ref()
            if monitor is None:
                break
            monitor.check(connections)
            del monitor
        for con in connections.values():
            with suppress(Exception):
                con.close()

    def check(self, connections=None):
        connections = {} if connections is None else connections
        now = time.monotonic()
        for replica in self.replicas:
            try:
                row = self._query(connections, replica, 'SHOW SLAVE STATUS')
                if row is None:
                    self.state[replica.name] = (now, False, None)
                else:
                    status = dict(zip(row[0], row[1]))
                    self.state[replica.name] = (now, status['Slave_SQL_Running'] == 'Yes',
                                                status['Seconds_Behind_Master'])
            except MySQLdb.Error:
                self.state[replica.name] = (now, False, None)
        try:
            self._query(connections, self.primary, 'SELECT 1')
            self.primary_failed_at = None
        except MySQLdb.Error:
            self.primary_failed_at = self.primary_failed_at or now

    def _query(self, connections, source, sql):
        """(column names, first row) or None, on this thread's own connection to `source`."""
        con = connections.get(source.name)
        try:
            if con is None:
                con = connections[source.name] = MySQLdb.connect(**connect_kwargs(
                    source.settings, source.server, connect_timeout=1, read_timeout=2, write_timeout=2))
            cursor = con.cursor()
            cursor.execute(sql)
            row = cursor.fetchone()
            return None if row is None else ([column[0] for column in cursor.description], row)
        except MySQLdb.Error:
            connections.pop(source.name, None)
            with suppress(Exception):
                con.close()
            raise

    def failed(self, replica):
        """A request could not read from it: no more reads until the next check finds it well."""
        self.state[replica.name] = (time.monotonic(), False, None)

    def _recent(self, name):
        checked_at, running, behind = self.state.get(name, (0, False, None))
        return time.monotonic() - checked_at < 3 * self.PERIOD, running, behind

    def applying(self):
        """Replicas applying what they receive (their SQL thread runs): worth a wait."""
        return [r for r in self.replicas if all(self._recent(r.name)[:2])]

    def fresh(self):
        """Replicas connected to the primary and at most max_lag seconds behind it."""
        found = []
        for replica in self.replicas:
            recent, running, behind = self._recent(replica.name)
            if recent and running and behind is not None and behind <= self.max_lag:
                found.append(replica)
        return found

    def primary_down(self):
        return self.primary_failed_at is not None


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
