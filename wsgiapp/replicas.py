"""Where a read goes when there are replicas (docs/replicas.rst): ReadRouter, with the
ReplicaMonitor it asks, and the consistency tokens (MariaDB GTID positions) that let a
client read its own writes: what a commit gives (commit_position), how the app signs it
(sign_position) and what a read accepts (verified_position, gtid_position)."""
import base64
import hashlib
import hmac
import math
import os
import re
import threading
import time
import weakref
from contextlib import suppress

import MySQLdb

from wsgiapp import metrics
from wsgiapp.metrics import sample
from wsgiapp.pool import ServerPool, Unavailable, connect_kwargs

GTID = re.compile(r'([0-9]{1,10})-([0-9]{1,10})-([0-9]{1,20})')  # ASCII digits only: \d takes any script's
MAX_TOKEN = 512  # characters: room for dozens of domains, and no more work on a hostile one


def gtid_position(token):
    """A consistency token as a GTID position MASTER_GTID_WAIT can wait for (GTIDs D-S-N,
    comma-separated, at most one per domain), or None. MASTER_GTID_WAIT('') returns at once,
    as if the replica had caught up: an empty or malformed token must never reach it."""
    gtids = [GTID.fullmatch(part.strip()) for part in token.split(',')] if len(token) <= MAX_TOKEN else [None]
    if not gtids or not all(gtids):
        return None
    domains = [int(gtid[1]) for gtid in gtids]
    if (len(set(domains)) != len(domains) or any(int(gtid[1]) >= 2**32 or int(gtid[2]) >= 2**32
                                                 or int(gtid[3]) >= 2**64 for gtid in gtids)):
        return None
    return ','.join(gtid[0] for gtid in gtids)


# A token as issued: the GTID position with '.' between its GTIDs (a comma has no place in a
# cookie value), '~', then 22 characters of base64url HMAC-SHA256 (128 bits) of the position
# under settings.token_key. Every character is safe in a URL, a header and a cookie.
TOKEN_SEPARATOR = '~'
MAC_CHARS = 22


def _mac(key, position):
    digest = hmac.new(key, b'wsgiapp consistency token\0' + position.encode('ascii'), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode('ascii')[:MAC_CHARS]


def sign_position(key, position):
    """The consistency token of a GTID position: what the app hands out after a write. Without
    a key, the bare position, which no read trusts (verified_position): read-your-writes then
    comes from the primary."""
    if not position or key is None:
        return position
    return position.replace(',', '.') + TOKEN_SEPARATOR + _mac(key, position)


def verified_position(key, token):
    """The GTID position of a token this deployment issued (sign_position, same key), or None:
    unsigned, signed under another key, altered or malformed. Only a verified position is ever
    waited for: a forged one (a sequence number the primary never reached, a domain no replica
    saw) would hold a thread for the whole WSGIAPP_REPLICA_WAIT."""
    if key is None or len(token) > MAX_TOKEN:
        return None
    body, separator, mac = token.rpartition(TOKEN_SEPARATOR)
    position = gtid_position(body.replace('.', ','))
    if not separator or position is None:
        return None
    if not hmac.compare_digest(mac.encode('ascii', 'replace'), _mac(key, position).encode('ascii')):
        return None
    return position


def commit_position(cursor, con):
    """The consistency token of what just committed on `con`: @@last_gtid, this session's
    last write, when this transaction wrote (it changed); else the primary's whole position
    (a transaction that only read, such as an idempotent replay, still gets a token that
    covers everything committed so far)."""
    cursor.execute('SELECT @@last_gtid, @@gtid_binlog_pos')
    last, everything = cursor.fetchone()
    wrote = last != getattr(con, 'wsgiapp_last_gtid', '')
    con.wsgiapp_last_gtid = last
    return last if wrote and last else everything


# Reads with a consistency token: answered by a replica that caught up, by the primary after
# the replicas did not in time, or at once (a token not issued here; every wait slot taken).
TOKEN_OUTCOMES = {outcome: sample('wsgiapp_consistency_waits_total', outcome=outcome)
                  for outcome in ('caught_up', 'timed_out', 'unverified', 'no_wait_free')}
FALLBACK = 'wsgiapp_read_fallbacks_total'


def threads(settings):
    """The threads a process serves requests with: uwsgi's `threads`, at most the pool's size."""
    try:
        import uwsgi  # only there under uwsgi
        return max(1, min(int(uwsgi.opt.get('threads', 1)), settings.pool_size))
    except (ImportError, AttributeError, TypeError, ValueError):
        return settings.pool_size


class ReadRouter:
    """The replicas of settings.replica_databases, as ServerPools named replica1, replica2...,
    and which server answers each read: a Read(rows, name of that server)."""

    def __init__(self, settings, primary):
        self.settings, self.primary = settings, primary
        # A replica that does not answer within the time to connect and to wait for a token
        # is left for the primary, which has every row: a partitioned replica costs that
        # much, once (the monitor is told), instead of the primary's 10 s read timeout.
        patience = settings.connect_timeout + math.ceil(settings.replica_wait)
        self.replica_pools = [
            ServerPool(f'replica{n}', settings, connect_args, retry_lost=False,
                       timeouts={'read_timeout': patience, 'write_timeout': patience})
            for n, connect_args in enumerate(settings.replica_databases, 1)]
        self.monitor = ReplicaMonitor(primary, self.replica_pools, settings.replica_max_lag)
        # At most half the threads (uwsgi's, else the pool's size: a connection per thread,
        # conf/uwsgi.ini) wait for a replica at once; a read with a token beyond that goes
        # to the primary at once, so waits never hold every thread of the process.
        self.waiters = threading.BoundedSemaphore(max(1, threads(settings) // 2))

    def sign(self, position):
        """A commit's GTID position as the token the client gets (sign_position)."""
        return sign_position(self.settings.token_key, position)

    def read(self, sql, args, token=None):
        """A GET's query. Without replicas, on the primary. With them:
        - with a consistency token (the client's last write): on a replica that has applied
          it, waiting up to replica_wait; else on the primary, and a 503 if it is away, never
          a stale answer. A token this deployment did not issue (unsigned, forged, altered,
          empty, malformed) goes to the primary at once, and so does any read with a token
          while half the threads already wait for a replica.
        - without one: on a replica at most replica_max_lag behind; else on the primary; and
          while the primary is away, on any replica that still applies what it has (and on
          the primary again, should it be back before the monitor has seen it)."""
        if not self.replica_pools:
            return self.primary.read(sql, args)
        self.monitor.start()
        if token is not None:
            return self._read_written(sql, args, verified_position(self.settings.token_key, token))
        # The monitor orders the servers; it never rules one out that might answer: a host
        # just back from a partition answers before the next check says so.
        fresh = self.monitor.fresh()
        behind = [replica for replica in self.monitor.applying() if replica not in fresh]
        primary_first = not self.monitor.primary_down()
        problem = Unavailable('no database server answers')
        for server in fresh + [self.primary] * primary_first + behind + [self.primary] * (not primary_first):
            try:
                return server.read(sql, args)
            except Unavailable as error:
                problem = error
                metrics.recorder.add(FALLBACK)
                if server is not self.primary:
                    self.monitor.failed(server)
        raise problem

    def _read_written(self, sql, args, position):
        """On the first applying replica that reaches `position` in time, else on the primary;
        on the primary at once when no wait is free (self.waiters)."""
        recorder = metrics.recorder
        if not position:
            recorder.add(TOKEN_OUTCOMES['unverified'])
        elif self.waiters.acquire(blocking=False):
            try:
                for replica in self.monitor.applying():
                    try:
                        read = replica.read(sql, args, position, self.settings.replica_wait)
                    except Unavailable:
                        recorder.add(FALLBACK)
                        self.monitor.failed(replica)
                        continue
                    if read is not None:
                        recorder.add(TOKEN_OUTCOMES['caught_up'])
                        return read
            finally:
                self.waiters.release()
            recorder.add(TOKEN_OUTCOMES['timed_out'])
        else:
            recorder.add(TOKEN_OUTCOMES['no_wait_free'])
        return self.primary.read(sql, args)


class ReplicaMonitor:
    """Each replica's state, and whether the primary answers, checked once a second by a
    thread of this process (started on its first read, so after uwsgi's fork), on
    connections of its own: the requests only read what it found."""

    PERIOD = 1.0

    def __init__(self, primary, replica_pools, max_lag):
        self.primary, self.replica_pools, self.max_lag = primary, replica_pools, max_lag
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
        for replica in self.replica_pools:
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

    def _query(self, connections, server, sql):
        """(column names, first row) or None, on this thread's own connection to `server`."""
        con = connections.get(server.name)
        try:
            if con is None:
                con = connections[server.name] = MySQLdb.connect(**connect_kwargs(
                    server.settings, server.connect_args, connect_timeout=1, read_timeout=2, write_timeout=2))
            cursor = con.cursor()
            cursor.execute(sql)
            row = cursor.fetchone()
            return None if row is None else ([column[0] for column in cursor.description], row)
        except MySQLdb.Error:
            connections.pop(server.name, None)
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
        return [r for r in self.replica_pools if all(self._recent(r.name)[:2])]

    def fresh(self):
        """Replicas connected to the primary and at most max_lag seconds behind it."""
        found = []
        for replica in self.replica_pools:
            recent, running, behind = self._recent(replica.name)
            if recent and running and behind is not None and behind <= self.max_lag:
                found.append(replica)
        return found

    def primary_down(self):
        return self.primary_failed_at is not None
