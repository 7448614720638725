"""The documentation site: built from the notebooks by `tools/docs.py`, checked, and opened in headless Chromium.

Needs the `docs` extra (Sphinx, MyST-NB, Furo, MathJax) and, for the browser tests, Debian's `chromium` and
`chromium-driver` plus selenium. Without them the tests skip, unless SAGEREC_REQUIRE_BROWSER=1 (CI), where a
missing piece is a failure. A site already built from the current inputs (same fingerprint) is reused.
Screenshots land in ci-output/screenshots/ (or $SAGEREC_CI_OUTPUT/screenshots/).
"""
from __future__ import annotations

import ast, functools, html, http.server, importlib.util, json, os, re, shutil, subprocess, sys, tempfile, threading, time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "_site"
SHOTS = Path(os.environ.get("SAGEREC_CI_OUTPUT") or ROOT / "ci-output") / "screenshots"
REQUIRE = os.environ.get("SAGEREC_REQUIRE_BROWSER") == "1"
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1400,1000"]


def _need(ok: bool, reason: str):
    "Skip (or, under SAGEREC_REQUIRE_BROWSER=1, fail) when a prerequisite is missing."
    if ok: return
    if REQUIRE: pytest.fail(f"{reason} (SAGEREC_REQUIRE_BROWSER=1 makes this a failure)")
    pytest.skip(reason)


def _load_tool():
    spec = importlib.util.spec_from_file_location("sagerec_docs_tool", ROOT / "tools" / "docs.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod                                   # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def tool():
    missing = [m for m in ("sphinx", "myst_nb", "furo", "mathjax") if importlib.util.find_spec(m) is None]
    _need(not missing, f"docs extra not installed (missing {', '.join(missing)}): pip install -e '.[docs]'")
    return _load_tool()


@pytest.fixture(scope="module")
def site(tool):
    "The built site (rebuilt unless `_site/` was built from exactly the current notebooks, package and config)."
    stamp = SITE / tool.STAMP
    fresh = stamp.exists() and json.loads(stamp.read_text()).get("fingerprint") == tool.inputs_fingerprint()
    if not fresh:
        t = time.time()
        r = subprocess.run([sys.executable, str(ROOT / "tools" / "docs.py"), "build"], cwd=ROOT,
                           capture_output=True, text=True, timeout=900)
        print(r.stdout[-3000:], r.stderr[-3000:])
        assert r.returncode == 0, f"docs build failed:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
        print(f"docs build took {time.time() - t:.1f}s")
    return json.loads(stamp.read_text())


def _text(path: Path) -> str:
    "The visible text of an HTML page (tags stripped, entities decoded)."
    s = re.sub(r"<(script|style)\b.*?</\1>", " ", path.read_text(encoding="utf-8"), flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", "", s))


def test_checker_catches_broken_links_images_and_remote_assets(tmp_path):
    "The post-build checker on a hand-made three-page site with one of each problem."
    tool = _load_tool()
    page = lambda body: f"<html><head><title>t</title></head><body>{body}</body></html>"
    (tmp_path / "index.html").write_text(page('<h2 id="ok">x</h2><a href="api.html#ok">fine</a>'
                                              '<a href="api.html#nope">bad anchor</a><a href="gone.html">bad link</a>'))
    (tmp_path / "api.html").write_text(page('<p id="ok"></p><img src="_images/missing.png">'
                                            '<script src="https://cdn.example.org/x.js"></script>'))
    (tmp_path / "search.html").write_text(page('<a href="https://example.org/">a plain external link is fine</a>'))
    with pytest.raises(tool.DocsError) as e:
        tool.check_site(tmp_path, {"pages": [{"name": "index", "src": "index.ipynb", "n_images": 0}]})
    msg = str(e.value)
    assert "4 problem(s)" in msg, msg
    for part in ("broken anchor api.html#nope", "broken link <a> gone.html", "broken image <img> _images/missing.png",
                 "loads from the network: <script> https://cdn.example.org/x.js"):
        assert part in msg, (part, msg)
    (tmp_path / "index.html").write_text(page('<a href="api.html#ok">fine</a>'))
    (tmp_path / "api.html").write_text(page('<p id="ok"></p>'))
    assert tool.check_site(tmp_path, {"pages": [{"name": "index", "src": "index.ipynb", "n_images": 0}]})["n_links"] == 1
    with pytest.raises(tool.DocsError, match="shows 0 images but index.ipynb has 2"):
        tool.check_site(tmp_path, {"pages": [{"name": "index", "src": "index.ipynb", "n_images": 2}]})


def test_site_has_every_page_and_passes_the_checks(tool, site):
    pages = tool.discover()
    built = {p["name"] for p in site["pages"]}
    assert built == {p.name for p in pages}, "a notebook has no page (or a page no notebook)"
    for name in ["index", "api", "search", *built]: assert (SITE / f"{name}.html").exists(), name
    again = tool.check_site(SITE)                                   # links, anchors, images, nothing remote
    assert again["n_links"] > 0 and again["n_pages"] >= len(built) + 2
    stale = tool.DocsError
    with pytest.raises(stale, match="missing page"):              # the checker does fail on a missing page
        tool.check_site(SITE, {"pages": [*site["pages"], {"name": "no_such_page", "src": "x.ipynb", "n_images": 0}]})


def test_navigation_groups_and_pipeline_order(tool, site):
    pages = tool.discover()
    nav = (SITE / "index.html").read_text(encoding="utf-8")
    nav = nav[nav.index('class="sidebar-tree"'):]
    groups = re.findall(r'<span class="caption-text">([^<]+)</span>(.*?)</ul>', nav, re.S)
    got = {cap: re.findall(r'href="([\w-]+)\.html"', body) for cap, body in groups}
    assert got["Pipeline"] == [p.name for p in pages if p.kind == "stage"]
    exps = [p.name for p in pages if p.kind == "experiment"]
    if exps: assert got["Experiments"] == exps
    assert got["Reference"] == ["api"]


def test_pages_are_prepared_like_nbdev_docs(tool, site):
    "Hidden/export sources gone, directives stripped, a show_doc for every exported name, a README-like index."
    import nbformat
    pages = {p.name: p for p in tool.discover()}
    for name, pg in pages.items():
        raw_html = (SITE / f"{name}.html").read_text(encoding="utf-8")
        text = _text(SITE / f"{name}.html")
        code = "\n".join(html.unescape(re.sub(r"<[^>]+>", "", b)) for b in re.findall(r"<pre>(.*?)</pre>", raw_html, re.S))
        assert not re.search(r"^\s*#\|", code, re.M), f"{name}.html shows a raw `#|` directive in code"
        assert "nbdev_export()" not in code, f"{name}.html shows the hidden export cell"
        nb = nbformat.read(pg.src, as_version=4)
        for c in nb.cells:
            if c.cell_type != "code" or not re.match(r"^\s*#\|\s*(hide|export)\s*$", c.source, re.M): continue
            body = [l for l in c.source.splitlines() if l.strip() and not l.lstrip().startswith("#")]
            if body and len(body[-1]) > 25: assert body[-1].strip() not in text, f"{name}.html shows hidden code: {body[-1]}"
    api = (SITE / "api.html").read_text(encoding="utf-8")
    for p in pages.values():
        if p.kind != "stage": continue
        cells = [c for c in nbformat.read(p.src, as_version=4).cells if c.cell_type == "code"]
        mod = next((m[1] for c in cells for m in [re.search(r"^\s*#\|\s*default_exp\s+(\S+)", c.source, re.M)] if m), None)
        if not mod: continue
        for nm in importlib.import_module(f"sagerec.{mod}").__all__:
            assert f'id="{tool.anchor_id(nm)}"' in api, f"api.html lacks {mod}.{nm}"
        page_html = (SITE / f"{p.name}.html").read_text(encoding="utf-8")
        for c in cells:                                     # nbdev adds a show_doc after every exported def/class
            if not re.search(r"^\s*#\|\s*exports?\s*$", c.source, re.M): continue
            for node in ast.parse(c.source).body:
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                    assert f'id="{tool.anchor_id(node.name)}"' in page_html, f"{p.name}.html has no show_doc for {node.name}"
    index_nb = nbformat.read(pages["index"].src, as_version=4)
    heads = [l[3:].strip() for c in index_nb.cells if c.cell_type == "markdown"
             for l in c.source.splitlines() if l.startswith("## ")]
    idx = _text(SITE / "index.html").replace("\u2019", "'")   # the renderer typesets ' as a right single quote
    for h in heads: assert h.replace("`", "") in idx, f"index.html lacks the README section {h!r}"


# ------------------------------------------------------------------------------------------------ browser
@pytest.fixture(scope="module")
def server(site):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a): pass
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(SITE)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown(); srv.server_close()


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    driver_bin = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None)
    _need(chromium is not None and driver_bin is not None,
          "headless Chromium not installed: apt-get install -y chromium chromium-driver")
    _need(importlib.util.find_spec("selenium") is not None, "selenium not installed: pip install -e '.[docs]'")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    os.environ.setdefault("SE_OFFLINE", "true")                    # never let Selenium Manager download anything
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for f in CHROME_FLAGS: opts.add_argument(f)
    profile = tempfile.mkdtemp(prefix="sagerec-chromium-")
    opts.add_argument(f"--user-data-dir={profile}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(options=opts, service=Service(driver_bin))
    drv.set_page_load_timeout(60)
    yield drv
    drv.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _open(drv, url: str):
    "Load `url`, wait for MathJax (if the page has math), return the console messages logged meanwhile."
    drv.get_log("browser")                                           # drop anything from before
    drv.get(url)
    drv.set_script_timeout(30)
    drv.execute_async_script("""const done = arguments[arguments.length - 1];
        const ready = () => (window.MathJax && MathJax.startup && MathJax.startup.promise)
            ? MathJax.startup.promise.then(() => done(true)) : done(false);
        if (document.readyState === 'complete') ready(); else window.addEventListener('load', ready);""")
    return drv.get_log("browser")


def _screenshot(drv, name: str):
    SHOTS.mkdir(parents=True, exist_ok=True)
    drv.set_window_size(1400, 1000)
    drv.save_screenshot(str(SHOTS / f"{name}.png"))
    h = drv.execute_script("return document.documentElement.scrollHeight")
    drv.set_window_size(1400, min(int(h), 12000))
    time.sleep(0.3)
    drv.save_screenshot(str(SHOTS / f"{name}-full.png"))
    drv.set_window_size(1400, 1000)


def _stage_to_check(site) -> dict:
    "The stage page with the most figures (the first stage when none has any)."
    stages = [p for p in site["pages"] if p["kind"] == "stage"]
    assert stages, "no stage notebooks"
    return max(stages, key=lambda p: p["n_images"])


def test_pages_render_in_chromium(site, server, browser):
    index = next(p for p in site["pages"] if p["kind"] == "index")
    stage = _stage_to_check(site)
    for pg in (index, stage):
        logs = _open(browser, f"{server}/{pg['name']}.html")
        title = browser.title
        assert title.startswith(pg["title"] if pg["kind"] != "index" else index["title"]), title
        assert browser.find_element("css selector", "h1").text.strip().startswith(pg["title"])
        imgs = browser.execute_script(
            "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])")
        bad = [i for i in imgs if not (i[1] and i[2] > 0)]
        assert not bad, f"{pg['name']}.html: images that did not load: {bad}"
        assert len(imgs) >= pg["n_images"], f"{pg['name']}.html shows {len(imgs)} images, its notebook has {pg['n_images']}"
        errors = [l for l in logs if l.get("level") == "SEVERE"]
        assert not errors, f"{pg['name']}.html logged console errors: {errors}"
        n_math = browser.execute_script("return document.querySelectorAll('.math').length")
        if n_math:
            n_typeset = browser.execute_script("return document.querySelectorAll('mjx-container').length")
            assert n_typeset >= n_math, f"{pg['name']}.html: {n_typeset} of {n_math} formulas typeset by MathJax"
        _screenshot(browser, pg["name"])


def test_offline_search_finds_a_symbol(site, server, browser):
    stage = next(p for p in site["pages"] if p["kind"] == "stage")
    html_ = (SITE / f"{stage['name']}.html").read_text(encoding="utf-8")
    sym = re.search(r'<h3><code class="docutils literal notranslate"><span class="pre">(\w+)</span>', html_)
    assert sym, f"{stage['name']}.html has no documented symbol to search for"
    logs = _open(browser, f"{server}/search.html?q={sym[1]}")
    from selenium.webdriver.support.ui import WebDriverWait
    WebDriverWait(browser, 30).until(
        lambda d: d.execute_script("return document.querySelectorAll('#search-results ul.search li').length") > 0)
    hits = browser.execute_script(
        "return Array.from(document.querySelectorAll('#search-results ul.search li a')).map(a => a.getAttribute('href'))")
    assert any(h.startswith(f"{stage['name']}.html") for h in hits), hits
    assert not [l for l in logs if l.get("level") == "SEVERE"], logs
    _screenshot(browser, "search")
