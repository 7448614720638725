#!/usr/bin/env python
"""Build the documentation website from the notebooks, offline.

    python tools/docs.py build            # nbs/*.ipynb -> _site/ (then the checks below); fails on any problem
    python tools/docs.py check            # only the post-build checks of an existing _site/
    python tools/docs.py serve [--port N]  # serve _site/ on http://127.0.0.1:N (default 8000)

`--nbs DIR` (or SAGEREC_DOCS_NBS=DIR) builds from another notebook folder.

How it works (nbdev's `nbdev-docs` needs the Quarto binary, which cannot be installed everywhere):
1. Every notebook in `nbs/` is prepared exactly as `nbdev-docs` prepares it, by nbdev's own processors
   (`nbdev.processors.FilterDefaults`): `#| hide` and `#| export` sources removed, a `show_doc` added after
   every exported definition and executed (only imports, exported definitions and `show_doc` cells run;
   stored outputs are used as they are, so nothing is retrained), backticked names linked.
2. The Quarto-specific leftovers are translated for MyST (front matter -> title and subtitle, `#| echo: false`
   -> hidden source, `show_doc` markdown -> an anchored heading, links to the hosted docs -> local pages) and
   the notebooks are staged in `build/docs/src/` with a generated API reference page.
3. Sphinx + MyST-NB + the Furo theme render them into `_site/` with warnings as errors; math is rendered by
   a local MathJax copy (PyPI `django-static-mathjax`), search is Sphinx's offline index.
4. The built site is checked: every expected page present, every local link and anchor resolves, every image
   exists, every figure output of a notebook appears on its page, nothing is loaded from the network.

Page names follow nbdev (`nbs/03_graph.ipynb` -> `graph.html`); pipeline order is the numeric prefix order;
notebooks without a numeric prefix (other than `index`) are experiments.
"""
from __future__ import annotations

import argparse, copy, hashlib, html.parser, importlib, json, os, re, shutil, sys, time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parents[1]
NBS = Path(os.environ.get("SAGEREC_DOCS_NBS") or ROOT / "nbs")   # another notebook folder, for trying things
CONF = ROOT / "docs"                # Sphinx conf.py, theme overrides
STAGE = ROOT / "build" / "docs"     # staged sources, doctrees, static copies (git-ignored)
SITE = ROOT / "_site"               # the built website (git-ignored)
STAMP = ".sagerec-docs.json"        # written into the site: what it was built from
IMAGE_MIMES = ("image/png", "image/jpeg", "image/svg+xml", "image/gif")
KEEP_MIMES = ("text/plain", "text/html", "text/markdown", "text/latex", *IMAGE_MIMES)
_re_prefix = re.compile(r"^(\d+)([a-zA-Z0-9]*)_")


class DocsError(Exception):
    "A problem that makes the site wrong or incomplete; the message says what and where."


# ---------------------------------------------------------------------------------------------------- discover
@dataclass
class Page:
    "One notebook and the page it becomes."
    src: Path                       # the notebook
    kind: str                       # "index" | "stage" | "experiment"
    name: str = ""                  # page name (nbdev's: numeric prefix stripped), e.g. "graph"
    title: str = ""                 # from the notebook's front matter
    subtitle: str = ""
    module: str | None = None       # `#| default_exp` module, for stage notebooks
    nb: object = None               # the processed notebook (nbformat node)
    anchors: dict = field(default_factory=dict)  # symbol display name -> anchor id on this page
    n_images: int = 0               # image outputs shown on the page


def _stage_key(p: Path):
    m = _re_prefix.match(p.name)
    return (int(m.group(1)), m.group(2), p.name)


def discover(nbs: Path = NBS) -> list[Page]:
    "The notebooks of the site: index, stages in numeric-prefix order, then experiments (`train` first)."
    from nbdev.config import nbpath2html
    nbs_all = [p for p in nbs.glob("*.ipynb") if not p.name.startswith(("_", "."))]
    if not (nbs / "index.ipynb").exists():
        raise DocsError(f"{nbs/'index.ipynb'} is missing: it is the site's home page (and the README source).")
    stages = sorted((p for p in nbs_all if _re_prefix.match(p.name)), key=_stage_key)
    exps = sorted((p for p in nbs_all if not _re_prefix.match(p.name) and p.stem != "index"),
                  key=lambda p: (p.stem != "train", p.stem))
    pages = [Page(nbs / "index.ipynb", "index", "index")]
    pages += [Page(p, "stage", nbpath2html(p).stem) for p in stages]
    pages += [Page(p, "experiment", nbpath2html(p).stem) for p in exps]
    seen = {}
    for pg in pages:
        if pg.name in seen or pg.name in ("api", "search", "genindex"):
            raise DocsError(f"{pg.src.name} and {seen.get(pg.name, 'the site')} would both be `{pg.name}.html`: rename one.")
        seen[pg.name] = pg.src.name
    return pages


# ---------------------------------------------------------------------------------------------------- process
def _first_code_line(src: str) -> str:
    return next((l.strip() for l in src.splitlines() if l.strip() and not l.lstrip().startswith("#|")), "")[:70]


def _docs_filter(notes: list):
    "nbdev's `FilterDefaults`, except that a lesson cell mixing imports with other code only has its imports run."
    import ast
    from nbdev.processors import FilterDefaults, exec_show_docs, _do_eval, _show_docs

    class exec_docs_only(exec_show_docs):
        "Run exported definitions, `show_doc` cells and import statements: never a lesson cell's other code."
        def __call__(self, cell):
            if not self.nb.has_docs_ or not hasattr(self, "k") or not _do_eval(cell): return
            trees, ran = cell.parsed_() or [], cell.source
            if cell.directives_.keys() & {"export", "exports", "exporti", "exec_doc"} or _show_docs(trees):
                self.k.cell(cell)                                   # exactly as nbdev-docs does
            else:
                imps = [t for t in trees if isinstance(t, (ast.Import, ast.ImportFrom))]
                if len(imps) < len(trees):
                    notes.append(f"cell {cell.idx_} mixes imports with other code (nbdev-docs would run all of it; "
                                 f"move its imports into their own cell): {_first_code_line(cell.source)}")
                ran = ast.unparse(ast.Module(imps, []))
                if imps: self.k.run(ran)
            if self.k.exc:
                raise DocsError(f"cell {cell.idx_} failed while preparing the docs, running:\n{ran}\n"
                                f"{type(self.k.exc).__name__}: {self.k.exc}")

    class DocsFilter(FilterDefaults):
        def base_procs(self): return [exec_docs_only if p is exec_show_docs else p for p in super().base_procs()]
    return DocsFilter()


def nbdev_process(path: Path, log=print):
    "Run nbdev's docs processors on the notebook at `path` (as `nbdev-docs` does) and return it."
    import warnings
    from fastcore.nbio import read_nb
    nb, notes = read_nb(path), []
    os.environ["IN_TEST"] = "1"
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Found cells containing imports")
            _docs_filter(notes)(nb)
    except DocsError as e: raise DocsError(f"{path.name}: {e}") from e
    except Exception as e:
        raise DocsError(f"nbdev could not prepare {path.name} for the docs: {type(e).__name__}: {e}") from e
    finally: os.environ.pop("IN_TEST", None)
    for n in notes: _note(log, f"{path.name}: {n}")
    return nb


SHOW_NOTES = os.environ.get("SAGEREC_DOCS_NOTES") == "1"  # notes for the notebooks' authors; `build --notes` shows them
_hidden_notes: list[str] = []

def _note(log, text: str):
    "A developer note (e.g. a cell mixing imports with code): shown with --notes, else only counted."
    if SHOW_NOTES: log(f"  note: {text}")
    else: _hidden_notes.append(text)


def _src(cell) -> str:
    s = cell.get("source", "")
    return "".join(s) if isinstance(s, list) else (s or "")


def _text(x) -> str: return "".join(x) if isinstance(x, list) else (x or "")


_re_dir = re.compile(r"^\s*#\|\s*([\w-]+)\s*:?\s*(.*?)\s*$")
_re_showdoc_md = re.compile(
    r"^\s*(?:---\s*\n)?\s*(?:\[source\]\((?P<url>[^)]*)\)(?:\{[^}]*\})?\s*\n)?\s*(?P<h>#+)\s+(?P<name>[^\n]+)\n(?P<body>.*)$",
    re.S)


def split_directives(src: str) -> tuple[dict, str]:
    "Leading `#| key: value` lines of a code cell -> (dict, remaining source)."
    lines, dirs = src.splitlines(), {}
    while lines and _re_dir.match(lines[0]):
        k, v = _re_dir.match(lines[0]).groups()
        dirs[k] = v.strip("\"'")
        lines.pop(0)
    return dirs, "\n".join(lines).strip("\n")


def anchor_id(name: str) -> str:
    "The HTML id Sphinx gives a heading `name` (docutils' `make_id`)."
    from docutils.nodes import make_id
    return make_id(name)


def showdoc_markdown(md: str, level: int | None = None) -> tuple[str, str]:
    "nbdev's `show_doc` markdown (Quarto flavour) -> (symbol name, MyST: a code-styled heading + a doc card)."
    m = _re_showdoc_md.match(md)
    if not m: raise DocsError(f"unexpected show_doc output:\n{md[:300]}")
    name, body, h = m["name"].strip(), m["body"].strip(), "#" * (level or len(m["h"]))
    src = f'<a class="nbd-source" href="{m["url"]}">source</a>\n\n' if m["url"] else ""
    fence = ":" * max(4, 1 + max((len(x) for x in re.findall(r"^:{3,}", body, re.M)), default=0))
    return name, f"{h} `{name}`\n\n{fence}{{container}} nbd-doc\n{src}{body}\n{fence}\n"


_re_callout = re.compile(r"^:::\s*\{\.callout-(\w+)[^}]*\}\s*$", re.M)
_CALLOUTS = {"note": "note", "tip": "tip", "warning": "warning", "important": "important", "caution": "caution"}


def quarto_md_to_myst(md: str) -> str:
    "Translate the Quarto-only markdown nbdev users write (callouts, `{target=...}` link attributes)."
    md = _re_callout.sub(lambda m: ":::{" + _CALLOUTS.get(m[1], "note") + "}", md)
    return re.sub(r"(\]\([^)]*\))\{target=[^}]*\}", r"\1", md)


def collapse_cr(text: str) -> str:
    "What a terminal shows for text with carriage returns (tqdm bars): the last state of each line."
    return "\n".join(l.rstrip("\r").rsplit("\r", 1)[-1] for l in text.split("\n"))


def merge_streams(outs: list) -> list:
    "Consecutive outputs of the same stream as one (a progress bar's updates can arrive split, and would show twice)."
    merged = []
    for o in outs:
        if (o.get("output_type") == "stream" and merged and merged[-1].get("output_type") == "stream"
                and merged[-1].get("name") == o.get("name")):
            merged[-1] = {**merged[-1], "text": _text(merged[-1].get("text", "")) + _text(o.get("text", ""))}
        else: merged.append(o)
    return merged


def convert(nb, page: Page, notes: list | None = None):
    "A processed notebook -> a notebook MyST-NB renders like Quarto would (fills `page.title` and `page.anchors`)."
    import nbformat
    from nbformat.v4 import new_markdown_cell
    notes = [] if notes is None else notes
    fm = dict(getattr(nb, "frontmatter_", {}) or {})
    page.title = str(fm.get("title") or page.src.stem)
    page.subtitle = str(fm.get("description") or "").strip()
    cells = []
    head = f"# {page.title}\n"
    if page.subtitle: head += f"\n{{.nb-subtitle}}\n{page.subtitle}\n"
    cells.append(new_markdown_cell(head))
    for c in nb.cells:
        src = _src(c)
        if c.cell_type == "raw": continue                          # front matter (already used), raw cells
        if c.cell_type == "markdown":
            if src.startswith("<!-- WARNING: THIS FILE WAS AUTOGENERATED"): continue
            cells.append(new_markdown_cell(quarto_md_to_myst(src)))
            continue
        dirs, code = split_directives(src)
        if dirs.get("include") == "false": continue
        outs = c.get("outputs", [])
        if re.match(r"^show_doc\(", code.strip()) and dirs.get("echo") == "false":
            for o in outs:                                            # show_doc -> an anchored heading
                md = _text(o.get("data", {}).get("text/markdown", ""))
                if not md: continue
                name, body = showdoc_markdown(md)
                page.anchors.setdefault(name, anchor_id(name))
                cells.append(new_markdown_cell(quarto_md_to_myst(body)))
            continue
        tags = list(dict.fromkeys(c.get("metadata", {}).get("tags", [])))
        if dirs.get("echo") == "false" or not code.strip(): tags.append("remove-input")
        if dirs.get("output") == "false": tags.append("remove-output")
        if "code-fold" in dirs: tags.append("exported-source")
        new_outs = []
        for o in merge_streams(outs):
            o = copy.deepcopy(o)
            if o.get("output_type") == "stream":
                o["text"] = collapse_cr(_text(o.get("text", "")))
                if not o["text"].strip(): continue
            elif o.get("output_type") == "error":                  # a stored traceback: keep its ends only
                tb = o.get("traceback", [])
                if len(tb) > 6: o["traceback"] = [*tb[:2], f"... {len(tb) - 5} frames not shown ...", *tb[-3:]]
                notes.append(f"{page.src.name}: a stored error output ({o.get('ename')}: {o.get('evalue', '')[:60]})")
            elif "data" in o:
                o["data"] = {k: v for k, v in o["data"].items() if k in KEEP_MIMES}
                if not o["data"]: continue
                if any(k in o["data"] for k in IMAGE_MIMES): page.n_images += 1
            new_outs.append(o)
        if not code.strip() and not new_outs: continue
        if dirs.get("output") == "false": new_outs = []
        cell = nbformat.v4.new_code_cell(code, outputs=new_outs)
        cell.execution_count = None
        if tags: cell.metadata["tags"] = tags
        cells.append(cell)
    out = nbformat.v4.new_notebook(cells=cells)
    out.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                    "language_info": {"name": "python", "pygments_lexer": "ipython3"}}
    return out


# ---------------------------------------------------------------------------------------------------- links
class Links:
    "Rewrites nbdev's links to the hosted docs (`https://<doc_host><baseurl>/core.html#check`) into local ones."
    def __init__(self, pages: list[Page]):
        from nbdev.config import get_config
        cfg = get_config()
        self.pages = {p.name: p for p in pages}
        self.prefix = (cfg.get("doc_host", "") + cfg.get("doc_baseurl", "")).rstrip("/") + "/"
        self.by_url, self.api = {}, set()
        for sym, url in _modidx_syms().items():
            self.by_url[url] = sym
        self.re = re.compile(re.escape(self.prefix) + r"([\w.\-/]*?)(\.html)?(#[^)\s\"'>]*)?(?=[)\s\"'>])")

    def local(self, m) -> str:
        page, frag = m.group(1) or "index", (m.group(3) or "")
        url = f"{page}.html{frag}"
        sym = self.by_url.get(url)
        if sym:
            disp = sym.split(".", 2)[-1]                                   # sagerec.core.RunRecorder.log -> RunRecorder.log
            pg = self.pages.get(page)
            if pg and disp in pg.anchors: return f"{page}.html#{pg.anchors[disp]}"
            if disp in self.api: return f"api.html#{anchor_id(disp)}"
            return f"{page}.html" if page in self.pages else "api.html"
        if page in self.pages and not frag: return f"{page}.html"
        return m.group(0)

    def __call__(self, text: str) -> str:
        text = self.re.sub(self.local, text)
        # links authors write to other notebooks: [graph](03_graph.ipynb#section) -> graph.html#section
        return re.sub(r"\]\((?:\./)?(\d+[a-zA-Z0-9]*_)?([\w-]+)\.ipynb(#[^)]*)?\)",
                      lambda m: f"]({m[2].lower()}.html{m[3] or ''})", text)


def _modidx_syms() -> dict:
    "sagerec's `_modidx`: full symbol name -> doc url (`core.html#check`)."
    import sagerec._modidx as mi
    importlib.reload(mi)
    return {s: v[0] for mod in mi.d["syms"].values() for s, v in mod.items()}


def relink(nb, links: Links):
    for c in nb.cells:
        if c.cell_type == "markdown": c.source = links(c.source)
        for o in c.get("outputs", []):
            d = o.get("data", {})
            if "text/markdown" in d: d["text/markdown"] = links(_text(d["text/markdown"]))


# ---------------------------------------------------------------------------------------------------- API page
def api_reference(pages: list[Page], links: Links) -> str:
    "The API reference (MyST): every name in each module's `__all__`, with signature, docstring and its page."
    from nbdev.showdoc import show_doc
    syms = _modidx_syms()
    mods = [(p.module, p) for p in pages if p.kind == "stage" and p.module]
    lines = ["# API reference", "",
             "{.nb-subtitle}",
             "Every name `sagerec` exports, module by module in pipeline order: signature, docstring and a link "
             "to the notebook page that defines, explains and tests it.", ""]
    body = []
    for modname, page in mods:
        mod = importlib.import_module(f"sagerec.{modname}")
        names = list(getattr(mod, "__all__", []))
        if not names: continue
        lines += [f"- [`sagerec.{modname}`](#{anchor_id('sagerec.' + modname)}): {page.title}"]
        body += [f"## sagerec.{modname}", "", f"Defined in [{page.title}]({page.name}.html).", "",
                 "| name | what it is |", "|:---|:---|"]
        for nm in names:
            o = getattr(mod, nm)
            doc = "constant" if not callable(o) else (getattr(o, "__doc__", None) or "").strip().split("\n")[0]
            if doc.startswith(f"{nm}("): doc = "dataclass"                  # the docstring dataclasses generate
            body += [f"| [`{nm}`](#{anchor_id(nm)}) | {doc.replace('|', chr(92) + '|')} |"]
        body += [""]
        for nm in names:
            obj = getattr(mod, nm)
            links.api.add(nm)
            if not callable(obj):
                r = repr(obj)
                body += [f"### `{nm}`", "", f"*{type(obj).__name__}*", "", "```text",
                         f"{nm} = {r if len(r) < 300 else r[:300] + ' …'}", "```", ""]
            else:
                _, md = showdoc_markdown(show_doc(obj, name=nm)._repr_markdown_(), level=3)
                body += [md]
            here = page.anchors.get(nm)
            body += [f"<p class=\"nbd-defined\">Explained in <a href=\"{page.name}.html" + (f"#{here}" if here else "")
                     + f"\">{page.title}</a></p>", ""]
            if isinstance(obj, type):                              # public methods of an exported class
                pre = f"sagerec.{modname}.{nm}."
                for s in syms:
                    meth = s[len(pre):] if s.startswith(pre) else ""
                    if not meth or "." in meth or meth.startswith("_"): continue
                    attr = obj.__dict__.get(meth)
                    if attr is None: continue
                    fn = attr.fget if isinstance(attr, property) else getattr(obj, meth)
                    links.api.add(f"{nm}.{meth}")
                    try: _, md = showdoc_markdown(show_doc(fn, name=f"{nm}.{meth}")._repr_markdown_(), level=4)
                    except DocsError: md = f"#### `{nm}.{meth}`\n\n{(getattr(fn, '__doc__', '') or '').strip()}\n"
                    body += [md]
    lines += ["", *body]
    return links("\n".join(lines))


# ---------------------------------------------------------------------------------------------------- build
def _toctree(caption: str, names: list[str]) -> str:
    return "```{toctree}\n:caption: " + caption + "\n:hidden:\n:maxdepth: 1\n\n" + "\n".join(names) + "\n```\n"


def stage_sources(pages: list[Page], src: Path, log=print) -> None:
    "Process every notebook and write the MyST-NB sources of the site into `src`."
    import nbformat
    import sagerec
    if src.exists(): shutil.rmtree(src)
    src.mkdir(parents=True)
    here = Path.cwd()
    os.chdir(ROOT)                                           # nbdev reads pyproject.toml from the working folder
    try:
        for pg in pages:
            t = time.time()
            raw = nbformat.read(pg.src, as_version=4)
            pg.module = next((m[1] for c in raw.cells if c.cell_type == "code"
                              for m in [re.search(r"^\s*#\|\s*default_exp\s+(\S+)", _src(c), re.M)] if m), None)
            notes = []
            pg.nb = convert(nbdev_process(pg.src, log=log), pg, notes)
            for n in notes: _note(log, n)
            log(f"  processed {pg.src.name:<24} -> {pg.name}.html  ({time.time()-t:.1f}s)")
        links = Links(pages)
        api = api_reference(pages, links)
    finally: os.chdir(here)
    for pg in pages:
        relink(pg.nb, links)
        _copy_local_images(pg, src)
    idx = pages[0].nb
    groups = [("Pipeline", [p.name for p in pages if p.kind == "stage"]),
              ("Experiments", [p.name for p in pages if p.kind == "experiment"]),
              ("Reference", ["api"])]
    idx.cells.append(nbformat.v4.new_markdown_cell("\n".join(_toctree(c, n) for c, n in groups if n)))
    for pg in pages: nbformat.write(pg.nb, src / f"{pg.name}.ipynb")
    (src / "api.md").write_text(api)
    meta = {"project": _project_title(), "version": getattr(sagerec, "__version__", ""),
            "pages": [{"name": p.name, "kind": p.kind, "title": p.title, "src": p.src.name,
                       "n_images": p.n_images} for p in pages]}
    (src / "_pages.json").write_text(json.dumps(meta, indent=1))


def _project_title() -> str:
    from nbdev.config import get_config
    return get_config().get("title", "") or "SAGERec"


def _copy_local_images(pg: Page, src: Path) -> None:
    "Markdown images with a local path (relative to nbs/) are copied next to the staged page."
    def fix(m):
        alt, url = m[1], m[2]
        if re.match(r"^(\w+:|/|#)", url): return m[0]
        f = (pg.src.parent / unquote(url)).resolve()
        if not f.exists(): raise DocsError(f"{pg.src.name}: image {url} does not exist ({f})")
        dst = src / "_assets" / f"{hashlib.sha1(str(f).encode()).hexdigest()[:8]}-{f.name}"
        dst.parent.mkdir(exist_ok=True)
        shutil.copy2(f, dst)
        return f"![{alt}](_assets/{dst.name})"
    for c in pg.nb.cells:
        if c.cell_type == "markdown": c.source = re.sub(r"!\[([^\]]*)\]\(([^)\s]+)\)", fix, c.source)


def mathjax_static(static: Path) -> Path:
    "Copy MathJax 3 (ES5 build, CHTML output) from the `django-static-mathjax` wheel into `static/mathjax`."
    try: import mathjax
    except ImportError: raise DocsError("MathJax is missing: pip install -e '.[docs]' (needs django-static-mathjax)")
    es5 = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    if not (es5 / "tex-chtml.js").exists(): raise DocsError(f"no tex-chtml.js under {es5}")
    dst = static / "mathjax"
    if dst.exists(): shutil.rmtree(dst)
    dst.mkdir(parents=True)
    shutil.copy2(es5 / "tex-chtml.js", dst)
    for sub in ("output/chtml/fonts/woff-v2", "input/tex/extensions", "ui", "a11y"):    # loaded on demand
        shutil.copytree(es5 / sub, dst / sub)
    return dst


def sphinx_build(src: Path, out: Path, jobs: int = 1) -> None:
    from sphinx.cmd.build import build_main
    doctrees = STAGE / "doctrees"
    if out.exists():
        ours = out == SITE or not any(out.iterdir()) or (out / ".buildinfo").exists() or (out / STAMP).exists()
        if not ours: raise DocsError(f"{out} exists and is not a site built by this tool: choose another --out")
        shutil.rmtree(out)
    args = ["-b", "html", "-c", str(CONF), "-d", str(doctrees), "-E", "-W", "--keep-going", "-q",
            "-j", str(jobs), str(src), str(out)]
    rc = build_main(args)
    if rc: raise DocsError(f"sphinx-build failed (exit {rc}): see the warnings above")


def inputs_fingerprint(nbs: Path = NBS) -> str:
    "A hash of everything the site is built from (notebooks, exported package, docs config, this tool)."
    h = hashlib.sha256()
    files = sorted([*nbs.glob("*.ipynb"), *(ROOT / "sagerec").glob("*.py"), *CONF.rglob("*"), Path(__file__),
                    ROOT / "pyproject.toml"])
    for f in files:
        if f.is_file(): h.update(os.path.relpath(f, ROOT).encode()); h.update(f.read_bytes())
    return h.hexdigest()[:16]


def build(out: Path = SITE, nbs: Path = NBS, jobs: int = 1, log=print) -> dict:
    "Build the whole site into `out` and check it. Returns the build summary."
    t0 = time.time()
    pages = discover(nbs)
    log(f"docs: {len(pages)} notebooks -> {out}")
    src = STAGE / "src"
    stage_sources(pages, src, log=log)
    t1 = time.time()
    mathjax_static(STAGE / "static")
    sphinx_build(src, out, jobs=jobs)
    t2 = time.time()
    if (out / "_sources").is_dir() and not any((out / "_sources").iterdir()): (out / "_sources").rmdir()
    summary = check_site(out, json.loads((src / "_pages.json").read_text()))
    summary.update(fingerprint=inputs_fingerprint(nbs), seconds={"process": round(t1 - t0, 1),
                   "sphinx": round(t2 - t1, 1), "total": round(time.time() - t0, 1)})
    (out / STAMP).write_text(json.dumps(summary, indent=1))
    (out / "_pages.json").write_text((src / "_pages.json").read_text())
    if _hidden_notes: log(f"docs: {len(_hidden_notes)} notes for notebook authors not shown (python tools/docs.py build --notes)")
    log(f"docs: {summary['n_pages']} pages, {summary['n_links']} local links, {summary['n_images']} images checked; "
        f"built in {summary['seconds']['total']}s (notebooks {summary['seconds']['process']}s, "
        f"sphinx {summary['seconds']['sphinx']}s) -> {out/'index.html'}")
    return summary


# ---------------------------------------------------------------------------------------------------- check
class _Scan(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.refs, self.imgs, self.remote, self.title, self._t = set(), [], [], [], "", False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a: self.ids.add(a["id"])
        if tag == "a" and "name" in a: self.ids.add(a["name"])
        if tag == "title": self._t = True
        url = a.get("src") if tag in ("img", "script", "iframe", "source", "embed") else \
              a.get("href") if tag in ("a", "link") else None
        if url is None: return
        if tag == "img": self.imgs.append(url)
        if re.match(r"^(https?:)?//", url):
            if tag != "a": self.remote.append(f"<{tag}> {url}")   # anything loaded (not merely linked) remotely
        elif not re.match(r"^(mailto|data|javascript):", url): self.refs.append((tag, url))

    def handle_endtag(self, tag):
        if tag == "title": self._t = False

    def handle_data(self, data):
        if self._t: self.title += data


def check_site(out: Path = SITE, meta: dict | None = None) -> dict:
    "Fail unless every page, local link, anchor and image of the built site exists and nothing loads remotely."
    meta = meta or json.loads((out / "_pages.json").read_text())
    errors, scans = [], {}
    for f in sorted(out.rglob("*.html")):
        if "_static" in f.parts: continue
        s = _Scan(); s.feed(f.read_text(encoding="utf-8")); scans[f.resolve()] = s
    expected = ["index", "api", "search", *[p["name"] for p in meta["pages"]]]
    for name in expected:
        s = scans.get((out / f"{name}.html").resolve())
        if s is None: errors.append(f"missing page: {name}.html")
        elif not s.title.strip(): errors.append(f"{name}.html has no <title>")
    n_links = n_imgs = 0
    for f, s in scans.items():
        rel = f.relative_to(out.resolve())
        errors += [f"{rel}: loads from the network: {r}" for r in s.remote]
        for tag, url in s.refs:
            parts = urlsplit(url)
            target = (f.parent / unquote(parts.path)).resolve() if parts.path else f
            if not target.exists():
                errors.append(f"{rel}: broken {'image' if tag == 'img' else 'link'} <{tag}> {url}")
                continue
            n_links += 1
            if tag == "img": n_imgs += 1
            if parts.fragment and target.suffix == ".html" and target in scans \
                    and unquote(parts.fragment) not in scans[target].ids:
                errors.append(f"{rel}: broken anchor {url}")
    for p in meta["pages"]:                                         # every stored figure made it to its page
        s = scans.get((out / f"{p['name']}.html").resolve())
        if s is not None and len(s.imgs) < p["n_images"]:
            errors.append(f"{p['name']}.html shows {len(s.imgs)} images but {p['src']} has {p['n_images']} image outputs")
    for css in out.rglob("*.css"):
        for u in re.findall(r"(?:url\(\s*['\"]?|@import\s+['\"])((?:https?:)?//[^'\")\s]+)", css.read_text(errors="ignore")):
            errors.append(f"{css.relative_to(out)}: loads from the network: {u}")
    if errors:
        raise DocsError(f"{len(errors)} problem(s) in the built site:\n  " + "\n  ".join(errors[:50]))
    return {"n_pages": len(scans), "n_links": n_links, "n_images": n_imgs, "pages": meta["pages"]}


# ---------------------------------------------------------------------------------------------------- serve
def serve(out: Path = SITE, port: int = 8000) -> None:
    import functools, http.server
    if not (out / "index.html").exists(): raise DocsError(f"no site in {out}: run `python tools/docs.py build` first")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(out))
    with http.server.ThreadingHTTPServer(("127.0.0.1", port), handler) as srv:
        print(f"serving {out} at http://127.0.0.1:{srv.server_address[1]}/ (Ctrl-C stops)")
        try: srv.serve_forever()
        except KeyboardInterrupt: pass


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build _site/ from nbs/ and check it")
    b.add_argument("--out", type=Path, default=SITE)
    b.add_argument("--nbs", type=Path, default=NBS)
    b.add_argument("-j", "--jobs", default="1", help="Sphinx parallel jobs (a number or 'auto')")
    b.add_argument("--notes", action="store_true", help="show the notes for notebook authors (lint of import cells, stored errors)")
    c = sub.add_parser("check", help="check an existing site")
    c.add_argument("--out", type=Path, default=SITE)
    s = sub.add_parser("serve", help="serve the site on 127.0.0.1")
    s.add_argument("--out", type=Path, default=SITE)
    s.add_argument("--port", type=int, default=8000)
    a = ap.parse_args(argv)
    try:
        if a.cmd == "build":
            global SHOW_NOTES
            SHOW_NOTES = SHOW_NOTES or a.notes
            build(a.out.resolve(), a.nbs.resolve(), jobs=a.jobs)
        elif a.cmd == "check": print(json.dumps({k: v for k, v in check_site(a.out).items() if k != "pages"}))
        else: serve(a.out, a.port)
    except DocsError as e:
        print(f"docs: ERROR: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
