"""make cluster: an edge, three app hosts, a primary and a replica, each a booted Debian 12
server (launcher/cluster.py) provisioned by deploy/site.yml; topology.json, the edge spreading
requests over the app hosts, and make cluster-stop leaving nothing behind. What the playbook
makes on each host is tests/test_playbook.py's; the link's defence is the fault suite's d."""
import json
import os
import subprocess

import pytest

from launcher.cluster import Cluster
from tests.helpers.fleet import needs_a_fleet
from tests.helpers.load import served_by
from tests.helpers.procs import net_namespace as netns_of
from tests.helpers.web import call

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
    loopback), and none of its processes runs as root (conf/systemd/wsgiapp.service)."""
    for app in cluster.apps:
        processes = app.processes('uwsgi')
        assert len(processes) == 4  # the master, two workers and the metrics mule
        for process in processes:
            assert 0 not in process.uids() and 0 not in process.gids(), (app.name, process.pid, process.uids())
        listening = app.run(['ss', '-Hltnup']).splitlines()
        assert [line.split()[4] for line in listening if '"uwsgi"' in line] == ['127.0.0.1:9117'], listening
        assert any('"nginx"' in line for line in listening), listening
        assert app.run(['stat', '-c', '%F %U', '/run/wsgiapp/uwsgi.sock']) == 'socket wsgiapp'
    # The edge's request id and the client's address, on the app host's own log line for the
    # same request.
    request_id = call(cluster, 'GET', '/healthz')[1]['X-Request-ID']
    host = served_by(cluster, [request_id])[request_id][0]
    app = next(app for app in cluster.apps if app.address == host)

    def logged():
        return [line for line in app.access_log.read_text().splitlines() if f'id={request_id} ' in line]
    from launcher.wait import wait_for
    line = wait_for(logged, 5, 'the app host to log the request')[0]
    assert line.startswith(f'{cluster.network.address("bridge")} via {cluster.edge_address} ')


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
