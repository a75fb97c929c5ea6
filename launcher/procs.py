"""Processes: whether one runs, its children and the CPU it used, through psutil (which
reads /proc once per call and knows a zombie from a running process)."""
import psutil


def _process(pid):
    """psutil.Process(pid), refusing None: psutil would take that for this very process (a
    pid file that names nothing must not make the launcher look at itself)."""
    if pid is None:
        raise psutil.NoSuchProcess(pid)
    return psutil.Process(pid)


def alive(pid):
    """True for a running process; False for none or a zombie (exited, not yet reaped)."""
    try:
        return _process(pid).status() != psutil.STATUS_ZOMBIE
    except (psutil.Error, ValueError):
        return False


def children(pid):
    """The direct children of `pid` (uwsgi's workers, nginx's workers): psutil.Process each."""
    try:
        return _process(pid).children()
    except (psutil.Error, ValueError):
        return []


def cpu_seconds(pid, with_children=False):
    """User + system CPU seconds of one process and all its threads; with `with_children`,
    also of its live children and of those it has reaped (a master and its workers)."""
    try:
        process = _process(pid)
        times = process.cpu_times()
        total = times.user + times.system
        if with_children:
            total += times.children_user + times.children_system
            for child in process.children():
                try:
                    child_times = child.cpu_times()
                except psutil.Error:
                    continue
                total += child_times.user + child_times.system
        return total
    except (psutil.Error, ValueError):
        return 0.0


def find(predicate):
    """Pids of the processes for which predicate(psutil.Process) is true."""
    found = []
    for process in psutil.process_iter(['pid']):
        try:
            if predicate(process):
                found.append(process.pid)
        except psutil.Error:
            continue
    return found


def rss_kib(pid):
    """Resident memory of one process, KiB (0 for none)."""
    try:
        return _process(pid).memory_info().rss // 1024
    except (psutil.Error, ValueError):
        return 0
