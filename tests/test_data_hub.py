"""Hub sources against a fake hub: a small HTTP server on localhost that answers the requests `huggingface_hub`
and `datasets` make (a revision's commit, a file's metadata and bytes, a folder's listing), so that
`datasets.load_dataset_builder` lists the data files and `HfFileSystem` streams them just as from
huggingface.co, and the hub adapter runs unchanged (the tests have no network). Checked: the commit is resolved
once, by the planner, and recorded in the work directory and the manifest; array tasks (one in a fresh
process), finalize and training read it while the branch moves on; a pinned revision is prepared apart; a
revision that does not exist or cannot exist (of a local folder or file), and a dataset that does not exist,
are one line naming the key."""

from __future__ import annotations

import hashlib
import io
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import asdict, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from pretrain.config import DataConfig, SourceConfig
from pretrain.data.layout import read_revision, work_dir
from pretrain.data.prepared import open_prepared, prepare_data
from pretrain.data.shards import finalize, plan_work, prepare_slices
from pretrain.errors import ConfigError, DataError
from tests.helpers import SMALL, pretrain

REPO = "fake-org/tiny-corpus"
DOCS = [f"document {i}: " + " ".join(f"word{i * j % 97}" for j in range(120)) for i in range(40)]


def parquet(docs: list[str]) -> bytes:
    out = io.BytesIO()
    pq.write_table(pa.table({"text": docs}), out)
    return out.getvalue()


def dataset(*train_files: list[str]) -> dict[str, bytes]:
    """The files of a commit: data/train-NNNNN-of-NNNNN.parquet, one per list of documents, and a validation
    split."""
    files = {f"data/train-{i:05d}-of-{len(train_files):05d}.parquet": parquet(docs)
             for i, docs in enumerate(train_files)}
    return {**files, "data/validation-00000-of-00001.parquet": parquet(["held out"])}


class FakeHub(ThreadingHTTPServer):
    """The dataset repository REPO on localhost: commits (files by path) and the branches or tags that point at
    them. `resolved` lists every branch or tag a request named (each one a resolution to a commit);
    `requests` counts all requests."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.commits: dict[str, dict[str, bytes]] = {}
        self.refs: dict[str, str] = {}
        self.resolved: list[str] = []
        self.requests = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"

    def commit(self, files: dict[str, bytes], branch: str = "main") -> str:
        """Commit `files` (the whole tree) on `branch`; returns the commit."""
        sha = hashlib.sha1(repr(sorted(files.items())).encode()).hexdigest()
        self.commits[sha], self.refs[branch] = files, sha
        return sha

    def files_at(self, revision: str) -> tuple[str, dict[str, bytes]] | None:
        """(commit, files) at a branch, tag or commit; None if there is no such revision."""
        revision = unquote(revision)
        if revision in self.refs:
            self.resolved.append(revision)
            revision = self.refs[revision]
        return (revision, self.commits[revision]) if revision in self.commits else None


def _file_entry(path: str, data: bytes) -> dict:
    return {"type": "file", "path": path, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}


class _Handler(BaseHTTPRequestHandler):
    """The hub's HTTP API, as far as reading a dataset goes: GET /api/datasets/REPO[/revision/REV] (the commit),
    GET /api/datasets/REPO/tree/REV[/FOLDER] (a listing), HEAD and GET /datasets/REPO/resolve/REV/PATH (a file,
    in byte ranges). Anything else is answered as the hub answers what does not exist."""

    protocol_version = "HTTP/1.1"
    server: FakeHub
    INFO = re.compile(rf"/api/datasets/{re.escape(REPO)}(?:/revision/(?P<rev>[^/]+))?")
    TREE = re.compile(rf"/api/datasets/{re.escape(REPO)}/tree/(?P<rev>[^/]+)/?(?P<path>.*)")
    FILE = re.compile(rf"/datasets/{re.escape(REPO)}/resolve/(?P<rev>[^/]+)/(?P<path>.+)")

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def do_GET(self) -> None:
        self._answer(head=False)

    def _answer(self, head: bool) -> None:
        self.server.requests += 1
        url = urlparse(self.path)
        for route, answer in ((self.INFO, self._info), (self.TREE, self._tree), (self.FILE, self._file)):
            match = route.fullmatch(url.path)
            if match:
                found = self.server.files_at(match["rev"] or "main")
                if found is None:
                    return self._missing("RevisionNotFound", head)
                return answer(*found, unquote(match.groupdict().get("path") or "").strip("/"), head)
        self._missing("RepoNotFound", head)

    def _info(self, sha: str, files: dict[str, bytes], _path: str, head: bool) -> None:
        self._send(200, json.dumps({"id": REPO, "sha": sha, "private": False,
                                    "siblings": [{"rfilename": p} for p in sorted(files)]}).encode(), head)

    def _tree(self, sha: str, files: dict[str, bytes], folder: str, head: bool) -> None:
        """The files and folders right inside `folder` (what finding the data files lists)."""
        prefix = f"{folder}/" if folder else ""
        children = sorted({prefix + path[len(prefix):].split("/")[0] for path in files if path.startswith(prefix)})
        if not children:
            return self._missing("EntryNotFound", head)
        entries = [_file_entry(c, files[c]) if c in files else {"type": "directory", "path": c, "oid": "0" * 40}
                   for c in children]
        self._send(200, json.dumps(entries).encode(), head)

    def _file(self, sha: str, files: dict[str, bytes], path: str, head: bool) -> None:
        if path not in files:
            return self._missing("EntryNotFound", head)
        data = files[path]
        headers = {"X-Repo-Commit": sha, "ETag": f'"{hashlib.sha1(data).hexdigest()}"', "Accept-Ranges": "bytes"}
        ranged = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if ranged is None or head:
            return self._send(200, data, head, headers)
        start, stop = int(ranged[1]), min(int(ranged[2] or len(data) - 1), len(data) - 1)
        self._send(206, data[start:stop + 1], head, {**headers, "Content-Range": f"bytes {start}-{stop}/{len(data)}"})

    def _missing(self, code: str, head: bool) -> None:
        self._send(404, json.dumps({"error": code}).encode(), head, {"X-Error-Code": code})

    def _send(self, status: int, body: bytes, head: bool, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Iterator[FakeHub]:
    """The fake hub, serving, with this process and the processes it starts pointed at it and their hub caches
    in tmp_path. `huggingface_hub` and `datasets` read HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE when first
    imported (a fresh process reads the environment), so in this process their constants are patched too."""
    import datasets
    from huggingface_hub import HfFileSystem, constants

    server = FakeHub()
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
    for name, value in (("HF_ENDPOINT", server.url), ("HF_HOME", str(tmp_path / "hf")), ("HF_HUB_OFFLINE", "0")):
        monkeypatch.setenv(name, value)
    for module, name, value in (
            (constants, "ENDPOINT", server.url),
            (constants, "HUGGINGFACE_CO_URL_TEMPLATE",
             constants.HUGGINGFACE_CO_URL_TEMPLATE.replace(constants.ENDPOINT, server.url)),
            (constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub")),
            (constants, "HF_HUB_OFFLINE", False),
            (datasets.config, "HF_ENDPOINT", server.url),
            (datasets.config, "HUB_DATASETS_URL",
             datasets.config.HUB_DATASETS_URL.replace(datasets.config.HF_ENDPOINT, server.url)),
            (datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf" / "datasets"),
            (datasets.config, "HF_HUB_OFFLINE", False)):
        monkeypatch.setattr(module, name, value)
    HfFileSystem.clear_instance_cache()  # a cached file system keeps the endpoint it was made with
    yield server
    HfFileSystem.clear_instance_cache()
    server.shutdown()
    server.server_close()


def test_every_task_reads_the_commit_the_planner_recorded(hub, tmp_path):
    """The planner (what `prepare-data --slurm` runs before it submits the array) resolves main once and
    records its commit; then main moves on, and the array's tasks (each planning again from the config, one
    in a fresh process through the CLI), finalize and training still read the recorded commit."""
    first = hub.commit(dataset(DOCS[:20], DOCS[20:]))
    cfg = DataConfig(source=f"hub:{REPO}", cache_dir=str(tmp_path / "cache"), **SMALL)
    planner = plan_work(cfg, progress=False)
    (target,) = planner.targets
    assert hub.resolved == ["main"]
    assert read_revision(target).revision == first

    moved = hub.commit(dataset(["main moved on"] * 30, DOCS[:5], DOCS[5:10]))
    prepare_slices(plan_work(cfg, progress=False), task=0, tasks=2, progress=False)
    config = tmp_path / "data.yaml"
    config.write_text(yaml.safe_dump({"data": asdict(cfg)}))
    assert "prepared 1 slice(s)" in pretrain("prepare-data", str(config), "--task", "1", "--tasks", "2").stdout
    finalize(plan_work(cfg, progress=False))
    assert hub.resolved == ["main"] and not work_dir(target).exists()

    requests = hub.requests
    (source,) = prepare_data(cfg, progress=False, in_band=True).sources  # training: the data is found prepared
    assert hub.requests == requests  # without asking the hub
    assert source.manifest.revision == first != moved
    assert [s.input for s in source.manifest.slices] == [
        f"hf://datasets/{REPO}@{first}/data/train-{i:05d}-of-00002.parquet" for i in range(2)]
    assert source.manifest.documents == len(DOCS)
    assert open_prepared(cfg, [target]).sources[0].manifest.revision == first
    manifest = json.loads((target / "manifest.json").read_text())
    (target / "manifest.json").write_text(json.dumps({**manifest, "revision": 7}))
    with pytest.raises(DataError, match=f"{target / 'manifest.json'}: revision must be a commit or null, got 7"):
        open_prepared(cfg, [target])


def test_a_pinned_revision_is_read_and_prepared_apart(hub, tmp_path):
    old = hub.commit(dataset(DOCS[:20], DOCS[20:]))
    hub.refs["v1.0"] = old
    new = hub.commit(dataset(DOCS[:10], DOCS[10:20]))
    cfg = DataConfig(source=f"hub:{REPO}", cache_dir=str(tmp_path / "cache"), **SMALL)
    latest = prepare_data(cfg, progress=False, workers=2).sources[0]  # the source, pinned, travels to the workers
    for revision in (old, "v1.0"):
        pinned = prepare_data(replace(cfg, hub_revision=revision), progress=False).sources[0]
        assert pinned.manifest.revision == old and pinned.manifest.documents == len(DOCS)
        assert pinned.dir != latest.dir
    assert latest.manifest.revision == new and latest.manifest.documents == 20
    mixture = DataConfig(sources=[SourceConfig(f"hub:{REPO}", hub_revision=old)], cache_dir=cfg.cache_dir, **SMALL)
    assert prepare_data(mixture, progress=False).sources[0].manifest.revision == old
    assert hub.resolved == ["main", "v1.0"]  # once per preparation: never by the workers, nor for a commit


@pytest.mark.parametrize("source, revision, message", [
    (f"hub:{REPO}", "xyz", f"data.hub_revision: hub:{REPO} has no revision 'xyz' ("),
    ("hub:__REPO__", "main", "data.hub_revision: __REPO__ is a local folder, which has no revisions"),
    ("__FILE__", "main", "data.hub_revision: only a hub:NAME source has revisions"),
    ("hub:fake-org/missing", None, "data.source: hub:fake-org/missing does not exist, or is private or gated"),
], ids=["no such revision", "local folder", "local file", "no such dataset"])
@pytest.mark.parametrize("mixture", [False, True], ids=["source", "sources"])
def test_a_source_or_revision_that_cannot_be_read_is_one_line_naming_its_key(hub, tmp_path, source, revision,
                                                                             message, mixture):
    hub.commit(dataset(DOCS))
    (tmp_path / "repo" / "data").mkdir(parents=True)  # a local folder laid out like a hub repository
    (tmp_path / "repo" / "data" / "train-00000-of-00001.parquet").write_bytes(parquet(DOCS))
    (tmp_path / "a.jsonl").write_text(json.dumps({"text": "hello"}) + "\n")
    local = {"__REPO__": str(tmp_path / "repo"), "__FILE__": str(tmp_path / "a.jsonl")}
    source, message = (re.sub("__[A-Z]+__", lambda m: local[m[0]], text) for text in (source, message))
    if mixture:
        cfg = DataConfig(sources=[SourceConfig(source, hub_revision=revision)], **SMALL)
        message = message.replace("data.", "data.sources[0].", 1)
    else:
        cfg = DataConfig(source=source, hub_revision=revision, **SMALL)
    with pytest.raises(ConfigError) as info:
        prepare_data(replace(cfg, cache_dir=str(tmp_path / "cache")), progress=False)
    assert str(info.value).startswith(message) and "\n" not in str(info.value), str(info.value)
