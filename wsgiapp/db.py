"""The database the application uses: reads where replicas.ReadRouter sends them, writes in
one transaction on the primary, and the readiness probe. The parts: pool.py (connections),
replicas.py (read routing, consistency tokens), admins.py (the queries), schema.py (tables)."""
import MySQLdb

from wsgiapp.pool import ServerPool, Unavailable, connect_kwargs, describe
from wsgiapp.replicas import ReadRouter, commit_position
from wsgiapp.schema import TABLES


class Database:
    def __init__(self, settings):
        self.settings = settings
        self.primary = ServerPool('primary', settings, settings.database)
        self.router = ReadRouter(settings, self.primary)
        self.replicated = bool(self.router.replica_pools)

    def read(self, sql, args, token=None):
        """Read(the rows, the name of the server that answered): ReadRouter.read."""
        return self.router.read(sql, args, token)

    def write(self, work):
        """work(cursor) in one transaction on the primary: Written(what it returned, and with
        replicas the consistency token of the commit, signed (replicas.sign_position), else None)."""
        written = self.primary.transaction(work, commit_position if self.replicated else None)
        return written._replace(token=self.router.sign(written.token)) if written.token else written

    def count_failure(self, address, window):
        """One more wrong bearer token from `address` in `window` (a window number): the
        address's failures in it, counted on the primary for every process and host. The
        first failure of a window deletes the rows of windows before the previous one."""
        key = address.encode('utf-8', 'replace')[:64]

        def work(cursor):
            cursor.execute('INSERT INTO failed_token (address, time_window, failures) VALUES (%s, %s, 1) '
                           'ON DUPLICATE KEY UPDATE failures = failures + 1', (key, window))
            cursor.execute('SELECT failures FROM failed_token WHERE address = %s AND time_window = %s',
                           (key, window))
            count = cursor.fetchone()[0]
            if count == 1:
                cursor.execute('DELETE FROM failed_token WHERE time_window < %s LIMIT 1000', (window - 1,))
            return count
        return self.primary.transaction(work).result

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
        except MySQLdb.Error as error:
            raise Unavailable(describe(error)) from error
