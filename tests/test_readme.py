"""README's quick start, run command by command: each must succeed and print the text its
`# =>` comment promises. The stack runs in a directory of its own on free ports, so the
test rewrites `var/` and the two ports, and nothing else; the commands run without the
app's variables in their environment, as in a newcomer's shell."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.process import ROOT, free_port
from launcher.single import Stack
from tests.helpers.servers import new_base

pytestmark = [pytest.mark.e2e, pytest.mark.uwsgi, pytest.mark.mariadb]


def quick_start_commands():
    """[(command, expected)] from the quick start's block of commands with `# =>`."""
    text = (ROOT / 'README.rst').read_text()
    start = text.index('Quick start\n-----------\n') + len('Quick start\n-----------\n')
    # Up to the next section title of the same level (underlined with dashes), or the end.
    end = re.search(r'\n\n[^\n]+\n-{3,}\n', text[start:])
    section = text[start:start + end.start()] if end else text[start:]
    # A block's code is its first indented paragraph; the prose after it may quote `# =>` too.
    codes = [block.split('\n\n')[1] for block in section.split('.. code-block:: sh')[1:]]
    lines = [line.strip() for line in next(code for code in codes if '# =>' in code).splitlines()]
    commands, pending = [], ''
    for line in lines:
        if line.endswith('\\'):
            pending += line[:-1] + ' '
            continue
        command, _, expected = (pending + line).partition('# =>')
        commands.append((command.strip(), expected.strip()))
        pending = ''
    return commands


def test_quick_start_is_found():
    commands = quick_start_commands()
    assert commands[0][0] == 'make run' and commands[-1][0] == 'make stop'
    assert sum(c.startswith('curl') for c, _ in commands) >= 5
    assert all(expected for _, expected in commands)


def test_every_quick_start_command_does_what_the_readme_says():
    base, port, tls_port = new_base(), free_port(), free_port()
    venv = Path(sys.executable).parent.parent
    # A newcomer's shell: none of the app's variables set (the suite may have its own
    # DATABASE_URL), so each command works with what the README's commands give it.
    newcomer = {name: value for name, value in os.environ.items()
                if name not in ('DATABASE_URL', 'DATABASE_REPLICA_URL', 'WSGIAPP_API_TOKEN')}

    def ours(text):
        text = text.replace('var/', f'{base}/').replace('8443', str(tls_port)).replace('8080', str(port))
        return re.sub(r'\bmake\b', f'make VAR={base} PORT={port} TLS_PORT={tls_port} VENV={venv}', text)
    try:
        for command, expected in quick_start_commands():
            done = subprocess.run(['bash', '-c', ours(command)], cwd=ROOT, capture_output=True, text=True,
                                  timeout=300, env=newcomer)
            output = done.stdout + done.stderr
            assert done.returncode == 0, (command, output[-3000:])
            assert ours(expected) in output, (command, expected, output[-3000:])
    finally:
        Stack(base, port, tls_port).down()
        shutil.rmtree(base, ignore_errors=True)
