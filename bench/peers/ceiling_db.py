"""ceiling-db: the listing query on one persistent connection per thread, rows encoded as
JSON, nothing else: no routing, no parameters, no pool, no error handling."""
import json
import os
import threading

import MySQLdb

from wsgiapp.config import parse_database_url

CONNECT = dict(parse_database_url(os.environ['DATABASE_URL']), charset='utf8mb4', autocommit=True)
local = threading.local()  # connections are opened lazily, in each worker after the fork


def application(environ, start_response):
    con = getattr(local, 'con', None)
    if con is None:
        con = local.con = MySQLdb.connect(**CONNECT)
    cursor = con.cursor()
    cursor.execute('SELECT id, name, email, created_at FROM vc_admin WHERE id > %s ORDER BY id LIMIT %s', (0, 10))
    body = json.dumps([[i, n, e, c.isoformat()] for i, n, e, c in cursor.fetchall()]).encode('utf-8')
    start_response('200 OK', [('Content-Type', 'application/json'), ('Content-Length', str(len(body)))])
    return [body]
