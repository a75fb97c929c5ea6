"""Whole hosts crash, as in a power loss: the cluster's booted Debian hosts (launcher/fleet.py),
provisioned by the playbook (deploy/site.yml), each host's init SIGKILLed so that every
process of it is gone at once, its disk kept; then booted again and the playbook run over
it. Each under a steady, bounded load sent from this machine to the edge only:

  m. an app host crashes (under reads and retrying writes);
  n. the database replica crashes (under reads).

The bounds are scenario a's and f's: every read answered 200, every acknowledged write in
the database exactly once, reads back on the replica after it returns; and the host back in
service, which the playbook then finds as it left it."""
import json
import threading
import time
import uuid

import pytest

from launcher.wait import wait_for
from tests.helpers.fleet import Edge, on, play, provisioned_fleet, secret
from tests.helpers.load import Load, first_within, report
from tests.helpers.web import call

pytestmark = [pytest.mark.faults, pytest.mark.server]
READS = ['/api/admins', '/api/admins?limit=2', '/admins', '/']


@pytest.fixture(scope='module')
def fleet(tmp_path_factory):
    with provisioned_fleet(tmp_path_factory) as fleet:
        fleet.edge = Edge(fleet)
        fleet.headers = {'Authorization': f'Bearer {secret(fleet, "api-token")}'}  # past the edge's cache
        yield fleet


def reads(fleet):
    return lambda n: ('GET', READS[hash(n) % len(READS)], None, fleet.headers)


class Writer(threading.Thread):
    """Creates items with an Idempotency-Key each, retrying one until it is answered, as a
    client that must not lose or double a write does."""

    def __init__(self, fleet, label, seconds):
        super().__init__()
        self.fleet, self.label, self.seconds = fleet, label, seconds
        self.acked, self.statuses, self.retries = {}, [], 0
        self.stop = threading.Event()

    def run(self):
        headers = {**self.fleet.headers, 'Content-Type': 'application/json'}
        deadline, n = time.monotonic() + self.seconds, 0
        while not self.stop.is_set() and time.monotonic() < deadline:
            n += 1
            name = f'{self.label}-{n}'
            body = json.dumps({'name': name, 'email': f'{name}@x.test'})
            key = {'Idempotency-Key': uuid.uuid4().hex}
            for _ in range(50):
                status, _, answer = call(self.fleet.edge, 'POST', '/api/admins', body, {**headers, **key})
                self.statuses.append(status)
                if status == 201:
                    self.acked[name] = json.loads(answer)['id']
                    break
                if status not in ('error', 409, 502, 503, 504):
                    break  # a refusal a retry cannot change: counted, and the test fails on it
                self.retries += 1
                time.sleep(0.1)


def rows_named(fleet, prefix):
    """{name: id} of the rows the writers made, as the primary has them."""
    lines = on(fleet, 'db1', f"mariadb -N wsgiapp -e \"SELECT name, id FROM vc_admin WHERE name LIKE '{prefix}-%'\"")
    return [tuple(line.split('\t')) for line in lines.splitlines()]


def read_sources(fleet, answers):
    """Where the edge's log says each answered read was read from ('replica1', 'primary', ...)."""
    wanted = {a[3].get('X-Request-ID') for a in answers} - {None}
    found = {}
    for line in on(fleet, 'edge1', 'cat /var/log/nginx/wsgiapp.access.log').splitlines():
        fields = dict(field.split('=', 1) for field in line.split() if '=' in field)
        if fields.get('id') in wanted:
            found[fields['id']] = fields.get('read', '')
    return found


def services_active(fleet, name, units):
    # One line per unit (its exit status says only whether any one is active).
    done = fleet.ssh(name, 'systemctl is-active ' + ' '.join(units), timeout=10)
    return done.stdout.split() == ['active'] * len(units)


def provisioned_again(fleet, name):
    """The playbook over the fleet after `name` came back: nothing fails, nothing on `name`
    needs changing (its disk kept everything the playbook made)."""
    output, recap = play(fleet)
    assert all(host['failed'] == 0 for host in recap.values()), recap
    assert recap[name]['changed'] == 0, output[-6000:]


def test_m_an_app_host_crashes(fleet):
    prefix = f'crash-{uuid.uuid4().hex[:6]}'
    writers = [Writer(fleet, f'{prefix}-w{n}', seconds=40) for n in range(2)]
    with Load(fleet.edge, reads(fleet), threads=4, seconds=60) as load:
        for writer in writers:
            writer.start()
        time.sleep(2)
        fleet.crash('app1')
        down = time.monotonic()
        time.sleep(4)
        fleet.boot('app1')
        wait_for(lambda: services_active(fleet, 'app1', ['nginx', 'wsgiapp']), 60, 'app1 serving again')
        back = time.monotonic()
        time.sleep(2)
        for writer in writers:
            writer.stop.set()
            writer.join()
    statuses = load.statuses()
    rows = rows_named(fleet, prefix)
    acked = {name: str(id_) for writer in writers for name, id_ in writer.acked.items()}
    report(f'm. app1 crashed (every process at once), booted {back - down:.1f} s later; 4 readers, 2 writers',
           statuses + [s for w in writers for s in w.statuses], acked=len(acked), found=len(rows),
           duplicates=len(rows) - len(set(name for name, _ in rows)), retried=sum(w.retries for w in writers))
    assert statuses and set(statuses) == {200}, 'every read answered'
    assert len(acked) > 20 and dict(rows) == acked and len(rows) == len(acked), 'every acknowledged write, once'
    provisioned_again(fleet, 'app1')
    # The edge sends to it again (a failed host is tried again after fail_timeout, 5 s), and
    # its uwsgi answers.
    served = "grep -c '\" 200 ' /var/log/nginx/wsgiapp-app.access.log"
    before = int(on(fleet, 'app1', served))
    for _ in range(20):
        assert call(fleet.edge, 'GET', '/api/admins', headers=fleet.headers)[0] == 200
    assert int(on(fleet, 'app1', served)) > before


def test_n_the_replica_crashes(fleet):
    with Load(fleet.edge, reads(fleet), threads=4, seconds=60) as load:
        time.sleep(2)
        fleet.crash('db2')
        down = time.monotonic()
        time.sleep(4)
        fleet.boot('db2')
        restarted = time.monotonic()

        def first_on_replica():
            recent = [a for a in list(load.answers) if a[0] >= restarted]
            where = read_sources(fleet, recent)
            return min((a[0] for a in recent if where.get(a[3].get('X-Request-ID')) == 'replica1'), default=None)
        back = first_within(first_on_replica, 30, 'a read answered by the replica', interval=1)
    statuses = load.statuses()
    during = read_sources(fleet, [a for a in load.answers if down <= a[0] < restarted])
    after = read_sources(fleet, [a for a in load.answers if a[0] >= restarted])
    report(f'n. replica crashed (every process at once), booted {restarted - down:.0f} s later; 4 readers', statuses,
           during=dict(sorted((source, list(during.values()).count(source)) for source in set(during.values()))),
           after=dict(sorted((source, list(after.values()).count(source)) for source in set(after.values()))),
           back_on_replica_after_s=None if back is None else round(back - restarted, 1))
    assert statuses and set(statuses) == {200}, 'every read answered'
    assert back is not None, 'reads back on the replica within 30 s of its boot'
    provisioned_again(fleet, 'db2')
    # It follows the primary again: a write there reaches it.
    status, _, body = call(fleet.edge, 'POST', '/api/admins', json.dumps({'name': 'after-crash', 'email': 'a@x.test'}),
                           {**fleet.headers, 'Content-Type': 'application/json'})
    assert status == 201, body
    query = 'mariadb -N wsgiapp -e "SELECT COUNT(*) FROM vc_admin WHERE name = \'after-crash\'"'
    wait_for(lambda: on(fleet, 'db2', query) == '1', 20, 'the write on the replica')
