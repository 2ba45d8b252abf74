"""vcex serve: the explorer's JSON API over a job folder, and the page end to end in headless Chromium."""

import contextlib
import io
import json
import re
import shutil
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy
import pytest
import torch
from PIL import Image

from vcex import CounterfactualAttack, InputError
from vcex.attribution import Descriptors, GlobalExplanation, LatentAttributes
from vcex.cli import main
from vcex.data import load_dataset
from vcex.data.profiles import override_profile
from vcex.errors import CacheError
from vcex.explainers.pixel_attack import PixelAttack
from vcex.pipeline import write_outputs
from vcex.report.paths import PATHS_FILE, PATHS_RECORD, ExplorerPaths, write_paths
from vcex.report.serve import Explorer, find_runs, make_server

pytestmark = pytest.mark.usefixtures("one_thread")

# Debian's chromium (CI installs it with apt): browsers cannot be downloaded here, so Playwright is pointed at it
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _local_attributions(vae, train_images, result):
    """Real local attributions of ``result``: latent probes of two cheap descriptors of the training images."""
    values = {
        "ink": train_images.mean((1, 2, 3)),
        "top_heavy": train_images[..., :14, :].mean((1, 2, 3)) - train_images[..., 14:, :].mean((1, 2, 3)),
    }
    probes = LatentAttributes(vae).fit(train_images, Descriptors(values))
    return probes.local(result)


@pytest.fixture(scope="module")
def job(tmp_path_factory, tiny_classifier, tiny_vae, mnist_small):
    """A job folder: an attack run with local attributions, a pixel run two levels down (as a benchmark's rows
    are) whose short budget leaves images not valid, a global.json, and a run's chunk folder to be skipped."""
    train_images, _, test_images, _ = mnist_small
    root = tmp_path_factory.mktemp("job")
    images = test_images[:8]
    attack = CounterfactualAttack(tiny_classifier, tiny_vae, threshold=0.9, max_steps=200, latent_bound=None)
    attack_result = attack.explain(images)
    metrics = {"method": "attack", "dataset": "mnist", "n": 8, "validity": attack_result.validity}
    write_outputs(root / "attack", attack_result, metrics, attack)
    local = _local_attributions(tiny_vae, train_images[:400], attack_result)
    write_paths(root / "attack", attack_result, attack, local=local)
    pixel = PixelAttack(tiny_classifier, threshold=0.99, max_steps=3)
    pixel_result = pixel.explain(images[:6])
    metrics = {"method": "pixel", "dataset": "mnist", "n": 6, "validity": pixel_result.validity}
    write_outputs(root / "rows" / "pixel-key", pixel_result, metrics, pixel, explorer_images=5)
    (root / "attack" / "chunks" / "abc").mkdir(parents=True)
    (root / "attack" / "chunks" / "abc" / "metrics.json").write_text('{"method": "attack"}')
    explanation = GlobalExplanation(
        names=["ink", "slant", "width"],
        scores=torch.tensor([0.05, -0.3, 0.2]),
        ci_low=torch.tensor([0.0, -0.4, 0.1]),
        ci_high=torch.tensor([0.1, -0.2, 0.3]),
        n=40,
        accuracy=torch.tensor([0.9, 0.8, 0.5]),
        chance=torch.full((3,), 0.5),
        usable=torch.tensor([True, True, False]),
        reasons={"width": "at chance"},
    )
    global_dir = root / "global"
    global_dir.mkdir()
    (global_dir / "global.json").write_text(json.dumps({"dataset": "mnist", "classes": {"3": explanation.to_json()}}))
    valid = torch.cat([attack_result.success, pixel_result.success[:5]])
    assert bool(valid.any()) and not bool(valid.all()), "the job needs valid and not valid counterfactuals"
    return root, attack_result, pixel_result, local


@pytest.fixture(scope="module")
def server(job):
    """The explorer over the job on a free port, serving from a thread."""
    with serving(job[0]) as url:
        yield url


def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


# --- the API, without a browser ---


def test_runs_are_found_in_subfolders_and_chunks_are_skipped(job):
    runs, globals_ = find_runs(job[0])
    assert [run.name for run in runs] == ["attack", "rows/pixel-key"]
    assert [name for name, _ in globals_] == ["global"]
    assert [run.name for run in find_runs(job[0], max_depth=1)[0]] == ["attack"]


def test_a_folder_without_runs_is_refused_in_one_line(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(InputError, match="holds no vcex run") as caught:
        Explorer(tmp_path / "empty")
    assert "\n" not in str(caught.value)
    with pytest.raises(InputError, match="is not a folder"):
        Explorer(tmp_path / "missing")


def test_runs_json_summarises_each_run_and_the_global_bars(job):
    listing = Explorer(job[0]).runs_json()
    attack, pixel = listing["runs"]
    assert (attack["method"], attack["kind"], attack["shown"], attack["points"]) == ("attack", "latent", 8, 8)
    assert attack["local"] and attack["reconstructions"]
    assert (pixel["method"], pixel["kind"], pixel["shown"], pixel["local"]) == ("pixel", "pixel", 5, False)
    (chart,) = listing["global"][0]["charts"]
    # usable descriptors only, by decreasing |S|
    assert [bar["name"] for bar in chart["bars"]] == ["slant", "ink"] and chart["n"] == 40
    assert chart["bars"][0] == pytest.approx({"name": "slant", "score": -0.3, "low": -0.4, "high": -0.2})


def test_items_and_item_json_follow_the_stored_paths(job):
    _, attack_result, pixel_result, local = job
    explorer = Explorer(job[0])
    items = explorer.items_json()["items"]
    assert len(items) == 8 + 5
    assert [item["valid"] for item in items] == attack_result.success.tolist() + pixel_result.success[:5].tolist()
    assert [item["target"] for item in items[:8]] == attack_result.target.tolist()
    item = explorer.item_json(0, 2)
    paths = ExplorerPaths.load(job[0] / "attack")
    assert item["path_prob"] == pytest.approx(paths.path_prob[2].tolist())
    assert item["path_prob"][-1] == pytest.approx(float(attack_result.target_prob[2]), abs=1e-4)
    assert item["threshold"] == pytest.approx(0.9) and item["reconstruction"]
    scores = [row["score"] for row in item["local"]]
    usable = [name for name, keep in zip(local.names, local.usable.tolist()) if keep]
    assert sorted(row["name"] for row in item["local"]) == sorted(usable)
    assert scores == sorted(scores, key=abs, reverse=True)
    with pytest.raises(KeyError, match="shows 8 images"):
        explorer.item_json(0, 8)
    with pytest.raises(KeyError, match="no run 5"):
        explorer.item_json(5, 0)


def test_images_are_the_stored_pixels_as_png(job):
    _, attack_result, _, _ = job
    explorer = Explorer(job[0])
    paths = ExplorerPaths.load(job[0] / "attack")
    original = Image.open(io.BytesIO(explorer.image_png(0, 3, "original")))
    assert original.size == (28, 28)
    assert torch.equal(torch.from_numpy(numpy.array(original))[..., 0], paths.originals[3, 0])
    step = Image.open(io.BytesIO(explorer.image_png(0, 3, "path", 4)))
    assert torch.equal(torch.from_numpy(numpy.array(step))[..., 1], paths.path[3, 4, 0])
    difference = Image.open(io.BytesIO(explorer.image_png(0, 3, "difference"))).convert("RGB")
    assert difference.getpixel((0, 0)) == (255, 255, 255)  # an unchanged corner is white
    with pytest.raises(KeyError, match="no reconstructions"):
        explorer.image_png(1, 0, "reconstruction")
    with pytest.raises(KeyError, match="has 8 points"):
        explorer.image_png(0, 0, "path", 8)


def test_a_run_without_paths_shows_its_endpoints(job, tmp_path):
    run = tmp_path / "old"
    shutil.copytree(job[0] / "rows" / "pixel-key", run)
    (run / PATHS_FILE).unlink()
    (run / PATHS_RECORD).unlink()
    _, _, pixel_result, _ = job
    item = Explorer(run).item_json(0, 1)
    assert item["kind"] == "endpoints"
    expected = [float(pixel_result.original_prob[1]), float(pixel_result.target_prob[1])]
    assert item["path_prob"] == pytest.approx(expected)
    assert Explorer(run).runs_json()["runs"][0]["shown"] == 6  # every image of the run, without the cap of 5


def test_a_damaged_run_is_named_and_the_others_still_show(job, tmp_path):
    shutil.copytree(job[0], tmp_path / "job")
    (tmp_path / "job" / "attack" / PATHS_FILE).write_bytes(b"cut short")
    explorer = Explorer(tmp_path / "job")
    attack, pixel = explorer.runs_json()["runs"]
    assert attack["shown"] == 0 and "cannot read the explorer's paths" in attack["error"]
    assert pixel["shown"] == 5 and "error" not in pixel
    assert {item["run"] for item in explorer.items_json()["items"]} == {1}
    old = tmp_path / "old"
    shutil.copytree(job[0] / "rows" / "pixel-key", old)
    (old / PATHS_FILE).unlink()
    (old / "counterfactuals.safetensors").write_bytes(b"cut short")
    with pytest.raises(CacheError, match="cannot read the run's counterfactuals"):
        Explorer(old).item_json(0, 0)


def test_dropped_connections_are_not_reported_and_other_failures_in_one_line(job, capsys):
    httpd = make_server(job[0], port=0)
    try:
        for error in (ConnectionResetError("reset by peer"), BrokenPipeError("broken pipe"), ValueError("odd")):
            try:
                raise error
            except Exception:
                httpd.handle_error(None, ("127.0.0.1", 5))
    finally:
        httpd.server_close()
    assert capsys.readouterr().err == "vcex serve: a request from 127.0.0.1 failed: ValueError('odd')\n"


def test_http_api_answers_json_pngs_and_404s(server):
    status, kind, body = _get(server + "/api/runs")
    assert status == 200 and kind == "application/json" and len(json.loads(body)["runs"]) == 2
    status, kind, body = _get(server + "/image/0/1/path-0.png")
    assert status == 200 and kind == "image/png" and body[:8] == b"\x89PNG\r\n\x1a\n"
    for path, message in [
        ("/api/item?run=0&index=99", "shows 8 images"),
        ("/api/item?run=x&index=0", "run is ['x']"),
        ("/image/7/0/original.png", "no run 7"),
        ("/../../etc/passwd", "no such page"),
    ]:
        status, kind, body = _get(server + path)
        assert status == 404 and kind == "application/json" and message in json.loads(body)["error"]


def test_the_page_names_no_other_server(server):
    for name in ("/", "/app.js", "/app.css"):
        status, _, body = _get(server + name)
        # the SVG namespace is a name, not something fetched
        addresses = set(re.findall(rb"(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s\"')]*", body)) - {
            b"http://www.w3.org/2000/svg"
        }
        assert status == 200 and not addresses


def test_serve_refuses_an_empty_folder_and_a_busy_port(tmp_path, job, server, capsys):
    assert main(["serve", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("vcex: error:") and "holds no vcex run" in error and "\n" not in error
    busy = int(server.rsplit(":", 1)[1])
    with pytest.raises(InputError, match=f"cannot listen on 127.0.0.1:{busy}"):
        make_server(job[0], port=busy)
    with pytest.raises(SystemExit):
        main(["serve", str(job[0]), "--port", "70000"])
    assert "expected a port number" in capsys.readouterr().err


# --- the page, end to end in headless Chromium ---


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (Playwright); fails, never skips, without them (CI installs both)."""
    from playwright.sync_api import sync_playwright  # the test extra; an ImportError fails the test

    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: apt-get install chromium (Debian's build)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@contextlib.contextmanager
def explorer_page(browser, url):
    """A new page of ``browser`` on the explorer at ``url``, its grid shown, and the URLs it requests."""
    page = browser.new_page()
    requests = []
    page.on("request", lambda request: requests.append(request.url))
    try:
        page.goto(url + "/")
        page.wait_for_selector(".tile")
        yield page, requests
    finally:
        page.close()


@contextlib.contextmanager
def serving(root):
    """The explorer over ``root`` on a free port, serving from a thread; yields its URL."""
    httpd = make_server(root, port=0)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    host, port = httpd.server_address[:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def page(browser, server):
    """A headless Chromium page on the job's explorer."""
    with explorer_page(browser, server) as opened:
        yield opened


def _tiles(page):
    return page.eval_on_selector_all(
        ".tile", "tiles => tiles.map(t => [+t.dataset.run, +t.dataset.index, t.dataset.valid])"
    )


def test_clicking_an_image_and_moving_the_slider_show_its_path(page, job):
    page, requests = page
    paths = ExplorerPaths.load(job[0] / "attack")
    assert len(_tiles(page)) == 13
    assert "showing the first 5 of 6 images of rows/pixel-key" in page.inner_text("#root")
    page.click('.tile[data-run="0"][data-index="2"]')
    page.wait_for_selector("#detail:not([hidden])")
    assert page.get_attribute("#img-counterfactual", "src") == "/image/0/2/counterfactual.png"
    assert page.is_visible("#fig-reconstruction") and page.is_visible("#local-section")
    # the slider starts at the counterfactual: the last point and its probability
    assert page.get_attribute("#path-image", "src") == "/image/0/2/path-7.png"
    assert page.inner_text("#path-prob") == f"{float(paths.path_prob[2, -1]):.3f}"
    end_marker = page.get_attribute("#plot-marker", "cy")
    page.focus("#slider")
    page.keyboard.press("Home")
    assert page.get_attribute("#path-image", "src") == "/image/0/2/path-0.png"
    assert page.inner_text("#path-prob") == f"{float(paths.path_prob[2, 0]):.3f}"
    assert page.get_attribute("#plot-marker", "cy") != end_marker
    page.keyboard.press("ArrowRight")
    assert page.get_attribute("#path-image", "src") == "/image/0/2/path-1.png"
    assert page.inner_text("#path-prob") == f"{float(paths.path_prob[2, 1]):.3f}"
    page.wait_for_function("() => document.getElementById('path-image').naturalWidth === 28")
    # the local attributions, largest first, and the global bars of the job's global.json
    names = page.eval_on_selector_all("#local > span:nth-child(3n+1)", "spans => spans.map(s => s.textContent)")
    assert names and set(names) <= {"ink", "top_heavy"}
    assert page.is_visible("#global") and "slant" in page.inner_text("#global-charts")
    # a pixel run's image: no reconstruction, no local attributions
    page.click('.tile[data-run="1"][data-index="0"]')
    page.wait_for_function("() => document.getElementById('img-original').src.endsWith('/image/1/0/original.png')")
    assert not page.is_visible("#fig-reconstruction") and not page.is_visible("#local-section")
    assert all(url.startswith(page.url.rstrip("/")) for url in requests), "the page fetched from elsewhere"


def test_filters_hide_what_does_not_match(page, job):
    page, _ = page
    _, attack_result, pixel_result, _ = job
    valid = attack_result.success.sum() + pixel_result.success[:5].sum()
    page.select_option("#filter-valid", "valid")
    tiles = _tiles(page)
    assert len(tiles) == int(valid) and all(flag == "true" for *_, flag in tiles)
    page.select_option("#filter-valid", "invalid")
    tiles = _tiles(page)
    assert len(tiles) == 13 - int(valid) and all(flag == "false" for *_, flag in tiles)
    page.select_option("#filter-valid", "")
    page.select_option("#filter-method", "pixel")
    assert {run for run, _, _ in _tiles(page)} == {1} and len(_tiles(page)) == 5
    page.select_option("#filter-method", "")
    target = int(attack_result.target[0])
    page.select_option("#filter-target", str(target))
    expected = (attack_result.target == target).sum() + (pixel_result.target[:5] == target).sum()
    assert len(_tiles(page)) == int(expected)
    assert page.inner_text("#count") == f"{int(expected)} of 13 images"


# --- a vcex global output: its explained images with their local attributions, beside the global bars ---


@pytest.fixture(scope="module")
def global_out(tmp_path_factory):
    """`vcex global` on 12 MNIST digits with tiny zoo models (trained here, in this session's VCEX_HOME)."""
    out = tmp_path_factory.mktemp("global") / "global"
    tiny = {"cnn": 2, "oracle": 1, "vae": 3, "im-ae": 2, "duq": 1}
    with override_profile("mnist", zoo_epochs=tiny):
        assert main(["global", "--n", "12", "--threshold", "0.9", "--out", str(out), "--quiet"]) == 0
    return out


@pytest.mark.slow
def test_a_global_output_shows_each_images_local_attributions_and_the_global_bars(global_out):
    record = json.loads((global_out / "global.json").read_text())
    explorer = Explorer(global_out)
    listing = explorer.runs_json()
    (run,) = listing["runs"]
    assert (run["name"], run["method"], run["kind"], run["shown"]) == ("explained", "attack", "latent", 12)
    assert run["local"] and listing["global"][0]["charts"]
    paths = ExplorerPaths.load(global_out / "explained")
    assert set(paths.local_names) == {row["name"] for row in next(iter(record["classes"].values()))["descriptors"]}
    # each class's global score is the mean of the local rows of its valid counterfactuals: the same rows are shown
    for name, explanation in record["classes"].items():
        target = load_dataset("mnist", "test").class_names.index(name)
        rows = paths.local_scores[paths.success & (paths.target == target)]
        scores = {row["name"]: row["score"] for row in explanation["descriptors"]}
        assert rows.mean(0).tolist() == pytest.approx([scores[n] for n in paths.local_names], abs=1e-5)
    picked = int(paths.success.nonzero()[0, 0])
    item = explorer.item_json(0, picked)
    usable = {name for name, keep in zip(paths.local_names, paths.local_usable.tolist()) if keep}
    assert item["valid"] and {row["name"] for row in item["local"]} == usable
    expected = {name: float(score) for name, score in zip(paths.local_names, paths.local_scores[picked])}
    assert [row["score"] for row in item["local"]] == pytest.approx([expected[row["name"]] for row in item["local"]])


@pytest.mark.slow
def test_the_page_of_a_global_output_shows_a_picked_images_local_bars_and_the_global_bars(global_out, browser):
    paths = ExplorerPaths.load(global_out / "explained")
    picked = int(paths.success.nonzero()[0, 0])
    usable = {name for name, keep in zip(paths.local_names, paths.local_usable.tolist()) if keep}
    with serving(global_out) as url, explorer_page(browser, url) as (page, requests):
        assert len(_tiles(page)) == 12
        page.click(f'.tile[data-run="0"][data-index="{picked}"]')
        page.wait_for_selector("#detail:not([hidden])")
        assert page.is_visible("#local-section")
        names = page.eval_on_selector_all("#local > span:nth-child(3n+1)", "spans => spans.map(s => s.textContent)")
        assert names and set(names) <= usable
        page.focus("#slider")
        page.keyboard.press("Home")
        assert page.get_attribute("#path-image", "src") == f"/image/0/{picked}/path-0.png"
        assert page.inner_text("#path-prob") == f"{float(paths.path_prob[picked, 0]):.3f}"
        assert page.is_visible("#global")
        charts = page.inner_text("#global-charts")
        assert any(name in charts for name in usable)
        assert all(request.startswith(url) for request in requests), "the page fetched from elsewhere"
