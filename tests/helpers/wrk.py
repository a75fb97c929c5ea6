"""wrk against a stack or a cluster's edge, counted by status (bench/status.lua), with the
goodput per CPU-second left to the stack: wrk shares this machine's cores with what it
measures, and 1,000 connections cost it far more CPU than 32."""
import os
import re
import resource
import statistics
import subprocess

from launcher.process import ROOT

STATUS_LUA = ROOT / 'bench' / 'status.lua'  # shared with make bench


def wrk(stack, connections, seconds, path, headers=()):
    """One bounded wrk run against `stack.url` (a stack's nginx or a cluster's edge)."""
    command = ['wrk', '-t2', f'-c{connections}', f'-d{seconds}s', '--timeout', '10s', '-s', str(STATUS_LUA)]
    for header in headers:
        command += ['-H', header]
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([*command, f'{stack.url}{path}'], capture_output=True, text=True, timeout=seconds + 60)
    now = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cpu = now.ru_utime + now.ru_stime - used.ru_utime - used.ru_stime
    found = re.search(r'2xx=(\d+) 502=(\d+) 503=(\d+) other=(\d+) p99=([\d.]+)ms errors=(\d+)/(\d+)/(\d+)/(\d+)',
                      done.stdout)
    assert found, done.stdout + done.stderr
    ok, bad_gateway, unavailable, other, p99, *errors = found.groups()
    # Goodput per CPU-second left to the stack is what the stack itself achieves.
    left = (os.cpu_count() or 1) * seconds - client_cpu
    return {'2xx/s': round(int(ok) / seconds), '2xx/stack-cpu-s': int(ok) / left,
            'client_cpu_s': round(client_cpu, 1), '502': int(bad_gateway), '503': int(unavailable),
            'other': int(other), 'p99_ms': float(p99), 'socket_errors': sum(map(int, errors))}


def overload(target, connections, rounds, seconds, path, headers):
    """`rounds` runs at `connections`, each followed by one at 32 (this machine drifts 10%
    or more between runs: medians of interleaved runs). What the fault tables report: the
    goodput at 32 and under overload, their ratio per CPU-second left to the stack, and the
    worst of each count over the overloaded runs. A first run of 2 s at `connections` is not
    counted: it opens the edge's link connections (a TLS handshake on both ends each), which
    the edge then keeps (keepalive as large as what it admits); what is measured is overload
    on an open link, as every round after a first one is."""
    wrk(target, connections, 2, path, headers)
    capacity = [wrk(target, 32, seconds, path, headers)]
    overloaded = []
    for _ in range(rounds):
        overloaded.append(wrk(target, connections, seconds, path, headers))
        capacity.append(wrk(target, 32, seconds, path, headers))
    base = statistics.median(run['2xx/s'] for run in capacity)
    goodput = statistics.median(run['2xx/s'] for run in overloaded)
    ratio = (statistics.median(run['2xx/stack-cpu-s'] for run in overloaded)
             / statistics.median(run['2xx/stack-cpu-s'] for run in capacity))
    worst = {key: max(run[key] for run in overloaded)
             for key in ('502', '503', 'other', 'p99_ms', 'socket_errors', 'client_cpu_s')}
    return {'runs': len(capacity) + rounds, 'goodput_32': round(base), 'goodput': round(goodput),
            'raw_ratio': round(goodput / base, 2) if base else 0.0, 'ratio_per_stack_cpu': round(ratio, 2),
            **worst}
