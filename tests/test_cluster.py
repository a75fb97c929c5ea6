"""make cluster: separate hosts as network namespaces on the launcher's own bridge,
topology.json, the edge spreading requests over the app hosts, and make cluster-stop
leaving nothing behind. Real nginx, uwsgi and MariaDB; the link itself is tested in
tests/faults/test_cluster_faults.py (the intruder)."""
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from launcher import procs
from launcher.cluster import Cluster
from tests.helpers.load import served_by
from tests.helpers.procs import net_namespace as netns_of
from tests.helpers.servers import needs_namespaces, needs_root, new_base
from tests.helpers.web import call

pytestmark = [pytest.mark.e2e, pytest.mark.uwsgi, pytest.mark.mariadb]


def pid_of(pidfile):
    return int(Path(pidfile).read_text().split()[0])


def test_topology_says_what_runs_where(cluster):
    needs_namespaces(cluster)
    topology = json.loads(cluster.topology_file.read_text())
    assert topology['edge']['url'] == cluster.url + '/'
    assert [app['name'] for app in topology['app']] == ['app1', 'app2', 'app3']
    subnet = topology['network']['subnet']
    assert subnet.startswith('10.213.') and subnet.endswith('.0/24')
    assert subprocess.run(['ip', 'link', 'show', topology['network']['bridge']]).returncode == 0
    hosts = topology['app'] + [topology['db']['primary']] + topology['db']['replicas']
    assert [replica['name'] for replica in topology['db']['replicas']] == ['db2']
    assert len({host['address'] for host in hosts} | {topology['edge']['address']}) == 6
    for host in hosts:
        # Each server runs inside its own host's namespace, and nowhere else.
        namespace = os.stat(f'/run/netns/{host["netns"]}').st_ino
        assert netns_of(pid_of(host['pidfile'])) == namespace != netns_of(os.getpid())
        assert host['address'].rsplit('.', 1)[0] == subnet.rsplit('.', 1)[0]
    assert all(Path(server['socket']).is_socket() for server in hosts[3:])
    # The replica follows the primary by GTID, and is read-only.
    replica = cluster.replicas[0]
    status = replica.sql('SHOW SLAVE STATUS')[0]
    assert 'Yes' in status and replica.sql('SELECT @@read_only, @@gtid_slave_pos <> ""')[0] == (1, 1)


def test_the_edge_spreads_requests_over_every_app_host(cluster):
    ids = [call(cluster, 'GET', '/healthz')[1]['X-Request-ID'] for _ in range(12)]
    served = served_by(cluster, ids)
    assert len(served) == 12
    assert {host for host, _, _ in served.values()} == {app.address for app in cluster.apps}


@needs_root
@pytest.mark.parametrize('namespaces', [True, False], ids=['namespaces', 'loopback'])
def test_cluster_stop_leaves_nothing_behind(namespaces):
    hosts = Cluster(new_base() / 'cluster', apps=2, namespaces=namespaces)
    try:
        hosts.up()
        assert call(hosts, 'GET', '/api/admins')[0] == 200
        pids = [server.pid() for server in (hosts.edge, hosts.db, *hosts.replicas, *(app.uwsgi for app in hosts.apps))]
        assert all(pids)
        if namespaces:
            assert hosts.network.leftovers()  # the bridge and the namespaces, which down() must remove
        else:
            assert hosts.network.subnet.network_address.is_loopback
        hosts.down()
        assert not any(procs.alive(pid) for pid in pids)
        assert hosts.network.leftovers() == []
        assert not hosts.topology_file.exists() and not hosts.edge.run_dir.exists()
        assert [path for path in hosts.base.rglob('*') if path.suffix in ('.pid', '.sock')] == []
    finally:
        hosts.down()
        shutil.rmtree(hosts.base.parent, ignore_errors=True)


def uwsgi_processes(master_pid):
    """uwsgi's master and workers (psutil.Process each)."""
    return [procs._process(master_pid), *procs.children(master_pid)]


def test_every_app_host_serves_through_its_own_nginx_and_uwsgi_never_as_root(cluster):
    """The link ends at each app host's nginx, which passes to uwsgi's unix socket: uwsgi
    listens on no TCP port, and none of its workers, which parse every request, runs as
    root (the master keeps root only to re-execute on a reload: conf/uwsgi.ini)."""
    for app in cluster.apps:
        processes = uwsgi_processes(app.uwsgi.pid())
        assert len(processes) == 3  # the master and two workers
        for process in processes[1:]:  # the workers
            assert 0 not in process.uids() and 0 not in process.gids(), (app.name, process.pid, process.uids())
        listening = subprocess.run([*cluster.network.wrap(app.name), 'ss', '-Hltnup'], capture_output=True,
                                   text=True, check=True).stdout
        assert not {f'pid={process.pid},' for process in processes} & set(re.findall(r'pid=\d+,', listening))
        assert app.uwsgi.socket.is_socket()
        assert app.nginx.pid()
    # The edge's request id, the client's address and the link's keep-alive, on the app
    # host's own log line for the same request.
    request_id = call(cluster, 'GET', '/healthz')[1]['X-Request-ID']
    host = served_by(cluster, [request_id])[request_id][0]
    app = next(app for app in cluster.apps if app.address == host)

    def logged():
        return [line for line in app.nginx.access_log.read_text().splitlines() if f'id={request_id} ' in line]
    from launcher.wait import wait_for
    line = wait_for(logged, 5, 'the app host to log the request')[0]
    client = cluster.network.address('bridge') if cluster.network.namespaces else '127.0.0.1'
    assert line.startswith(f'{client} via {cluster.edge_address} ')
