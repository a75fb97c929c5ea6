"""The queries on vc_admin, always parameterized, and a create under an Idempotency-Key.

Reads return a Read (what they found, and which server answered), writes a Written (what
they returned, and the consistency token of their commit): wsgiapp/pool.py. The caller
passes these on, as X-Read-Source and X-Consistency-Token."""
import json
import random

import MySQLdb

from wsgiapp.pool import Refused

# created_at comes back as the ISO 8601 string the API sends (the session is in UTC):
# parsing it into a datetime and formatting it again cost more than the query's own work.
COLUMNS = "id, name, email, CONCAT(REPLACE(created_at, ' ', 'T'), '+00:00')"
DUPLICATE_KEY = 1062
LOCK_WAIT = 1205  # with innodb_lock_wait_timeout = 0: the row is held by a running transaction
LIST_PAGE = f'SELECT {COLUMNS} FROM vc_admin WHERE id > %s ORDER BY id LIMIT %s'
GET_ONE = f'SELECT {COLUMNS} FROM vc_admin WHERE id = %s'
GET_NEW = f'SELECT {COLUMNS} FROM vc_admin WHERE id = LAST_INSERT_ID()'

# Idempotency keys are kept at least 24 hours (schema.sql). Old ones are pruned by the
# keyed writes themselves, no cron: 1 in PRUNE_ONE_IN of them also deletes the keys older
# than 24 hours and KEY_MARGIN_HOURS more, at most PRUNE_BATCH rows, so that the DELETE
# stays short and never holds its locks for long (a backlog goes in the next prunes).
PRUNE_ONE_IN = 100
KEY_MARGIN_HOURS = 1
PRUNE_BATCH = 1000
PRUNE_OLD_KEYS = ('DELETE FROM idempotency_key WHERE created_at < NOW() - INTERVAL %s HOUR LIMIT %s',
                  (24 + KEY_MARGIN_HOURS, PRUNE_BATCH))


class DuplicateName(Refused):
    """The name is taken."""


class KeyInProgress(Refused):
    """An Idempotency-Key whose first request is still running."""


class KeyReused(Refused):
    """An Idempotency-Key sent before with a different request."""


def as_item(row):
    admin_id, name, email, created_at = row
    return {'id': admin_id, 'name': name, 'email': email, 'created_at': created_at}


def _insert(cursor, name, email):
    cursor.execute('INSERT INTO vc_admin (name, email) VALUES (%s, %s)', (name, email))
    cursor.execute(GET_NEW)
    return cursor.fetchone()


class Admins:
    """The vc_admin rows of a db.Database."""

    def __init__(self, database):
        self.database = database

    def list_admins(self, after, limit, token=None):
        """Read(up to `limit` rows with id > after): a keyset page, an index range scan at any depth."""
        return self.database.read(LIST_PAGE, (after, limit), token)

    def get_admin(self, admin_id, token=None):
        """Read(the row, or None)."""
        read = self.database.read(GET_ONE, (admin_id,), token)
        return read._replace(result=read.result[0] if read.result else None)

    def _write(self, work, name):
        """database.write(work), a taken name as DuplicateName."""
        try:
            return self.database.write(work)
        except MySQLdb.IntegrityError as error:
            if error.args[0] == DUPLICATE_KEY:
                raise DuplicateName(name) from None
            raise

    def create_admin(self, name, email):
        """Written(the new row)."""
        return self._write(lambda cursor: _insert(cursor, name, email), name)

    def create_admin_once(self, key, fingerprint, name, email):
        """create_admin under an Idempotency-Key: Written((status, item, location, replayed)).
        The key is inserted first, in the same transaction as the row, so a second request
        with it finds the first one's answer once that committed (replayed), or its lock
        while it runs (KeyInProgress, at once: the lock wait timeout is 0); a different
        request under the same key is KeyReused."""
        def work(cursor):
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
            row = _insert(cursor, name, email)
            item, location = as_item(row), f'/api/admins/{row[0]}'
            cursor.execute('UPDATE idempotency_key SET status = 201, body = %s, location = %s WHERE idem_key = %s',
                           (json.dumps(item, ensure_ascii=False), location, key))
            if random.randrange(PRUNE_ONE_IN) == 0:
                cursor.execute(*PRUNE_OLD_KEYS)
            return 201, item, location, False
        return self._write(work, name)

    def update_admin(self, admin_id, changes):
        """Apply {'name': ..., 'email': ...} to one row: Written(the row, or None when there is none)."""
        assignments = ', '.join(f'{column} = %s' for column in changes)  # keys are validated names

        def work(cursor):
            if not cursor.execute('SELECT id FROM vc_admin WHERE id = %s FOR UPDATE', (admin_id,)):
                return None
            cursor.execute(f'UPDATE vc_admin SET {assignments} WHERE id = %s', (*changes.values(), admin_id))
            cursor.execute(GET_ONE, (admin_id,))
            return cursor.fetchone()
        return self._write(work, changes.get('name'))

    def delete_admin(self, admin_id):
        """Written(whether there was such a row)."""
        return self.database.write(
            lambda cursor: cursor.execute('DELETE FROM vc_admin WHERE id = %s', (admin_id,)) > 0)
