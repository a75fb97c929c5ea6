"""The fault suite: each scenario runs against the real stack (private MariaDB, uwsgi on a
unix socket, nginx) under a steady, bounded load from loopback, and reports its counts
(tests.helpers.load.report). At the end of the run the rows are printed as one table; after
`make faults` (the whole suite: WSGIAPP_FUZZ_EXAMPLES is set) they are also written to
tests/faults/results/latest.md, which the manual includes."""
import os
import platform
import re
from pathlib import Path

import pytest

from tests.helpers.load import REPORT

RESULTS = Path(__file__).parent / 'results' / 'latest.md'
COLUMNS = ('scenario', 'requests', 'answers by status', 'writes acknowledged', 'writes found', 'also seen', 'test')
# One host's scenarios are numbered (1 to 12), the cluster's lettered (a to j).
SECTIONS = (('One host', r'\d'), ('More than one machine (make cluster)', r'[a-z]\.'))


def _order(row):
    """Numbered scenarios in number order (7 before 7b before 8, 12 last), then lettered ones."""
    number, letter = re.match(r'(\d*)(\w*)', row['scenario']).groups()
    return (int(number) if number else 10 ** 6, letter, row['scenario'])


def _cells(row, outcomes):
    seen = ', '.join(f'{k}={v}' for k, v in row.items()
                     if k not in ('scenario', 'sent', 'answers', 'acked', 'found', 'test'))
    return (row['scenario'], str(row['sent']), row['answers'] or '-', str(row.get('acked', '-')),
            str(row.get('found', '-')), seen or '-', outcomes.get(row['test'], '?'))


def _outcomes(terminalreporter):
    """nodeid -> 'passed', 'failed' or 'error', from the run's reports."""
    outcomes = {}
    for outcome in ('passed', 'failed', 'error'):
        for test_report in terminalreporter.stats.get(outcome, []):
            nodeid = getattr(test_report, 'nodeid', '')
            if outcome != 'passed' or outcomes.get(nodeid) is None:
                outcomes[nodeid] = outcome
    return outcomes


def _skipped(terminalreporter):
    """(test, reason) of the scenarios this run skipped (those that need root, say)."""
    skipped = []
    for test_report in terminalreporter.stats.get('skipped', []):
        reason = test_report.longrepr[2] if isinstance(test_report.longrepr, tuple) else str(test_report.longrepr)
        skipped.append((test_report.nodeid, reason.removeprefix('Skipped: ')))
    return sorted(skipped)


def markdown(rows, outcomes, skipped, examples):
    """The results as Markdown: a table per section, then the tests that failed before they
    could report, and the scenarios skipped."""
    lines = ['# The latest `make faults`', '',
             f'Written by `make faults` (tests/faults/conftest.py) with {examples} generated requests, '
             f'Python {platform.python_version()}, {os.cpu_count()} CPUs. A 502 is nginx\'s answer '
             'for a request in flight on a worker that was SIGKILLed; a 503 is the app\'s, with '
             '`Retry-After`, while the database is down or the pool is exhausted.', '']
    for title, pattern in SECTIONS:
        section = sorted((row for row in rows if re.match(pattern, row['scenario'])), key=_order)
        if not section:
            continue
        lines += [f'## {title}', '', '| ' + ' | '.join(COLUMNS) + ' |',
                  '|---|---:|---|---:|---:|---|---|']
        lines += ['| ' + ' | '.join(cell.replace('|', '\\|') for cell in _cells(row, outcomes)) + ' |'
                  for row in section]
        lines.append('')
    unreported = sorted(test for test, outcome in outcomes.items()
                        if outcome != 'passed' and test not in {row['test'] for row in rows})
    if unreported:
        lines += ['## Failed before reporting', '']
        lines += [f'- `{test}`: {outcomes[test]}' for test in unreported]
        lines.append('')
    if skipped:
        lines += ['## Skipped', '']
        lines += [f'- `{test}`: {reason}' for test, reason in skipped]
        lines.append('')
    return '\n'.join(lines)


def whole_suite(config):
    """`make faults`: tests/faults as a whole, with WSGIAPP_FUZZ_EXAMPLES set, no -k, no -m,
    and run (not --collect-only)."""
    return (bool(os.environ.get('WSGIAPP_FUZZ_EXAMPLES'))
            and [Path(arg).resolve() for arg in config.args] == [Path(__file__).parent]
            and not config.option.keyword and not config.option.markexpr and not config.option.collectonly)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    outcomes = _outcomes(terminalreporter)
    write = terminalreporter.write_line
    if REPORT:
        write('')
        write('| ' + ' | '.join(COLUMNS) + ' |')
        write('|---|---:|---|---:|---:|---|---|')
        for row in REPORT:
            write('| ' + ' | '.join(_cells(row, outcomes)) + ' |')
    if whole_suite(config) and exitstatus != pytest.ExitCode.INTERRUPTED:  # a stopped run keeps the last
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(markdown(REPORT, outcomes, _skipped(terminalreporter),
                                    os.environ['WSGIAPP_FUZZ_EXAMPLES']))
        write(f'==> the results: {RESULTS}')
