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

# Every cross-reference must resolve (-n): a broken one fails the build.
nitpicky = True
nitpick_ignore = [
    # the standard library's own documentation is not fetched (offline build)
    ("py:class", "os.PathLike"),
    ("py:class", "enum.IntEnum"),
    ("py:class", "enum.IntFlag"),
    # type variables and internal helpers named in signatures
    ("py:class", "scardio.reader.T"),
    ("py:class", "scardio.aio.T"),
    ("py:class", "scardio.reader.Request"),
    ("py:class", "scardio.sequences.T"),
    ("py:obj", "scardio.sequences.T"),
    ("py:class", "scardio.runner.T"),
    ("py:class", "scardio.aio._LoopLink"),
    # Card's base in the binding: its transmit is documented as Card's
    ("py:class", "scardio._core.CardBase"),
    # the session's base in the binding (ReaderSession documents its methods)
    ("py:class", "scardio._core.SessionBase"),
    # the Monitor's completion queue in the binding (internal)
    ("py:class", "scardio._core.CompletionQueue"),
    # the Monitor's tracking set in the binding (internal)
    ("py:class", "scardio._core.TrackingSet"),
    # a tracking set's announcement of an event (internal)
    ("py:class", "scardio._core.Herald"),
]


def _candidates(target, module):
    """Where a name written as *target* (in *module*'s docstrings or type
    hints) is documented: names re-exported by ``scardio`` are documented in
    the module that defines them, and bare names in hints are the module's
    own or the package's."""
    import importlib

    name = target.strip("'\"")
    yield name
    spaces = [name] if "." in name else [f"{module}.{name}", f"scardio.{name}"]
    for dotted in spaces:
        head, _, attr = dotted.rpartition(".")
        try:
            obj = getattr(importlib.import_module(head), attr)
        except (ImportError, AttributeError, ValueError):
            continue
        real = getattr(obj, "__module__", None)
        qual = getattr(obj, "__qualname__", None)
        yield dotted
        if real and qual:
            yield f"{real}.{qual}"
            yield f"scardio.{qual}"


def _resolve_reexports(app, env, node, contnode):
    if node.get("refdomain") != "py":
        return None
    domain = env.get_domain("py")
    module = node.get("py:module") or "scardio"
    for target in _candidates(node["reftarget"], module):
        if target == node["reftarget"]:
            continue
        found = domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"],
                                    target, node, contnode)
        if found is not None:
            return found
    return None


def setup(app):
    app.connect("missing-reference", _resolve_reexports)
