"""Jinja filters that turn the shipped conf/ files into a host's files, so that every host
is configured from the one source the single server uses: each change is a literal
replacement that must find its text (a conf/ file that moved on is an error, not a silent
no-op). launcher/nginx.py renders the same files with the same functions."""
import ast
import importlib.util
import re
from pathlib import Path

# uwsgi_ directives of wsgiapp.conf that have a proxy_ twin of the same meaning: on an edge,
# the site speaks HTTP to the app hosts' nginx (wsgiapp-link.conf), and the same cache,
# timeouts and failover are said with proxy_. Any other uwsgi_ directive is an error.
PROXY_TWINS = {'cache_path', 'cache', 'cache_key', 'hide_header', 'pass_header', 'ignore_headers',
               'read_timeout', 'send_timeout', 'connect_timeout', 'next_upstream', 'next_upstream_tries',
               'next_upstream_timeout', 'intercept_errors', 'cache_bypass', 'no_cache', 'cache_lock',
               'cache_lock_timeout', 'cache_lock_age', 'cache_background_update', 'cache_valid',
               'cache_use_stale', 'cache_methods', 'cache_min_uses', 'cache_revalidate', 'buffering',
               'buffers', 'buffer_size', 'busy_buffers_size', 'request_buffering', 'ignore_client_abort',
               'max_temp_file_size', 'temp_file_write_size', 'force_ranges', 'limit_rate', 'store'}


def replace_each(text, pairs, source='the file'):
    """`text` with each (old, new) of `pairs` replaced; an `old` that is not there is an error."""
    for old, new in pairs:
        if old not in text:
            raise ValueError(f'{source} no longer contains {old!r}')
        text = text.replace(old, new)
    return text


def edge_site(site, link_conf):
    """wsgiapp.conf as an edge's site: what passes to uwsgi passes over the link instead.
    `include uwsgi_params` and the uwsgi_param lines go (the link sets the request id and
    drops Proxy; the app host's site sets the rest), `uwsgi_pass wsgiapp` becomes the link's
    include, and each other uwsgi_X directive its proxy_X twin. Two proxy_ defaults differ
    from uwsgi_'s: a HEAD stays a HEAD to the app (no cache_convert_head; the method is in
    the cache key), and the app's Date is kept (a cached copy's Date is its age)."""
    lines = []
    for line in site.splitlines(keepends=True):
        match = re.match(r'(\s*)(uwsgi_(\w+)|include uwsgi_params;)', line)
        if not match:
            lines.append(line)
            continue
        indent, directive, name = match.groups()
        if directive.startswith('include') or name == 'param':
            continue
        if line.strip() == 'uwsgi_pass wsgiapp;':
            lines.append(f'{indent}include {link_conf};\n')
        elif name == 'pass':
            target = line.split()[1].rstrip(';')
            lines.append(f'{indent}proxy_pass http://{target};\n')
        elif name in PROXY_TWINS:
            lines.append(line.replace('uwsgi_', 'proxy_', 1))
            if line.strip() == 'uwsgi_cache wsgiapp;':
                lines.append(f'{indent}proxy_cache_convert_head off;\n{indent}proxy_pass_header Date;\n')
        else:
            raise ValueError(f'conf/nginx/wsgiapp.conf: no proxy_ twin known for {line.strip()!r} '
                             f'(deploy/filter_plugins/wsgiapp_conf.py PROXY_TWINS)')
    return ''.join(lines)


def address(name, hostvars):
    """Host `name`'s address on the private network: its wsgiapp_private_address if its
    inventory sets one, else its ansible_host, else its name. (Role defaults are not in
    another host's hostvars, so roles look other hosts up with this.)"""
    host = hostvars[name]
    return host.get('wsgiapp_private_address') or host.get('ansible_host') or name


def db_account(name):
    """An app host's database account: wsgiapp_ and its inventory name, in letters, digits
    and underscores (MariaDB allows 80 characters)."""
    return 'wsgiapp_' + re.sub(r'[^A-Za-z0-9]', '_', name)[:72]


def code_version(source):
    """The release's name: the hash the app reports as X-App-Version, computed by the
    checkout's own wsgiapp/version.py on the control machine."""
    path = Path(source) / 'wsgiapp' / 'version.py'
    spec = importlib.util.spec_from_file_location('wsgiapp_release_version', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.VERSION


def sample_sql(source):
    """wsgiapp/schema.py's SAMPLE_ADMINS as one INSERT IGNORE (what `initdb --sample` adds),
    read from the checkout's source without importing it (the control machine needs no
    MySQLdb for this)."""
    tree = ast.parse((Path(source) / 'wsgiapp' / 'schema.py').read_text(encoding='utf-8'))
    rows = next(ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                and any(getattr(target, 'id', None) == 'SAMPLE_ADMINS' for target in node.targets))

    def literal(text):
        return "'" + text.replace('\\', '\\\\').replace("'", "''") + "'"
    values = ', '.join(f'({literal(name)}, {literal(email)})' for name, email in rows)
    return f'INSERT IGNORE INTO vc_admin (name, email) VALUES {values};\n'


class FilterModule:
    def filters(self):
        return {'wsgiapp_replace_each': replace_each, 'wsgiapp_edge_site': edge_site,
                'wsgiapp_code_version': code_version, 'wsgiapp_address': address,
                'wsgiapp_db_account': db_account, 'wsgiapp_sample_sql': sample_sql}
