"""Shared pytest helpers: paths, loading the project's Ansible plugins as plain modules, running a module's
main() as Ansible would, and a stand-in vLLM server."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Modules import their shared code the collection way (ansible_collections.claude_vllm.fleet.plugins.module_utils,
# bundled in by Ansible at run time); the committed link collections/ansible_collections/claude_vllm/fleet -> the
# repository makes that import work here too.
if str(REPO / "collections") not in sys.path:
    sys.path.insert(0, str(REPO / "collections"))

ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"


def playbook_env(repo_config=True, **variables):
    """The environment of an ansible-playbook run whose report a test reads as JSON (ansible.posix.json on
    stdout) and that finds this collection through collections/; the repository's ansible.cfg unless
    repo_config is False; `variables` on top."""
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
               ANSIBLE_COLLECTIONS_PATH=str(REPO / "collections"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_RETRY_FILES_ENABLED="False")
    if repo_config:
        env["ANSIBLE_CONFIG"] = str(REPO / "ansible.cfg")
    env.update(variables)
    return env


def load_plugin(relative_path: str, name: str):
    """Import a plugin file (plugins/...) as a module."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / relative_path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


def make_searchable(path: Path) -> None:
    """Let other users reach files under `path` (pytest's base directory is 0700), as /home is searchable."""
    for directory in [path, *path.parents]:
        if directory == Path("/tmp"):
            break
        directory.chmod(0o711)


class ModuleExit(Exception):
    """How a module's main() ended: exit_json (failed False) or fail_json (failed True), with its result."""

    def __init__(self, result, failed):
        super().__init__(result)
        self.result, self.failed = result, failed


def run_module(monkeypatch, main, args, check_mode=False, diff=False, remote_tmp="/tmp"):
    """Run an AnsibleModule's main() with `args` as Ansible would pass them; return its ModuleExit."""
    from ansible.module_utils import basic
    from ansible.module_utils.common.text.converters import to_bytes

    def finish(failed):
        def _finish(self, **kwargs):
            raise ModuleExit(kwargs, failed)
        return _finish

    monkeypatch.setattr(basic.AnsibleModule, "exit_json", finish(False))
    monkeypatch.setattr(basic.AnsibleModule, "fail_json", finish(True))
    payload = dict(args, _ansible_check_mode=check_mode, _ansible_diff=diff, _ansible_remote_tmp=remote_tmp,
                   _ansible_keep_remote_files=False)
    monkeypatch.setattr(basic, "_ANSIBLE_ARGS", to_bytes(json.dumps({"ANSIBLE_MODULE_ARGS": payload})))
    monkeypatch.setattr(basic, "_ANSIBLE_PROFILE", "legacy", raising=False)
    with pytest.raises(ModuleExit) as exited:
        main()
    return exited.value


class VllmStandIn(BaseHTTPRequestHandler):
    """/health and /v1/models as vLLM's OpenAI server answers them (a real HTTP server, see serve()); with
    `token` set, /v1/models wants it as Authorization: Bearer."""

    served = ["Qwen3.5-27B"]
    token = None

    def do_GET(self):  # noqa: N802 (http.server's naming)
        if self.path == "/health":
            self._answer(200, b"")
        elif self.path == "/v1/models":
            if self.token and self.headers.get("Authorization") != f"Bearer {self.token}":
                self._answer(401, b'{"error": "Unauthorized"}')
            else:
                data = [{"id": name, "object": "model", "max_model_len": 32768} for name in self.served]
                self._answer(200, json.dumps({"object": "list", "data": data}).encode())
        else:
            self._answer(404, b"")

    def _answer(self, status, body):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args):
        pass


class _IPv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def serve(handler, address="127.0.0.1"):
    """A ThreadingHTTPServer for `handler` on a free port of `address` (IPv4 or IPv6), serving in a thread;
    stop it with shutdown()."""
    httpd = (_IPv6Server if ":" in address else ThreadingHTTPServer)((address, 0), handler)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()  # quick stop
    return httpd
