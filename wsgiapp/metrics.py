"""The app's metrics (docs/metrics.rst): counters, gauges and histograms that each uwsgi
worker keeps in files of its own, and the Prometheus text that sums them over every worker.

Why files, and these ones: a worker may be SIGKILLed and respawned at any time, and its
counts must survive it (a counter that drops when a worker dies reads as a reset). Each
worker writes two files in WSGIAPP_METRICS_DIR, named after its uwsgi worker id, not its
process id, so a respawned worker carries on with its predecessor's files and their number
never grows (the trap of prometheus-client's per-pid files):
- `worker-N.keys`: one sample name per line (`name{label="value"}`), appended, never changed;
- `worker-N.values`: a memory-mapped array of doubles, slot i for line i. A write to the
  map is in the kernel's page cache at once: a SIGKILL loses nothing already counted.
The reader (`python -m wsgiapp metrics`) sums every worker's value of each line. uwsgi's
master empties the directory when it loads the app, before it forks: counts start at zero
with each start or reload, as a process's counters do.
"""
import bisect
import mmap
import os
import threading
from contextlib import suppress

SLOTS = 8192  # values per worker: every label is from a fixed set, so a few hundred are used
# Latency buckets, seconds: from a cached-page answer to the 10 s database read timeout.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
METHODS = frozenset({'GET', 'HEAD', 'POST', 'PATCH', 'PUT', 'DELETE', 'OPTIONS'})
# What each metric is, for the exposition's HELP and TYPE lines.
HELP = {
    'wsgiapp_requests_total': ('counter', 'Requests answered, by route pattern, method and status.'),
    'wsgiapp_request_duration_seconds': ('histogram', 'Time from the request reaching the app to its answer.'),
    'wsgiapp_requests_in_flight': ('gauge', 'Requests the app is working on now.'),
    'wsgiapp_pool_connections_in_use': ('gauge', 'Database connections taken from the pool, by server.'),
    'wsgiapp_pool_waits_total': ('counter', 'Requests that found no free pool connection and waited.'),
    'wsgiapp_pool_wait_seconds_total': ('counter', 'Time spent waiting for a pool connection.'),
    'wsgiapp_pool_timeouts_total': ('counter', 'Waits for a pool connection that ran out (503).'),
    'wsgiapp_database_errors_total': ('counter', 'Database failures, by server and kind (connect, lost, other).'),
    'wsgiapp_reads_total': ('counter', 'Reads, by the server that answered: primary or replicaN.'),
    'wsgiapp_read_fallbacks_total': ('counter', 'Reads a replica could not answer, sent on to another server.'),
    'wsgiapp_consistency_waits_total': ('counter', 'Reads with a consistency token, by outcome.'),
    'wsgiapp_idempotent_replays_total': ('counter', 'POSTs answered from the first one with their Idempotency-Key.'),
    'wsgiapp_credentials_refused_total': ('counter', 'Writes refused for their bearer token: missing, wrong, limited.'),
}


def sample(name, **labels):
    """`name{a="x",b="y"}`, labels in the order given (each a value from a fixed set)."""
    if not labels:
        return name
    return name + '{' + ','.join(f'{key}="{value}"' for key, value in labels.items()) + '}'


class Off:
    """What the app records into when WSGIAPP_METRICS_DIR is not set: nothing."""

    def add(self, key, amount=1.0):
        pass

    def started(self):
        pass

    def request(self, route, method, status, seconds):
        pass


IN_FLIGHT = 'wsgiapp_requests_in_flight'


class Recorder:
    """This process's metrics files in `directory`, opened on first use in each process (uwsgi
    forks its workers after the app is loaded, with a raw fork())."""

    def __init__(self, directory, worker_id=None):
        self.directory = directory
        self.worker_id = worker_id or uwsgi_worker_id
        self.lock = threading.Lock()
        self.pid = None
        self.slots = {}      # sample name -> slot
        self.requests = {}   # (route, method, status) -> (counter slot, duration sum and count slots)
        self.in_flight = None  # IN_FLIGHT's slot, found once per process: two uses per request

    def _open(self):
        """Attach to this worker's files (a respawned worker continues its predecessor's
        counts); gauges start at zero, since what they counted died with that process."""
        name = f'worker-{self.worker_id()}'
        keys_path = os.path.join(self.directory, name + '.keys')
        values_path = os.path.join(self.directory, name + '.values')
        fd = os.open(values_path, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            if os.fstat(fd).st_size < SLOTS * 8:
                os.ftruncate(fd, SLOTS * 8)
            self.map = mmap.mmap(fd, SLOTS * 8)
        finally:
            os.close(fd)
        self.values = memoryview(self.map).cast('d')
        self.keys = os.open(keys_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self.slots, self.requests = {}, {}
        for slot, key in enumerate(read_keys(keys_path)):
            self.slots[key] = slot
            if HELP.get(key.partition('{')[0], ('',))[0] == 'gauge':
                self.values[slot] = 0.0
        self.in_flight = self._slot(IN_FLIGHT)
        self.pid = os.getpid()

    def _slot(self, key):
        """The slot of `key`, written to the keys file first if it is new (under self.lock)."""
        slot = self.slots.get(key)
        if slot is None:
            slot = len(self.slots)
            if slot >= SLOTS:  # cannot happen with fixed labels; counted as nothing rather than fail
                return None
            self.values[slot] = 0.0
            os.write(self.keys, (key + '\n').encode('utf-8'))  # one write: appended whole
            self.slots[key] = slot
        return slot

    def started(self):
        """One request more in flight (request() below counts it out): add(IN_FLIGHT), with
        the slot looked up once."""
        with self.lock:
            if self.pid != os.getpid():
                self._open()
            if self.in_flight is not None:
                self.values[self.in_flight] += 1.0

    def add(self, key, amount=1.0):
        with self.lock:
            if self.pid != os.getpid():
                self._open()
            slot = self._slot(key)
            if slot is not None:
                self.values[slot] += amount

    def request(self, route, method, status, seconds):
        """One answered request: its count, its duration in the route's histogram, and one
        request fewer in flight (the app added one when it came in: add() below)."""
        if method not in METHODS:
            method = 'other'
        with self.lock:
            if self.pid != os.getpid():
                self._open()
            slots = self.requests.get((route, method, status))
            if slots is None:
                slots = self.requests[(route, method, status)] = self._request_slots(route, method, status)
            if slots is not None:
                counter, buckets, total, count = slots
                values = self.values
                values[counter] += 1.0
                values[buckets[bisect.bisect_left(BUCKETS, seconds)]] += 1.0
                values[total] += seconds
                values[count] += 1.0
            if self.in_flight is not None:
                self.values[self.in_flight] -= 1.0

    def _request_slots(self, route, method, status):
        # The histogram's buckets are counted one by one (le is the upper bound of each, +Inf
        # the rest); the reader adds them up into Prometheus' cumulative buckets.
        name = 'wsgiapp_request_duration_seconds'
        slots = (self._slot(sample('wsgiapp_requests_total', route=route, method=method, status=status)),
                 [self._slot(sample(name + '_bucket', route=route, le=str(bound))) for bound in BUCKETS + ('+Inf',)],
                 self._slot(sample(name + '_sum', route=route)),
                 self._slot(sample(name + '_count', route=route)))
        if slots[0] is None or None in slots[1] or None in slots[2:]:
            return None
        return slots


def uwsgi_worker_id():
    """uwsgi's worker number (1, 2...; a respawned worker gets its predecessor's), else the
    process id: one process outside uwsgi (python -m wsgiapp serve, tests)."""
    try:
        import uwsgi
        return uwsgi.worker_id()
    except (ImportError, AttributeError):
        return f'pid{os.getpid()}'


def read_keys(path):
    """The complete lines of a keys file: a line still being appended is left for next time."""
    try:
        with open(path, 'rb') as keys:
            data = keys.read()
    except FileNotFoundError:
        return []
    return data[:data.rfind(b'\n') + 1].decode('utf-8').splitlines()


# The recorder the app's modules add to: Off until the app is configured (configure()).
recorder = Off()


def configure(directory):
    """Record into `directory` (WSGIAPP_METRICS_DIR), or nowhere when it is None. In uwsgi's
    master, before it forks: empty the directory, which the workers' user must be able to
    write (made here and handed to uwsgi's `uid` when the master is root)."""
    global recorder
    if not directory:
        recorder = Off()
        return recorder
    master = False
    with suppress(ImportError, AttributeError):
        import uwsgi
        master = uwsgi.worker_id() == 0
    if master:
        os.makedirs(directory, mode=0o750, exist_ok=True)
        for name in os.listdir(directory):
            if name.startswith('worker-'):
                os.unlink(os.path.join(directory, name))
        if os.geteuid() == 0:
            give_to_workers(directory)
    recorder = Recorder(directory)
    return recorder


def give_to_workers(directory):
    """chown the directory to the user and group uwsgi's workers drop to (uid, gid)."""
    uid, gid = workers_ids()
    if uid is not None:
        os.chown(directory, uid, gid)


def uwsgi_option(name):
    """One of uwsgi's options as str, or None (uwsgi.opt holds bytes, a list when the option
    is given twice)."""
    import uwsgi
    value = uwsgi.opt.get(name)
    value = value[-1] if isinstance(value, list) else value
    return value.decode() if isinstance(value, bytes) else value


def workers_ids():
    """(uid, gid) of uwsgi's `uid` and `gid` options (names or numbers; gid defaults to the
    user's group), or (None, None) when uwsgi changes no user."""
    import grp
    import pwd
    user, group = uwsgi_option('uid'), uwsgi_option('gid')
    if not user:
        return None, None
    uid = int(user) if user.isdigit() else pwd.getpwnam(user).pw_uid
    gid = (int(group) if group.isdigit() else grp.getgrnam(group).gr_gid) if group else pwd.getpwuid(uid).pw_gid
    return uid, gid


def collect(directory):
    """{sample name: value summed over every worker's files} in `directory`."""
    totals = {}
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return totals
    for name in names:
        if not name.endswith('.keys'):
            continue
        keys = read_keys(os.path.join(directory, name))
        try:
            with open(os.path.join(directory, name[:-5] + '.values'), 'rb') as values_file:
                data = values_file.read(len(keys) * 8)
        except FileNotFoundError:
            continue
        for key, value in zip(keys, memoryview(data[:len(data) // 8 * 8]).cast('d')):
            totals[key] = totals.get(key, 0.0) + value
    return totals


def exposition(totals, extra=()):
    """Prometheus' text format (version 0.0.4) of `totals`, histograms made cumulative, and
    `extra` lines (HELP/TYPE/sample) appended as they are."""
    families = {}
    for key, value in totals.items():
        name = key.partition('{')[0]
        family = name
        for suffix in ('_bucket', '_sum', '_count'):
            if name.endswith(suffix) and name[:-len(suffix)] in HELP:
                family = name[:-len(suffix)]
        families.setdefault(family, []).append((key, value))
    lines = []
    for family in sorted(families):
        kind, text = HELP.get(family, ('untyped', ''))
        lines += [f'# HELP {family} {text}', f'# TYPE {family} {kind}']
        samples = sorted(families[family])
        if kind == 'histogram':
            samples = cumulative(samples)
        lines += [f'{key} {format_value(value)}' for key, value in samples]
    lines += extra
    return '\n'.join(lines) + '\n'


def cumulative(samples):
    """Each route's _bucket samples, counted one by one, as Prometheus' running totals."""
    out, running = [], {}
    order = {str(bound): n for n, bound in enumerate(BUCKETS + ('+Inf',))}

    def position(item):
        key = item[0]
        if '_bucket{' not in key:
            return (key, 0)
        labels, _, bound = key.rpartition(',le="')
        return (labels, order.get(bound[:-2], len(order)))
    for key, value in sorted(samples, key=position):
        if '_bucket{' in key:
            labels = key.rpartition(',le="')[0]
            running[labels] = running.get(labels, 0.0) + value
            value = running[labels]
        out.append((key, value))
    return out


def format_value(value):
    return str(int(value)) if value == int(value) and abs(value) < 2**53 else repr(value)
