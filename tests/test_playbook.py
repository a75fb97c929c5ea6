"""The playbook (deploy/site.yml) against booted Debian 12 hosts over SSH, as a user runs it
against their own servers: make cluster's hosts (an edge, three app hosts, a primary and a
replica), provisioned from nothing; then provisioned again, which must change nothing; then
each host checked as an operator checks it, and the site used through the edge. The rolling
play is the fault suite's scenario c (tests/faults/test_cluster_faults.py)."""
import json
import re
import ssl
import time
import urllib.request

import pytest

from tests.helpers.fleet import on, play, secret

pytestmark = [pytest.mark.server]


@pytest.fixture(scope='module')
def fleet(cluster):
    """The cluster's booted hosts, as the playbook sees them (launcher/fleet.py)."""
    cluster.fleet.first_run = cluster.first_run
    return cluster.fleet


def https(fleet, path, method='GET', body=None, headers=()):
    context = ssl.create_default_context(cafile=str(fleet.base / 'secrets' / 'web-ca' / 'ca.pem'))
    request = urllib.request.Request(f'https://{fleet.address("edge1")}{path}', data=body, method=method,
                                     headers=dict(headers))
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_the_first_run_provisions_every_host_and_a_second_changes_nothing(fleet):
    _, first = fleet.first_run
    assert set(first) == set(fleet.names()) and all(host['failed'] == 0 and host['changed'] > 0
                                                    for host in first.values()), first
    output, second = play(fleet)
    assert all(host['changed'] == 0 and host['failed'] == 0 for host in second.values()), output[-6000:]


def test_each_kind_of_host_runs_its_services_enabled_and_no_other(fleet):
    expected = {'edge1': {'nginx': 'enabled', 'wsgiapp': None, 'mariadb': 'disabled'},
                'app1': {'nginx': 'enabled', 'wsgiapp': 'enabled', 'mariadb': 'disabled'},
                'db1': {'nginx': 'disabled', 'wsgiapp': None, 'mariadb': 'enabled'},
                'db2': {'nginx': 'disabled', 'wsgiapp': None, 'mariadb': 'enabled'}}
    for name, units in expected.items():
        for unit, state in units.items():
            done = fleet.ssh(name, f'systemctl is-enabled {unit}.service; systemctl is-active {unit}.service')
            lines = done.stdout.split()
            if state is None:
                assert 'active' not in lines, (name, unit, lines)
            else:
                assert lines[0] == state and (lines[1] == 'active') == (state == 'enabled'), (name, unit, lines)
        assert on(fleet, name, 'systemctl is-system-running || true') == 'running', name


def listening(fleet, name):
    """{(address, port)} of the host's listening TCP sockets, sshd's left out."""
    lines = on(fleet, name, "ss -Hltn | awk '{print $4}'").split()
    found = {tuple(line.rsplit(':', 1)) for line in lines}
    return {(address, int(port)) for address, port in found if port != '22'}


def test_each_host_listens_only_where_the_docs_say(fleet):
    def private(name, *ports):  # on the host's private address: the exporters, the link, MariaDB
        return {(fleet.address(name), port) for port in (9100, *ports)}  # node exporter on each
    # The site's listen lines, and nginx's exporter.
    assert listening(fleet, 'edge1') == {('0.0.0.0', 80), ('0.0.0.0', 443)} | private('edge1', 9113)
    for name in fleet.groups()['app']:
        # The link's port, the app's metrics (uwsgi's mule: docs/metrics.rst), nginx's exporter.
        assert listening(fleet, name) == private(name, 3031, 9117, 9113), name
    for name in ('db1', 'db2'):
        assert listening(fleet, name) == private(name, 3306, 9104), name


def test_keys_and_secrets_have_their_modes_owners_and_hosts(fleet):
    stat = "stat -c '%n %U %G %a' "
    assert on(fleet, 'edge1', stat + '/etc/wsgiapp/link/edge.key /etc/wsgiapp/tls/privkey.pem').splitlines() == [
        '/etc/wsgiapp/link/edge.key root root 600', '/etc/wsgiapp/tls/privkey.pem root root 600']
    assert on(fleet, 'app1', stat + '/etc/wsgiapp/link/app.key /etc/wsgiapp/env').splitlines() == [
        '/etc/wsgiapp/link/app.key root root 600', '/etc/wsgiapp/env root root 600']
    database_files = '/etc/mysql/wsgiapp-tls/server.key /etc/mysql/wsgiapp-accounts.sql'
    assert on(fleet, 'db1', stat + database_files).splitlines() == [
        '/etc/mysql/wsgiapp-tls/server.key mysql mysql 600', '/etc/mysql/wsgiapp-accounts.sql root root 600']
    # Each host holds its own keys only; no CA key leaves the control machine.
    assert fleet.ssh('app1', 'test -e /etc/wsgiapp/link/edge.key').returncode == 1
    assert fleet.ssh('edge1', 'test -e /etc/wsgiapp/link/app.key').returncode == 1
    for name in fleet.names():
        assert on(fleet, name, 'find / -xdev -name ca.key') == '', name
    assert (fleet.base / 'secrets' / 'link-ca' / 'ca.key').stat().st_mode & 0o777 == 0o600
    assert (fleet.base / 'secrets').stat().st_mode & 0o777 == 0o700
    # The API token is in the app host's environment file and nowhere in the edge's files.
    token = secret(fleet, 'api-token')
    assert fleet.ssh('edge1', f'grep -rq {token} /etc /srv').returncode == 1


def test_the_app_accounts_have_exactly_their_grants(fleet):
    address = fleet.address('app1')
    account = f'`wsgiapp_app1`@`{address}`'
    show = f"mariadb -N -e \"SHOW GRANTS FOR 'wsgiapp_app1'@'{address}'\""

    def grants(name):  # without the password's hash, which no test output should carry
        return [re.sub(r" IDENTIFIED BY PASSWORD '[^']*'", '', line) for line in on(fleet, name, show).splitlines()]
    assert grants('db1') == [f'GRANT USAGE ON *.* TO {account} REQUIRE SSL',
                             f'GRANT SELECT, INSERT, UPDATE, DELETE ON `wsgiapp`.* TO {account}']
    assert grants('db2') == [f'GRANT SLAVE MONITOR ON *.* TO {account} REQUIRE SSL',
                             f'GRANT SELECT ON `wsgiapp`.* TO {account}']
    users = on(fleet, 'db1', "mariadb -N -e \"SELECT CONCAT(user, '@', host) FROM mysql.user "
                             "WHERE user LIKE 'wsgiapp%' OR user = 'replication'\"").split()
    assert sorted(users) == sorted([*(f'wsgiapp_{name}@{fleet.address(name)}' for name in fleet.groups()['app']),
                                    f'replication@{fleet.address("db2")}'])


def test_the_site_answers_through_the_edge_and_a_write_reaches_the_replica(fleet):
    status, _, body = https(fleet, '/')
    assert status == 200 and b'<html' in body.lower()
    token = secret(fleet, 'api-token')
    status, headers, body = https(fleet, '/api/admins', 'POST',
                                  json.dumps({'name': 'provisioned', 'email': 'p@example.com'}).encode(),
                                  [('Authorization', f'Bearer {token}'), ('Content-Type', 'application/json')])
    assert status == 201, body
    created = json.loads(body)
    # A read with the write's consistency token sees it, wherever it is read.
    status, _, body = https(fleet, f'/api/admins/{created["id"]}', headers=[
        ('X-Consistency-Token', headers['X-Consistency-Token'])])
    assert status == 200 and json.loads(body) == created
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        row = on(fleet, 'db2', f'mariadb -N wsgiapp -e "SELECT name FROM vc_admin WHERE id = {created["id"]}"')
        if row == 'provisioned':
            break
        time.sleep(0.2)
    assert row == 'provisioned'
    assert on(fleet, 'db2', "mariadb -e 'SHOW SLAVE STATUS\\G' | grep -E 'Slave_(IO|SQL)_Running:|Using_Gtid|"
                            "Master_SSL_Allowed|Master_SSL_Verify'").split() == [
        'Slave_IO_Running:', 'Yes', 'Slave_SQL_Running:', 'Yes', 'Master_SSL_Allowed:', 'Yes',
        'Master_SSL_Verify_Server_Cert:', 'Yes', 'Using_Gtid:', 'Slave_Pos']
    # Without a token the API refuses the write, as on one host.
    status, _, _ = https(fleet, '/api/admins', 'POST', b'{"name": "x", "email": "x@example.com"}',
                         [('Content-Type', 'application/json')])
    assert status == 401
