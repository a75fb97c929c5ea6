"""The tables of schema.sql, and initdb, which creates those that are missing."""
import re
from importlib.resources import files

import MySQLdb

from wsgiapp.pool import Unavailable, connect_kwargs, describe

SAMPLE_ADMINS = [
    ('alice', 'alice@example.com'),
    ('张三', 'zhangsan@example.cn'),
    ('José Álvarez', 'jose@example.es'),
    ('Zoë 🚀', 'zoe@example.org'),
    ("O'Brien <b>&amp;</b>", 'obrien@example.ie'),
]


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
