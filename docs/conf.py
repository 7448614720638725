"""Sphinx configuration of the SAGERec documentation site (used by `python tools/docs.py build`).

The sources are not here: `tools/docs.py` stages the processed notebooks and the API page in
`build/docs/src/` and runs Sphinx with this folder as its configuration directory.
"""
import json
from pathlib import Path

_root = Path(__file__).resolve().parents[1]
_meta = json.loads((_root / "build" / "docs" / "src" / "_pages.json").read_text())

project = _meta["project"]
release = version = _meta["version"]
author = "SAGERec contributors"
copyright = "SAGERec contributors"

extensions = ["myst_nb", "sphinx.ext.mathjax"]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_pages.json"]
root_doc = "index"

# MyST: the markdown of the notebooks (math with $...$, tables, callouts as ::: fences, {.class} attributes)
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "attrs_block", "attrs_inline", "smartquotes"]
myst_all_links_external = True      # local links are plain HTML links; tools/docs.py checks every one after the build
myst_dmath_double_inline = True

# MyST-NB: never execute (stored outputs are the evidence); markdown outputs rendered as MyST
nb_execution_mode = "off"
nb_render_markdown_format = "myst"
nb_merge_streams = True
nb_ipywidgets_js = {}               # no widget JavaScript from a CDN
nb_output_stderr = "show"

# Math: a local MathJax 3 copy (tools/docs.py copies it from the django-static-mathjax wheel)
html_static_path = ["_static", str(_root / "build" / "docs" / "static")]
mathjax_path = "mathjax/tex-chtml.js"

html_theme = "furo"
html_title = project
html_css_files = ["sagerec.css"]
html_favicon = "_static/favicon.svg"
html_copy_source = False
html_show_sourcelink = False
html_last_updated_fmt = None
html_theme_options = {
    "navigation_with_keys": True,
    "top_of_page_buttons": [],
}
pygments_style = "friendly"
pygments_dark_style = "monokai"

# Warnings are errors (tools/docs.py runs sphinx with -W). Heading levels in notebooks jump by design
# (a show_doc entry is an H3 directly under a section), which is not a problem worth failing on.
suppress_warnings = ["myst.header"]
