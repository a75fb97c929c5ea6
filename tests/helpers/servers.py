"""Where the tests' own servers live, what they need, and SQL as the database's administrator."""
import uuid

from launcher.process import ROOT

TOKEN = 's3cret-token'  # the API token of the applications the fixtures build

def new_base():
    """A directory of its own under var/ for a stack the tests start."""
    return ROOT / 'var' / f'test-{uuid.uuid4().hex[:8]}'


def admin_session(connect_kwargs):
    """session(statement, args=None) -> rows, all on one administrator's connection, kept
    open until session.close(): what a session holds (LOCK TABLES, an open transaction on
    session.connection) lasts as long as it. For statements that need no session of their
    own, launcher.mariadb.run_sql (MariaDB.sql) opens and closes a connection per call."""
    import MySQLdb
    connection = MySQLdb.connect(**connect_kwargs)

    def session(statement, args=None):
        cursor = connection.cursor()
        cursor.execute(statement, args)
        return cursor.fetchall()
    session.connection, session.close = connection, connection.close
    return session


class Held:
    """A replica's SQL thread held up by a table lock on vc_admin: it runs, receives and
    falls behind, as a replica busy with a long transaction does."""

    def __init__(self, replica):
        import MySQLdb
        self.con = MySQLdb.connect(**replica.admin_kwargs(), database='wsgiapp')

    def __enter__(self):
        self.con.query('LOCK TABLES vc_admin READ')
        return self

    def __exit__(self, *exc):
        self.con.query('UNLOCK TABLES')
        self.con.close()
