"""Issue 19, the outside security review: each promise of docs/security.rst it led to, checked
where it is kept, through the app (WebTest) and through nginx (the `stack` fixture).

1. A consistency token the app did not issue never makes a read wait for a replica, and
   token waits hold at most half of a process's threads.
2. A read with a credential or a token, in any form nginx or the app reads, is private.
3. /readyz costs no connection per probe, and the public site answers it 404.
4. The HTTP -> HTTPS redirect names the configured name, never the client's Host.
5. Wrong bearer tokens: one limit per address across processes (a count in the database)."""
import http.client
import re
import socket
import threading
import time
import uuid
from urllib.parse import urlsplit

import pytest

from tests.helpers.servers import TOKEN, Held
from wsgiapp import config
from wsgiapp.replicas import sign_position, verified_position

AUTH = {'Authorization': f'Bearer {TOKEN}'}
PRIVATE = 'private, no-store'
ISSUED = re.compile(r'0-1-[0-9]+~[A-Za-z0-9_-]{22}')


# 1. Consistency tokens: signed, verified, and waits bounded

def test_a_token_is_signed_and_only_this_deployments_key_verifies_it():
    key, other = b'k' * 32, b'o' * 32
    token = sign_position(key, '0-1-42,1-2-7')
    assert re.fullmatch(r'0-1-42\.1-2-7~[A-Za-z0-9_-]{22}', token)  # URL-, header- and cookie-safe
    assert verified_position(key, token) == '0-1-42,1-2-7'
    mac = token.rpartition('~')[2]
    for forged in ['0-1-42', '0-1-999999999', '7-1-5', '0-1-43~' + mac, '0-1-42.1-2-7~' + 'A' * 22,
                   token + 'x', token[:-1], '~' + mac, '', '~', 'bench', sign_position(other, '0-1-42,1-2-7'),
                   '0-1-42.1-2-7~' + mac + '~' + mac, '1' * 600 + '~' + mac]:
        assert verified_position(key, forged) is None, forged
    assert verified_position(None, token) is None  # no key: no token is trusted
    assert sign_position(None, '0-1-42') == '0-1-42' and sign_position(key, '') == ''


def test_the_key_comes_from_its_own_secret_or_is_derived_from_the_api_token():
    own = config.from_environ({'WSGIAPP_TOKEN_SECRET': 'a', 'WSGIAPP_API_TOKEN': 'b'}).token_key
    derived = config.from_environ({'WSGIAPP_API_TOKEN': 'b'}).token_key
    assert own and derived and own != derived and b'b' not in derived and len(derived) == 32
    assert derived == config.from_environ({'WSGIAPP_API_TOKEN': 'b'}).token_key  # the same on every host
    assert config.from_environ({}).token_key is None
    assert 'token_key' not in repr(config.from_environ({'WSGIAPP_TOKEN_SECRET': 'a'}))



@pytest.fixture
def replicated(replicated_app):
    """make(**environ) -> a TestApp over the primary and its replica, both caught up."""
    def make(**environ):
        app = replicated_app(**environ)
        assert app.get('/api/admins').headers['X-Read-Source'] == 'replica1'  # the monitor has seen it
        return app
    return make



def create(app, name):
    response = app.post_json('/api/admins', {'name': name, 'email': f'{name}@x.test'}, headers=AUTH, status=201)
    app.last_set_cookie = response.headers['Set-Cookie']
    return response.json['id'], response.headers['X-Consistency-Token']


def response_cookie(app):
    """The token in the write's Set-Cookie."""
    return re.match(r'wsgiapp_consistency=([^;]*);', app.last_set_cookie)[1]


def timed_read(app, path, headers):
    started = time.monotonic()
    response = app.get(path, headers=headers)
    return response, time.monotonic() - started


def test_issued_tokens_read_your_writes_on_the_replica_by_header_and_cookie(replicated, pair):
    primary, replica = pair
    app = replicated()
    with Held(replica) as held:
        admin_id, token = create(app, f'signed-{uuid.uuid4().hex[:6]}')
        assert ISSUED.fullmatch(token) and token.partition('~')[0] == primary.sql('SELECT @@gtid_binlog_pos')[0][0]
        assert response_cookie(app) == token
        app.reset()
        app.set_cookie('wsgiapp_consistency', token)  # as a browser sends it back (WebTest keeps no Secure one)
        threading.Timer(0.2, lambda: held.con.query('UNLOCK TABLES')).start()
        response, waited = timed_read(app, f'/api/admins/{admin_id}', {})
    assert response.headers['X-Read-Source'] == 'replica1' and response.json['id'] == admin_id and waited >= 0.15
    app.reset()
    response = app.get(f'/api/admins/{admin_id}', headers={'X-Consistency-Token': token})
    assert response.headers['X-Read-Source'] == 'replica1' and response.json['id'] == admin_id


@pytest.mark.parametrize('forged', ['0-1-999999999', '7-1-5', 'UNSIGNED', 'OTHER-KEY', 'ALTERED'])
def test_a_token_the_app_did_not_issue_is_read_on_the_primary_at_once(replicated, pair, forged):
    """The denial of service: a position the primary never reached, or a domain no replica
    saw, used to hold a thread for the whole WSGIAPP_REPLICA_WAIT (here 3 s) per read."""
    primary, replica = pair
    app = replicated(WSGIAPP_REPLICA_WAIT='3')
    with Held(replica):
        admin_id, token = create(app, f'forged-{uuid.uuid4().hex[:6]}')
        position = token.partition('~')[0]
        forged = {'UNSIGNED': position,  # what the app issued before: a bare GTID position
                  'OTHER-KEY': sign_position(b'another deployment', position),
                  'ALTERED': position[:-1] + str((int(position[-1]) + 1) % 10) + token[len(position):],
                  }.get(forged, forged)
        app.reset()
        response, waited = timed_read(app, f'/api/admins/{admin_id}', {'X-Consistency-Token': forged})
    assert response.headers['X-Read-Source'] == 'primary' and response.json['id'] == admin_id
    assert waited < 1, f'waited {waited:.2f} s for a token the app never issued'


def test_token_waits_hold_at_most_half_the_threads(replicated, pair):
    """WSGIAPP_POOL_SIZE=2 (two threads): one read may wait for the replica; a second read
    with a token meanwhile goes to the primary at once."""
    primary, replica = pair
    app = replicated(WSGIAPP_REPLICA_WAIT='2', WSGIAPP_POOL_SIZE='2')
    with Held(replica):
        admin_id, token = create(app, f'bounded-{uuid.uuid4().hex[:6]}')
        app.reset()
        headers = {'X-Consistency-Token': token}
        waiting = threading.Thread(target=app.get, args=(f'/api/admins/{admin_id}',), kwargs={'headers': headers})
        waiting.start()
        time.sleep(0.3)  # the first read is in MASTER_GTID_WAIT
        response, waited = timed_read(app, f'/api/admins/{admin_id}', headers)
        assert response.headers['X-Read-Source'] == 'primary' and waited < 1
        waiting.join()


# 2. One reading of credentials: private end to end

PRIVATE_FORMS = {
    'empty Authorization': [('Authorization', '')],
    'Authorization': [('Authorization', 'Bearer anything')],
    'empty token': [('X-Consistency-Token', '')],
    'duplicate token': [('X-Consistency-Token', ''), ('X-Consistency-Token', '0-1-999')],
    'cookie after a tab': [('Cookie', 'a=b;\twsgiapp_consistency=0-1-999')],
    'cookie, odd spacing': [('Cookie', 'a=b ;  wsgiapp_consistency = "0-1-999"')],
    'cookie, second header': [('Cookie', 'a=b'), ('Cookie', 'wsgiapp_consistency=0-1-999')],
}


@pytest.mark.parametrize('form', sorted(PRIVATE_FORMS))
def test_a_read_with_a_credential_or_token_in_any_form_is_private(app, form):
    environ = {}
    for name, value in PRIVATE_FORMS[form]:  # a repeated header reaches the app once (uwsgi, WSGI)
        environ['HTTP_' + name.upper().replace('-', '_')] = value
    for path in ('/api/admins', '/admins', '/api/admins/9'):
        response = app.get(path, extra_environ=environ, status='*')
        assert response.headers['Cache-Control'] == PRIVATE, (form, path)
    assert app.get('/api/admins').headers['Cache-Control'].startswith('public')  # without: public


def raw_request(stack, method, path, headers=(), source=None, tls=True, port=None):
    """(status, headers, body), with `headers` sent as given: repeated, empty, tabs and all;
    from `source` (a local address) when given."""
    where = urlsplit(stack.url if tls else stack.http_url)
    source_address = (source, 0) if source else None
    if tls:
        connection = http.client.HTTPSConnection(where.hostname, port or where.port, timeout=30,
                                                 context=stack.ssl_context(), source_address=source_address)
    else:
        connection = http.client.HTTPConnection(where.hostname, port or where.port, timeout=30,
                                                source_address=source_address)
    try:
        connection.putrequest(method, path, skip_host=any(name == 'Host' for name, _ in headers))
        for name, value in headers:
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


@pytest.mark.parametrize('form', sorted(PRIVATE_FORMS))
def test_through_nginx_such_a_read_is_never_a_hit_nor_kept(stack, form):
    path = f'/api/admins?limit={50 + sorted(PRIVATE_FORMS).index(form)}&after={uuid.uuid4().int % 10**9}'
    seen = []
    for _ in range(2):
        status, headers, _ = raw_request(stack, 'GET', path, PRIVATE_FORMS[form])
        seen.append((status, headers.get('X-Cache-Status'), headers.get('Cache-Control')))
    assert all(status == 200 and cache != 'HIT' and control == PRIVATE for status, cache, control in seen), seen
    # Nothing was kept for the public either: the next plain read is the cache's first.
    assert raw_request(stack, 'GET', path)[1]['X-Cache-Status'] == 'MISS'


@pytest.mark.parametrize('form', ['cookie after a tab', 'cookie, odd spacing', 'cookie, second header'])
def test_through_nginx_a_cached_public_copy_is_never_served_to_a_token_in_a_cookie(stack, form):
    path = f'/admins?limit=7&after={uuid.uuid4().int % 10**9}'
    raw_request(stack, 'GET', path)
    assert raw_request(stack, 'GET', path)[1]['X-Cache-Status'] == 'HIT'
    status, headers, _ = raw_request(stack, 'GET', path, PRIVATE_FORMS[form])
    assert (status, headers['X-Cache-Status'], headers['Cache-Control']) == (200, 'BYPASS', PRIVATE)


# 3. /readyz: cheap, and internal

def connections(sql):
    return int(sql("SHOW GLOBAL STATUS LIKE 'Connections'")[0][1])


def test_readyz_opens_no_connection_per_probe(app, sql):
    app.get('/readyz')
    before = connections(sql)
    for _ in range(200):
        assert app.get('/readyz').text == 'ready\n'
    assert connections(sql) - before <= 2  # one new check a second at most (and the sql fixture's own: none)


def test_readyz_answers_from_a_check_at_most_a_second_old(make_app, sql):
    app = make_app()
    assert app.get('/readyz').status_int == 200
    sql('RENAME TABLE failed_token TO failed_token_away')
    try:
        assert app.get('/readyz').status_int == 200  # the last check, less than a second old
        time.sleep(1.1)
        assert app.get('/readyz', status=503, expect_errors=True).headers['Retry-After']
    finally:
        sql('RENAME TABLE failed_token_away TO failed_token')
    time.sleep(1.1)
    assert app.get('/readyz').status_int == 200


def can_bind(address):
    with socket.socket() as probe:
        try:
            probe.bind((address, 0))
        except OSError:
            return False
    return True


def test_through_nginx_readyz_is_404_to_the_public_and_healthz_is_not(stack):
    if not can_bind('127.0.0.2'):
        pytest.skip('needs 127.0.0.2, a loopback address that is not the host itself')
    status, headers, body = raw_request(stack, 'GET', '/readyz', source='127.0.0.2')
    assert status == 404 and headers['Content-Type'].startswith('text/plain') and b'ready' not in body
    assert headers['Cache-Control'] == 'no-store'
    for path in ('//readyz', '/%72eadyz', '/readyz?x=1'):
        assert raw_request(stack, 'GET', path, source='127.0.0.2')[0] == 404, path
    assert raw_request(stack, 'HEAD', '/readyz', source='127.0.0.2')[0] == 404
    assert raw_request(stack, 'GET', '/healthz', source='127.0.0.2')[0] == 200
    assert raw_request(stack, 'GET', '/readyz', source='127.0.0.1')[0] == 200  # the host's own probes


# 4. The redirect names the configured server

def test_the_https_redirect_never_names_the_clients_host(stack):
    plain = raw_request(stack, 'GET', '/admins?limit=1', tls=False)
    evil = raw_request(stack, 'GET', '/admins?limit=1', [('Host', 'evil.example')], tls=False)
    assert plain[0] == evil[0] == 301
    assert 'evil' not in evil[1]['Location'] and evil[1]['Location'] == plain[1]['Location']
    assert evil[1]['Location'].startswith('https://') and evil[1]['Location'].endswith('/admins?limit=1')


def test_the_site_redirects_to_its_server_name_which_deploy_sets():
    from launcher.process import ROOT
    site = (ROOT / 'conf' / 'nginx' / 'wsgiapp.conf').read_text()
    port80 = site[site.index('server {'):site.index('server {', site.index('server {') + 1)]
    assert 'server_name example.com;' in port80  # docs/deploy.rst's sed makes it the domain
    assert re.search(r'^\s*return 301 https://\$server_name\$request_uri;', port80, re.M)
    assert not re.search(r'^\s*return 301 https://\$host', port80, re.M)


# 5. One limit for wrong API tokens, across processes

@pytest.fixture
def failures(sql):
    sql('DELETE FROM failed_token')
    if time.time() % 60 > 50:  # the count is per minute: not across a minute's end
        time.sleep(61 - time.time() % 60)
    yield sql
    sql('DELETE FROM failed_token')


def write(app, token, address, status):
    return app.post_json('/api/admins', {'name': f'g{uuid.uuid4().hex[:8]}', 'email': 'g@example.com'},
                         headers={'Authorization': f'Bearer {token}'}, extra_environ={'REMOTE_ADDR': address},
                         status=status)


def test_two_processes_allow_ten_wrong_tokens_in_all_then_429(make_app, failures):
    first, second = make_app(), make_app()  # two processes (uwsgi workers, or hosts) of one database
    for n in range(10):
        write((first, second)[n % 2], f'guess{n}', '192.0.2.19', 401)
    for app in (first, second):
        refused = write(app, 'guess-more', '192.0.2.19', 429)
        assert 1 <= int(refused.headers['Retry-After']) <= 60 and refused.json['error']['status'] == 429
        write(app, TOKEN, '192.0.2.19', 429)  # not even the right token: guessing has stopped
    # The 11th wrong token was counted; the next ones were refused before any comparison.
    assert failures('SELECT failures FROM failed_token WHERE address = %s', ('192.0.2.19',)) == ((11,),)
    write(first, TOKEN, '198.51.100.19', 201)  # another address is not slowed
    write(second, 'wrong', '198.51.100.19', 401)


def test_a_right_token_costs_no_write(make_app, failures):
    app = make_app()
    for _ in range(3):
        write(app, TOKEN, '192.0.2.20', 201)
    assert failures('SELECT COUNT(*) FROM failed_token') == ((0,),)


def test_without_the_database_each_process_keeps_its_own_count(make_app, failures):
    app = make_app(database=None, database_problem='DATABASE_URL is not set')
    for n in range(10):
        write(app, f'guess{n}', '192.0.2.21', 401)
    write(app, 'guess-more', '192.0.2.21', 429)
