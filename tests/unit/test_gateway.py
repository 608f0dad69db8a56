"""The gateway's server list and the HAProxy runtime-API parsing (the live socket is used in molecule/rollout)."""

from __future__ import annotations

from conftest import load_plugin, run_module

instances = load_plugin("plugins/filter/vllm_instances.py", "vllm_instances_filters")
haproxy = load_plugin("plugins/modules/haproxy_server.py", "haproxy_server_module")

# `show stat` as HAProxy 2.6 prints it (columns cut after the ones the module reads).
SHOW_STAT = """# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status
claude_code,FRONTEND,,,1,3,262120,40,1,2,0,0,0,,,,,OPEN
vllm,gpu-a-main,0,0,1,2,,20,1,2,,0,,0,0,0,0,UP
vllm,gpu-b-main,0,0,0,2,,18,1,2,,0,,0,0,0,0,DRAIN
vllm,gpu-c-main,0,0,0,0,,0,0,0,,0,,0,0,0,0,MAINT (resolution)
vllm,BACKEND,0,0,1,3,,38,1,2,0,0,,0,0,0,0,UP
"""


def test_show_stat_rows_are_read_by_column_name():
    rows = haproxy.parse_stat(SHOW_STAT)
    row = haproxy.find_server(rows, "vllm", "gpu-a-main")
    assert row["status"] == "UP" and haproxy.sessions(row) == 1
    assert haproxy.find_server(rows, "vllm", "gpu-x-main") is None


# With gateway_balance affinity, the header-less backend's servers track the main backend's (column "tracked").
SHOW_STAT_TRACKED = """# pxname,svname,scur,status,tracked
vllm,gpu-a-main,1,DRAIN,
vllm,gpu-b-main,4,UP,
vllm,BACKEND,5,UP,
vllm_no_session,gpu-a-main,2,DRAIN,vllm/gpu-a-main
vllm_no_session,gpu-b-main,1,UP,vllm/gpu-b-main
other,gpu-a-main,7,UP,vllm_no_session/gpu-a-main
other,gpu-x-main,9,UP,
"""


def test_a_drain_counts_the_requests_of_the_servers_that_track_it():
    rows = haproxy.parse_stat(SHOW_STAT_TRACKED)
    assert haproxy.tracking_sessions(rows, "vllm", "gpu-a-main") == 1 + 2 + 7  # through a tracker of a tracker
    assert haproxy.tracking_sessions(rows, "vllm", "gpu-b-main") == 4 + 1
    assert haproxy.tracking_sessions(haproxy.parse_stat(SHOW_STAT), "vllm", "gpu-a-main") == 1  # no column


# `show servers state vllm` as HAProxy 2.6 printed it in molecule/rollout (columns cut after srv_admin_state).
SERVERS_STATE = """1
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight
3 vllm 1 fleet-rollout-gpu-a-main 172.21.0.2 2 0 1
3 vllm 2 fleet-rollout-gpu-b-main 172.21.0.3 0 8 1
"""


def test_admin_state_comes_from_servers_state_not_status():
    rows = haproxy.parse_servers_state(SERVERS_STATE)
    assert [r["srv_name"] for r in rows] == ["fleet-rollout-gpu-a-main", "fleet-rollout-gpu-b-main"]
    # gpu-b is DOWN (op state 0) and drained (admin 8): `show stat` would only say DOWN.
    assert haproxy.admin_state(rows[1]["srv_admin_state"]) == "drain"
    assert haproxy.admin_state(rows[0]["srv_admin_state"]) == "ready"
    assert haproxy.admin_state("1") == "maint"
    assert haproxy.admin_state("32") == "maint"
    assert haproxy.admin_state("16") == "drain"


def test_servers_cover_every_instance_of_every_host():
    hostvars = {
        "gpu-a": {"ansible_host": "10.0.0.1"},
        "gpu-b": {"vllm_port": 9000, "vllm_instances": [{"name": "left", "port": 9001},
                                                         {"name": "right", "served_model_name": "Qwen3-4B"}]},
    }
    assert instances.gateway_servers(hostvars, ["gpu-a", "gpu-b", "gone"], 8000, None, "Qwen3.5-27B") == [
        {"name": "gpu-a-main", "host": "gpu-a", "instance": "main", "address": "10.0.0.1", "port": 8000,
         "served_model_name": "Qwen3.5-27B"},
        {"name": "gpu-b-left", "host": "gpu-b", "instance": "left", "address": "gpu-b", "port": 9001,
         "served_model_name": "Qwen3.5-27B"},
        {"name": "gpu-b-right", "host": "gpu-b", "instance": "right", "address": "gpu-b", "port": 9000,
         "served_model_name": "Qwen3-4B"},
    ]


def test_no_hosts_no_servers():
    assert instances.gateway_servers({}, [], 8000) == []


# ---------------------------------------------------------------------------------------------------------
# The module end to end against a fake runtime API on a real UNIX socket (one command per connection, as
# HAProxy's non-interactive mode answers): drain waits for running sessions, ready waits for the health check.

import os  # noqa: E402
import socket  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402

import pytest  # noqa: E402

STAT_HEADER = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status\n"


class FakeHAProxy:
    """One server vllm/gpu-a-main: admin state, operational status, running sessions that finish over time."""

    def __init__(self, path, sessions=0, status="UP", admin=0, sessions_drop_per_poll=1, polls_until_up=2,
                 refuse=""):
        self.path, self.sessions, self.status, self.admin = path, sessions, status, admin
        self.drop, self.polls_until_up, self.refuse = sessions_drop_per_poll, polls_until_up, refuse
        self.commands = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(8)
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def answer(self, line):
        self.commands.append(line)
        if line == "show stat":
            shown = "DRAIN" if self.admin & 0x08 and self.status == "UP" else self.status
            row = "vllm,gpu-a-main,0,0,{},2,,20,1,2,,0,,0,0,0,0,{}\n".format(self.sessions, shown)
            # each poll: running requests finish; a server put back comes UP after a few checks
            self.sessions = max(0, self.sessions - self.drop)
            if self.admin == 0 and self.status != "UP":
                self.polls_until_up -= 1
                if self.polls_until_up <= 0:
                    self.status = "UP"
            return STAT_HEADER + row + "\n"
        if line.startswith("show servers state"):
            return ("1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state\n"
                    "3 vllm 1 gpu-a-main 10.0.0.1 2 {}\n".format(self.admin))
        if line.startswith("set server vllm/gpu-a-main state "):
            if self.refuse:
                return self.refuse + "\n"
            self.admin = {"ready": 0, "drain": 0x08, "maint": 0x01}[line.rsplit(" ", 1)[1]]
            if self.admin == 0x01:
                self.status = "MAINT"
            return "\n"
        return "Unknown command.\n"

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                line = conn.makefile("r").readline().strip()
                conn.sendall(self.answer(line).encode())

    def close(self):
        self.sock.close()


@pytest.fixture
def gateway(monkeypatch):
    directory = tempfile.mkdtemp(prefix="hap")
    path = os.path.join(directory, "admin.sock")
    fakes = []
    monkeypatch.setattr(haproxy.time, "sleep", lambda seconds: None)

    def start(**state):
        fakes.append(FakeHAProxy(path, **state))
        return fakes[-1]

    def run(check_mode=False, **args):
        args = dict({"socket": path, "backend": "vllm", "server": "gpu-a-main"}, **args)
        return run_module(monkeypatch, haproxy.main, args, check_mode=check_mode)

    yield start, run
    for fake in fakes:
        fake.close()


def test_drain_sets_the_state_and_waits_for_running_requests(gateway):
    start, run = gateway
    fake = start(sessions=3)
    result = run(state="drain", timeout=30)
    assert not result.failed and result.result["changed"] is True
    assert result.result["sessions"] == 0
    assert "set server vllm/gpu-a-main state drain" in fake.commands
    assert fake.admin == 0x08
    # a second run finds it drained already: no change, nothing sent
    fake.commands.clear()
    again = run(state="drain", timeout=30)
    assert again.result["changed"] is False
    assert not any(c.startswith("set server") for c in fake.commands)


def test_drain_times_out_when_requests_never_finish(gateway):
    start, run = gateway
    start(sessions=5, sessions_drop_per_poll=0)
    result = run(state="drain", timeout=0)
    assert result.failed and "running request(s) to finish" in result.result["msg"]
    assert result.result["sessions"] == 5


def test_ready_waits_until_the_health_check_reports_up(gateway):
    start, run = gateway
    fake = start(status="DOWN", admin=0x08, polls_until_up=3)
    result = run(state="ready", timeout=30)
    assert not result.failed and result.result["changed"] is True
    assert result.result["status"] == "UP" and fake.admin == 0


def test_ready_names_the_health_check_when_the_server_stays_down(gateway):
    start, run = gateway
    start(status="DOWN", admin=0x08, polls_until_up=10 ** 6)
    result = run(state="ready", timeout=0)
    assert result.failed and "/v1/models must list the served name" in result.result["msg"]


def test_check_mode_reports_without_sending_a_change(gateway):
    start, run = gateway
    fake = start(sessions=1)
    result = run(check_mode=True, state="maint")
    assert result.result["changed"] is True and fake.admin == 0
    assert not any(c.startswith("set server") for c in fake.commands)
    assert run(check_mode=True, state="ready").result["changed"] is False


def test_refused_command_and_missing_server_or_socket(gateway, tmp_path):
    start, run = gateway
    start(refuse="No such server.")
    refused = run(state="drain")
    assert refused.failed and "HAProxy refused" in refused.result["msg"] and "No such server." in refused.result["msg"]
    missing = run(state="drain", server="gpu-z-main")
    assert missing.failed and "run site.yml for the gateways" in missing.result["msg"]
    assert run(state="drain", server="gpu-z-main", missing_ok=True).result["changed"] is False
    no_socket = run(state="drain", socket=str(tmp_path / "none.sock"))
    assert no_socket.failed and "run the gateway role" in no_socket.result["msg"]
    tolerated = run(state="drain", socket=str(tmp_path / "none.sock"), missing_ok=True)
    assert not tolerated.failed and tolerated.result["status"] is None


# ---------------------------------------------------------------------------------------------------------
# The gateway's own refusals (validate.yml): what it forwards, its statistics page, its TLS names. The rendered
# configuration itself is checked and run by the real HAProxy in test_gateway_config.py.

filters = load_plugin("plugins/filter/claude_vllm.py", "claude_vllm_filters")

DEFAULT_REQUESTS = [{"method": "POST", "path": "/v1/messages"}, {"method": "POST", "path": "/v1/messages/count_tokens"},
                    {"method": "GET", "path": "/v1/models"}, {"method": "GET", "path": "/health"}]


def test_the_default_allowed_requests_pass():
    assert filters.gateway_allowed_requests_problems(DEFAULT_REQUESTS) == []
    assert filters.gateway_allowed_requests_problems(DEFAULT_REQUESTS + [{"method": "HEAD", "path": "/v1/models"}]) == []


@pytest.mark.parametrize("item,fragment", [
    ({"method": "post", "path": "/v1/messages"}, "Fix: write POST"),
    ({"method": "PO ST", "path": "/v1/messages"}, "not an HTTP method in capitals"),
    ({"method": "POST", "path": "v1/messages"}, "must be an absolute path"),
    ({"method": "POST", "path": "/v1/messages?beta=true"}, "The query string is not part of the path"),
    ({"method": "POST", "path": "/v1//messages"}, "no '//'"),
    ({"method": "GET", "path": "/v1/models/../metrics"}, "'..' segment"),
    ({"method": "GET", "path": "/v1/models' if"}, "quote"),
    ({"method": "GET", "path": "/v1/%6Dodels"}, "'%'"),
    ({"method": "GET", "path": 7}, "must be an absolute path"),
    ({"method": "GET"}, "exactly the keys method and path"),
    ({"method": "GET", "path": "/health", "port": 1}, "exactly the keys method and path"),
    ("GET /health", "exactly the keys method and path"),
])
def test_bad_allowed_requests_are_named(item, fragment):
    problems = filters.gateway_allowed_requests_problems(DEFAULT_REQUESTS + [item])
    assert len(problems) == 1 and "item 5" in problems[0] and fragment in problems[0], problems


@pytest.mark.parametrize("value", [[], None, "POST /v1/messages", {}])
def test_no_allowed_requests_is_refused(value):
    problems = filters.gateway_allowed_requests_problems(value)
    assert len(problems) == 1 and "must be a non-empty list" in problems[0]


@pytest.mark.parametrize("listen", ["127.0.0.1:8404", "127.0.0.2:8404", "[::1]:8404", "::1:8404", "localhost:8404",
                                    "ipv4@127.0.0.1:8404", "ipv6@::1:8404"])
def test_a_loopback_statistics_page_needs_no_credentials(listen):
    assert filters.gateway_stats_problems(listen, "", "") == []


@pytest.mark.parametrize("listen", ["*:8404", ":8404", "0.0.0.0:8404", "10.0.0.5:8404", "[::]:8404", "::8404",
                                    "gw.example.com:8404", "127.0.0.1.example.com:8404"])
def test_an_open_statistics_page_without_credentials_is_refused(listen):
    problems = filters.gateway_stats_problems(listen, "", "")
    assert len(problems) == 1 and "is not a loopback address" in problems[0], problems
    assert filters.gateway_stats_problems(listen, "fleet-ops", "Abcdefgh-12345678") == []


def test_statistics_credentials_are_checked_and_the_password_never_shown():
    assert filters.gateway_stats_problems("", "ops", "") == []  # no page, nothing to check
    half = filters.gateway_stats_problems("10.0.0.5:8404", "ops", "")
    assert len(half) == 1 and "gateway_stats_user is set but gateway_stats_password is empty" in half[0]
    half = filters.gateway_stats_problems("127.0.0.1:8404", "", "Abcdefgh-12345678")
    assert len(half) == 1 and "or the other way round" in half[0]
    user = filters.gateway_stats_problems("10.0.0.5:8404", "ops:admin", "Abcdefgh-12345678")
    assert len(user) == 1 and "gateway_stats_user ('ops:admin')" in user[0]
    for password in ("short-pw", 'has "quote" 1234', "back\\slash-12345", "dollar$HOME-12345"):
        problems = filters.gateway_stats_problems("10.0.0.5:8404", "ops", password)
        assert len(problems) == 1 and "gateway_stats_password (not shown)" in problems[0], (password, problems)
        assert password not in problems[0]


def test_tls_names_are_plain_openssl_names():
    assert filters.tls_names_problem(["ECDHE-RSA-AES128-GCM-SHA256", "TLS_AES_128_GCM_SHA256"], "v") == ""
    for bad in ([], "ECDHE-RSA-AES128-GCM-SHA256", ["ECDHE-RSA-AES128-GCM-SHA256:AES128-SHA"], ["!aNULL"],
                ["AES 128"], [None]):
        assert "must be a non-empty list of OpenSSL names" in filters.tls_names_problem(bad, "gateway_tls_ciphers")
