"""The database hosts under faults (make cluster's booted hosts: a primary db1 and a replica
db2), each under load sent from this machine to the edge only, reporting where the reads
were answered (the edge's access log has the app's X-Read-Source):

  f. the replica's mariadbd SIGKILLed (its systemd starts it again);
  g. the replica partitioned (its veth down);
  h. read your writes: the replica's SQL thread stopped for 10 s, then held by a lock for 5 s,
     while a writer reads back every item it creates with its consistency token;
  i. reads without a token while the replica falls further behind than the bound;
  j. the primary's mariadbd SIGKILLed under reads and writes (its systemd starts it again).

g and i take longest, and run in `make faults` only (marked slow); `make test` runs the others.

Reads carry a bearer token, which makes them private to nginx's micro-cache: each reaches an
app host and its database reads (a bearer token is not a consistency token)."""
import json
import threading
import time
import uuid
from collections import Counter
from contextlib import closing

import pytest

from launcher import logs, replication
from launcher.cluster import kill_program
from launcher.wait import wait_for
from tests.helpers.alerts import alerts_after, named, quiet
from tests.helpers.load import Load, first_within, reads, report, served_by
from tests.helpers.servers import admin_session
from tests.helpers.web import call

pytestmark = [pytest.mark.faults, pytest.mark.e2e, pytest.mark.uwsgi, pytest.mark.mariadb]
MAX_LAG = 5.0           # WSGIAPP_REPLICA_MAX_LAG's default, which the cluster's app hosts use
RESTART_SEC = 5.0       # Debian's mariadb.service: Restart=on-abnormal, RestartSec=5s
READS = ['/api/admins', '/api/admins?limit=2', '/admins', '/api/admins/1']


def headers(cluster, **more):
    return {'Authorization': f'Bearer {cluster.token()}', **more}


def sources(cluster, answers):
    """Where each answered read came from: Counter of 'replica1', 'primary', ..."""
    by = served_by(cluster, [a[3].get('X-Request-ID') for a in answers])
    return Counter(by.get(a[3].get('X-Request-ID'), (None, None, 'unknown'))[2] for a in answers)


def caught_up(cluster):
    replication.caught_up(cluster.db, cluster.replicas[0], seconds=20)


def kill(server):
    pid = kill_program(server, 'mariadbd')
    wait_for(lambda: server.pid() != pid, 10, f'the SIGKILLed mariadbd {pid} to be gone')
    return pid


def started_again(server, killed):
    """Its systemd starts mariadbd again (RestartSec after the crash), as on a real server."""
    wait_for(lambda: server.pid() not in (None, killed), RESTART_SEC + 20, f'{server.name}\'s mariadbd started again')


def lock(server):
    """An administrator's session on `server`, to hold a LOCK TABLES with."""
    return closing(admin_session({**server.admin_kwargs(), 'database': 'wsgiapp'}))


def back_on_replica(cluster, load, since, seconds=15):
    """Seconds after `since` until a read was answered by the replica again, or None."""
    def first_on_replica():
        recent = [a for a in list(load.answers) if a[0] >= since]
        by = served_by(cluster, [a[3].get('X-Request-ID') for a in recent], seconds=0)
        return min((a[0] for a in recent if by.get(a[3].get('X-Request-ID'), ('', '', ''))[2] == 'replica1'),
                   default=None)
    first = first_within(first_on_replica, seconds, 'a read answered by the replica', interval=0.5)
    return None if first is None else first - since


def test_f_the_replica_killed(cluster, cluster_monitor):
    replica = cluster.replicas[0]
    caught_up(cluster)
    since = quiet(cluster_monitor)
    with Load(cluster, reads(cluster, READS), threads=4, seconds=40) as load:
        time.sleep(2)
        killed, down = kill(replica), time.monotonic()
        started_again(replica, killed)
        restarted = time.monotonic()
        back = back_on_replica(cluster, load, restarted)
    statuses = load.statuses()
    # Back in seconds by itself: no alert (ReplicaDown and ReplicaStopped wait 15 s).
    fired = alerts_after(cluster_monitor, since)
    print(f'replica mariadbd {killed} SIGKILLed')
    report(f'f. replica mariadbd SIGKILLed for {restarted - down:.0f} s; 4 readers', statuses,
           before=dict(sources(cluster, [a for a in load.answers if a[0] < down])),
           during=dict(sources(cluster, [a for a in load.answers if down <= a[0] < restarted])),
           back_on_replica_after_s=None if back is None else round(back, 1), alerts=named(fired))
    assert set(statuses) == {200}
    assert back is not None


@pytest.mark.slow
def test_g_the_replica_partitioned(cluster, cluster_monitor):
    caught_up(cluster)
    since = quiet(cluster_monitor)
    with Load(cluster, reads(cluster, READS), threads=4, seconds=40) as load:
        time.sleep(2)
        cluster.network.partition('db2')
        cut = time.monotonic()
        time.sleep(6)
        cluster.network.heal('db2')
        healed = time.monotonic()
        back = back_on_replica(cluster, load, healed)
    during = sorted(a[2] for a in load.answers if cut <= a[0] < healed)
    # 6 s out of reach, then replicating again within a second (MASTER_CONNECT_RETRY = 1):
    # shorter than ReplicaDown's 15 s; reads went to the primary meanwhile. No page.
    fired = alerts_after(cluster_monitor, since)
    report(f'g. replica partitioned for {healed - cut:.0f} s (veth down); 4 readers', load.statuses(),
           during=dict(sources(cluster, [a for a in load.answers if cut <= a[0] < healed])),
           p99_ms=round(during[int(len(during) * 0.99)] * 1000), max_ms=round(during[-1] * 1000),
           back_on_replica_after_s=None if back is None else round(back, 1), alerts=named(fired))
    assert set(load.statuses()) == {200}
    # A read already waiting on the lost replica gives up after its read timeout
    # (DB connect timeout 2 s + the token wait rounded up: 3 s), and goes to the primary.
    assert during[-1] < 3 + 1
    assert back is not None


class ReadBack(threading.Thread):
    """Creates items and, after each 201, reads it back with the token the write returned."""

    def __init__(self, cluster, prefix):
        super().__init__()
        self.cluster, self.prefix = cluster, prefix
        self.writes, self.reads, self.stop = [], [], threading.Event()

    def run(self):
        n = 0
        while not self.stop.is_set():
            n += 1
            name = f'{self.prefix}-{n}'
            status, answer, body = call(self.cluster, 'POST', '/api/admins',
                                        json.dumps({'name': name, 'email': f'{name}@x.test'}),
                                        headers(self.cluster, **{'Content-Type': 'application/json',
                                                                 'Idempotency-Key': uuid.uuid4().hex}))
            self.writes.append((status, answer.get('X-Request-ID')))
            if status != 201:
                continue
            token, item = answer['X-Consistency-Token'], answer['Location']
            status, read, body = call(self.cluster, 'GET', item, headers={'X-Consistency-Token': token})
            self.reads.append((time.monotonic(), status, read.get('X-Request-ID'), answer.get('X-Request-ID')))


def test_h_read_your_writes_while_the_replica_lags(cluster, cluster_monitor):
    replica = cluster.replicas[0]
    caught_up(cluster)
    since = quiet(cluster_monitor)
    writer = ReadBack(cluster, f'ryw-{uuid.uuid4().hex[:6]}')
    writer.start()
    try:
        time.sleep(1)
        replica.sql('STOP SLAVE SQL_THREAD')
        stopped = time.monotonic()
        time.sleep(10)
        replica.sql('START SLAVE SQL_THREAD')
        with lock(replica) as sql:
            sql('LOCK TABLES vc_admin READ')  # running, but held up: it falls behind
            held = time.monotonic()
            time.sleep(5)
            sql('UNLOCK TABLES')
        released = time.monotonic()
        time.sleep(3)
    finally:
        writer.stop.set()
        writer.join()
    by = served_by(cluster, [r[2] for r in writer.reads] + [r[3] for r in writer.reads])
    found = [r for r in writer.reads if r[1] == 200]

    def share(since, until):
        return dict(Counter(by.get(r[2], ('', '', 'unknown'))[2] for r in writer.reads if since <= r[0] < until))
    other_host = sum(1 for r in writer.reads if by.get(r[2], ('a',))[0] != by.get(r[3], ('b',))[0])
    # Stopped 10 s, then 5 s behind: shorter than ReplicaStopped's 15 s and ReplicaLagging's
    # 30 s, and the app read on the primary meanwhile: no page.
    fired = alerts_after(cluster_monitor, since)
    report('h. read your writes: replica SQL thread stopped 10 s, then held 5 s',
           [w[0] for w in writer.writes] + [r[1] for r in writer.reads],
           acked=len(writer.reads), found=len(found), read_back_on_another_app_host=other_host,
           stopped=share(stopped, held), held=share(held, released), after=share(released, float('inf')),
           alerts=named(fired))
    assert {w[0] for w in writer.writes} == {201}
    assert len(found) == len(writer.reads) > 20, 'every item read back with its token'
    assert share(released + 1, float('inf')).get('replica1'), 'the replica serves token reads once caught up'


@pytest.mark.slow
def test_i_reads_without_a_token_never_staler_than_the_bound(cluster, cluster_monitor):
    replica = cluster.replicas[0]
    caught_up(cluster)
    since = quiet(cluster_monitor)
    token = headers(cluster, **{'Content-Type': 'application/json'})
    name = f'lag-{uuid.uuid4().hex[:6]}'
    status, answer, _ = call(cluster, 'POST', '/api/admins', json.dumps({'name': name, 'email': 'v0@x.test'}), token)
    item = answer['Location']
    acknowledged = {0: time.monotonic()}
    caught_up(cluster)
    with lock(replica) as sql, Load(cluster, lambda n: ('GET', item, None, headers(cluster)), threads=3,
                                    seconds=40) as load:
        time.sleep(1)
        sql('LOCK TABLES vc_admin READ')
        held = time.monotonic()
        for version in range(1, 19):  # 9 s of PATCHes while the replica falls behind
            status, _, _ = call(cluster, 'PATCH', item, json.dumps({'email': f'v{version}@x.test'}), token)
            assert status == 200
            acknowledged[version] = time.monotonic()
            time.sleep(0.5)
        sql('UNLOCK TABLES')
        released = time.monotonic()
        time.sleep(2)
    # A read that began at t and saw version v is stale by t - (when v + 1 was acknowledged).
    staleness = []
    for started, _, _, _, body, _ in load.answers:
        seen = int(json.loads(body)['email'][1:].split('@')[0])
        newer = acknowledged.get(seen + 1)
        staleness.append(max(0.0, started - newer) if newer is not None and newer < started else 0.0)
    # 9 s behind at most: under ReplicaLagging's 30 s, and the app read on the primary meanwhile.
    fired = alerts_after(cluster_monitor, since)
    report(f'i. tokenless reads, the replica held {released - held:.0f} s while an item is PATCHed',
           load.statuses(), max_stale_s=round(max(staleness), 2),
           sources=dict(sources(cluster, [a for a in load.answers if held <= a[0] < released])),
           alerts=named(fired))
    assert set(load.statuses()) == {200}
    # The bound, plus what the monitor may miss: a check a second, Seconds_Behind_Master in
    # whole seconds.
    assert max(staleness) <= MAX_LAG + 2


def test_j_the_primary_killed_under_reads_and_writes(cluster, cluster_monitor):
    caught_up(cluster)
    since = quiet(cluster_monitor)
    prefix = f'primary-{uuid.uuid4().hex[:6]}'
    writes = []

    def writer(stop):
        n = 0
        while not stop.is_set():
            n += 1
            started = time.monotonic()
            status, answer, _ = call(cluster, 'POST', '/api/admins',
                                     json.dumps({'name': f'{prefix}-{n}', 'email': 'p@x.test'}),
                                     headers(cluster, **{'Content-Type': 'application/json'}))
            writes.append((started, status, answer.get('Retry-After'), answer.get('X-Request-ID')))
            time.sleep(0.05)
    stop = threading.Event()
    thread = threading.Thread(target=writer, args=(stop,))
    with Load(cluster, reads(cluster, READS), threads=4, seconds=40) as load:
        thread.start()
        time.sleep(2)
        killed, down = kill(cluster.db), time.monotonic()
        restarting = down + RESTART_SEC  # before it, systemd has not begun to start it again
        started_again(cluster.db, killed)
        restarted = time.monotonic()
        again = first_within(lambda: next((w[0] for w in list(writes) if w[0] >= restarted and w[1] == 201), None),
                             15, 'a write acknowledged again', interval=0.2)
        time.sleep(1)
        stop.set()
        thread.join()
    statuses = load.statuses()
    during = [w for w in writes if down + 0.5 <= w[0] < restarting]
    # Back in seconds by itself: no page (PrimaryDown waits 15 s; High5xxRatio a minute).
    fired = alerts_after(cluster_monitor, since)
    print(f'primary mariadbd {killed} SIGKILLed')
    report(f'j. primary mariadbd SIGKILLed for {restarted - down:.0f} s; 4 readers, 1 writer',
           statuses + [w[1] for w in writes],
           reads_during=dict(sources(cluster, [a for a in load.answers if down <= a[0] < restarted])),
           writes_during=dict(Counter(w[1] for w in during)),
           writes_201_again_after_s=None if again is None else round(again - restarted, 1), alerts=named(fired))
    assert set(statuses) == {200}, 'no read fails'
    assert during and {w[1] for w in during} == {503} and all(w[2] for w in during)
    assert again is not None and again - restarted < 10
    # One refused write's path by its id (make logs): the edge's line, the app host's, and
    # the app's own, which names the cause.
    refused = during[0][3]

    def path():
        return {(source, entry.get('status') or entry.get('message', '').partition(':')[0])
                for _, source, entry in logs.cluster(cluster.base, refused)}
    wait_for(lambda: path() == {('wsgiapp_access', '503'), ('wsgiapp_link', '503'), ('uwsgi', 'database unavailable')},
             5, f'the three lines of {refused}')
