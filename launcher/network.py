"""Separate hosts on one machine, as root: a network namespace per host (a booted server's,
launcher/machine.py), each joined by a veth pair to a bridge of the launcher's own, in a
private /24 that nothing else on the machine uses; the machine itself is .1 on the bridge,
so it reaches every host and nothing outside the machine reaches any.

Nothing here touches the machine's other interfaces, routes or firewall."""
import ipaddress
import json
import subprocess

from launcher.process import binary, say

# The /24s the namespaces may use: 10.213.K.0/24, the first one free from a K of the
# cluster's own (a hash of its directory), so two clusters of two checkouts never meet.
RANGE = ipaddress.ip_network('10.213.0.0/16')
# Each host's last octet: the machine (on the bridge) .1, edge .2, a booted server
# (launcher/machine.py) .3, appN 10+N, dbN 99+N, and testN 200+N for hosts a test adds (an intruder).
# A fleet's edge (launcher/fleet.py) is edge1, at the edge's address: there is one.
NAMED = {'bridge': 1, 'edge': 2, 'edge1': 2, 'server': 3}
NUMBERED = {'app': 10, 'db': 99, 'test': 200}


def octet(host):
    if host in NAMED:
        return NAMED[host]
    for kind, base in NUMBERED.items():
        number = host[len(kind):]
        if host.startswith(kind) and number.isdigit():
            return base + int(number)
    raise ValueError(f'no address for host {host!r}')


def ip(*args, check=True):
    return subprocess.run([binary('ip'), *args], check=check, capture_output=True, text=True)


class Network:
    """`ident`: 4 hex digits naming this cluster's bridge, namespaces and veths."""

    def __init__(self, ident, subnet=None):
        self.ident = ident
        self.bridge = f'wsgiapp-{ident}'
        self.subnet = ipaddress.ip_network(subnet or self._bridge_subnet() or self._free_subnet())

    def describe(self):
        return {'bridge': self.bridge, 'subnet': str(self.subnet)}

    def address(self, host):
        return str(self.subnet.network_address + octet(host))

    def mac(self, host):
        """The host's MAC address: locally administered (02:), from its IPv4 address."""
        return '02:00:' + ':'.join(f'{int(part):02x}' for part in self.address(host).split('.'))

    def netns(self, host):
        return f'wsgiapp-{self.ident}-{host}'

    def veth(self, host):
        return f'wa{self.ident}-{host}'[:15]

    def wrap(self, host):
        """The command prefix that runs a program of this machine in `host`'s network namespace."""
        return [binary('ip'), 'netns', 'exec', self.netns(host)]

    def _bridge_subnet(self):
        """The subnet of this cluster's bridge, when it exists already."""
        for entry in json.loads(ip('-j', '-4', 'addr', 'show', 'dev', self.bridge, check=False).stdout or '[]'):
            for info in entry.get('addr_info', []):
                return ipaddress.ip_network(f'{info["local"]}/{info["prefixlen"]}', strict=False)
        return None

    def _free_subnet(self):
        """The first 10.213.K.0/24 that no address or route of the machine overlaps."""
        used = []
        for kind in ('addr', 'route'):
            for entry in json.loads(ip('-j', '-4', kind).stdout or '[]'):
                for found in [info.get('local') for info in entry.get('addr_info', [])] + [entry.get('dst')]:
                    if found and found != 'default':
                        used.append(ipaddress.ip_network(found, strict=False))
        start = int(self.ident, 16) % 256
        for k in range(256):
            candidate = ipaddress.ip_network(f'10.213.{(start + k) % 256}.0/24')
            if not any(candidate.overlaps(net) for net in used):
                return candidate
        raise RuntimeError(f'no free /24 in {RANGE} for the cluster network')

    # --- namespaces ------------------------------------------------------------------------
    def create(self):
        if ip('link', 'show', self.bridge, check=False).returncode != 0:
            say(f'creating the bridge {self.bridge} ({self.subnet}, the machine is {self.address("bridge")})')
            ip('link', 'add', self.bridge, 'type', 'bridge')
            ip('addr', 'add', f'{self.address("bridge")}/{self.subnet.prefixlen}', 'dev', self.bridge)
        ip('link', 'set', self.bridge, 'up')

    def add_host(self, host):
        """The host's namespace, joined to the bridge with the host's address; idempotent."""
        netns, veth = self.netns(host), self.veth(host)
        if host not in self.hosts():
            say(f'creating the host {host}: namespace {netns}, address {self.address(host)}')
            ip('netns', 'add', netns)
        if ip('link', 'show', veth, check=False).returncode != 0:
            # eth0 keeps one MAC address for the host's life, as a real NIC does: a host made
            # again (a rebooted fleet host) is reached at once, not after the machine's
            # neighbour entry for its old MAC (reachable for 15-45 s) runs out.
            ip('link', 'add', veth, 'type', 'veth', 'peer', 'name', 'eth0', 'address', self.mac(host), 'netns', netns)
            ip('link', 'set', veth, 'master', self.bridge)
            ip('-n', netns, 'addr', 'add', f'{self.address(host)}/{self.subnet.prefixlen}', 'dev', 'eth0')
        ip('link', 'set', veth, 'up')
        ip('-n', netns, 'link', 'set', 'lo', 'up')
        ip('-n', netns, 'link', 'set', 'eth0', 'up')

    def hosts(self):
        """The hosts of this cluster whose namespace exists now."""
        prefix = f'wsgiapp-{self.ident}-'
        return [line.split()[0][len(prefix):] for line in ip('netns', 'list').stdout.splitlines()
                if line.startswith(prefix)]

    def remove_host(self, host):
        """Kill whatever still runs on the host, delete its veth pair (at once: the kernel
        would only get to it some time after the namespace goes), then its namespace."""
        netns = self.netns(host)
        for pid in ip('netns', 'pids', netns, check=False).stdout.split():
            subprocess.run(['kill', '-KILL', pid], check=False)
        ip('link', 'del', self.veth(host), check=False)
        ip('netns', 'del', netns, check=False)

    def remove(self):
        for host in self.hosts():
            self.remove_host(host)
        if ip('link', 'show', self.bridge, check=False).returncode == 0:
            say(f'removing the bridge {self.bridge}')
            ip('link', 'del', self.bridge)

    def leftovers(self, host=None):
        """Namespaces, bridge and veths of this cluster still present: none after remove().
        With `host`, that host's namespace and veth only: none after remove_host(host)."""
        links = [line.split(':')[1].strip().split('@')[0] for line in ip('-o', 'link').stdout.splitlines()]
        if host is not None:
            namespaces = [self.netns(host)] if host in self.hosts() else []
            return namespaces + [name for name in links if name == self.veth(host)]
        return [self.netns(host) for host in self.hosts()] + [name for name in links
                               if name == self.bridge or name.startswith(f'wa{self.ident}-')]

    # --- faults ----------------------------------------------------------------------------
    def partition(self, host):
        """Take the host's veth down: its packets vanish, nothing refuses a connection."""
        ip('link', 'set', self.veth(host), 'down')

    def heal(self, host):
        ip('link', 'set', self.veth(host), 'up')
