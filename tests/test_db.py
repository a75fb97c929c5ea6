"""The pool against a real MariaDB: fork safety, dead connections, timeouts, exhaustion, readiness."""
import io
import json
import os
import threading
from dataclasses import replace

import pytest
import webtest

from tests.helpers.servers import TOKEN
from wsgiapp import config, db, schema
from wsgiapp.admins import Admins
from wsgiapp.app import Application

pytestmark = pytest.mark.mariadb


def connection_id(database):
    with database.primary.connection() as con:
        cursor = con.cursor()
        cursor.execute('SELECT CONNECTION_ID()')
        return cursor.fetchone()[0]


def logged_request(application, path, log, **kwargs):
    """A request whose wsgi.errors is `log` (TestApp would swap in its own stream)."""
    request = webtest.TestRequest.blank(path, **kwargs)
    request.environ['wsgi.errors'] = log
    return request.get_response(application)


def kill_app_connections(sql, settings):
    user = settings.database['user']
    mine = sql('SELECT CONNECTION_ID()')[0][0]
    ids = [row[0] for row in sql('SELECT id FROM information_schema.processlist WHERE user = %s AND id <> %s',
                                 (user, mine))]
    for connection in ids:
        sql(f'KILL CONNECTION {connection}')
    return ids


def test_no_connection_is_opened_before_the_first_request(settings, sql):
    before = sql('SELECT COUNT(*) FROM information_schema.processlist WHERE user = %s',
                 (settings.database['user'],))
    Application(settings)  # what uwsgi's master does at import, before forking
    after = sql('SELECT COUNT(*) FROM information_schema.processlist WHERE user = %s',
                (settings.database['user'],))
    assert after == before


def test_a_forked_child_gets_its_own_connections_and_leaves_the_parents_alone(settings, add):
    for n in range(20):
        add(f'row{n}')
    database = db.Database(settings)
    admins = Admins(database)
    parent_id = connection_id(database)  # an idle pooled connection the child inherits
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: like a uwsgi worker forked from a master that had used the pool
        try:
            child_ids = {connection_id(database)}
            good = all(len(admins.list_admins(0, 20).result) == 20 for _ in range(200))
            os.write(write_end, json.dumps({'ids': sorted(child_ids), 'good': good}).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    # The parent keeps querying at the same time: a shared socket would garble both.
    parent_good = all(len(admins.list_admins(0, 20).result) == 20 for _ in range(200))
    os.waitpid(pid, 0)
    child = json.loads(os.read(read_end, 4096))
    assert child['good'] and parent_good
    assert parent_id not in child['ids']
    assert connection_id(database) == parent_id  # the child never closed the parent's connection


def test_killed_connections_are_replaced_without_the_client_noticing(app, add, sql, settings):
    add('survivor')
    for _ in range(3):
        app.get('/api/admins')
    assert kill_app_connections(sql, settings)
    assert app.get('/api/admins').json['items'][0]['name'] == 'survivor'
    assert kill_app_connections(sql, settings)
    assert 'survivor' in app.get('/admins').text
    assert kill_app_connections(sql, settings)
    created = app.post_json('/api/admins', {'name': 'after-kill', 'email': 'a@b.c'},
                            headers={'Authorization': f'Bearer {TOKEN}'})
    assert created.status_int == 201
    assert sql('SELECT COUNT(*) FROM vc_admin WHERE name = %s', ('after-kill',)) == ((1,),)


def test_unreachable_database_is_503_with_retry_after_and_no_secret(settings):
    broken = replace(settings, database=dict(settings.database, unix_socket='/nonexistent/mysqld.sock',
                                             password='pw-must-not-leak'))
    log, application = io.StringIO(), Application(broken)
    for path in ['/api/admins', '/api/admins/1', '/admins', '/readyz']:
        response = logged_request(application, path, log)
        assert response.status_int == 503
        assert response.headers['Retry-After'] == '1'
        assert 'pw-must-not-leak' not in response.text
        # One JSON line, with the id the client got (and nginx logs): make logs joins them.
        line = json.loads(log.getvalue().splitlines()[-1])
        assert (line['request_id'], line['path'], line['level']) == (response.headers['X-Request-ID'], path, 'error')
        assert line['message'].startswith('database unavailable: ')
    response = logged_request(application, '/api/admins', log, method='POST', body=b'{"name": "x", "email": "a@b.c"}',
                              content_type='application/json', headers={'Authorization': f'Bearer {TOKEN}'})
    assert response.json['error']['status'] == 503
    assert 'pw-must-not-leak' not in log.getvalue()
    assert 'database unavailable' in log.getvalue()


def test_wrong_password_is_503_and_the_password_is_not_logged(settings):
    wrong = replace(settings, database=dict(settings.database, password='wrong-pass-XYZ'))
    log = io.StringIO()
    response = logged_request(Application(wrong), '/api/admins', log)
    assert response.status_int == 503
    assert 'wrong-pass-XYZ' not in response.text + log.getvalue()
    assert 'Access denied' in log.getvalue()  # the log says why, for the operator


def test_a_query_that_outlives_the_read_timeout_is_503(settings, sql, add):
    add('locked')
    application, log = Application(replace(settings, read_timeout=1)), io.StringIO()
    assert logged_request(application, '/api/admins', log).status_int == 200
    sql('LOCK TABLES vc_admin WRITE')
    try:
        response = logged_request(application, '/api/admins', log)
        assert response.status_int == 503 and response.headers['Retry-After']
    finally:
        sql('UNLOCK TABLES')
    assert logged_request(application, '/api/admins', log).json['items'][0]['name'] == 'locked'


def test_exhausted_pool_is_503_after_a_bounded_wait_then_recovers(settings, sql):
    application, log = Application(replace(settings, pool_size=1, pool_timeout=0.2)), io.StringIO()
    held, release = threading.Event(), threading.Event()

    def hold():
        with application.database.primary.connection():
            held.set()
            release.wait(10)
    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(5)
    try:
        response = logged_request(application, '/api/admins', log)
        assert response.status_int == 503 and response.headers['Retry-After']
        assert 'pool exhausted' in log.getvalue()
    finally:
        release.set()
        holder.join()
    assert logged_request(application, '/api/admins', log).status_int == 200


def test_readyz(app, settings, mariadb, sql):
    assert app.get('/readyz').text == 'ready\n'
    if mariadb is None:
        pytest.skip('needs the private server to make a database without the table')
    sql('CREATE DATABASE IF NOT EXISTS wsgiapp_empty')
    admin = config.parse_database_url(mariadb.admin_url())
    empty = Application(replace(settings, database=dict(admin, database='wsgiapp_empty')))
    response = logged_request(empty, '/readyz', io.StringIO())
    assert response.status_int == 503
    assert response.headers['Content-Type'] == 'text/plain; charset=utf-8'


def test_initdb_is_idempotent_and_sample_is_loaded_once(admin_url, sql):
    settings = config.from_environ({'DATABASE_URL': admin_url})
    assert schema.initdb(settings) == 0
    assert schema.initdb(settings, sample=True) == len(schema.SAMPLE_ADMINS)
    assert schema.initdb(settings, sample=True) == len(schema.SAMPLE_ADMINS)
    names = {row[0] for row in sql('SELECT name FROM vc_admin')}
    assert '张三' in names and any(ord(c) > 0xFFFF for name in names for c in name)


def test_unexpected_error_is_500_without_traceback_but_logged_with_request_id(settings):
    application = Application(settings)

    def broken(request):
        raise KeyError('internal detail')
    application.router.exact['/healthz'].handlers['GET'] = broken
    log = io.StringIO()
    response = logged_request(application, '/healthz', log, headers={'X-Request-ID': 'req-42'})
    assert response.status_int == 500
    assert 'internal detail' not in response.text and 'Traceback' not in response.text
    line = json.loads(log.getvalue())  # one line: the traceback inside its message
    assert line['request_id'] == 'req-42' and line['level'] == 'error'
    assert 'Traceback' in line['message'] and 'internal detail' in line['message']
