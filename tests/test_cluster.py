"""make cluster: an edge, three app hosts, a primary and a replica, each a booted Debian 12
server (launcher/cluster.py) provisioned by deploy/site.yml; topology.json, the edge spreading
requests over the app hosts, and make cluster-stop leaving nothing behind. What the playbook
makes on each host is tests/test_playbook.py's; the link's defence is the fault suite's d."""
import json
import os
import subprocess
import time
import urllib.request
from collections import Counter

import pytest

from launcher import logs
from launcher.cluster import Cluster
from launcher.logs import read as read_log
from launcher.wait import wait_for
from tests.helpers.alerts import alerts_after, quiet
from tests.helpers.fleet import needs_a_fleet
from tests.helpers.load import bearer, served_by
from tests.helpers.procs import net_namespace as netns_of
from tests.helpers.web import call
from tests.helpers.wrk import wrk

pytestmark = [pytest.mark.e2e, pytest.mark.uwsgi, pytest.mark.mariadb]


def test_topology_says_what_runs_where_and_how_to_reach_it(cluster):
    topology = json.loads(cluster.topology_file.read_text())
    assert topology['edge']['url'] == cluster.url + '/'
    assert [app['name'] for app in topology['app']] == ['app1', 'app2', 'app3']
    assert [replica['name'] for replica in topology['db']['replicas']] == ['db2']
    subnet = topology['network']['subnet']
    assert subnet.startswith('10.213.') and subnet.endswith('.0/24')
    assert subprocess.run(['ip', 'link', 'show', topology['network']['bridge']]).returncode == 0
    hosts = [topology['edge'], *topology['app'], topology['db']['primary'], *topology['db']['replicas']]
    assert len({host['address'] for host in hosts}) == len({host['machine'] for host in hosts}) == 6
    for host, running in zip(hosts, cluster.hosts()):
        assert host['name'] == running.name and host['ssh'] == f'root@{host["address"]}'
        assert host['address'].rsplit('.', 1)[0] == subnet.rsplit('.', 1)[0]
        # Each host's server runs in that host's own network namespace, and nowhere else.
        namespace = os.stat(f'/run/netns/{host["netns"]}').st_ino
        assert netns_of(running.pid()) == namespace != netns_of(os.getpid()), host['name']
        # `ssh` and the inventory's options reach it as the host it says it is.
        assert running.run('hostname') == host['name']
    assert {app['version'] for app in topology['app']} == {cluster.apps[0].version()}
    # The replica follows the primary by GTID, and is read-only.
    replica = cluster.replicas[0]
    status = replica.sql('SHOW SLAVE STATUS')[0]
    assert 'Yes' in status and replica.sql('SELECT @@read_only, @@gtid_slave_pos <> ""')[0] == (1, 1)


def test_the_edge_spreads_requests_over_every_app_host(cluster):
    ids = [call(cluster, 'GET', '/healthz')[1]['X-Request-ID'] for _ in range(12)]
    served = served_by(cluster, ids)
    assert len(served) == 12
    assert {host for host, _, _ in served.values()} == {app.address for app in cluster.apps}


def test_every_app_host_serves_through_its_own_nginx_and_uwsgi_never_as_root(cluster):
    """The link ends at each app host's nginx, which passes to uwsgi's unix socket: uwsgi
    speaks its protocol on no TCP port (its one TCP listener is the metrics mule's HTTP, on
    the private address for the network's Prometheus), and none of its processes runs as
    root (conf/systemd/wsgiapp.service)."""
    for app in cluster.apps:
        processes = app.processes('uwsgi')
        assert len(processes) == 4  # the master, two workers and the metrics mule
        for process in processes:
            assert 0 not in process.uids() and 0 not in process.gids(), (app.name, process.pid, process.uids())
        listening = app.run(['ss', '-Hltnup']).splitlines()
        assert [line.split()[4] for line in listening if '"uwsgi"' in line] == [f'{app.address}:9117'], listening
        assert any('"nginx"' in line for line in listening), listening
        assert app.run(['stat', '-c', '%F %U', '/run/wsgiapp/uwsgi.sock']) == 'socket wsgiapp'
    # The edge's request id and the client's address, on the app host's own log line for the
    # same request.
    request_id = call(cluster, 'GET', '/healthz')[1]['X-Request-ID']
    host = served_by(cluster, [request_id])[request_id][0]
    app = next(app for app in cluster.apps if app.address == host)

    def logged():
        return [line for line in read_log(app.access_log) if line['request_id'] == request_id]
    line = wait_for(logged, 5, 'the app host to log the request')[0]
    assert (line['client'], line['edge']) == (cluster.network.address('bridge'), cluster.edge_address)
    # And the same request's path by its id across the hosts' journals (make logs): the
    # edge's line and the app host's, and no other.
    expected = [(cluster.edge.name, 'wsgiapp_access', '200'), (app.name, 'wsgiapp_link', '200')]

    def joined():
        return [(where, source, entry['status']) for where, source, entry in logs.cluster(cluster.base, request_id)]
    wait_for(lambda: joined() == expected, 5, 'both lines in the journals')


def test_make_logs_finds_a_request_after_more_lines_than_the_journal_keeps(cluster):
    """nginx drops a syslog line journald has not room for yet: after a burst at the edge its
    journal misses most lines. make logs still finds a request's lines, from the files nginx
    writes itself, which have every one."""
    burst = wrk(cluster, 32, 8, '/')  # cached at the edge: an access line each, no app host
    assert burst['2xx/s'] * 8 > 12_000 and burst['socket_errors'] == 0, burst
    request_id = call(cluster, 'GET', '/healthz')[1]['X-Request-ID']
    expected_hosts = {cluster.edge.name} | {app.name for app in cluster.apps}

    def joined():
        return {(source, entry['status']) for where, source, entry in logs.cluster(cluster.base, request_id)
                if where in expected_hosts}
    wait_for(lambda: joined() == {('wsgiapp_access', '200'), ('wsgiapp_link', '200')}, 5,
             'the edge\'s line and the app host\'s')


def test_the_control_machines_prometheus_sees_every_host_and_an_app_host_going_down(cluster, cluster_monitor,
                                                                                    tmp_path):
    """make cluster-monitor: every exporter of every host up (deploy/roles/monitoring, listed
    from topology.json), each app host's requests counted exactly, the replica's threads as
    its exporter reads them; AppHostDown for the one app host whose uwsgi stops, firing
    within 40 s and resolving once it is back, with no unrelated alert; and the dashboard
    showing it (docs/_static/dashboard-cluster.png is such a screenshot)."""
    monitor = cluster_monitor
    assert Counter(job for job, _, _ in monitor.targets()) == {'node': 6, 'nginx': 4, 'wsgiapp': 3, 'mysqld': 2}
    assert monitor.down_targets() == []
    since = quiet(monitor)
    assert monitor.value('mysql_slave_status_slave_io_running{host="db2"}') == 1
    assert monitor.value('mysql_slave_status_slave_sql_running{host="db2"}') == 1
    # Past the edge's cache (a bearer token), spread over the app hosts.
    expr = 'sum(wsgiapp_requests_total{route="/api/admins",method="GET",status="200"})'
    time.sleep(6)  # a scrape after the set-up's requests
    before = monitor.value(expr) or 0
    for _ in range(30):
        assert call(cluster, 'GET', '/api/admins', headers=bearer(cluster))[0] == 200
    wait_for(lambda: monitor.value(expr) == before + 30, 20, 'the 30 requests, summed over the app hosts',
             interval=1, detail=lambda: f'{monitor.value(expr)} != {before} + 30')
    # Each app host's own count: the edge spread them (per-host answers, as the dashboard shows them).
    assert monitor.value('count(sum by (host) (wsgiapp_requests_total{route="/api/admins"}) > 0)') == 3

    app = cluster.apps[2]
    app.run(['systemctl', 'stop', 'wsgiapp'])
    stopped = time.monotonic()
    try:
        wait_for(lambda: 'AppHostDown' in monitor.firing(), 40, 'AppHostDown to fire', interval=1)
        fired_after = time.monotonic() - stopped
        assert monitor.firing()['AppHostDown']['host'] == app.name
        with urllib.request.urlopen(monitor.url + '/consoles/wsgiapp.html', timeout=10) as response:
            page = response.read().decode()
        assert 'error executing template' not in page and 'AppHostDown' in page and 'DOWN' in page
        assert all(host.address in page and host.name in page for host in cluster.hosts())  # every host's targets
        monitor.screenshot(tmp_path / 'dashboard.png')
        assert (tmp_path / 'dashboard.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    finally:
        app.run(['systemctl', 'start', 'wsgiapp'])
    alerts_after(monitor, since, fired=[('AppHostDown', app.name)])  # and it resolves, and nothing else fired
    print(f'AppHostDown fired {fired_after:.0f} s after uwsgi stopped on {app.name}')


def test_make_cluster_and_cluster_stop_leave_nothing_behind(tmp_path):
    """The Makefile's commands, on a cluster of one app host and no replica of their own."""
    needs_a_fleet()
    var, make = tmp_path / 'var', ['make', '-s', f'VAR={tmp_path / "var"}', 'APP_NODES=1', 'DB_REPLICAS=0']
    small = Cluster(var / 'cluster', apps=1, replicas=0)
    try:
        done = subprocess.run([*make, 'cluster'], capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
        assert f'ready: {small.url}/' in done.stdout
        assert call(small, 'GET', '/api/admins')[0] == 200
        status = subprocess.run([*make, 'cluster-status'], capture_output=True, text=True, timeout=120)
        assert status.returncode == 0 and 'app1' in status.stdout and 'wsgiapp active' in status.stdout, status.stdout
        pids = [host.machine().pid for host in small.hosts()]
        assert all(pids) and small.fleet.network.leftovers()
        done = subprocess.run([*make, 'cluster-stop'], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert small.leftovers() == []
        assert not any(os.path.exists(f'/proc/{pid}') for pid in pids)
    finally:
        small.down()


def test_without_root_make_cluster_says_why_in_one_line(tmp_path, monkeypatch, capsys):
    """No containers without root: one line, which names what is missing and that make run
    needs none of it; nothing is made."""
    from launcher.__main__ import main
    monkeypatch.setattr(os, 'geteuid', lambda: 65534)
    assert main(['cluster-up', str(tmp_path / 'cluster')]) == 1
    out, err = capsys.readouterr()
    assert out == '' and len(err.splitlines()) == 1 and 'root' in err and 'make run' in err, err
    assert not (tmp_path / 'cluster').exists()
