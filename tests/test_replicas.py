"""Reads on a MariaDB replica, writes on the primary, and every client reading its own
writes: the app (through WebTest) over a real primary and a real replica following it by
GTID, as `make cluster` runs them. Lag is made the way it happens: the replica's SQL thread
held up by a lock, or stopped."""
import re
import threading
import time

import pytest
import webtest

from launcher.replication import caught_up
from launcher.wait import wait_for
from tests.helpers.servers import TOKEN, Held
from wsgiapp import config, db
from wsgiapp.admins import Admins
from wsgiapp.app import Application

AUTH = {'Authorization': f'Bearer {TOKEN}'}

pytestmark = pytest.mark.mariadb



def back_on_replica(app, seconds):
    """Until a tokenless read is answered by the replica again."""
    wait_for(lambda: app.get('/api/admins').headers['X-Read-Source'] == 'replica1', seconds,
             'a tokenless read answered by the replica again', interval=0.1)



@pytest.fixture
def make(replicated_app):
    return replicated_app


def create(app, name):
    response = app.post_json('/api/admins', {'name': name, 'email': f'{name}@x.test'}, headers=AUTH, status=201)
    return response.json['id'], response.headers['X-Consistency-Token']


def test_reads_go_to_the_replica_writes_to_the_primary_and_answer_with_their_gtid(make, pair):
    primary, replica = pair
    app = make()
    assert app.get('/api/admins').headers['X-Read-Source'] == 'replica1'
    response = app.post_json('/api/admins', {'name': 'gtid-1', 'email': 'g@x.test'}, headers=AUTH, status=201)
    token = response.headers['X-Consistency-Token']
    position, _, signature = token.partition('~')
    assert re.fullmatch(r'0-1-\d+', position) and position == primary.sql('SELECT @@gtid_binlog_pos')[0][0]
    assert re.fullmatch(r'[A-Za-z0-9_-]{22}', signature)
    cookie = response.headers['Set-Cookie']
    assert cookie.startswith(f'wsgiapp_consistency={token};')
    assert all(part in cookie for part in ('HttpOnly', 'SameSite=Lax', 'Secure', 'Max-Age=60'))
    # A PATCH and a DELETE answer with their own, later, token.
    item = response.headers['Location']
    patched = app.patch_json(item, {'email': 'h@x.test'}, headers=AUTH).headers['X-Consistency-Token']
    deleted = app.delete(item, headers=AUTH, status=204).headers['X-Consistency-Token']
    def sequence(token):
        return int(token.partition('~')[0].rsplit('-', 1)[1])
    assert sequence(token) < sequence(patched) < sequence(deleted)
    # Nothing of this without replicas: no token, no source.
    plain = webtest.TestApp(Application(config.from_environ(
        {'DATABASE_URL': primary.url(tcp=True), 'WSGIAPP_API_TOKEN': TOKEN})), lint=True)
    response = plain.post_json('/api/admins', {'name': 'gtid-2', 'email': 'g@x.test'}, headers=AUTH, status=201)
    assert 'X-Consistency-Token' not in response.headers and 'Set-Cookie' not in response.headers
    assert 'X-Read-Source' not in plain.get('/api/admins').headers


def test_a_read_returns_its_server_and_a_write_its_token_as_values(make, pair):
    """No per-thread state between layers: what the views put in the headers is returned."""
    primary, replica = pair
    make()  # the pair started and caught up
    database = db.Database(config.from_environ({'DATABASE_URL': primary.url(tcp=True),
                                                'DATABASE_REPLICA_URL': replica.url(tcp=True),
                                                'WSGIAPP_TOKEN_SECRET': 'x'}))
    admins = Admins(database)
    written = admins.create_admin('as-values', 'v@x.test')
    assert re.fullmatch(r'0-1-\d+~[A-Za-z0-9_-]{22}', written.token) and written.result[1] == 'as-values'
    read = admins.get_admin(written.result[0], written.token)
    assert read.source == 'replica1' and read.result == written.result
    assert admins.list_admins(0, 100).source == 'replica1'
    alone = Admins(db.Database(config.from_environ({'DATABASE_URL': primary.url(tcp=True)})))
    assert alone.delete_admin(written.result[0]) == (True, None)  # no replicas: no token
    assert alone.get_admin(written.result[0]) == (None, 'primary')


def test_a_token_waits_for_the_replica_then_reads_the_write_there(make, pair):
    primary, replica = pair
    app = make()
    app.get('/api/admins')  # the monitor has seen the replica applying
    with Held(replica) as held:
        admin_id, token = create(app, 'waited-for')
        assert replica.sql(('SELECT COUNT(*) FROM vc_admin WHERE id = %s', (admin_id,)), database='wsgiapp')[0][0] == 0
        threading.Timer(0.2, lambda: held.con.query('UNLOCK TABLES')).start()
        started = time.monotonic()
        response = app.get(f'/api/admins/{admin_id}', headers={'X-Consistency-Token': token})
        waited = time.monotonic() - started
    assert response.headers['X-Read-Source'] == 'replica1' and response.json['name'] == 'waited-for'
    assert 0.15 < waited < 0.5


@pytest.mark.parametrize('how', ['header', 'cookie'])
def test_a_token_the_replica_has_not_reached_reads_from_the_primary(make, pair, how):
    primary, replica = pair
    app = make(WSGIAPP_REPLICA_WAIT='0.3')
    app.get('/api/admins')
    with Held(replica):
        admin_id, token = create(app, f'behind-{how}')
        if how == 'cookie':
            app.set_cookie('wsgiapp_consistency', token)
        headers = {'X-Consistency-Token': token} if how == 'header' else {}
        started = time.monotonic()
        response = app.get(f'/api/admins/{admin_id}', headers=headers)
        assert time.monotonic() - started >= 0.3
        assert response.headers['X-Read-Source'] == 'primary' and response.json['name'] == f'behind-{how}'
        listing = app.get(f'/api/admins?after={admin_id - 1}', headers=headers)
        assert listing.headers['X-Read-Source'] == 'primary' and listing.json['items'][0]['id'] == admin_id


@pytest.mark.parametrize('token', ['', ' ', 'garbage', '0-1', '0-1-x', "0-1-1' OR 1=1 --", '0-1-1,0-1-2',
                                   '0-1-99999999999999999999', '1' * 600, '77-1-1'])
def test_an_empty_or_malformed_token_never_reads_a_stale_replica(make, pair, token):
    primary, replica = pair
    app = make(WSGIAPP_REPLICA_WAIT='0.2')
    app.get('/api/admins')
    with Held(replica) as held:
        admin_id, _ = create(app, f'bad-token-{len(token)}-{abs(hash(token)) % 1000}')
        if token == '':
            # The trap: MASTER_GTID_WAIT('') returns 0 at once, "caught up", on a replica
            # that does not have the row. An empty token must never reach it.
            cursor = held.con.cursor()
            cursor.execute("SELECT MASTER_GTID_WAIT('', 0.5)")
            assert cursor.fetchone()[0] == 0
            assert replica.sql(('SELECT COUNT(*) FROM vc_admin WHERE id = %s', (admin_id,)),
                               database='wsgiapp')[0][0] == 0
        response = app.get(f'/api/admins/{admin_id}', headers={'X-Consistency-Token': token})
    assert response.status_int == 200 and response.headers['X-Read-Source'] == 'primary'


def test_reads_without_a_token_leave_a_replica_further_behind_than_the_bound(make, pair):
    primary, replica = pair
    app = make(WSGIAPP_REPLICA_MAX_LAG='1')
    assert app.get('/api/admins').headers['X-Read-Source'] == 'replica1'
    with Held(replica):
        admin_id, _ = create(app, 'lagging')
        def on_the_primary():
            response = app.get(f'/api/admins/{admin_id}', status='*')
            if response.headers['X-Read-Source'] != 'primary':
                assert response.status_int == 404  # the replica, within its bound: stale, allowed
                return None
            return response
        response = wait_for(on_the_primary, 6, 'the read sent to the primary', interval=0.1)
        # Seconds_Behind_Master passes 1 s, the monitor sees it within a second: the primary.
        assert response.headers['X-Read-Source'] == 'primary' and response.status_int == 200
    caught_up(primary, replica)
    back_on_replica(app, 4)


def test_a_replica_down_sends_reads_to_the_primary_and_back(make, pair):
    primary, replica = pair
    app = make()
    assert app.get('/api/admins').headers['X-Read-Source'] == 'replica1'
    replica.stop()
    sources = [app.get('/api/admins').headers['X-Read-Source'] for _ in range(20)]
    assert set(sources) == {'primary'}
    replica.start()
    caught_up(primary, replica)
    back_on_replica(app, 5)


def test_the_primary_down_reads_go_on_from_the_replica_writes_wait_for_it(make, pair):
    primary, replica = pair
    app = make()
    app.get('/api/admins')
    admin_id, token = create(app, 'before-the-outage')
    caught_up(primary, replica)
    replica.sql('STOP SLAVE IO_THREAD')  # what the primary commits next never reaches it
    _, newer = create(app, 'not-on-the-replica')
    primary.stop()
    replica.sql('START SLAVE IO_THREAD')
    try:
        time.sleep(1.2)  # the monitor has seen the primary go
        for _ in range(10):
            response = app.get(f'/api/admins/{admin_id}')
            assert response.headers['X-Read-Source'] == 'replica1'
        # A token the replica has reached is read there; a newer one is a 503, never stale.
        assert app.get(f'/api/admins/{admin_id}', headers={'X-Consistency-Token': token}).status_int == 200
        refused = app.get('/api/admins', headers={'X-Consistency-Token': newer}, status=503, expect_errors=True)
        assert refused.headers['Retry-After']
        write = app.post_json('/api/admins', {'name': 'during', 'email': 'd@x.test'}, headers=AUTH, status=503,
                              expect_errors=True)
        assert write.headers['Retry-After']
    finally:
        primary.start()
    create(app, 'after-the-outage')  # the same app, no restart
