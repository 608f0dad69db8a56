# -*- coding: utf-8 -*-
"""Who may reach the vLLM ports: the allow list from the inventory, and the nftables ruleset that enforces it.

The vllm role computes everything here, not in Jinja:

- ``fleet_access_sources(groups, hostvars, extra)``: the sources allowed to connect. The hosts of the
  ``gateways`` group when it has any (the gateways are then the only clients of the servers), otherwise the
  hosts of ``workstations``; each as ``ansible_host`` when set, else its inventory name; then the extra
  sources (``vllm_allowed_sources``: addresses, networks or names). Order kept, duplicates dropped.
- ``fleet_access_lookup_names(sources)``: the sources that are names (to resolve on the GPU host).
- ``fleet_access_parse_lookup(text)``: the output of the role's ``getent ahosts`` loop -> {name: [addresses]}.
- ``fleet_access_unresolved(sources, resolved)``: names that resolved to nothing (left out: closed).
- ``fleet_access_addresses(sources, resolved)``: {"ipv4": [...], "ipv6": [...]}, merged and sorted.
- ``fleet_access_ruleset(spec)``: the nftables ruleset text (one table of its own, loaded atomically).
- ``fleet_access_source_problems(sources, variable)``: one message per entry that is not an IP address,
  a network (CIDR) or a host name.
"""

from __future__ import annotations

import ipaddress
import re

DOCUMENTATION = r"""
name: fleet_access
short_description: The vLLM ports' allow list (from the inventory) and the nftables ruleset enforcing it
description:
  - C(fleet_access_sources) lists who may connect (gateways, else workstations, plus extra sources).
  - C(fleet_access_lookup_names), C(fleet_access_parse_lookup), C(fleet_access_unresolved) resolve names.
  - C(fleet_access_addresses) and C(fleet_access_ruleset) turn sources and resolved names into addresses and
    the nftables ruleset text; C(fleet_access_source_problems) validates vllm_allowed_sources.
"""

TABLE_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
LABEL_PATTERN = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")


def _network(value):
    """An ip_network for an address or CIDR network (IPv4-mapped IPv6 becomes IPv4), else None.

    Raises ValueError for a network with host bits set (10.1.2.3/24): the caller says which network was meant.
    """
    if isinstance(value, bool) or not isinstance(value, (str, ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return None
    text = str(value).strip()
    if "%" in text and "/" not in text:
        text = text.split("%", 1)[0]  # an IPv6 scope (fe80::1%eth0): packets carry no scope
    if not text or not re.fullmatch(r"[0-9A-Fa-f:./]+", text):
        return None
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError as error:
        if "has host bits set" in str(error):
            raise
        return None
    if network.version == 6 and network.prefixlen == 128 and network.network_address.ipv4_mapped:
        return ipaddress.ip_network(network.network_address.ipv4_mapped)
    return network


def _is_address(value):
    try:
        return _network(value) is not None
    except ValueError:
        return True  # a network, badly written: not a name (the validation says so)


def _is_name(value):
    """A host name (RFC 1123 labels, '_' tolerated as in inventory names), not something shaped like an IP."""
    if not isinstance(value, str):
        return False
    name = value[:-1] if value.endswith(".") else value
    if not name or len(name) > 253:
        return False
    labels = name.split(".")
    if not all(LABEL_PATTERN.match(label) for label in labels):
        return False
    return not labels[-1].isdigit()  # 10.0.0.256 and 1.2.3 are broken addresses, not names


def _unique(values):
    seen, result = set(), []
    for value in values:
        if value not in seen:
            seen.add(value)
            result.append(value)
    return result


def _printable(value):
    return "".join(char if char.isprintable() and char not in "\r\n" else "?" for char in str(value))


def fleet_access_source_problems(sources, variable="vllm_allowed_sources"):
    """One message per entry that is not an IP address, a CIDR network or a host name (empty list: fine)."""
    if sources is None:
        return []
    if isinstance(sources, (str, bytes, dict)) or not isinstance(sources, (list, tuple)):
        return [f"{variable} must be a list of IP addresses, networks (CIDR) or host names, e.g. "
                f"['10.0.5.0/24', 'monitoring.example.com']; got {_printable(repr(sources))[:80]}."]
    problems = []
    for index, entry in enumerate(sources):
        shown = _printable(repr(entry))[:80]
        where = f"{variable}[{index}] ({shown})"
        if isinstance(entry, bool) or not isinstance(entry, str) or not entry.strip():
            problems.append(f"{where} is not an IP address, a network or a host name. Fix: write it as a string, "
                            f"e.g. '10.0.5.7', '10.0.5.0/24', 'fd00:5::/64' or 'monitoring.example.com'.")
            continue
        try:
            network = _network(entry)
        except ValueError:
            fixed = ipaddress.ip_network(entry.strip(), strict=False)
            problems.append(f"{where} has host bits set, so it names neither one address nor a network. Fix: write "
                            f"the network '{fixed}', or the single address '{entry.strip().split('/')[0]}'.")
            continue
        if network is not None:
            if network.prefixlen == 0:
                problems.append(f"{where} allows every address: the vLLM ports would be open to all. Fix: list "
                                f"the networks of your clients, or set vllm_firewall: false to turn the filter off.")
            continue
        if entry != entry.strip() or not _is_name(entry) or entry.startswith("-"):
            problems.append(f"{where} is neither an IP address, a network (CIDR) nor a host name. Fix: use e.g. "
                            f"'10.0.5.7', '10.0.5.0/24', 'fd00:5::/64' or 'monitoring.example.com' (no port, "
                            f"no scheme, no spaces).")
    return problems


def _host_address(hostvars, host):
    try:
        values = hostvars[host]
    except (KeyError, TypeError):
        return str(host)
    address = values.get("ansible_host") if hasattr(values, "get") else None
    return str(address).strip() if address not in (None, "") else str(host)


def fleet_access_sources(groups, hostvars, extra=None):
    """The sources allowed to connect to the vLLM ports, as addresses or names (order kept, no duplicates).

    Behind gateways only the gateways talk to the servers; without one, the workstations do. Each inventory
    host is its ansible_host when set, else its inventory name. `extra` (vllm_allowed_sources) is appended.
    """
    groups = groups or {}
    gateways = list(groups.get("gateways") or [])
    clients = gateways if gateways else list(groups.get("workstations") or [])
    sources = [_host_address(hostvars, host) for host in clients]
    sources += [str(entry).strip() for entry in (extra or [])]
    return _unique(source for source in sources if source)


def fleet_access_lookup_names(sources):
    """The sources that are names, to be resolved on the GPU host (sorted, unique)."""
    return sorted({source for source in sources or [] if not _is_address(source)})


def fleet_access_parse_lookup(text):
    """Parse the role's lookup output: '== NAME' lines, each followed by `getent ahosts NAME` lines.

    Returns {name: sorted unique addresses}; a name with no address lines maps to [].
    """
    resolved, name = {}, None
    for line in (text or "").splitlines():
        if line.startswith("== "):
            name = line[3:].strip()
            resolved.setdefault(name, [])
            continue
        fields = line.split()
        if name is None or not fields:
            continue
        try:
            network = _network(fields[0])
        except ValueError:
            network = None
        if network is not None and network.num_addresses == 1:
            address = str(network.network_address)
            if address not in resolved[name]:
                resolved[name].append(address)
    return {key: sorted(values, key=lambda a: (ipaddress.ip_address(a).version, ipaddress.ip_address(a)))
            for key, values in resolved.items()}


def fleet_access_unresolved(sources, resolved):
    """The names among `sources` that resolved to no address (they are left out of the allow list)."""
    resolved = resolved or {}
    return [name for name in fleet_access_lookup_names(sources) if not resolved.get(name)]


def _networks_of(source, resolved):
    try:
        network = _network(source)
    except ValueError:
        return []  # refused by the validation; never widened here
    if network is not None:
        return [network]
    networks = []
    for address in (resolved or {}).get(source) or []:
        try:
            found = _network(address)
        except ValueError:
            found = None
        if found is not None:
            networks.append(found)
    return networks


def fleet_access_addresses(sources, resolved=None):
    """{"ipv4": [...], "ipv6": [...]}: every allowed address and network, overlaps merged, sorted."""
    networks = [network for source in sources or [] for network in _networks_of(source, resolved)]
    result = {}
    for version, key in ((4, "ipv4"), (6, "ipv6")):
        same = [network for network in networks if network.version == version]
        merged = ipaddress.collapse_addresses(same)
        result[key] = [str(network.network_address) if network.num_addresses == 1 else str(network)
                       for network in merged]
    return result


def _ports(values):
    ports = set()
    for value in values or []:
        if isinstance(value, bool):
            raise ValueError(f"fleet_access_ruleset: port {value!r} is not a TCP port")
        try:
            port = int(str(value).strip())
        except ValueError:
            raise ValueError(f"fleet_access_ruleset: port {value!r} is not a TCP port") from None
        if not 1 <= port <= 65535:
            raise ValueError(f"fleet_access_ruleset: port {value!r} is not a TCP port")
        ports.add(port)
    return sorted(ports)


def _set_block(name, kind, elements, interval):
    lines = [f"\tset {name} {{", f"\t\ttype {kind}"]
    if interval:
        lines.append("\t\tflags interval")
    if elements:
        lines.append("\t\telements = {")
        lines.append(",\n".join(f"\t\t\t{element}" for element in elements))
        lines.append("\t\t}")
    lines.append("\t}")
    return lines


def fleet_access_ruleset(spec):
    """The nftables ruleset (text for `nft -f`) that lets only loopback and the allowed sources reach the ports.

    spec: {table: name (default claude_vllm_fleet), ports: [8000, ...], sources: [...], resolved: {name: [...]},
    what: the ports' kind, naming the set and the chain (default vllm: set vllm_ports, chain vllm_access),
    peer_ports: [29501, ...] and peers: [...] (multi-node instances: the leader's rendezvous ports, which only
    loopback and the other hosts of its node group reach; left out of the text when there are none)}.
    Its own `inet` table, replaced atomically on every load (declare, delete, define in one transaction), so a
    reload never leaves the ports open and never touches anyone else's tables. Connections to other ports are
    not looked at. Loopback covers this host's own addresses (packets to them arrive on lo). Everything else
    to the ports is refused with a TCP reset (the client sees "connection refused" at once) and counted.
    """
    spec = spec or {}
    table = spec.get("table") or "claude_vllm_fleet"
    if not isinstance(table, str) or not TABLE_PATTERN.match(table):
        raise ValueError(f"fleet_access_ruleset: table name {table!r} must be letters, digits and '_'")
    what = spec.get("what") or "vllm"
    if not isinstance(what, str) or not TABLE_PATTERN.match(what):
        raise ValueError(f"fleet_access_ruleset: 'what' {what!r} must be letters, digits and '_'")
    ports = _ports(spec.get("ports"))
    sources = list(spec.get("sources") or [])
    resolved = spec.get("resolved") or {}
    addresses = fleet_access_addresses(sources, resolved)

    lines = ["# Only loopback (this host's own addresses included) and these sources reach TCP ports "
             + (", ".join(str(port) for port in ports) or "(none)") + ";",
             "# any other connection to them is refused (TCP reset). Other ports are not filtered here.",
             "# Sources and the addresses they stand for (names resolved on this host):"]
    if not sources:
        lines.append("#   (none: loopback only)")
    for source in sources:
        found = [str(network) if network.num_addresses > 1 else str(network.network_address)
                 for network in _networks_of(source, resolved)]
        lines.append(f"#   {_printable(source)}: " + (", ".join(found) if found else "does not resolve here: left out"))
    lines += [f"table inet {table}", f"delete table inet {table}", f"table inet {table} {{"]
    lines += _set_block(f"{what}_ports", "inet_service", [str(port) for port in ports], interval=False)
    lines += _set_block("allowed_ipv4", "ipv4_addr", addresses["ipv4"], interval=True)
    lines += _set_block("allowed_ipv6", "ipv6_addr", addresses["ipv6"], interval=True)
    peer_ports = [port for port in _ports(spec.get("peer_ports")) if port not in ports]
    peers = list(spec.get("peers") or [])
    peer_addresses = fleet_access_addresses(peers, resolved)
    if peer_ports:
        lines += _set_block(f"{what}_peer_ports", "inet_service", [str(port) for port in peer_ports], interval=False)
        lines += _set_block("peers_ipv4", "ipv4_addr", peer_addresses["ipv4"], interval=True)
        lines += _set_block("peers_ipv6", "ipv6_addr", peer_addresses["ipv6"], interval=True)
    lines += ["\tchain input {",
              "\t\ttype filter hook input priority filter; policy accept;",
              f"\t\ttcp dport @{what}_ports jump {what}_access"]
    if peer_ports:
        lines.append(f"\t\ttcp dport @{what}_peer_ports jump {what}_peer_access")
    lines += ["\t}",
              f"\tchain {what}_access {{",
              '\t\tiif "lo" accept',
              "\t\tip saddr @allowed_ipv4 accept",
              "\t\tip6 saddr @allowed_ipv6 accept",
              "\t\tcounter reject with tcp reset",
              "\t}"]
    if peer_ports:
        lines += [f"\tchain {what}_peer_access {{",
                  '\t\tiif "lo" accept',
                  "\t\tip saddr @peers_ipv4 accept",
                  "\t\tip6 saddr @peers_ipv6 accept",
                  "\t\tcounter reject with tcp reset",
                  "\t}"]
    lines.append("}")
    if peer_ports:
        # The comment block above the table names them too (what `nft list` does not show).
        header = ["# Multi-node rendezvous ports " + ", ".join(str(port) for port in peer_ports)
                  + ": only loopback and the node group's other hosts reach them:"]
        for peer in peers:
            found = [str(network) if network.num_addresses > 1 else str(network.network_address)
                     for network in _networks_of(peer, resolved)]
            header.append(f"#   {_printable(peer)}: " + (", ".join(found) if found else "does not resolve here: left out"))
        index = lines.index(f"table inet {table}")
        lines[index:index] = header
    return "\n".join(lines) + "\n"


class FilterModule:
    def filters(self):
        return {
            "fleet_access_sources": fleet_access_sources,
            "fleet_access_lookup_names": fleet_access_lookup_names,
            "fleet_access_parse_lookup": fleet_access_parse_lookup,
            "fleet_access_unresolved": fleet_access_unresolved,
            "fleet_access_addresses": fleet_access_addresses,
            "fleet_access_ruleset": fleet_access_ruleset,
            "fleet_access_source_problems": fleet_access_source_problems,
        }
