"""The app's metrics (docs/metrics.rst): counters, gauges and histograms that each thread of
each uwsgi worker keeps in files of its own, and the Prometheus text that sums them over all.

Why files, and these ones: a worker may be SIGKILLed and respawned at any time, and its
counts must survive it (a counter that drops when a worker dies reads as a reset). Each
thread of a worker writes two files in WSGIAPP_METRICS_DIR, named after its uwsgi worker id
and its number in that worker (in the order the threads first count), not a process id, so
a respawned worker carries on with its predecessor's files and their number never grows
(the trap of prometheus-client's per-pid files):
- `worker-N-T.keys`: one sample name per line (`name{label="value"}`), appended, never changed;
- `worker-N-T.values`: a memory-mapped array of doubles, slot i for line i. A write to the
  map is in the kernel's page cache at once: a SIGKILL loses nothing already counted.
One writer per file: a count is a `+=` with no lock, and a reader sees each double whole.
The reader (`python -m wsgiapp metrics`) sums every file's value of each line. uwsgi's
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

    def request(self, route, method, status, seconds):
        pass


class Region:
    """One thread's pair of files: `worker-N-T.keys` and `worker-N-T.values`. Only that thread
    writes them, so a count is a plain `+=` into the map, with no lock to take."""
    __slots__ = ('map', 'values', 'keys', 'slots', 'requests')

    def __init__(self, directory, name):
        """The files `name`.keys and `name`.values in `directory`; with no directory, memory of
        this process only (uwsgi's master, which records nothing a worker should inherit)."""
        if directory is None:
            self.map, self.keys, keys = bytearray(SLOTS * 8), None, []
        else:
            keys_path = os.path.join(directory, name + '.keys')
            self.map = map_values(os.path.join(directory, name + '.values'))
            self.keys = os.open(keys_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            keys = read_keys(keys_path)
        self.values = memoryview(self.map).cast('d')
        self.slots = {key: slot for slot, key in enumerate(keys)}  # sample name -> slot
        self.requests = {}  # (route, method, status) -> (counter slot, buckets, sum and count slots)

    def slot(self, key):
        """The slot of `key`, written to the keys file first if it is new."""
        slot = self.slots.get(key)
        if slot is None:
            slot = len(self.slots)
            if slot >= SLOTS:  # cannot happen with fixed labels; counted as nothing rather than fail
                return None
            self.values[slot] = 0.0
            if self.keys is not None:
                os.write(self.keys, (key + '\n').encode('utf-8'))  # one write: appended whole
            self.slots[key] = slot
        return slot


class Recorder:
    """This process's metrics, in files of each of its threads in `directory`, opened on each
    thread's first use. uwsgi forks its workers from the master after the app is loaded, with
    a raw fork() that runs no Python fork hook: the master records nothing, so no worker
    inherits its files, and each worker's threads open their own."""

    def __init__(self, directory, worker_id=None):
        self.directory = directory
        self.worker_id = worker_id or uwsgi_worker_id
        self.local = threading.local()  # .region: this thread's Region
        self.lock = threading.Lock()  # only for opening a thread's files
        self.pid, self.threads = None, 0  # the process whose threads are numbered, and how many

    def _region(self):
        """This thread's Region, opened on its first use (a respawned worker's threads
        continue their predecessor's counts); the first thread of a process sets the worker's
        gauges back to zero, since what they counted died with the process before it."""
        worker = self.worker_id()
        if worker == 0:  # uwsgi's master (or its mule): a fork must inherit no Region
            return Region(None, 'master')
        with self.lock:
            if self.pid != os.getpid():
                self.pid, self.threads = os.getpid(), 0
                self._zero_gauges(f'worker-{worker}-')
            region = Region(self.directory, f'worker-{worker}-{self.threads}')
            self.threads += 1
        self.local.region = region
        return region

    def _zero_gauges(self, prefix):
        for name in os.listdir(self.directory):
            if name.startswith(prefix) and name.endswith('.keys'):
                values = memoryview(map_values(os.path.join(self.directory, name[:-5] + '.values'))).cast('d')
                for slot, key in enumerate(read_keys(os.path.join(self.directory, name))):
                    if HELP.get(key.partition('{')[0], ('',))[0] == 'gauge':
                        values[slot] = 0.0
                values.release()

    def add(self, key, amount=1.0):
        try:
            region = self.local.region
        except AttributeError:
            region = self._region()
        slot = region.slot(key)
        if slot is not None:
            region.values[slot] += amount

    def request(self, route, method, status, seconds):
        """One answered request: its count and its duration in the route's histogram. (The
        requests in flight are uwsgi's to count: wsgiapp/exporter.py.)"""
        if method not in METHODS:  # before the lookup: a client's methods are unbounded
            method = 'other'
        try:
            region = self.local.region
        except AttributeError:
            region = self._region()
        slots = region.requests.get((route, method, status))
        if slots is None:
            slots = region.requests[(route, method, status)] = request_slots(region, route, method, status)
        if slots is not None:
            values = region.values
            counter, buckets, total, count = slots
            values[counter] += 1.0
            values[buckets[bisect.bisect_left(BUCKETS, seconds)]] += 1.0
            values[total] += seconds
            values[count] += 1.0


def request_slots(region, route, method, status):
    """The slots of a request's count and of its route's histogram in `region`, or None."""
    # The histogram's buckets are counted one by one (le is the upper bound of each, +Inf
    # the rest); the reader adds them up into Prometheus' cumulative buckets.
    name = 'wsgiapp_request_duration_seconds'
    slots = (region.slot(sample('wsgiapp_requests_total', route=route, method=method, status=status)),
             [region.slot(sample(name + '_bucket', route=route, le=str(bound))) for bound in BUCKETS + ('+Inf',)],
             region.slot(sample(name + '_sum', route=route)),
             region.slot(sample(name + '_count', route=route)))
    if slots[0] is None or None in slots[1] or None in slots[2:]:
        return None
    return slots


def map_values(path):
    """The file at `path`, SLOTS doubles long, mapped shared: a write is in the page cache at once."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o640)
    try:
        if os.fstat(fd).st_size < SLOTS * 8:
            os.ftruncate(fd, SLOTS * 8)
        return mmap.mmap(fd, SLOTS * 8)
    finally:
        os.close(fd)


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
