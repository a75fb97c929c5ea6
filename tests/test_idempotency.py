"""POST /api/admins with an Idempotency-Key, against the real MariaDB: a retry gets the first
answer and never a second row; the key is stored in the row's own transaction."""
import hashlib
import json
import time

import MySQLdb
import pytest

from wsgiapp import admins, config, db

BODY = {'name': 'ada', 'email': 'ada@example.com'}
FINGERPRINT = hashlib.sha256(json.dumps(BODY, sort_keys=True).encode()).digest()  # as views.py makes it


def post(app, auth, key, body=BODY, status=201):
    return app.post_json('/api/admins', body, headers={**auth, 'Idempotency-Key': key}, status=status)


def test_a_retry_gets_the_first_answer_and_no_second_row(app, auth, sql):
    first = post(app, auth, 'key-1')
    again = post(app, auth, 'key-1')
    assert again.json == first.json and again.headers['Location'] == first.headers['Location']
    assert again.headers['Idempotent-Replayed'] == 'true' and 'Idempotent-Replayed' not in first.headers
    assert sql('SELECT COUNT(*) FROM vc_admin') == ((1,),)
    # Key order in the body does not make it another request.
    post(app, auth, 'key-1', {'email': 'ada@example.com', 'name': 'ada'})
    assert sql('SELECT COUNT(*) FROM vc_admin') == ((1,),)


def test_the_first_answer_survives_a_lost_response(app, auth, sql, settings):
    """The first attempt committed but its answer never reached the client (a host died)."""
    written = admins.Admins(db.Database(settings)).create_admin_once(b'lost', FINGERPRINT, 'ada', 'ada@example.com')
    status, item, location, replayed = written.result
    assert (status, replayed) == (201, False)
    retried = post(app, auth, 'lost')
    assert retried.json == item and retried.headers['Location'] == location


def test_the_same_key_with_another_body_is_422_and_writes_nothing(app, auth, sql):
    post(app, auth, 'key-2')
    response = post(app, auth, 'key-2', {'name': 'grace', 'email': 'g@example.com'}, status=422)
    assert 'Idempotency-Key' in response.json['error']['message']
    assert sql('SELECT name FROM vc_admin') == (('ada',),)


def test_a_retry_while_the_first_is_running_is_409_at_once(app, auth, sql):
    holder = sql.connection
    holder.autocommit(False)
    holder.cursor().execute("INSERT INTO idempotency_key (idem_key, fingerprint, status, body, location) "
                            "VALUES ('busy', REPEAT('x', 32), 0, '', '')")  # a first attempt, uncommitted
    try:
        started = time.monotonic()
        response = post(app, auth, 'busy', status=409)
        assert time.monotonic() - started < 1 and 'still being processed' in response.json['error']['message']
    finally:
        holder.rollback()
        holder.autocommit(True)
    post(app, auth, 'busy')  # the first attempt died: the retry does the work
    assert sql('SELECT COUNT(*) FROM vc_admin') == ((1,),)


@pytest.mark.parametrize('key', ['', ' ', 'a b', 'x' * 256, 'ключ', 'tab\there', '""'])
def test_a_malformed_key_is_400_and_writes_nothing(app, auth, sql, key):
    app.post_json('/api/admins', BODY, headers={**auth, 'Idempotency-Key': key.encode('utf-8').decode('latin-1')},
                  status=400)
    assert sql('SELECT COUNT(*) FROM vc_admin') == ((0,),)


def test_the_longest_key_and_a_quoted_one(app, auth, sql):
    post(app, auth, '~' * 255)
    first = post(app, auth, '"quoted"', {'name': 'q', 'email': 'q@example.com'})
    assert post(app, auth, 'quoted', {'name': 'q', 'email': 'q@example.com'}).json == first.json  # the same key


def test_a_taken_name_stores_no_key(app, auth, sql, add):
    add('ada')
    post(app, auth, 'key-3', status=409)
    assert sql("SELECT COUNT(*) FROM idempotency_key") == ((0,),)  # rolled back with the row
    sql("DELETE FROM vc_admin WHERE name = 'ada'")
    post(app, auth, 'key-3')  # so the retry is a new attempt


def test_keys_are_kept_a_day_and_then_forgotten(app, auth, sql, monkeypatch):
    for key, hours in (('day-old', 23), ('old', 26)):
        sql("INSERT INTO idempotency_key (idem_key, fingerprint, status, body, location, created_at) "
            "VALUES (%s, REPEAT('x', 32), 201, '{}', '/api/admins/1', NOW() - INTERVAL %s HOUR)", (key, hours))
    monkeypatch.setattr(admins, 'PRUNE_ONE_IN', 1)  # the purge that runs now and then: now
    post(app, auth, 'new')
    assert {k for (k,) in sql('SELECT idem_key FROM idempotency_key')} == {b'day-old', b'new'}


def test_without_a_key_nothing_is_stored(app, auth, sql):
    app.post_json('/api/admins', BODY, headers=auth, status=201)
    assert sql('SELECT COUNT(*) FROM idempotency_key') == ((0,),)


def test_the_app_user_may_use_the_table(database_url):
    con = MySQLdb.connect(**config.parse_database_url(database_url))
    try:
        con.cursor().execute('SELECT COUNT(*) FROM idempotency_key')
    finally:
        con.close()


def test_a_malformed_key_comes_after_the_bodys_own_refusals(app, auth, sql):
    headers = {**auth, 'Idempotency-Key': ''}
    app.post('/api/admins', 'x' * 70000, headers=headers, content_type='application/json', status=413)
    app.post('/api/admins', '{}', headers=headers, content_type='text/plain', status=415)
    app.post_json('/api/admins', {'name': 1}, headers=headers, status=400)  # the key, before the fields' 422
