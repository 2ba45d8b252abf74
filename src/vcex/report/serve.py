"""The explorer behind ``vcex serve DIR``: one static page and a small JSON API over the runs in a folder.

A *run* is a folder with a ``metrics.json`` (a dict naming its ``method``) and the explorer's paths
(:mod:`vcex.report.paths`) or, for a run written before them, its ``counterfactuals.safetensors``: then each
path is the original and the counterfactual alone. DIR is a run itself, or a job, demo or benchmark folder
holding runs in subfolders (searched :data:`MAX_DEPTH` levels down). A ``global.json`` (``vcex global``) found
there adds its bar charts. Served by the standard library's ``ThreadingHTTPServer``; the page, its script and
its style ship in ``vcex/report/static`` and nothing is fetched from elsewhere.

API (all GET):
    ``/api/runs``: the runs (method, dataset, counts, path kind, class names) and the global explanations.
    ``/api/items``: every shown image of every run: run, index, source and target class, valid or not.
    ``/api/item?run=R&index=I``: one image: probabilities along its path, threshold, local attributions.
    ``/image/R/I/KIND.png``: KIND is original, reconstruction, counterfactual, difference or path-S (S-th point).
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import torch

from vcex.errors import CacheError, InputError
from vcex.records import json_text
from vcex.report.images import png_bytes, signed_difference, to_pil
from vcex.report.paths import PATH_IMAGES, PATHS_FILE, ExplorerPaths, as_bytes

MAX_DEPTH = 3  # DIR/rows/<key>/metrics.json is a benchmark's row, two levels down
SKIPPED_FOLDERS = {"chunks", "rounds", "__pycache__"}  # a run's own checkpoints hold no runs
GLOBAL_FILE = "global.json"
GLOBAL_BARS = 12  # descriptors shown per global explanation, by decreasing |S|
LOCAL_BARS = 12  # local attributions shown per image, by decreasing |s|
# the page's files (vcex/report/static) by URL, with their content types
STATIC = {
    "/": ("index.html", "text/html"),
    "/app.js": ("app.js", "text/javascript"),
    "/app.css": ("app.css", "text/css"),
}
IMAGE_URL = re.compile(r"^/image/(\d+)/(\d+)/(original|reconstruction|counterfactual|difference|path-(\d+))\.png$")


@dataclass
class Run:
    """One run found under the served folder; its images are read on first use."""

    folder: Path
    name: str
    metrics: dict
    _paths: ExplorerPaths | None = field(default=None, repr=False)

    def paths(self) -> ExplorerPaths:
        """The run's explorer paths, read once (or made from its counterfactuals when it has none)."""
        if self._paths is None:
            if (self.folder / PATHS_FILE).exists():
                self._paths = ExplorerPaths.load(self.folder)
            else:
                self._paths = endpoint_paths(self.folder)
        return self._paths


def endpoint_paths(folder: Path, max_images: int = PATH_IMAGES) -> ExplorerPaths:
    """Paths of two points (original, counterfactual) for a run without ``paths.safetensors``, read from the first
    ``max_images`` rows of its ``counterfactuals.safetensors`` alone (the rest of the file is not loaded)."""
    from safetensors import safe_open

    path = folder / "counterfactuals.safetensors"
    try:
        scalars = json.loads(path.with_name(path.name + ".json").read_text(encoding="utf-8"))
        with safe_open(str(path), framework="pt") as file:
            total = int(file.get_slice("target").get_shape()[0])
            count = min(max_images, total)
            rows = {name: file.get_slice(name)[:count] for name in file.keys()}
        return _endpoints(scalars, rows, count, total)
    except Exception as error:  # noqa: BLE001 - any damage or missing field means the same to the explorer
        raise CacheError(f"cannot read the run's counterfactuals {path} ({error!r})") from error


def _endpoints(scalars: dict, rows: dict[str, torch.Tensor], count: int, total: int) -> ExplorerPaths:
    """:func:`endpoint_paths` from a result's scalars and its first ``count`` rows of tensors."""
    threshold = scalars.get("threshold", 0.5)
    target = rows["target"].long()
    if isinstance(threshold, list):
        threshold = torch.tensor(threshold, dtype=torch.float32)[target]
    else:
        threshold = torch.full((count,), float(threshold))
    if scalars.get("lower"):
        threshold = 1 - threshold
    return ExplorerPaths(
        method=str(scalars.get("method", "?")),
        kind="endpoints",
        indices=torch.arange(count),
        originals=as_bytes(rows["originals"]),
        counterfactuals=as_bytes(rows["counterfactuals"]),
        path=as_bytes(torch.stack([rows["originals"], rows["counterfactuals"]], 1)),
        path_position=torch.tensor([0.0, 1.0]),
        path_prob=torch.stack([rows["original_prob"], rows["target_prob"]], 1).float(),
        target=target,
        original_class=rows["original_class"].long(),
        success=rows["success"].bool(),
        threshold=threshold,
        original_prob=rows["original_prob"].float(),
        target_prob=rows["target_prob"].float(),
        total=total,
        reconstructions=as_bytes(rows["reconstructions"]) if "reconstructions" in rows else None,
    )


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def find_runs(root: Path, max_depth: int = MAX_DEPTH) -> tuple[list[Run], list[tuple[str, dict]]]:
    """The runs under ``root`` (``root`` itself included) and its ``vcex global`` outputs as (name, record), in
    path order, at most ``max_depth`` folders down."""
    runs: list[Run] = []
    globals_: list[tuple[str, dict]] = []
    for folder, subfolders, files in os.walk(root):
        folder_path = Path(folder)
        depth = len(folder_path.relative_to(root).parts)
        subfolders[:] = sorted(s for s in subfolders if s not in SKIPPED_FOLDERS and depth < max_depth)
        name = folder_path.relative_to(root).as_posix()
        if "metrics.json" in files and (PATHS_FILE in files or "counterfactuals.safetensors" in files):
            metrics = _read_json(folder_path / "metrics.json")
            if isinstance(metrics, dict) and "method" in metrics:
                runs.append(Run(folder_path, name, metrics))
        if GLOBAL_FILE in files:
            record = _read_json(folder_path / GLOBAL_FILE)
            if isinstance(record, dict) and isinstance(record.get("classes"), dict):
                globals_.append((name, record))
    return runs, globals_


def global_bars(record: dict, count: int = GLOBAL_BARS) -> list[dict]:
    """A ``global.json``'s explanations as bars: per explanation, its usable descriptors by decreasing |S|
    (name, score, interval), the first ``count``."""
    charts = []
    for title, explanation in record["classes"].items():
        rows = [row for row in explanation.get("descriptors", []) if row.get("usable", True)]
        rows.sort(key=lambda row: -abs(row.get("score") or 0.0))
        bars = [
            {"name": row["name"], "score": row["score"], "low": row.get("ci_low"), "high": row.get("ci_high")}
            for row in rows[:count]
            if row.get("score") is not None
        ]
        charts.append({"title": str(title), "n": explanation.get("n"), "bars": bars})
    return charts


class Explorer:
    """The runs and global explanations under one folder, and the answers of the explorer's API.

    Raises:
        InputError: the folder does not exist, or holds no run and no global explanation.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputError(f"{self.root} is not a folder: give a run's --out folder (vcex explain, demo, benchmark)")
        self.runs, self.globals = find_runs(self.root)
        if not self.runs and not self.globals:
            raise InputError(
                f"{self.root} holds no vcex run (a metrics.json beside counterfactuals.safetensors, up to "
                f"{MAX_DEPTH} folders down) and no {GLOBAL_FILE}: serve the --out folder of vcex explain, demo, "
                "benchmark or global"
            )
        self._lock = threading.Lock()  # one thread reads a run's files; the others wait for it

    def _paths(self, run_id: int) -> ExplorerPaths:
        if not 0 <= run_id < len(self.runs):
            raise KeyError(f"no run {run_id}")
        run = self.runs[run_id]
        with self._lock:
            return run.paths()

    def runs_json(self) -> dict:
        """What the page needs first: every run's summary and the global explanations' bars."""
        runs = []
        for run_id, run in enumerate(self.runs):
            summary = {
                "id": run_id,
                "name": run.name,
                "method": run.metrics.get("method"),
                "dataset": run.metrics.get("dataset"),
                "n": run.metrics.get("n"),
                "validity": run.metrics.get("validity"),
            }
            try:
                paths = self._paths(run_id)
            except CacheError as error:
                runs.append({**summary, "error": str(error), "shown": 0})
                continue
            summary |= {
                "shown": len(paths),
                "kind": paths.kind,
                "points": int(paths.path.shape[1]),
                "class_names": paths.class_names,
                "local": paths.local_scores is not None,
                "reconstructions": paths.reconstructions is not None,
            }
            runs.append(summary)
        charts = [{"name": name, "dataset": r.get("dataset"), "charts": global_bars(r)} for name, r in self.globals]
        return {"root": str(self.root), "runs": runs, "global": charts}

    def items_json(self) -> dict:
        """Every shown image of every readable run, for the grid and its filters."""
        items = []
        for run_id, run in enumerate(self.runs):
            try:
                paths = self._paths(run_id)
            except CacheError:
                continue
            for k in range(len(paths)):
                items.append(
                    {
                        "run": run_id,
                        "index": k,
                        "method": run.metrics.get("method"),
                        "source": int(paths.original_class[k]),
                        "target": int(paths.target[k]),
                        "valid": bool(paths.success[k]),
                        "target_prob": float(paths.target_prob[k]),
                    }
                )
        return {"items": items}

    def item_json(self, run_id: int, index: int) -> dict:
        """One image in full: its classes and probabilities, its path's probabilities and its local attributions."""
        paths = self._paths(run_id)
        if not 0 <= index < len(paths):
            raise KeyError(f"run {run_id} shows {len(paths)} images, not an image {index}")
        local = []
        if paths.local_scores is not None:
            row = paths.local_scores[index]
            usable = paths.local_usable if paths.local_usable is not None else torch.ones(len(row), dtype=torch.bool)
            order = row.abs().argsort(descending=True, stable=True).tolist()
            local = [{"name": paths.local_names[j], "score": float(row[j])} for j in order if bool(usable[j])][
                :LOCAL_BARS
            ]
        return {
            "run": run_id,
            "index": index,
            "position": int(paths.indices[index]),
            "method": paths.method,
            "kind": paths.kind,
            "source": int(paths.original_class[index]),
            "target": int(paths.target[index]),
            "valid": bool(paths.success[index]),
            "original_prob": float(paths.original_prob[index]),
            "target_prob": float(paths.target_prob[index]),
            "threshold": float(paths.threshold[index]),
            "path_prob": [float(p) for p in paths.path_prob[index]],
            "path_position": [float(t) for t in paths.path_position],
            "reconstruction": paths.reconstructions is not None,
            "local": local,
        }

    def image_png(self, run_id: int, index: int, kind: str, step: int | None = None) -> bytes:
        """A PNG of one image of a run: ``kind`` original, reconstruction, counterfactual, difference, or path
        with ``step`` (0 to P - 1)."""
        paths = self._paths(run_id)
        if not 0 <= index < len(paths):
            raise KeyError(f"run {run_id} shows {len(paths)} images, not an image {index}")
        if kind == "path":
            if step is None or not 0 <= step < paths.path.shape[1]:
                raise KeyError(f"the path has {paths.path.shape[1]} points, not a point {step}")
            image = paths.path[index, step]
        elif kind == "reconstruction":
            if paths.reconstructions is None:
                raise KeyError("this run has no reconstructions")
            image = paths.reconstructions[index]
        elif kind == "difference":
            original, counterfactual = paths.originals[index].float() / 255, paths.counterfactuals[index].float() / 255
            image = signed_difference(original, counterfactual)
        else:
            image = paths.originals[index] if kind == "original" else paths.counterfactuals[index]
        return png_bytes(to_pil(image))


def _query_int(query: dict[str, list[str]], name: str) -> int:
    """A whole number from a parsed query string; ValueError (a 404) when it is missing or not one."""
    values = query.get(name, [])
    if len(values) != 1 or not values[0].isdigit():
        raise ValueError(f"/api/item takes ?run=R&index=I (whole numbers); {name} is {values or 'missing'}")
    return int(values[0])


class ExplorerHandler(BaseHTTPRequestHandler):
    """Answers GET requests from the explorer's page; every other path is a 404."""

    explorer: Explorer  # set on the class made by make_server

    def do_GET(self) -> None:  # noqa: N802 - the standard library's name
        url = urlsplit(self.path)
        try:
            if url.path in STATIC:
                name, kind = STATIC[url.path]
                body = (resources.files("vcex.report") / "static" / name).read_bytes()
                self._send(body, f"{kind}; charset=utf-8")
            elif url.path == "/favicon.ico":  # browsers ask for one; there is none, which is not an error
                self.send_response(HTTPStatus.NO_CONTENT)
                self.end_headers()
            elif url.path == "/api/runs":
                self._json(self.explorer.runs_json())
            elif url.path == "/api/items":
                self._json(self.explorer.items_json())
            elif url.path == "/api/item":
                query = parse_qs(url.query)
                self._json(self.explorer.item_json(_query_int(query, "run"), _query_int(query, "index")))
            elif match := IMAGE_URL.match(url.path):
                run_id, index, kind, step = match.groups()
                kind = "path" if step is not None else kind
                png = self.explorer.image_png(int(run_id), int(index), kind, None if step is None else int(step))
                self._send(png, "image/png")
            else:
                self._error(HTTPStatus.NOT_FOUND, f"no such page: {url.path}")
        except (KeyError, ValueError, IndexError) as error:  # a bad run, index or query
            self._error(HTTPStatus.NOT_FOUND, str(error).strip("'\""))
        except CacheError as error:
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, str(error))

    def _send(self, body: bytes, content_type: str, status: HTTPStatus = HTTPStatus.OK) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")  # a rerun rewrites a run's files under the same names
        self.end_headers()
        self.wfile.write(body)

    def _json(self, record: object, status: HTTPStatus = HTTPStatus.OK) -> None:
        self._send(json_text(record, indent=None).encode(), "application/json", status)

    def _error(self, status: HTTPStatus, message: str) -> None:
        self._json({"error": message}, status)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the standard library's signature
        """Requests are not logged: a scrubbed slider makes dozens a second."""


class ExplorerServer(ThreadingHTTPServer):
    """The standard library's threading server, quiet about connections the browser drops."""

    daemon_threads = True  # a browser's open connection does not keep the process alive

    def handle_error(self, request: object, client_address: tuple) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError):  # a scrubbed slider cancels the images it no longer needs
            return
        print(f"vcex serve: a request from {client_address[0]} failed: {error!r}", file=sys.stderr)


def make_server(root: str | Path, host: str = "127.0.0.1", port: int = 0) -> ExplorerServer:
    """A server of the explorer over ``root`` on ``host:port`` (port 0: a free one), not yet serving; its address
    is ``server.server_address``. Refuses a folder without runs and a port that cannot be bound."""
    explorer = Explorer(root)
    handler = type("BoundExplorerHandler", (ExplorerHandler,), {"explorer": explorer})
    try:
        server = ExplorerServer((host, port), handler)
    except OSError as error:
        raise InputError(
            f"cannot listen on {host}:{port} ({error.strerror or error}): pick another --port, or 0 for a free one"
        ) from None
    return server


def serve(root: str | Path, host: str = "127.0.0.1", port: int = 8765, quiet: bool = False) -> None:
    """Serve the explorer over ``root`` until interrupted (Ctrl-C)."""
    server = make_server(root, host, port)
    bound_host, bound_port = server.server_address[:2]
    if not quiet:
        runs = len(server.RequestHandlerClass.explorer.runs)
        print(
            f"vcex serve: {runs} run(s) under {root} at http://{bound_host}:{bound_port}/ (Ctrl-C stops)",
            file=sys.stderr,
        )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


__all__ = ["Explorer", "ExplorerServer", "endpoint_paths", "find_runs", "make_server", "serve"]
