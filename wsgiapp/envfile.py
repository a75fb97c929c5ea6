"""systemd's EnvironmentFile= as systemd reads it: what `python -m wsgiapp check` reads the
unit's environment with, and the tests too (one parser, one set of rules)."""
import re

ENV_NAME = re.compile(r'[A-Za-z_][A-Za-z0-9_]*')


def read_env_file(path):
    """(variables, problems) from a file as systemd's EnvironmentFile= reads it: KEY=VALUE
    lines, '#' and ';' comment lines, blank lines, values optionally in single or double
    quotes. systemd skips a line it cannot read (`export KEY=...`, no '='), leaving the
    variable unset: each such line is a problem. Raises OSError or UnicodeDecodeError."""
    variables, problems = {}, []
    with open(path, encoding='utf-8') as lines:
        for number, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line[0] in '#;':
                continue
            key, equals, value = line.partition('=')
            key = key.strip()
            if not equals or not ENV_NAME.fullmatch(key):
                exported = ' ("export" is shell, not systemd)' if key.startswith('export') else ''
                problems.append(f'line {number} is not KEY=VALUE{exported}')
                continue
            variables[key] = _unquote(value.strip())
    return variables, problems


def _unquote(value):
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return value[1:-1]
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r'\\([\\"`$])', r'\1', value[1:-1])  # the escapes systemd reads in double quotes
    return re.sub(r'\\(.)', r'\1', value)  # unquoted, systemd drops a backslash and keeps what follows
