"""Database links (docs/cluster.rst, "Database links"): TLS on every MariaDB server of the
cluster, verified by the app and by the replica; one account per app host, from its address
only; the replication account from the replica's address only.

Two parts: a MariaDB of its own on 127.0.0.1 with TLS (a right and a wrong CA, a right and a
wrong name, what `wsgiapp check` and the app say), and the `cluster` fixture's booted hosts
(as deploy/site.yml made them), tried from their own network namespaces and an intruder's."""
import io
import json
import shutil
import subprocess
import sys
from urllib.parse import quote

import MySQLdb
import MySQLdb.cursors
import pytest
import webtest

from launcher.mariadb import APP_DATABASE, APP_USER, MariaDB
from launcher.process import ROOT, free_port
from launcher.replication import REPLICATION_USER
from launcher.tls import Authority
from wsgiapp import check, config, schema
from wsgiapp.app import Application

pytestmark = pytest.mark.mariadb  # every test here starts one (the cluster's add their own markers)

PROBE = r'''
import json, sys, MySQLdb
kwargs = json.loads(sys.stdin.read())
try:
    con = MySQLdb.connect(**kwargs)
    cursor = con.cursor()
    cursor.execute("SHOW SESSION STATUS LIKE 'Ssl_version'")
    print(json.dumps(['connected', cursor.fetchone()[1]]))
except MySQLdb.Error as error:
    print(json.dumps(['refused', error.args[0], str(error.args[-1])]))
'''


def attempt(wrap=(), **kwargs):
    """MySQLdb.connect(**kwargs) in a process of its own, run through `wrap` (`ip netns exec
    HOST`: from that host): ['connected', TLS version ('' in clear text)] or ['refused',
    code, message]. The password goes through stdin, never a command line."""
    done = subprocess.run([*wrap, sys.executable, '-c', PROBE], input=json.dumps({'connect_timeout': 5, **kwargs}),
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def host_not_allowed(result):
    """Refused before any password is looked at: no account of the server is for that address
    (1130; over TLS the client reports it as 2002, the error packet coming before the handshake)."""
    return result[0] == 'refused' and (result[1] == 1130 or result[1] == 2002 and ' 1130 - ' in result[2])


def clear_text(kwargs):
    """The same login without TLS."""
    return {**{key: value for key, value in kwargs.items() if key != 'ssl'}, 'ssl_mode': 'DISABLED'}


# --- one server of its own, on 127.0.0.1 and 127.0.0.2, its certificate for 127.0.0.1 only --

@pytest.fixture(scope='module')
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp('database-tls')
    running = MariaDB(base / 'db1', port=free_port(), authority=Authority(base / 'db-ca', 'test database CA'),
                      extra_args=['--bind-address=127.0.0.1,127.0.0.2'])
    try:
        running.start()
        schema.initdb(config.from_environ({'DATABASE_URL': running.admin_url()}))
        yield running
    finally:
        running.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope='module')
def other_ca(tmp_path_factory):
    authority = Authority(tmp_path_factory.mktemp('other-ca'), 'not the database CA')
    authority.issue('someone')
    return authority.cert


def url(server, query, host='127.0.0.1'):
    return (f'mysql://{APP_USER}:{quote(server.password(), safe="")}@{host}:{server.port}/{APP_DATABASE}'
            + (f'?{query}' if query else ''))


def connect_args(server, query, host='127.0.0.1'):
    return config.parse_database_url(url(server, query, host))


def test_the_server_requires_tls_and_the_launcher_url_verifies_it(server):
    assert server.sql('SELECT @@require_secure_transport, @@have_ssl') == ((1, 'YES'),)
    kwargs = config.parse_database_url(server.url(tcp=True))
    assert kwargs['ssl_mode'] == 'VERIFY_IDENTITY' and kwargs['ssl'] == {'ca': str(server.authority.cert)}
    assert attempt(**kwargs) == ['connected', 'TLSv1.3']
    # The socket counts as secure: the administrator, and `make run`, keep it.
    assert server.sql('SELECT 1') == ((1,),)


def test_clear_text_is_refused_even_with_the_right_password(server):
    refused = attempt(**clear_text(connect_args(server, '')))
    assert refused[:2] == ['refused', 1045], refused


@pytest.mark.parametrize('mode', ['VERIFY_IDENTITY', 'VERIFY_CA', 'REQUIRED'])
def test_a_wrong_ca_is_refused_whatever_the_mode(server, other_ca, mode):
    refused = attempt(**connect_args(server, f'ssl-ca={other_ca}&ssl-mode={mode}'))
    assert refused[:2] == ['refused', 2026] and 'certificate' in refused[2], refused


def test_a_wrong_name_is_refused(server):
    ca = server.authority.cert
    assert attempt(**connect_args(server, f'ssl-ca={ca}', host='127.0.0.1')) == ['connected', 'TLSv1.3']
    # The same server, through an address its certificate does not name.
    for query in (f'ssl-ca={ca}', f'ssl-ca={ca}&ssl-mode=VERIFY_IDENTITY', f'ssl-ca={ca}&ssl-mode=VERIFY_CA'):
        refused = attempt(**connect_args(server, query, host='127.0.0.2'))
        assert refused[:2] == ['refused', 2026], (query, refused)
    # REQUIRED checks the chain only, as MySQL's clients do with --ssl-ca: said in the docs.
    assert attempt(**connect_args(server, f'ssl-ca={ca}&ssl-mode=REQUIRED', host='127.0.0.2'))[0] == 'connected'


def test_no_ca_means_the_systems_cas_which_do_not_know_a_private_one(server):
    refused = attempt(**connect_args(server, 'ssl-mode=VERIFY_IDENTITY'))
    assert refused[:2] == ['refused', 2026], refused


def test_check_names_the_tls_failure(server, other_ca):
    lines = []
    check.check_database(check.Report(lines.append), {'DATABASE_URL': url(server, f'ssl-ca={other_ca}')})
    text = '\n'.join(lines)
    assert 'FAIL' in text and 'TLS/SSL error' in text and 'ssl-ca in DATABASE_URL' in text, text
    assert server.password() not in text
    lines.clear()
    check.check_database(check.Report(lines.append), {
        'DATABASE_URL': url(server, f'ssl-ca={server.authority.cert}'),
        'DATABASE_REPLICA_URL': url(server, f'ssl-ca={server.authority.cert}', host='127.0.0.2')})
    text = '\n'.join(lines)
    assert 'DATABASE_REPLICA_URL (replica 1)' in text and 'FAIL' in text, text
    assert 'ok    DATABASE_URL connects over TLS (VERIFY_IDENTITY)' in text, text


def test_the_app_answers_503_and_logs_the_cause(server, other_ca):
    application = Application(config.from_environ({'DATABASE_URL': url(server, f'ssl-ca={other_ca}')}))
    log = io.StringIO()
    request = webtest.TestRequest.blank('/api/admins')
    request.environ['wsgi.errors'] = log
    response = request.get_response(application)
    assert response.status_int == 503
    assert 'TLS' not in response.text and 'certificate' not in response.text
    assert 'TLS/SSL error' in log.getvalue() and 'certificate' in log.getvalue(), log.getvalue()
    assert server.password() not in log.getvalue()
    # Unreadable: a configuration error, found before any connection.
    missing = config.from_environ({'DATABASE_URL': url(server, 'ssl-ca=/nonexistent/ca.pem')})
    assert missing.database is None and 'ssl-ca file cannot be read' in missing.database_problem


# --- the cluster ---------------------------------------------------------------------------

def wrap(cluster, host):
    """Run a program of this machine in a host's network namespace: from that host's address."""
    return cluster.network.wrap(host)


def db_ca(cluster):
    """The database CA's certificate, on the control machine (its key never leaves it)."""
    return cluster.secrets / 'db-ca' / 'ca.pem'


def app_login(cluster, app):
    """What the app host's EnvironmentFile says (DATABASE_URL), with the control machine's copy
    of the CA its ssl-ca names, for a client of this machine."""
    environment = dict(line.split('=', 1) for line in app.run(['cat', '/etc/wsgiapp/env']).splitlines()
                       if '=' in line and not line.startswith('#'))
    on_host = 'ssl-ca=/etc/wsgiapp/db-ca.pem'
    assert on_host in environment['DATABASE_URL']
    assert app.run(['cat', '/etc/wsgiapp/db-ca.pem']) == db_ca(cluster).read_text().strip()
    login = config.parse_database_url(environment['DATABASE_URL'].replace(on_host, f'ssl-ca={db_ca(cluster)}'))
    assert login['ssl_mode'] == 'VERIFY_IDENTITY', login
    return login


def replication_login(cluster):
    return {'host': cluster.db.address, 'port': cluster.db.port, 'user': REPLICATION_USER,
            'password': (cluster.secrets / 'replication.password').read_text().strip(),
            'ssl': {'ca': str(db_ca(cluster))}, 'ssl_mode': 'VERIFY_IDENTITY'}


def test_every_database_server_requires_tls_and_the_replica_verifies_the_primary(cluster):
    for server in [cluster.db, *cluster.replicas]:
        assert server.sql('SELECT @@require_secure_transport, @@have_ssl') == ((1, 'YES'),)
    for replica in cluster.replicas:
        con = MySQLdb.connect(**replica.admin_kwargs(), cursorclass=MySQLdb.cursors.DictCursor)
        try:
            cursor = con.cursor()
            cursor.execute('SHOW SLAVE STATUS')
            row = cursor.fetchone()
        finally:
            con.close()
        assert row['Master_SSL_Allowed'] == 'Yes' and row['Master_SSL_Verify_Server_Cert'] == 'Yes'
        assert row['Master_SSL_CA_File'] == '/etc/mysql/wsgiapp-tls/ca.pem'
        assert replica.run(['cat', row['Master_SSL_CA_File']]) == db_ca(cluster).read_text().strip()
        assert row['Slave_IO_Running'] == 'Yes', row['Last_IO_Error']


def test_each_app_host_connects_over_verified_tls_and_never_in_clear_text(cluster):
    for app in cluster.apps:
        login = app_login(cluster, app)
        assert attempt(wrap(cluster, app.name), **login) == ['connected', 'TLSv1.3']
        assert attempt(wrap(cluster, app.name), **clear_text(login))[:2] == ['refused', 1045]


def test_an_intruder_gets_no_login_in_clear_text_nor_with_tls(cluster):
    """Scenario d's database side: a host of its own on the bridge, 3306 reachable."""
    login = app_login(cluster, cluster.apps[0])
    cluster.network.add_host('test18')
    try:
        intruder = wrap(cluster, 'test18')
        tries = {'clear text, root': attempt(intruder, host=cluster.db.address, port=cluster.db.port, user='root',
                                             ssl_mode='DISABLED'),
                 'clear text, an app host\'s login': attempt(intruder, **clear_text(login)),
                 'TLS, an app host\'s login': attempt(intruder, **login),
                 'TLS, the replication login': attempt(intruder, **replication_login(cluster))}
    finally:
        cluster.network.remove_host('test18')
    print(json.dumps(tries, indent=2))
    assert all(host_not_allowed(result) for result in tries.values()), tries


def test_each_account_only_from_its_own_host(cluster):
    app1, app2 = cluster.apps[:2]
    edge, replica = cluster.edge.name, cluster.replicas[0].name
    assert host_not_allowed(attempt(wrap(cluster, edge), **app_login(cluster, app1)))
    assert attempt(wrap(cluster, app1.name), **app_login(cluster, app2))[:2] == ['refused', 1045]
    assert attempt(wrap(cluster, app2.name), **app_login(cluster, app2)) == ['connected', 'TLSv1.3']
    assert attempt(wrap(cluster, replica), **replication_login(cluster)) == ['connected', 'TLSv1.3']
    assert attempt(wrap(cluster, app1.name), **replication_login(cluster))[:2] == ['refused', 1045]
    assert host_not_allowed(attempt(wrap(cluster, edge), **replication_login(cluster)))


def test_each_app_account_has_exactly_the_apps_rights(cluster):
    """Defense in depth: on the primary SELECT, INSERT, UPDATE, DELETE on the app's database and
    nothing else; on a replica SELECT there and SLAVE MONITOR; TLS required of the account
    itself too (REQUIRE SSL). No other TCP account of the app's."""
    accounts = {(f'{APP_USER}_{app.name}', app.address) for app in cluster.apps}
    replication = {(REPLICATION_USER, replica.address) for replica in cluster.replicas}
    for server, rights, everywhere in [(cluster.db, 'SELECT, INSERT, UPDATE, DELETE', 'USAGE'),
                                       *((replica, 'SELECT', 'SLAVE MONITOR') for replica in cluster.replicas)]:
        rows = server.sql(("SELECT user, host FROM mysql.user WHERE (user = %s OR user LIKE %s OR user = %s) "
                           "AND host <> 'localhost'", (APP_USER, APP_USER + r'\_%', REPLICATION_USER)))
        assert set(rows) == accounts | (replication if server is cluster.db else set()), (server.name, rows)
        for user, host in accounts:
            grants = [row[0] for row in server.sql(('SHOW GRANTS FOR %s@%s', (user, host)))]
            assert len(grants) == 2, grants
            assert grants[0].startswith(f'GRANT {everywhere} ON *.* TO `{user}`@`{host}`'), grants
            assert grants[0].endswith('REQUIRE SSL'), grants
            assert grants[1] == f'GRANT {rights} ON `{APP_DATABASE}`.* TO `{user}`@`{host}`', grants
