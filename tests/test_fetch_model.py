"""
C{asapp-mg fetch-model} against a real HTTP server on loopback serving model
zips built here.
"""

from __future__ import annotations

import io
import posixpath
import socket
import stat
import threading
import tomllib
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mgateway.asr.fetch import UnsafeArchive, catalog_entry, member_path
from mgateway.cli import main

MODEL = "vosk-model-test-0.1"
MODEL_FILES = {
    "am/final.mdl": b"acoustic model",
    "conf/model.conf": b"--endpoint.rule2.min-trailing-silence=0.5\n",
    "graph/HCLr.fst": bytes(range(256)) * 64,
}


def model_zip(files=MODEL_FILES, top=MODEL, extra=()) -> bytes:
    """A zip of a fake model tree under C{top}/, plus C{extra} raw C{ZipInfo}s."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zipped:
        zipped.writestr(f"{top}/", b"")
        for name, data in files.items():
            zipped.writestr(f"{top}/{name}", data)
        for info, data in extra:
            zipped.writestr(info, data)
    return buffer.getvalue()


class ModelServer:
    """An HTTP server on loopback: C{routes} maps a path to the body served."""

    def __init__(self):
        self.routes: dict[str, bytes] = {}
        self.requests: list[str] = []
        #: Paths whose response claims more bytes than it sends.
        self.truncated: set[str] = set()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                body = server.routes.get(self.path)
                if body is None:
                    self.send_error(404, "File not found")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/zip")
                extra = 1000 if self.path in server.truncated else 0
                self.send_header("Content-Length", str(len(body) + extra))
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True

            def log_message(self, format, *args):
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self):
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


@pytest.fixture
def server():
    running = ModelServer()
    yield running
    running.close()


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """The current directory, where ./models is by default."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def fetch(*args: str) -> int:
    return main(["fetch-model", *args])


def tree(directory: Path) -> dict[str, bytes]:
    return {
        path.relative_to(directory).as_posix(): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def printed_model_path(output: str, language: str) -> str:
    """The model path of the TOML table printed for the configuration."""
    snippet = output[output.index("[asr.languages.") :]
    return tomllib.loads(snippet)["asr"]["languages"][language]["model"]


def test_model_is_unpacked_under_the_zip_folder_name_and_the_config_table_printed(server, workdir, capsys):
    server.routes["/x.zip"] = model_zip()

    assert fetch("en-US", "--url", server.url("/x.zip")) == 0

    installed = workdir / "models" / MODEL
    assert tree(installed) == MODEL_FILES
    assert [p.name for p in (workdir / "models").iterdir()] == [MODEL], "temporary files left behind"
    out, err = capsys.readouterr()
    assert str(installed) in out
    assert printed_model_path(out, "en-US") == f"models/{MODEL}"
    assert "100%" in err, err


def test_a_model_already_present_is_not_downloaded_again(server, workdir, capsys):
    server.routes[f"/{MODEL}.zip"] = model_zip()
    assert fetch("en-US", "--url", server.url(f"/{MODEL}.zip")) == 0
    capsys.readouterr()

    assert fetch("en-US", "--url", server.url(f"/{MODEL}.zip")) == 0

    assert server.requests == [f"/{MODEL}.zip"]
    out, _ = capsys.readouterr()
    assert "already present" in out
    assert printed_model_path(out, "en-US") == f"models/{MODEL}"


def test_a_zip_named_differently_from_its_folder_does_not_replace_the_model(server, workdir, capsys):
    server.routes["/first.zip"] = model_zip()
    server.routes["/second.zip"] = model_zip({**MODEL_FILES, "am/final.mdl": b"other"})
    assert fetch("en-US", "--url", server.url("/first.zip")) == 0

    assert fetch("en-US", "--url", server.url("/second.zip")) == 0

    assert tree(workdir / "models" / MODEL) == MODEL_FILES
    assert "already present" in capsys.readouterr().out
    assert [p.name for p in (workdir / "models").iterdir()] == [MODEL]


def test_force_downloads_again_and_replaces_the_whole_model(server, workdir):
    url = server.url(f"/{MODEL}.zip")
    server.routes[f"/{MODEL}.zip"] = model_zip({**MODEL_FILES, "old-only.txt": b"stale"})
    assert fetch("en-US", "--url", url) == 0
    newer = {**MODEL_FILES, "am/final.mdl": b"retrained"}
    server.routes[f"/{MODEL}.zip"] = model_zip(newer)

    assert fetch("en-US", "--url", url, "--force") == 0

    assert len(server.requests) == 2
    assert tree(workdir / "models" / MODEL) == newer
    assert [p.name for p in (workdir / "models").iterdir()] == [MODEL]


def test_models_dir_comes_from_the_configuration_file(server, workdir, capsys):
    (workdir / "gateway.toml").write_text('[asr]\nmodels_dir = "var/asr-models"\n')
    server.routes["/m.zip"] = model_zip()

    assert fetch("de-DE", "--config", "gateway.toml", "--url", server.url("/m.zip")) == 0

    assert tree(workdir / "var" / "asr-models" / MODEL) == MODEL_FILES
    assert printed_model_path(capsys.readouterr().out, "de-DE") == f"var/asr-models/{MODEL}"


def test_models_dir_option_wins_over_the_configuration_and_may_lie_outside_the_current_directory(
    server, tmp_path, monkeypatch, capsys
):
    cwd, elsewhere = tmp_path / "cwd", tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    (cwd / "gateway.toml").write_text('[asr]\nmodels_dir = "unused"\n')
    server.routes["/m.zip"] = model_zip()

    assert fetch("en-US", "--config", "gateway.toml", "--models-dir", str(elsewhere), "--url", server.url("/m.zip")) == 0

    assert tree(elsewhere / MODEL) == MODEL_FILES
    assert not (cwd / "unused").exists()
    assert printed_model_path(capsys.readouterr().out, "en-US") == str(elsewhere / MODEL)


def test_an_entry_climbing_out_with_dotdot_is_refused_and_nothing_is_left(server, workdir, capsys):
    server.routes["/x.zip"] = model_zip(extra=[(zipfile.ZipInfo("../evil"), b"owned")])

    assert fetch("en-US", "--url", server.url("/x.zip")) == 1

    err = capsys.readouterr().err
    assert "'../evil'" in err and "outside" in err, err
    assert err.splitlines()[-1].startswith("asapp-mg fetch-model: "), err
    assert "Traceback" not in err
    assert list((workdir / "models").iterdir()) == []
    assert not (workdir / "evil").exists()


def test_a_symbolic_link_entry_is_refused(server, workdir, capsys):
    link = zipfile.ZipInfo(f"{MODEL}/graph/link")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    server.routes["/x.zip"] = model_zip(extra=[(link, b"/etc")])

    assert fetch("en-US", "--url", server.url("/x.zip")) == 1

    assert "symbolic link" in capsys.readouterr().err
    assert list((workdir / "models").iterdir()) == []


def test_an_archive_without_one_top_level_folder_is_refused(server, workdir, capsys):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        for name, data in MODEL_FILES.items():
            zipped.writestr(name, data)
    server.routes["/flat.zip"] = buffer.getvalue()

    assert fetch("en-US", "--url", server.url("/flat.zip")) == 1

    assert "one top-level folder" in capsys.readouterr().err
    assert list((workdir / "models").iterdir()) == []


def test_an_archive_that_is_not_a_vosk_model_is_refused(server, workdir, capsys):
    server.routes["/docs.zip"] = model_zip({"README": b"no model here"}, top="docs")

    assert fetch("en-US", "--url", server.url("/docs.zip")) == 1

    assert "not a Vosk model" in capsys.readouterr().err
    assert list((workdir / "models").iterdir()) == []


def test_a_response_that_is_not_a_zip_fails(server, workdir, capsys):
    server.routes["/x.zip"] = b"<html>maintenance</html>"

    assert fetch("en-US", "--url", server.url("/x.zip")) == 1

    assert "not a usable zip file" in capsys.readouterr().err
    assert list((workdir / "models").iterdir()) == []


def test_a_download_cut_short_fails(server, workdir, capsys):
    server.routes["/x.zip"] = model_zip()
    server.truncated.add("/x.zip")

    assert fetch("en-US", "--url", server.url("/x.zip")) == 1

    assert "stopped after" in capsys.readouterr().err
    assert list((workdir / "models").iterdir()) == []


def test_http_error_fails_with_the_status(server, workdir, capsys):
    assert fetch("en-US", "--url", server.url("/missing.zip")) == 1

    err = capsys.readouterr().err
    assert "HTTP 404" in err and "not downloaded" in err, err
    assert "Traceback" not in err


def test_unreachable_server_fails_with_cannot_reach(workdir, capsys):
    with socket.socket() as probe:  # a port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    assert fetch("en-US", "--url", f"http://127.0.0.1:{port}/x.zip") == 1

    err = capsys.readouterr().err
    assert err.startswith("asapp-mg fetch-model: cannot reach 127.0.0.1: "), err
    assert err.rstrip().endswith("the model was not downloaded"), err


def test_unknown_language_without_url_is_a_usage_error_listing_the_known_ones(workdir, capsys):
    assert fetch("xx-XX") == 2

    err = capsys.readouterr().err
    assert "xx-XX" in err and "en-US" in err and "ko-KR" in err and "--url" in err, err
    assert not (workdir / "models").exists()


def test_missing_language_is_a_usage_error(capsys):
    assert fetch() == 2
    assert "LANG" in capsys.readouterr().err


def test_unreadable_configuration_fails_before_downloading(server, workdir, capsys):
    (workdir / "bad.toml").write_text("[asr\n")

    assert fetch("en-US", "--config", "bad.toml", "--url", server.url("/x.zip")) == 1

    assert "invalid TOML" in capsys.readouterr().err
    assert server.requests == []


def test_catalog_lookup_ignores_case_and_points_at_the_official_zip():
    entry = catalog_entry("EN-us")
    assert entry.language == "en-US"
    assert entry.url == "https://alphacephei.com/vosk/models/vosk-model-small-en-us-0.15.zip"
    assert catalog_entry("ko-kr").name == "vosk-model-small-ko-0.22"


@given(st.lists(st.sampled_from(["a", ".", "..", "/", "\\", ":", "C:", "\0", "x"]), max_size=12).map("".join))
def test_every_accepted_entry_name_stays_inside_the_folder(name):
    try:
        path = member_path(name)
    except UnsafeArchive:
        return
    assert path.parts and not path.is_absolute(), (name, path)
    root = "/model-root"
    assert posixpath.normpath(posixpath.join(root, name)).startswith(root + "/"), name
