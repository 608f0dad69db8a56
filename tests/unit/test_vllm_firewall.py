"""The vLLM ports' packet filter: allow list from the inventory, the nftables ruleset, and what nft does with it.

Pure filter tests first (plugins/filter/fleet_access.py), then the real `nft -c -f` (check mode: nothing is
loaded) on this host, then the ruleset enforced for real between two network namespaces of this host (a
server and a client with an allowed and a refused address, IPv4 and IPv6), then the role's own lookup script
and its refusal of bad vllm_allowed_sources through the real ansible-playbook.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid

import pytest
import yaml

from conftest import REPO, load_plugin

fa = load_plugin("plugins/filter/fleet_access.py", "fleet_access_filters")

NFT = shutil.which("nft") or ("/usr/sbin/nft" if os.path.exists("/usr/sbin/nft") else None)
IP = shutil.which("ip") or ("/usr/sbin/ip" if os.path.exists("/usr/sbin/ip") else None)
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
needs_nft = pytest.mark.skipif(not NFT or not IS_ROOT,
                               reason="needs nft (apt-get install nftables) and root (nft -c talks to the kernel)")


def ruleset(ports=(8000,), sources=(), resolved=None, table="claude_vllm_fleet"):
    return fa.fleet_access_ruleset({"table": table, "ports": list(ports), "sources": list(sources),
                                    "resolved": resolved or {}})


def set_elements(text, name):
    """The elements of set `name` in the ruleset text, as a list of strings ([] when it has none)."""
    block = text.split(f"set {name} {{", 1)[1].split("\n\t}", 1)[0]
    if "elements = {" not in block:
        return []
    inner = block.split("elements = {", 1)[1].split("}", 1)[0]
    return [part.strip() for part in inner.split(",") if part.strip()]


# --- who is allowed: the inventory's topology -------------------------------------------------------------

HOSTVARS = {
    "gw1": {"ansible_host": "10.0.0.10"},
    "gw2": {},
    "ws1": {"ansible_host": "10.0.1.5"},
    "ws2": {"ansible_host": ""},
    "gpu1": {"ansible_host": "10.0.2.1"},
}


def test_behind_gateways_only_the_gateways_are_clients():
    groups = {"gateways": ["gw1", "gw2"], "workstations": ["ws1", "ws2"], "gpu_hosts": ["gpu1"]}
    assert fa.fleet_access_sources(groups, HOSTVARS) == ["10.0.0.10", "gw2"]


def test_without_gateways_the_workstations_are_clients():
    for groups in ({"workstations": ["ws1", "ws2"]}, {"gateways": [], "workstations": ["ws1", "ws2"]}):
        # ws2's empty ansible_host falls back to its inventory name
        assert fa.fleet_access_sources(groups, HOSTVARS) == ["10.0.1.5", "ws2"]


def test_extra_sources_are_added_once_in_order():
    groups = {"workstations": ["ws1"]}
    extra = ["10.9.0.0/16", "prometheus.example.com", "10.0.1.5", " 192.0.2.7 "]
    assert fa.fleet_access_sources(groups, HOSTVARS, extra) == [
        "10.0.1.5", "10.9.0.0/16", "prometheus.example.com", "192.0.2.7"]


def test_no_clients_at_all_gives_an_empty_list():
    assert fa.fleet_access_sources({}, {}) == []
    assert fa.fleet_access_sources({"gateways": [], "workstations": []}, {}, []) == []


def test_only_names_are_looked_up():
    sources = ["10.0.1.5", "ws2", "fd00::1", "10.9.0.0/16", "prometheus.example.com", "ws2"]
    assert fa.fleet_access_lookup_names(sources) == ["prometheus.example.com", "ws2"]


# --- resolving names ----------------------------------------------------------------------------------------

GETENT = """== ws2
172.18.0.3      STREAM ws2
172.18.0.3      DGRAM
172.18.0.3      RAW
fd42::3         STREAM
== gone.example
== dual
::ffff:10.1.1.1 STREAM dual
fe80::1%eth0    STREAM
"""


def test_lookup_output_is_parsed_per_name():
    resolved = fa.fleet_access_parse_lookup(GETENT)
    assert resolved == {"ws2": ["172.18.0.3", "fd42::3"], "gone.example": [], "dual": ["10.1.1.1", "fe80::1"]}


def test_unresolved_names_are_named_and_left_out():
    sources = ["ws2", "gone.example", "10.0.0.9"]
    resolved = fa.fleet_access_parse_lookup(GETENT)
    assert fa.fleet_access_unresolved(sources, resolved) == ["gone.example"]
    text = ruleset(sources=sources, resolved=resolved)
    assert set_elements(text, "allowed_ipv4") == ["10.0.0.9", "172.18.0.3"]
    assert "#   gone.example: does not resolve here: left out" in text


def test_a_name_never_looked_up_allows_nothing():
    assert fa.fleet_access_addresses(["ws2"], {}) == {"ipv4": [], "ipv6": []}


# --- the ruleset --------------------------------------------------------------------------------------------

def test_ruleset_replaces_its_own_table_atomically_and_refuses_the_rest():
    text = ruleset(sources=["10.0.0.9"])
    lines = text.splitlines()
    start = lines.index("table inet claude_vllm_fleet")
    assert lines[start:start + 3] == ["table inet claude_vllm_fleet", "delete table inet claude_vllm_fleet",
                                      "table inet claude_vllm_fleet {"]
    assert "flush ruleset" not in text  # never anyone else's tables
    chain = text.split("chain vllm_access {", 1)[1]
    rules = [line.strip() for line in chain.splitlines() if line.strip() and line.strip() != "}"]
    assert rules == ['iif "lo" accept', "ip saddr @allowed_ipv4 accept", "ip6 saddr @allowed_ipv6 accept",
                     "counter reject with tcp reset"]
    assert "tcp dport @vllm_ports jump vllm_access" in text
    assert "policy accept;" in text  # other ports and traffic pass untouched


def test_gateway_topology_ruleset_lists_only_the_gateways():
    groups = {"gateways": ["gw1"], "workstations": ["ws1"]}
    text = ruleset(sources=fa.fleet_access_sources(groups, HOSTVARS))
    assert set_elements(text, "allowed_ipv4") == ["10.0.0.10"]
    assert "10.0.1.5" not in text


def test_ipv6_addresses_and_networks_go_to_the_ipv6_set():
    text = ruleset(sources=["fd00:5::/64", "2001:db8::7", "ws2", "::ffff:192.0.2.1"],
                   resolved={"ws2": ["fd42::3", "172.18.0.3"]})
    assert set_elements(text, "allowed_ipv6") == ["2001:db8::7", "fd00:5::/64", "fd42::3"]
    assert set_elements(text, "allowed_ipv4") == ["172.18.0.3", "192.0.2.1"]


def test_overlapping_sources_are_merged_so_nft_accepts_the_interval_set():
    text = ruleset(sources=["10.1.0.0/16", "10.1.2.3", "10.1.0.0/24", "10.2.0.1"])
    assert set_elements(text, "allowed_ipv4") == ["10.1.0.0/16", "10.2.0.1"]


def test_empty_allow_list_leaves_loopback_only():
    text = ruleset(sources=[])
    assert set_elements(text, "allowed_ipv4") == [] and set_elements(text, "allowed_ipv6") == []
    assert "#   (none: loopback only)" in text
    assert 'iif "lo" accept' in text and "counter reject with tcp reset" in text


def test_ports_of_several_instances_are_one_set():
    text = ruleset(ports=[8001, "8000", 8002, 8000])
    assert set_elements(text, "vllm_ports") == ["8000", "8001", "8002"]
    assert "reach TCP ports 8000, 8001, 8002;" in text


def test_no_ports_filters_nothing_but_is_still_valid_text():
    text = ruleset(ports=[])
    assert set_elements(text, "vllm_ports") == []


@pytest.mark.parametrize("port", [0, 70000, "80a", True, None])
def test_bad_ports_and_table_names_are_refused(port):
    with pytest.raises(ValueError):
        ruleset(ports=[port])


@pytest.mark.parametrize("table", ["bad table", "x;flush ruleset", "1abc", ""])
def test_bad_table_names_are_refused(table):
    if table == "":
        assert "table inet claude_vllm_fleet" in ruleset(table=table)  # empty: the default name
        return
    with pytest.raises(ValueError):
        ruleset(table=table)


def test_a_source_with_a_newline_cannot_inject_into_the_ruleset():
    text = ruleset(sources=["ws2\nflush ruleset"], resolved={"ws2\nflush ruleset": ["10.0.0.1"]})
    assert "\nflush ruleset" not in text


# --- validation of vllm_allowed_sources ---------------------------------------------------------------------

@pytest.mark.parametrize("good", [
    [], None, ["10.0.5.7"], ["10.0.5.0/24"], ["fd00:5::/64"], ["2001:db8::1"], ["monitoring.example.com"],
    ["prometheus"], ["host_with_underscore"], ["fe80::1%eth0"], ["fqdn.example.com."],
])
def test_good_sources_pass(good):
    assert fa.fleet_access_source_problems(good) == []


@pytest.mark.parametrize("bad, fragment", [
    (["http://mon:9090"], "is neither an IP address, a network (CIDR) nor a host name"),
    (["mon:9090"], "is neither an IP address"),
    (["10.0.0.256"], "is neither an IP address"),
    (["a b"], "is neither an IP address"),
    (["-oProxyCommand=x"], "is neither an IP address"),
    (["10.1.2.3/24"], "has host bits set"),
    (["0.0.0.0/0"], "allows every address"),
    (["::/0"], "allows every address"),
    ([""], "is not an IP address, a network or a host name"),
    ([8080], "is not an IP address, a network or a host name"),
    ([True], "is not an IP address, a network or a host name"),
    ([{"ip": "10.0.0.1"}], "is not an IP address, a network or a host name"),
    ("10.0.0.1", "must be a list"),
    ({"a": 1}, "must be a list"),
])
def test_bad_sources_are_refused_with_a_fix(bad, fragment):
    problems = fa.fleet_access_source_problems(bad)
    assert len(problems) == 1 and fragment in problems[0], problems
    assert "Fix:" in problems[0] or "must be a list" in problems[0]


def test_the_fix_for_host_bits_names_the_network():
    assert "'10.1.2.0/24'" in fa.fleet_access_source_problems(["10.1.2.3/24"])[0]


# --- the real nft, check mode (nothing is loaded) -----------------------------------------------------------

def nft_check(text, tmp_path):
    path = tmp_path / f"ruleset-{uuid.uuid4().hex[:8]}.nft"
    path.write_text(text)
    result = subprocess.run([NFT, "-c", "-f", str(path)], capture_output=True, text=True, timeout=60)
    return result.returncode, result.stdout + result.stderr


@needs_nft
@pytest.mark.parametrize("case", ["full", "empty", "ipv6_only", "no_ports", "gateway"])
def test_nft_accepts_the_generated_ruleset(case, tmp_path):
    specs = {
        "full": dict(ports=[8000, 8001], sources=["10.0.0.9", "ws2", "10.1.0.0/16", "10.1.2.3", "fd00:5::/64"],
                     resolved={"ws2": ["172.18.0.3", "fd42::3"]}),
        "empty": dict(sources=[]),
        "ipv6_only": dict(sources=["2001:db8::/48", "2001:db8::1"]),
        "no_ports": dict(ports=[], sources=["10.0.0.9"]),
        "gateway": dict(sources=fa.fleet_access_sources({"gateways": ["gw1", "gw2"]}, HOSTVARS),
                        resolved={"gw2": ["10.0.0.11"]}),
    }
    rc, output = nft_check(ruleset(**specs[case]), tmp_path)
    assert rc == 0, output


@needs_nft
def test_nft_check_really_checks_here(tmp_path):
    """Control: the same check refuses a broken ruleset (so a pass above means something)."""
    broken = ruleset(sources=["10.0.0.9"]).replace("reject with tcp reset", "reject with tcp nonsense")
    rc, output = nft_check(broken, tmp_path)
    assert rc != 0, output
    overlapping = ruleset(sources=["10.0.0.9"]).replace("\t\t\t10.0.0.9", "\t\t\t10.0.0.0/8,\n\t\t\t10.0.0.9")
    rc, output = nft_check(overlapping, tmp_path)  # why the filter merges overlapping sources
    assert rc != 0, output


# --- the ruleset enforced for real, between two network namespaces of this host ----------------------------

SERVER_CODE = r"""
import http.server, socket, sys, threading
class Server(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
def serve(port):
    http.server.ThreadingHTTPServer.allow_reuse_address = True
    Server(("::", port), http.server.SimpleHTTPRequestHandler).serve_forever()
for port in map(int, sys.argv[1:]):
    threading.Thread(target=serve, args=(port,), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""

CLIENT_CODE = r"""
import socket, sys
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
sock = socket.socket(family, socket.SOCK_STREAM)
sock.settimeout(3)
sock.bind((sys.argv[1], 0))
try:
    sock.connect((sys.argv[2], int(sys.argv[3])))
    print("open")
except ConnectionRefusedError:
    print("refused")
except OSError as error:
    print(type(error).__name__)
"""


def run(*argv, check=True):
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(f"{argv}: {result.stdout}{result.stderr}")
    return result


@pytest.fixture
def namespaces():
    if not (NFT and IP and IS_ROOT):
        pytest.skip("needs root, ip and nft")
    tag = uuid.uuid4().hex[:6]
    server, client = f"vfw-s-{tag}", f"vfw-c-{tag}"
    try:
        run(IP, "netns", "add", server)
        run(IP, "netns", "add", client)
    except AssertionError as error:
        run(IP, "netns", "delete", server, check=False)
        pytest.skip(f"cannot create network namespaces here: {error}")
    try:
        run(IP, "link", "add", f"vs{tag}", "netns", server, "type", "veth", "peer", "name", f"vc{tag}", "netns", client)
        for ns, link, addresses in ((server, f"vs{tag}", ["10.77.0.1/24", "fd77::1/64"]),
                                    (client, f"vc{tag}", ["10.77.0.2/24", "10.77.0.3/24", "fd77::2/64", "fd77::3/64"])):
            run(IP, "-n", ns, "link", "set", "lo", "up")
            for address in addresses:
                run(IP, "-n", ns, "addr", "add", address, "dev", link, *(["nodad"] if ":" in address else []))
            run(IP, "-n", ns, "link", "set", link, "up")
        yield server, client
    finally:
        run(IP, "netns", "delete", client, check=False)
        run(IP, "netns", "delete", server, check=False)


def connect(namespace, source, target, port):
    return run(IP, "netns", "exec", namespace, sys.executable, "-c", CLIENT_CODE, source, target, str(port)).stdout.strip()


def test_the_ruleset_lets_in_only_loopback_and_the_allowed_sources(namespaces, tmp_path):
    server_ns, client_ns = namespaces
    rules = tmp_path / "fleet.nft"
    # Allowed: the workstation 10.77.0.2 (by name, resolved) and fd77::2; 10.77.0.3 and fd77::3 are not.
    rules.write_text(ruleset(ports=[18000, 18001], sources=["ws-allowed", "fd77::2"],
                             resolved={"ws-allowed": ["10.77.0.2"]}))
    server = subprocess.Popen([IP, "netns", "exec", server_ns, sys.executable, "-c", SERVER_CODE, "18000", "18001",
                               "18099"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        assert server.stdout.readline().strip() == "ready", server.stderr.read()
        time.sleep(0.3)
        before = {source: connect(client_ns, source, target, 18000)
                  for source, target in (("10.77.0.3", "10.77.0.1"), ("fd77::3", "fd77::1"))}
        assert before == {"10.77.0.3": "open", "fd77::3": "open"}  # control: open until the table is loaded

        run(IP, "netns", "exec", server_ns, NFT, "-f", str(rules))
        seen = {
            "allowed v4": connect(client_ns, "10.77.0.2", "10.77.0.1", 18000),
            "allowed v6": connect(client_ns, "fd77::2", "fd77::1", 18000),
            "other v4": connect(client_ns, "10.77.0.3", "10.77.0.1", 18000),
            "other v6": connect(client_ns, "fd77::3", "fd77::1", 18000),
            "other v4, second instance": connect(client_ns, "10.77.0.3", "10.77.0.1", 18001),
            "other v4, a port not listed": connect(client_ns, "10.77.0.3", "10.77.0.1", 18099),
            "loopback v4": connect(server_ns, "127.0.0.1", "127.0.0.1", 18000),
            "loopback v6": connect(server_ns, "::1", "::1", 18000),
            "own address": connect(server_ns, "10.77.0.1", "10.77.0.1", 18001),
        }
        assert seen == {
            "allowed v4": "open", "allowed v6": "open",
            "other v4": "refused", "other v6": "refused", "other v4, second instance": "refused",
            "other v4, a port not listed": "open",
            "loopback v4": "open", "loopback v6": "open", "own address": "open",
        }

        # Reloading the same file (what the unit's ExecReload does) replaces the table, no duplicate.
        run(IP, "netns", "exec", server_ns, NFT, "-f", str(rules))
        tables = run(IP, "netns", "exec", server_ns, NFT, "list", "tables").stdout.split("\n")
        assert [line for line in tables if line.strip()] == ["table inet claude_vllm_fleet"]
        counters = run(IP, "netns", "exec", server_ns, NFT, "list", "chain", "inet", "claude_vllm_fleet",
                       "vllm_access").stdout
        assert "reject with tcp reset" in counters
    finally:
        server.kill()
        server.wait(timeout=10)


# --- the role's own lookup script, as the role runs it ------------------------------------------------------

def test_the_roles_lookup_script_resolves_names_with_getent():
    if not shutil.which("getent"):
        pytest.skip("no getent here")
    script = yaml.safe_load((REPO / "roles/vllm/vars/main.yml").read_text())["__vllm_lookup_script"]
    result = subprocess.run(["sh", "-c", script, "vllm-firewall-lookup", "localhost", "no-such-host.invalid"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    resolved = fa.fleet_access_parse_lookup(result.stdout)
    assert "127.0.0.1" in resolved["localhost"] or "::1" in resolved["localhost"], result.stdout
    assert resolved["no-such-host.invalid"] == []


# --- the role refuses bad vllm_allowed_sources before any change (real ansible-playbook, --check) -----------

def test_the_role_refuses_bad_allowed_sources_before_any_change(tmp_path):
    refusals = pytest.importorskip("test_role_refusals_playbook")
    if not refusals.ANSIBLE_PLAYBOOK.exists():
        pytest.skip("ansible-playbook not in this venv")
    cases = {
        "url_source": {"vllm_allowed_sources": ["http://mon:9090"]},
        "host_bits": {"vllm_allowed_sources": ["10.1.2.3/24"]},
        "everyone": {"vllm_allowed_sources": ["0.0.0.0/0"]},
        "number": {"vllm_allowed_sources": [8080]},
        "not_a_list": {"vllm_allowed_sources": "10.0.0.1"},
    }
    expected = {
        "url_source": ["vllm_allowed_sources[0] ('http://mon:9090') is neither an IP address"],
        "host_bits": ["vllm_allowed_sources[0] ('10.1.2.3/24') has host bits set", "'10.1.2.0/24'"],
        "everyone": ["vllm_allowed_sources[0] ('0.0.0.0/0') allows every address"],
        "number": ["vllm_allowed_sources[0] (8080) is not an IP address"],
        "not_a_list": ["vllm_allowed_sources must be a list"],
    }
    result = refusals.run_role(tmp_path, "vllm", "gpu_hosts", cases, play_vars={"vllm_device": "cpu"})
    refusals.assert_refused(result, cases, expected)
