"""Sphinx configuration: the API reference is built from the docstrings of
the *installed* scardio (autodoc needs the compiled binding), and the
Markdown pages (architecture, benchmarks, reliability, the changelog) are
read with myst-parser.  Build: ``sphinx-build -W --keep-going -b html docs
<out>`` (tests/test_docs.py does this, failing on any warning)."""

import scardio

project = "scardio"
author = "scardio developers"
copyright = "scardio developers"
version = release = scardio.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

autodoc_default_options = {
    "members": True,
    "show-inheritance": True,
    "member-order": "bysource",
}
autodoc_typehints = "description"
autodoc_class_signature = "separated"

# Headings become link targets, so pages can link to each other's sections.
myst_heading_anchors = 3

html_theme = "alabaster"
html_title = f"scardio {release}"
