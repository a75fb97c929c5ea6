"""Sphinx configuration of the manual: `make docs` builds it into var/docs."""
import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..'))
sys.path.insert(0, ROOT)

project = 'wsgiapp'
author = 'the wsgiapp authors'
copyright = 'the wsgiapp authors'

extensions = [
    'sphinx.ext.autodoc',
    'myst_parser',
]
source_suffix = {'.rst': 'restructuredtext', '.md': 'markdown'}
root_doc = 'index'
exclude_patterns = ['_build']
# The pages are the files of docs/ itself; bench/ and tests/ results are included into
# them (benchmark.md, faults.md), never pages of their own.
include_patterns = ['*.rst', '*.md']

html_theme = 'furo'
html_title = 'wsgiapp'

# Every reference must resolve: `make docs` runs with -n -W.
nitpicky = True
# The package's docstrings quote code in single backquotes (`python -m wsgiapp serve`):
# show it as code, not as a title in italics with its dashes turned into typography.
default_role = 'code'

autodoc_default_options = {
    'members': True,
    'member-order': 'bysource',
}
# Signatures as written; the docstrings say what the arguments are.
autodoc_typehints = 'none'

# MyST headings get anchors, so that a page in Markdown can be linked to a section.
myst_heading_anchors = 3


def _blank_line_before_lists(app, what, name, obj, options, lines):
    """The package's docstrings are written as plain text: a '- ' list often follows its
    paragraph without the blank line reStructuredText needs. Insert it, so that such a
    docstring renders as a list rather than failing the build."""
    fixed, in_list = [], False
    for line in lines:
        item = line.lstrip().startswith(('- ', '* '))
        if item and not in_list and fixed and fixed[-1].strip():
            fixed.append('')
        if item:
            in_list = True
        elif not line.strip():
            in_list = False
        fixed.append(line)
    lines[:] = fixed


def setup(app):
    app.connect('autodoc-process-docstring', _blank_line_before_lists)
