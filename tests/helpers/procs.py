"""Processes as the tests look at them, through launcher.procs (psutil)."""
import os
import re
from pathlib import Path

import psutil

from launcher import procs


def _group_of(pid):
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def in_process_group(group):
    """Live processes (no zombie) whose process group is `group`."""
    return procs.find(lambda process: _group_of(process.pid) == group
                      and process.status() != psutil.STATUS_ZOMBIE)


def workers(master):
    """uwsgi's workers: the master's live children."""
    return [child.pid for child in procs.children(master) if procs.alive(child.pid)]


def net_namespace(pid):
    """The network namespace a process runs in (its inode), which psutil does not tell."""
    return os.stat(f'/proc/{pid}/ns/net').st_ino


def privileges(pid):
    """(effective capabilities, no_new_privs) of a running process. psutil has neither: this
    is the one place the tests read /proc/PID/status."""
    status = Path(f'/proc/{pid}/status').read_text()
    fields = dict(re.findall(r'^(CapEff|NoNewPrivs):\s+(\S+)$', status, re.M))
    return int(fields['CapEff'], 16), fields['NoNewPrivs'] == '1'
