#!/usr/bin/env python
# -*- coding: utf-8 -*-

"""application.py: the seed post's first app, changed only so that it runs under Python 3:
the body is returned as bytes (a str is rejected), and host, port, user and password come
from DATABASE_URL instead of the post's literals. A new connection per request, as written."""

import os

import MySQLdb

from wsgiapp.config import parse_database_url

_DB = parse_database_url(os.environ['DATABASE_URL'])


def application(environ, start_response):
    """Simplest possible application object"""
    start_response('200 OK', [('Content-Type', 'text/html')])
    conn = MySQLdb.connect(host=_DB['host'],
                           port=_DB['port'],
                           user=_DB['user'],
                           passwd=_DB['password'],
                           db=_DB['database'])
    cur = conn.cursor()

    aa = cur.execute("select * from vc_admin limit 10")
    x = []
    info = cur.fetchmany(aa)
    for i in info:
        x.append(i)
    cur.close()
    conn.commit()
    conn.close()
    return ['.'.join([str(i) for i in x]).encode('utf-8')]
