# -*- coding: utf-8 -*-
"""HAProxy's runtime API (the `stats socket ... level admin` UNIX socket), shared by the haproxy_map and
haproxy_server modules; Ansible bundles it into each module that imports it."""

from __future__ import annotations

import socket

SOCKET_MISSING = ("HAProxy runtime socket {} does not exist. Fix: run the gateway role on this host "
                  "(it enables the admin socket), or set socket.")


class RuntimeAPI(object):
    """One command per connection, as HAProxy's non-interactive runtime API expects."""

    def __init__(self, path, timeout=10, encoding="utf-8"):
        self.path = path
        self.timeout = timeout
        self.encoding = encoding  # of the command line sent; the answer is read as UTF-8

    def command(self, line):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
            sock.sendall((line + "\n").encode(self.encoding))
            chunks = []
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                chunks.append(data)
        finally:
            sock.close()
        return b"".join(chunks).decode("utf-8", "replace")
