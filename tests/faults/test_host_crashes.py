"""Whole hosts crash, as in a power loss: make cluster's booted Debian hosts (launcher/cluster.py),
provisioned by the playbook (deploy/site.yml), each host's init SIGKILLed so that every
process of it is gone at once, its disk kept; then booted again and the playbook run over
it. Each under a steady, bounded load sent from this machine to the edge only:

  m. an app host crashes (under reads and retrying writes);
  n. the database replica crashes (under reads).

The bounds are scenario a's and f's: every read answered 200, every acknowledged write in
the database exactly once, reads back on the replica after it returns; and the host back in
service, which the playbook then finds as it left it."""
import json
import time
import uuid

import pytest

from launcher.wait import wait_for
from tests.helpers.alerts import alerts_after, named, quiet
from tests.helpers.fleet import on, play
from tests.helpers.load import Load, Writer, bearer, first_within, reads, report, served_by, written
from tests.helpers.web import call

pytestmark = [pytest.mark.faults, pytest.mark.server]
READS = ['/api/admins', '/api/admins?limit=2', '/admins', '/']


def read_sources(cluster, answers):
    """Where the edge's log says each answered read was read from ('replica1', 'primary', ...)."""
    by = served_by(cluster, [a[3].get('X-Request-ID') for a in answers], seconds=0)
    return {request_id: source for request_id, (_, _, source) in by.items()}


def services_active(fleet, name, units):
    # One line per unit (its exit status says only whether any one is active).
    done = fleet.ssh(name, 'systemctl is-active ' + ' '.join(units), timeout=10)
    return done.stdout.split() == ['active'] * len(units)


def provisioned_again(cluster, name):
    """The playbook over the hosts after `name` came back: nothing fails, nothing on `name`
    needs changing (its disk kept everything the playbook made)."""
    output, recap = play(cluster.fleet)
    assert all(host['failed'] == 0 for host in recap.values()), recap
    assert recap[name]['changed'] == 0, output[-6000:]


def test_m_an_app_host_crashes(cluster, cluster_monitor):
    app, fleet = cluster.apps[0], cluster.fleet
    since = quiet(cluster_monitor)
    prefix = f'crash-{uuid.uuid4().hex[:6]}'
    writers = [Writer(cluster, f'{prefix}-w{n}', seconds=40) for n in range(2)]
    with Load(cluster, reads(cluster, READS), threads=4, seconds=60) as load:
        for writer in writers:
            writer.start()
        time.sleep(2)
        app.crash()
        down = time.monotonic()
        time.sleep(4)
        app.boot()
        wait_for(lambda: services_active(fleet, 'app1', ['nginx', 'wsgiapp']), 60, 'app1 serving again')
        back = time.monotonic()
        time.sleep(2)
        for writer in writers:
            writer.stop.set()
            writer.join()
    statuses = load.statuses()
    acked, rows, duplicates = written(cluster, writers, prefix)
    # Down some 10 s: AppHostDown (15 s) may page for app1 or not, and nothing else may.
    fired = alerts_after(cluster_monitor, since, maybe=[('AppHostDown', 'app1')])
    report(f'm. app1 crashed (every process at once), booted {back - down:.1f} s later; 4 readers, 2 writers',
           statuses + [s for w in writers for s in w.statuses], acked=len(acked), found=len(rows),
           duplicates=duplicates, retried=sum(w.retries for w in writers), alerts=named(fired))
    assert statuses and set(statuses) == {200}, 'every read answered'
    assert len(acked) > 20 and rows == acked and duplicates == 0, 'every acknowledged write, once'
    provisioned_again(cluster, 'app1')
    # The edge sends to it again (a failed host is tried again after fail_timeout, 5 s), and
    # its uwsgi answers.
    served = "grep -c '\"status\":\"200\"' /var/log/nginx/wsgiapp-app.access.log"
    before = int(on(fleet, 'app1', served))
    for _ in range(20):
        assert call(cluster, 'GET', '/api/admins', headers=bearer(cluster))[0] == 200
    assert int(on(fleet, 'app1', served)) > before


def test_n_the_replica_crashes(cluster, cluster_monitor):
    replica, fleet = cluster.replicas[0], cluster.fleet
    since = quiet(cluster_monitor)
    with Load(cluster, reads(cluster, READS), threads=4, seconds=60) as load:
        time.sleep(2)
        replica.crash()
        down = time.monotonic()
        time.sleep(4)
        replica.boot()
        restarted = time.monotonic()

        def first_on_replica():
            recent = [a for a in list(load.answers) if a[0] >= restarted]
            where = read_sources(cluster, recent)
            return min((a[0] for a in recent if where.get(a[3].get('X-Request-ID')) == 'replica1'), default=None)
        back = first_within(first_on_replica, 30, 'a read answered by the replica', interval=1)
    statuses = load.statuses()
    during = read_sources(cluster, [a for a in load.answers if down <= a[0] < restarted])
    after = read_sources(cluster, [a for a in load.answers if a[0] >= restarted])
    # Down some 10 s: the replica's alerts (15 s) may fire for db2 or not, and nothing else may.
    fired = alerts_after(cluster_monitor, since, maybe=[('ReplicaDown', 'db2'), ('ReplicaStopped', 'db2')])
    report(f'n. replica crashed (every process at once), booted {restarted - down:.0f} s later; 4 readers', statuses,
           during=dict(sorted((source, list(during.values()).count(source)) for source in set(during.values()))),
           after=dict(sorted((source, list(after.values()).count(source)) for source in set(after.values()))),
           back_on_replica_after_s=None if back is None else round(back - restarted, 1), alerts=named(fired))
    assert statuses and set(statuses) == {200}, 'every read answered'
    assert back is not None, 'reads back on the replica within 30 s of its boot'
    provisioned_again(cluster, 'db2')
    # It follows the primary again: a write there reaches it.
    status, _, body = call(cluster, 'POST', '/api/admins', json.dumps({'name': 'after-crash', 'email': 'a@x.test'}),
                           {**bearer(cluster), 'Content-Type': 'application/json'})
    assert status == 201, body
    query = 'mariadb -N wsgiapp -e "SELECT COUNT(*) FROM vc_admin WHERE name = \'after-crash\'"'
    wait_for(lambda: on(fleet, 'db2', query) == '1', 20, 'the write on the replica')
