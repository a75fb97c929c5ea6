"""The mutation score of the last `mutmut run` (make mutation), read from mutmut 3's results in
mutants/: killed/total per module and overall, then every mutant that was not killed, with its
line and its change. Exits 1 when the overall score is under THRESHOLD, 2 when there are no
results to read (mutmut did not run, or stopped before testing: run `.venv/bin/mutmut run`
to see why).

    python -m tests.mutation_score [--threshold PERCENT]

A mutant counts as killed when a test failed (or timed out, or a type check caught it);
"no tests" and "not checked" count against the score, a `# pragma: no mutate` line is not
counted at all."""
import argparse
import ast
import json
import re
import sys
from pathlib import Path

THRESHOLD = 85.0
ROOT = Path(__file__).resolve().parent.parent
MUTANTS = ROOT / 'mutants'
# mutmut's exit codes (mutmut.stats.status_by_exit_code); anything else is "suspicious".
STATUS = {1: 'killed', 3: 'killed', 0: 'survived', 5: 'no tests', 33: 'no tests', 2: 'interrupted',
          None: 'not checked', 34: 'skipped', 35: 'suspicious', 36: 'timeout', 37: 'caught by type check',
          -24: 'timeout', 24: 'timeout', 152: 'timeout', 255: 'timeout', -11: 'segfault', -9: 'segfault'}
KILLED = frozenset({'killed', 'timeout', 'caught by type check'})
NOT_COUNTED = frozenset({'skipped'})
HUNK = re.compile(r'^@@ -(\d+)')


def results(mutants=MUTANTS):
    """{source path relative to the checkout: {mutant name: status}}, from mutants/**/*.py.meta."""
    found = {}
    for meta in sorted(mutants.rglob('*.py.meta')):
        source = meta.relative_to(mutants).as_posix()[:-len('.meta')]
        codes = json.loads(meta.read_text())['exit_code_by_key']
        found[source] = {name: STATUS.get(code, 'suspicious') for name, code in codes.items()}
    return found


def score(statuses):
    """(killed, total) of one module's {mutant: status}."""
    counted = [status for status in statuses.values() if status not in NOT_COUNTED]
    return sum(status in KILLED for status in counted), len(counted)


def percent(killed, total):
    return 100.0 * killed / total if total else 0.0


def _function_span(source_path, function_name, class_name):
    """(first, last) line of a function (or method) of the source file, or None."""
    tree = ast.parse((ROOT / source_path).read_text())
    scopes = [tree.body]
    if class_name:
        scopes = [node.body for node in tree.body if isinstance(node, ast.ClassDef) and node.name == class_name]
    for body in scopes:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == function_name:
                return node.lineno, node.end_lineno
    return None


def describe(source_path, name):
    """(line, change) of one mutant: its line in the source file, and `old` -> `new`."""
    try:
        from mutmut.mutation.diff_apply import get_diff_for_mutant
        from mutmut.utils.format_utils import orig_function_and_class_names_from_key
    except ImportError:
        return None, '(mutmut is not importable: no diff)'
    import os
    here = os.getcwd()
    os.chdir(ROOT)  # mutmut reads mutants/<path> relative to the checkout
    try:
        diff = get_diff_for_mutant(name, path=source_path)
        function_name, class_name = orig_function_and_class_names_from_key(name)
    except Exception as error:  # a stale or partial mutants/ directory: still list the mutant
        return None, f'(no diff: {error.__class__.__name__})'
    finally:
        os.chdir(here)
    removed = [line[1:] for line in diff.splitlines() if line.startswith('-') and not line.startswith('---')]
    added = [line[1:] for line in diff.splitlines() if line.startswith('+') and not line.startswith('+++')]
    change = ' / '.join(line.strip() for line in removed) + '  ->  ' + ' / '.join(line.strip() for line in added)
    line_number = None
    span = _function_span(source_path, function_name, class_name)
    if span and removed:
        lines = (ROOT / source_path).read_text().splitlines()
        first, last = span
        # Where the removed line is inside the function: the hunk says roughly, the text exactly.
        hunk = next((int(m[1]) for m in map(HUNK.match, diff.splitlines()) if m), 1)
        candidates = [n for n in range(first, last + 1) if lines[n - 1].strip() == removed[0].strip()]
        if candidates:
            line_number = min(candidates, key=lambda n: abs(n - first + 1 - hunk))
    return line_number, change


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--threshold', type=float, default=THRESHOLD)
    options = parser.parse_args(argv)

    found = results()
    total_killed = total = 0
    for statuses in found.values():
        killed, counted = score(statuses)
        total_killed += killed
        total += counted
    if not total:
        print('no mutmut results in mutants/: mutmut did not run, or stopped before testing any mutant; '
              'run `.venv/bin/mutmut run` to see why')
        return 2
    unchecked = sum(status == 'not checked' for statuses in found.values() for status in statuses.values())

    print('mutation score (mutmut, tests/unit):')
    for source, statuses in found.items():
        killed, counted = score(statuses)
        print(f'  {source:<24} {killed:>4}/{counted:<4} {percent(killed, counted):6.1f}%')
    overall = percent(total_killed, total)
    print(f'  {"overall":<24} {total_killed:>4}/{total:<4} {overall:6.1f}%')

    survivors = [(source, name, status) for source, statuses in found.items()
                 for name, status in statuses.items() if status not in KILLED | NOT_COUNTED]
    if survivors:
        print(f'\nnot killed ({len(survivors)}; `.venv/bin/mutmut show NAME` shows one):')
        for source, name, status in survivors:
            line, change = describe(source, name)
            where = f'{source}:{line}' if line else source
            print(f'  {where:<24} {status:<11} {name}\n      {change}')
    if unchecked:
        print(f'\n{unchecked} mutants were not checked: the run was interrupted or failed')
    if overall < options.threshold:
        print(f'\nFAIL: the mutation score {overall:.1f}% is under {options.threshold:g}%')
        return 1
    print(f'\nOK: the mutation score {overall:.1f}% is at least {options.threshold:g}%')
    return 0


if __name__ == '__main__':
    sys.exit(main())
