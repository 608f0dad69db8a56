"""The gateway's server list and the HAProxy runtime-API parsing (the live socket is used in molecule/rollout)."""

from __future__ import annotations

from conftest import load_plugin

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
        "gpu-b": {"vllm_port": 9000, "vllm_instances": [{"name": "left", "port": 9001}, {"name": "right"}]},
    }
    assert instances.gateway_servers(hostvars, ["gpu-a", "gpu-b", "gone"], 8000) == [
        {"name": "gpu-a-main", "host": "gpu-a", "address": "10.0.0.1", "port": 8000},
        {"name": "gpu-b-left", "host": "gpu-b", "address": "gpu-b", "port": 9001},
        {"name": "gpu-b-right", "host": "gpu-b", "address": "gpu-b", "port": 9000},
    ]


def test_no_hosts_no_servers():
    assert instances.gateway_servers({}, [], 8000) == []
