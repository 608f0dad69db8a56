#!/usr/bin/env python3
"""Client load for the rolling-upgrade test: POST /v1/messages through the gateway until told to stop.

    request_loop.py BASE_URL MODEL TOKEN_FILE STOP_FILE MAX_SECONDS [THREADS] [PAUSE]

THREADS workers (default 2) each send Anthropic-format requests, PAUSE seconds apart (default 0.5: on
a 2-core test machine back-to-back requests starve the restarting server's start-up), every other one streamed,
the way Claude Code does, until STOP_FILE exists or MAX_SECONDS pass (the bound). Even-numbered workers send
a session header of their own, as Claude Code does (X-Claude-Code-Session-Id: the gateway keeps them on one
server), odd ones none (the gateway's least-connections backend): a drain covers both paths. A request counts as
failed on any HTTP status but 200, a network error, or a reply (or stream) without the model's text.
Prints one JSON object: total, failed, the first failures, the longest time between two successful
answers (a server out of service must not leave a gap), and the start and end times.
"""

import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request


def one_request(base, model, token, stream, session=None):
    payload = {"model": model, "max_tokens": 32, "stream": stream,
               "messages": [{"role": "user", "content": "Reply with one short sentence."}]}
    request = urllib.request.Request(base + "/v1/messages", data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "anthropic-version": "2023-06-01",
                                              "Authorization": "Bearer " + token})
    if session:
        request.add_header("X-Claude-Code-Session-Id", session)
    with urllib.request.urlopen(request, timeout=60) as answer:
        body = answer.read().decode("utf-8", "replace")
        if answer.status != 200:
            raise RuntimeError("HTTP {}".format(answer.status))
    if stream:
        if "message_stop" not in body or "text_delta" not in body:
            raise RuntimeError("incomplete stream: {!r}".format(body[-200:]))
    else:
        text = "".join(part.get("text", "") for part in json.loads(body).get("content", []))
        if not text:
            raise RuntimeError("no text: {!r}".format(body[:200]))


def main():
    base, model, token_file, stop_file, max_seconds = sys.argv[1:6]
    threads = int(sys.argv[6]) if len(sys.argv) > 6 else 2
    pause = float(sys.argv[7]) if len(sys.argv) > 7 else 0.5
    token = open(token_file).read().strip()
    deadline = time.time() + float(max_seconds)
    lock = threading.Lock()
    stats = {"total": 0, "failed": 0, "failures": [], "successes": []}

    def worker(number):
        stream = bool(number % 2)
        session = None if number % 2 else "request-loop-{}-{}".format(os.getpid(), number)
        while time.time() < deadline and not os.path.exists(stop_file):
            stream = not stream
            try:
                one_request(base, model, token, stream, session)
                error = None
            except urllib.error.HTTPError as exc:
                error = "HTTP {} {}".format(exc.code, exc.read(200).decode("utf-8", "replace"))
            except Exception as exc:  # a failed request is what is counted, whatever the cause
                error = "{}: {}".format(type(exc).__name__, exc)
            with lock:
                stats["total"] += 1
                if error:
                    stats["failed"] += 1
                    if len(stats["failures"]) < 20:
                        stats["failures"].append("{:.1f} {}".format(time.time(), error))
                else:
                    stats["successes"].append(time.time())
            time.sleep(pause)

    started = time.time()
    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    ends = sorted(stats["successes"])
    gaps = [b - a for a, b in zip(ends, ends[1:])]
    print(json.dumps({
        "total": stats["total"], "failed": stats["failed"], "failures": stats["failures"],
        "max_gap_s": round(max(gaps), 2) if gaps else None,
        "started": round(started, 1), "ended": round(time.time(), 1),
        "stopped_by": "stop file" if os.path.exists(stop_file) else "time limit",
    }))


if __name__ == "__main__":
    main()
