"""Multi-node instances (an instance's node_group): one model served by a group of GPU hosts with vLLM's own
multi-node engine, a leader and headless workers (roles/vllm/README.md, "Multi-node instances").

Not run end to end here (docs/multinode-cpu-measurement.md says what the CPU build did across two containers).
What is tested: the filter (each host's place in its group, every refusal), the units the real ansible-playbook
renders for a leader and a worker (and systemd-analyze verify on both), the gateways and Prometheus seeing the
leader only, the leader's rendezvous port in the packet filter (nft -c, and enforced between two network
namespaces), and playbooks/gpu_hosts.yml making each group one batch of its own (the real ansible-playbook).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time

import pytest
import yaml

from conftest import ANSIBLE_PLAYBOOK, REPO, load_plugin, playbook_env
from test_vllm_firewall import IP, NFT, SERVER_CODE, connect, namespaces, needs_nft, nft_check  # noqa: F401

mn = load_plugin("plugins/filter/vllm_multinode.py", "vllm_multinode_filters")
vi = load_plugin("plugins/filter/vllm_instances.py", "vllm_instances_filters")
fa = load_plugin("plugins/filter/fleet_access.py", "fleet_access_filters")
targets = load_plugin("plugins/filter/monitoring_targets.py", "monitoring_targets_filters")

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
BIG = {"name": "big", "node_group": "vllm_nodes_big", "tensor_parallel_size": 8, "pipeline_parallel_size": 2}
GROUPS = {"gpu_hosts": ["solo", "lead", "work"], "vllm_nodes_big": ["lead", "work"], "gateways": ["gw"]}
HOSTVARS = {"solo": {}, "lead": {"ansible_host": "10.0.0.1", "vllm_instances": [BIG]},
            "work": {"ansible_host": "10.0.0.2", "vllm_instances": [BIG]}, "gw": {}}


def instances(host, items=None, groups=None, hostvars=None, port=8000):
    normalized = vi.vllm_normalize_instances(items if items is not None else [BIG], port=port, model="/m")
    return mn.vllm_multinode_instances(normalized, groups or GROUPS, hostvars or HOSTVARS, host)


def problems(host, items=None, groups=None, hostvars=None, device="cuda", gpus=8):
    hostvars = hostvars or HOSTVARS
    return mn.vllm_multinode_problems(instances(host, items, groups, hostvars), groups or GROUPS, hostvars, host,
                                      device, gpus)


# --- each host's place in its group -------------------------------------------------------------------------

def test_the_first_host_of_the_group_leads_the_others_are_workers():
    (lead,), (work,) = instances("lead"), instances("work")
    assert {k: lead[k] for k in ("node_role", "node_rank", "nnodes", "leader", "master_addr", "master_port")} == {
        "node_role": "leader", "node_rank": 0, "nnodes": 2, "leader": "lead", "master_addr": "10.0.0.1",
        "master_port": 29501}
    assert (work["node_role"], work["node_rank"], work["master_addr"]) == ("worker", 1, "10.0.0.1")


def test_a_single_node_instance_is_unchanged_but_for_its_pipeline_default():
    (main,) = instances("solo", [{"name": "main"}])
    assert (main["node_role"], main["nnodes"], main["pipeline_parallel_size"], main["node_group"]) == ("", 1, 1, "")


def test_the_master_address_is_the_leaders_name_without_ansible_host():
    (work,) = instances("work", hostvars={"lead": {}, "work": {}})
    assert work["master_addr"] == "lead"


def test_the_leader_lets_in_the_other_hosts_of_its_group_only():
    assert mn.vllm_multinode_peers(instances("lead"), HOSTVARS, "lead") == ["10.0.0.2"]
    assert mn.vllm_multinode_peers(instances("work"), HOSTVARS, "work") == []


# --- refusals ------------------------------------------------------------------------------------------------

def test_a_good_group_passes_on_every_host():
    assert problems("lead") == [] and problems("work") == []


@pytest.mark.parametrize("case, change, fragments", [
    ("prefix", dict(items=[dict(BIG, node_group="big_nodes")]), ["must name an inventory group whose name starts "
                                                                 "with vllm_nodes_", "Fix: e.g. node_group: "]),
    ("unknown", dict(items=[dict(BIG, node_group="vllm_nodes_nope")]), ["no group vllm_nodes_nope", "Fix: add"]),
    ("one host", dict(groups=dict(GROUPS, vllm_nodes_big=["lead"])), ["has one host (lead)", "drop node_group"]),
    ("not a member", dict(groups=dict(GROUPS, vllm_nodes_big=["work", "solo"])),
     ["lead is not in vllm_nodes_big", "group_vars/vllm_nodes_big.yml"]),
    ("sizes", dict(items=[dict(BIG, tensor_parallel_size=3, pipeline_parallel_size=1)]),
     ["3 x 1 = 3 processes do not divide over the group's 2 hosts", "multiple of 2"]),
    ("gpus", dict(gpus=4), ["8 x 2 = 16 GPUs over 2 hosts is 8 per host, but lead has 4", "Fix: lower"]),
    ("visible gpus", dict(items=[dict(BIG, cuda_visible_devices="0,1")]), ["has 2 visible (cuda_visible_devices)"]),
    ("bad size", dict(items=[dict(BIG, pipeline_parallel_size="two")]), ["must be whole numbers of 1 or more"]),
    ("master port", dict(items=[dict(BIG, master_port=8000)]), ["master_port (8000) is also an instance's HTTP"]),
    ("bad master port", dict(items=[dict(BIG, master_port=70000)]), ["must be a TCP port between 1 and 65535"]),
    ("same group twice", dict(items=[BIG, dict(BIG, name="big2", port=8001)]),
     ["is also the node group of instance big"]),
])
def test_bad_groups_are_refused_naming_variable_problem_and_fix(case, change, fragments):
    found = problems("lead", **change)
    assert found, case
    text = "\n".join(found)
    assert all(fragment in text for fragment in fragments), (case, found)
    assert all("Fix:" in problem for problem in found), found


def test_a_host_in_two_node_groups_is_refused():
    groups = dict(GROUPS, vllm_nodes_other=["work", "solo"])
    assert any("work is in 2 node groups (vllm_nodes_big, vllm_nodes_other)" in p for p in problems("work", groups=groups))


def test_the_gpu_count_is_not_asked_on_cpu():
    tensor_only = [dict(BIG, tensor_parallel_size=2, pipeline_parallel_size=1)]
    hostvars = {host: dict(HOSTVARS[host], vllm_instances=tensor_only) for host in ("lead", "work")}
    assert problems("lead", items=tensor_only, hostvars=hostvars, device="cpu", gpus=0) == []


def test_pipeline_parallel_is_refused_on_the_cpu_build():
    (problem,) = problems("lead", device="cpu", gpus=0)
    assert "pipeline_parallel_size 2 on the CPU build" in problem and "Fix: use tensor_parallel_size: 16" in problem


def test_members_that_disagree_are_refused_on_both_sides():
    hostvars = {"lead": dict(HOSTVARS["lead"], vllm_version="0.32.0"),
                "work": {"ansible_host": "10.0.0.2", "vllm_version": "0.31.0",
                         "vllm_instances": [dict(BIG, tensor_parallel_size=4, pipeline_parallel_size=4)]}}
    for host in ("lead", "work"):
        (problem,) = problems(host, hostvars=hostvars, items=hostvars[host]["vllm_instances"])
        assert "disagree on tensor_parallel_size, pipeline_parallel_size, vllm_version" in problem, problem


def test_members_that_serve_different_names_are_refused():
    hostvars = {"lead": HOSTVARS["lead"],
                "work": dict(HOSTVARS["work"], vllm_instances=[dict(BIG, served_model_name="Qwen3-4B")])}
    (problem,) = problems("lead", hostvars=hostvars)
    assert "disagree on served_model_name" in problem, problem


def test_a_member_without_the_instance_is_refused():
    hostvars = {"lead": HOSTVARS["lead"], "work": {"vllm_instances": [{"name": "main"}]}}
    (problem,) = problems("lead", hostvars=hostvars)
    assert "work, a host of vllm_nodes_big, has no instance big" in problem


def test_a_group_not_whole_in_the_batch_is_refused():
    (problem,) = mn.vllm_multinode_batch_problems(instances("lead"), ["lead", "solo"])
    assert "work is not in this batch (lead, solo)" in problem and "Fix: run playbooks/gpu_hosts.yml" in problem
    assert mn.vllm_multinode_batch_problems(instances("lead"), ["lead", "work"]) == []
    assert mn.vllm_multinode_batch_problems(instances("solo", [{"name": "main"}]), ["solo"]) == []


# --- the gateways and Prometheus see the leader only ---------------------------------------------------------

def test_gateways_send_requests_to_the_leader_only():
    servers = vi.gateway_servers(HOSTVARS, GROUPS["gpu_hosts"], 8000, GROUPS)
    assert [(s["name"], s["address"]) for s in servers] == [("solo-main", "solo"), ("lead-big", "10.0.0.1")]


def test_without_groups_the_hosts_own_groups_decide():
    hostvars = {host: dict(values, groups=GROUPS) for host, values in HOSTVARS.items()}
    assert [s["name"] for s in vi.gateway_servers(hostvars, ["lead", "work"])] == ["lead-big"]


def test_prometheus_scrapes_the_leader_only():
    jobs = {job["job_name"]: job for job in targets.monitoring_scrape_configs(GROUPS, HOSTVARS, 8000)}
    assert [c["targets"] for c in jobs["vllm"]["static_configs"]] == [["solo:8000"], ["10.0.0.1:8000"]]
    assert ["10.0.0.2:9100"] in [c["targets"] for c in jobs["node"]["static_configs"]]  # still a node


# --- the packet filter: the rendezvous port, from the group's hosts only ------------------------------------

def peer_ruleset(peers=("10.77.0.2",), resolved=None):
    return fa.fleet_access_ruleset({"ports": [18000], "sources": ["10.77.0.3"], "resolved": resolved or {},
                                    "peer_ports": [29501], "peers": list(peers)})


def test_the_rendezvous_port_has_its_own_set_and_chain():
    text = peer_ruleset(peers=["10.77.0.2", "work"], resolved={"work": ["10.0.0.2"]})
    assert "tcp dport @vllm_peer_ports jump vllm_peer_access" in text
    assert re.search(r"set peers_ipv4 \{[^}]*10\.0\.0\.2,\s*10\.77\.0\.2", text), text
    assert "#   work: 10.0.0.2" in text


def test_without_multi_node_instances_the_ruleset_is_unchanged():
    spec = {"ports": [8000], "sources": ["10.0.0.9"]}
    assert fa.fleet_access_ruleset(dict(spec, peer_ports=[], peers=["10.0.0.2"])) == fa.fleet_access_ruleset(spec)


@needs_nft
def test_nft_accepts_the_ruleset_with_peers(tmp_path):
    rc, output = nft_check(peer_ruleset(peers=["10.77.0.2", "fd77::2", "10.1.0.0/16"]), tmp_path)
    assert rc == 0, output


def test_the_rendezvous_port_is_open_to_peers_only(namespaces, tmp_path):
    server_ns, client_ns = namespaces
    rules = tmp_path / "fleet.nft"
    rules.write_text(peer_ruleset())  # peer 10.77.0.2; 10.77.0.3 is a client of the HTTP port only
    server = subprocess.Popen([IP, "netns", "exec", server_ns, sys.executable, "-c", SERVER_CODE, "18000", "29501"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        assert server.stdout.readline().strip() == "ready", server.stderr.read()
        time.sleep(0.3)
        run = subprocess.run([IP, "netns", "exec", server_ns, NFT, "-f", str(rules)], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        seen = {"peer to rendezvous": connect(client_ns, "10.77.0.2", "10.77.0.1", 29501),
                "client to rendezvous": connect(client_ns, "10.77.0.3", "10.77.0.1", 29501),
                "client to HTTP": connect(client_ns, "10.77.0.3", "10.77.0.1", 18000),
                "peer to HTTP": connect(client_ns, "10.77.0.2", "10.77.0.1", 18000),
                "loopback to rendezvous": connect(server_ns, "127.0.0.1", "127.0.0.1", 29501)}
        assert seen == {"peer to rendezvous": "open", "client to rendezvous": "refused", "client to HTTP": "open",
                        "peer to HTTP": "refused", "loopback to rendezvous": "open"}
    finally:
        server.kill()
        server.wait(timeout=10)


# --- rolling batches: each group one batch of its own --------------------------------------------------------

@pytest.mark.parametrize("hosts, node_groups, serial, order, batches", [
    (["h1", "g1", "h2", "g2", "h3"], {"vllm_nodes_x": ["g1", "g2"]}, 2, ["h1", "g1", "g2", "h2", "h3"], [1, 2, 2]),
    (["h1", "h2", "h3", "h4"], {}, "50%", ["h1", "h2", "h3", "h4"], [2, 2]),
    (["a", "b", "c", "d"], {"vllm_nodes_x": ["c", "a"], "vllm_nodes_y": ["b", "d"]}, 1, ["c", "a", "b", "d"], [2, 2]),
    (["g1", "g2", "g3", "h1"], {"vllm_nodes_x": ["g1", "g2", "g3"]}, "25%", ["g1", "g2", "g3", "h1"], [3, 1]),
])
def test_rolling_order_and_batches(hosts, node_groups, serial, order, batches):
    groups = dict({"gpu_hosts": hosts}, **node_groups)
    assert mn.vllm_rolling_order(groups) == order
    assert mn.vllm_rolling_batches(groups, serial) == batches


@pytest.mark.skipif(not ANSIBLE_PLAYBOOK.exists(), reason="ansible-playbook not in this venv")
def test_gpu_hosts_playbook_restarts_a_group_as_one_batch(tmp_path):
    """The batched play's own hosts/serial header from playbooks/gpu_hosts.yml, on local stand-ins."""
    batched = dict(yaml.safe_load((REPO / "playbooks/gpu_hosts.yml").read_text())[2])
    batched.pop("roles")
    batched.update(become=False, gather_facts=False,
                   tasks=[{"name": "record", "ansible.builtin.debug": {"msg": "{{ ansible_play_batch }}"}}])
    (tmp_path / "play.yml").write_text(yaml.safe_dump([batched]))
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    inventory = {"all": {"children": {
        "gpu_hosts": {"hosts": {name: dict(local) for name in ("h1", "g1", "h2", "g2", "h3")}},
        "vllm_nodes_x": {"hosts": {"g1": {}, "g2": {}}}}}}
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory, sort_keys=False))
    result = subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", str(tmp_path / "hosts.yml"), str(tmp_path / "play.yml"),
                             "-e", json.dumps({"gpu_hosts_serial": 2})], cwd=tmp_path, capture_output=True, text=True,
                            env=playbook_env(repo_config=False), timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(result.stdout)
    seen = [sorted({host for task in play["tasks"] for host in task["hosts"]}) for play in report["plays"]]
    assert seen == [["h1"], ["g1", "g2"], ["h2", "h3"]], seen


# --- the units the role renders for a leader and a worker ---------------------------------------------------

@pytest.fixture(scope="module")
def units(tmp_path_factory):
    """{host: unit text} for the leader, the worker and a single-node host, rendered by the real ansible-playbook."""
    if not ANSIBLE_PLAYBOOK.exists():
        pytest.skip("ansible-playbook not in this venv")
    work = tmp_path_factory.mktemp("multinode-units")
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    inventory = {"all": {"children": {
        "gpu_hosts": {"hosts": {"solo": dict(local), "lead": dict(local, ansible_host="10.0.0.1"),
                                "work": dict(local, ansible_host="10.0.0.2")}},
        "vllm_nodes_big": {"hosts": {"lead": {}, "work": {}},
                           "vars": {"case_instances": [dict(BIG, tensor_parallel_size=2, pipeline_parallel_size=1)]}}}}}
    (work / "inventory/group_vars").mkdir(parents=True)
    (work / "inventory/hosts.yml").write_text(yaml.safe_dump(inventory, sort_keys=False))
    shutil.copy(REPO / "inventory/default/group_vars/all.yml", work / "inventory/group_vars/all.yml")
    out = work / "out"
    out.mkdir()
    role = REPO / "roles/vllm"
    play = [{"name": "Render the vllm units", "hosts": "gpu_hosts", "gather_facts": False, "tasks": [
        {"name": "Load the role's defaults", "ansible.builtin.include_vars": str(role / "defaults/main.yml")},
        {"name": "Load the role's variables", "ansible.builtin.include_vars": str(role / "vars/main.yml")},
        # (include_vars outranks the inventory: the group's instances come as case_instances.)
        {"name": "Put the inventory's instances back on top", "ansible.builtin.set_fact": {
            "vllm_instances": "{{ case_instances | default([{'name': 'main'}]) }}",
            "vllm_model": "/srv/models/big", "vllm_dtype": "bfloat16", "vllm_enforce_eager": True,
            "__vllm_device": "cpu", "__vllm_venv": "/opt/vllm/venv", "__vllm_model_commits": {}}},
        {"name": "Render each instance's unit", "ansible.builtin.template": {
            "src": str(role / "templates/vllm.service.j2"),
            "dest": f"{out}/{{{{ inventory_hostname }}}}.service", "mode": "0644"},
         "loop": "{{ __vllm_instance_list }}"},
        {"name": "Record what the role derives", "ansible.builtin.copy": {
            "content": "{{ {'served': __vllm_served_instances | map(attribute='name') | list,"
                       " 'peers': __vllm_multinode_peers, 'spec': __vllm_firewall_spec} | to_json }}",
            "dest": f"{out}/{{{{ inventory_hostname }}}}.json", "mode": "0644"}},
    ]}]
    (work / "play.yml").write_text(yaml.safe_dump(play, sort_keys=False))
    result = subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", str(work / "inventory/hosts.yml"), str(work / "play.yml")],
                            cwd=work, env=playbook_env(ANSIBLE_FORKS="4"), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return {path.stem: path.read_text() for path in out.glob("*.service")} | {
        f"{path.stem}.json": json.loads(path.read_text()) for path in out.glob("*.json")}


def exec_start(text):
    (line,) = re.findall(r"^ExecStart=(.*)$", text, flags=re.MULTILINE)
    return [arg.strip('"') for arg in line.split()]


def pairs(args):
    return {args[i]: args[i + 1] for i in range(len(args) - 1) if args[i].startswith("--")
            and not args[i + 1].startswith("--")}


def test_the_leader_runs_the_api_server_as_node_0(units):
    args = exec_start(units["lead"])
    assert args[:3] == ["/opt/vllm/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    assert {k: v for k, v in pairs(args).items() if k in (
        "--nnodes", "--node-rank", "--master-addr", "--master-port", "--distributed-executor-backend",
        "--tensor-parallel-size", "--port")} == {
        "--nnodes": "2", "--node-rank": "0", "--master-addr": "10.0.0.1", "--master-port": "29501",
        "--distributed-executor-backend": "mp", "--tensor-parallel-size": "2", "--port": "8000"}
    assert "--headless" not in args and "--middleware" in args
    assert "ExecStartPost=" in units["lead"] and "leader of 2 nodes, group vllm_nodes_big" in units["lead"]


def test_the_worker_runs_headless_as_node_1_without_http(units):
    args = exec_start(units["work"])
    assert args[:2] == ["/opt/vllm/venv/bin/python", "/opt/vllm/guard/claude_vllm_fleet_headless.py"]
    assert pairs(args)["--node-rank"] == "1" and pairs(args)["--master-addr"] == "10.0.0.1"
    assert "--headless" in args
    assert not {"--host", "--port", "--middleware"} & set(args)
    assert "ExecStartPost=" not in units["work"]


def test_leader_and_worker_start_the_same_engine(units):
    lead, work = pairs(exec_start(units["lead"])), pairs(exec_start(units["work"]))
    for flag in ("--model", "--max-model-len", "--tensor-parallel-size", "--dtype", "--nnodes", "--master-addr",
                 "--master-port", "--served-model-name", "--tool-call-parser"):
        assert lead[flag] == work[flag], flag


def test_the_worker_is_hardened_like_every_instance(units):
    def hardening(text):
        section = text.split("# Hardening:", 1)[1]
        return [line for line in section.splitlines() if "=" in line and not line.startswith("#")]
    assert hardening(units["work"]) == hardening(units["lead"]) == hardening(units["solo"])
    for directive in ("NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateDevices=yes", "CapabilityBoundingSet="):
        assert directive in hardening(units["work"])


def test_a_single_node_host_renders_as_before(units):
    args = exec_start(units["solo"])
    assert not {"--nnodes", "--node-rank", "--master-addr", "--headless", "--pipeline-parallel-size"} & set(args)


def test_the_role_derives_served_instances_and_the_filter_spec(units):
    assert units["lead.json"]["served"] == ["big"] and units["work.json"]["served"] == []
    assert units["lead.json"]["peers"] == ["10.0.0.2"]
    assert (units["lead.json"]["spec"]["ports"], units["lead.json"]["spec"]["peer_ports"]) == ([8000], [29501])
    assert (units["work.json"]["spec"]["ports"], units["work.json"]["spec"]["peer_ports"]) == ([], [])


@pytest.mark.skipif(not SYSTEMD_ANALYZE, reason="no systemd-analyze here")
def test_systemd_accepts_the_leader_and_the_worker(units, tmp_path):
    for host in ("lead", "work"):
        text = re.sub(r"^ExecStart=\S+", "ExecStart=/usr/bin/python3", units[host], flags=re.MULTILINE)
        text = re.sub(r"^(User|Group)=.*$", r"\1=root", text, flags=re.MULTILINE)
        unit = tmp_path / host / "vllm-check.service"
        unit.parent.mkdir()
        unit.write_text(text)
        result = subprocess.run([SYSTEMD_ANALYZE, "verify", "--man=no", str(unit)], capture_output=True, text=True,
                                timeout=60, check=False)
        complaints = [line for line in (result.stdout + result.stderr).splitlines() if "vllm-check.service" in line]
        assert result.returncode == 0 and not complaints, (host, result.stdout + result.stderr)
