#!/usr/bin/env python3
"""Which requests the real Claude Code CLI sends under each model tier (not a test): prints a table.

    .venv/bin/python bench/tier_requests.py [--modes p,p-haiku,p-tools,p-compact,interactive,interactive-opus]
        [--claude PATH] [--max-output-tokens N] [--json FILE] [--bodies DIR] [--verbose]

A recording server on 127.0.0.1 speaks enough of the Anthropic Messages API for the CLI to run (POST
/v1/messages streamed or not, /v1/messages/count_tokens; anything else 404). It answers with a short fixed
text, except: a conversation holding the marker of TOOLS_PROMPT gets scripted tool calls (Bash `ls`, then an
Agent call for the Explore subagent, then one for a general-purpose subagent with `model: haiku`), and auto
mode's safety classifier gets an "allow" verdict. The CLI runs with a fresh HOME whose ~/.claude/settings.json
is the claude_code role's except that each tier has its own served name (tier-opus, tier-sonnet, tier-haiku),
so each request's `model` tells which tier the CLI chose for it; ~/.claude.json answers the onboarding and
trust dialogs. Modes, each with CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC "1" (the fleet's) and without it:
p (`claude -p PROMPT`), p-haiku (`claude -p --model haiku PROMPT`), p-tools (`claude -p TOOLS_PROMPT`),
p-compact (`claude -p PROMPT`, then `claude -p --continue /compact`), interactive and interactive-opus
(`claude` or `claude --model opus` on a pseudo-terminal: PROMPT, then TOOLS_PROMPT, each typed with Enter,
permission dialogs answered Yes, then /exit). For each request: path, tier, max_tokens, tools sent (count),
stream, the server's reply, its purpose (classified from the start of the system prompt after the identity
line, or of the last user message), and the headers of interest.

Python standard library only. The CLI is the role's pinned version: `claude` on PATH if it is that
version, else the test cache's install (FLEET_CACHE_DIR/claude-code-<version>, which tools/fleet.py bench
affinity installs with npm), else --claude. Results: docs/claude-code-tier-requests.md.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import REPO, header  # noqa: E402

REPLY = "Tier probe reply."
TIERS = {"tier-opus": "opus", "tier-sonnet": "sonnet", "tier-haiku": "haiku"}
PROMPT = "Reply with one short sentence."
# A prompt with this marker gets scripted tool calls from the server (in the conversation that has the tools):
# first Bash `ls`, after its result an Agent call (subagent Explore), after that the fixed text.
TOOLS_PROMPT = "TIER-PROBE tools: list the files with Bash, then ask an Explore agent what is here."
SUBAGENT_PROMPT = "List the files in the current folder and say what they are."
HEADERS = ("anthropic-beta", "x-app", "user-agent", "x-claude-code-session-id", "anthropic-version")
MODES = ("p", "p-haiku", "p-tools", "p-compact", "interactive", "interactive-opus")

# Purposes seen with CLI 2.1.331, recognised from the start (600 characters) of the system prompt after the
# identity line, or of the last user message. The first match wins; the patterns are lower-case substrings.
PURPOSES = (
    ("auto-mode classifier", "system", ("you are a security monitor",)),
    ("session title", "system", ("you are naming a coding session",)),
    ("compaction", "user", ("summary of the conversation", "detailed summary")),
    ("subagent Explore", "system", ("you are a file search specialist",)),
    ("subagent", "system", ("you are an agent for claude code",)),
    ("main conversation", "system", ("you are an agent working with the user",)),
)


def tier_of(model: str) -> str:
    return TIERS.get(model, f"other:{model}")


def text_of(content) -> str:
    """The text of a message's or system prompt's content (a string or a list of blocks)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(block.get("text", "") for block in content if isinstance(block, dict)
                        and block.get("type", "text") == "text")
    return ""


def system_text(body: dict) -> str:
    """The system prompt without Claude Code's billing header and identity line (the same on every request)."""
    system = body.get("system")
    blocks = system if isinstance(system, list) else [{"type": "text", "text": system or ""}]
    kept = [text_of([block]) for block in blocks
            if not text_of([block]).startswith("x-anthropic-billing-header")]
    if len(kept) > 1 and kept[0].startswith("You are") and len(kept[0]) < 200:
        kept = kept[1:]  # the identity line ("You are Claude Code, ..."): the next block says what it is for
    return " ".join(kept).strip()


def last_user_text(body: dict) -> str:
    users = [message for message in body.get("messages", []) if message.get("role") == "user"]
    if not users:
        return ""
    content = users[-1].get("content")
    if isinstance(content, list):  # the typed text, not the <system-reminder> blocks around it
        texts = [text_of([block]) for block in content if isinstance(block, dict)]
        plain = [text for text in texts if text and not text.lstrip().startswith("<system-reminder>")]
        return (plain[-1] if plain else " ".join(texts)).strip()
    return text_of(content).strip()


def classify(body: dict) -> str:
    """The purpose of one Messages API request of Claude Code, from its system prompt and last user message."""
    fields = {"system": system_text(body).lower(), "user": last_user_text(body).lower()}
    for purpose, field, needles in PURPOSES:
        if any(needle in fields[field][:600] for needle in needles):
            return purpose
    return "unknown"


def scripted_tool_call(body: dict) -> dict | None:
    """The tool call the server answers with: None (the fixed text) unless the conversation has the marker."""
    messages = body.get("messages", [])
    if "TIER-PROBE tools" not in json.dumps(messages) or not body.get("tools"):
        return None
    names = {tool.get("name") for tool in body["tools"]}
    done = sum(1 for message in messages if isinstance(message.get("content"), list)
               for block in message["content"] if isinstance(block, dict) and block.get("type") == "tool_result")
    if done == 0 and "Bash" in names:
        return {"name": "Bash", "input": {"command": "ls", "description": "List files in current directory"}}
    if done == 1 and "Agent" in names:
        return {"name": "Agent", "input": {"description": "Describe the folder", "prompt": SUBAGENT_PROMPT,
                                           "subagent_type": "Explore"}}
    if done == 2 and "Agent" in names:  # the model may ask for a haiku agent itself: the tool's `model` enum
        return {"name": "Agent", "input": {"description": "Describe the folder quickly", "prompt": SUBAGENT_PROMPT,
                                           "subagent_type": "general-purpose", "model": "haiku"}}
    return None


def summarize(path: str, headers, body: dict) -> dict:
    tools = body.get("tools") or []
    return {"path": path, "model": body.get("model", ""), "tier": tier_of(body.get("model", "")),
            "max_tokens": body.get("max_tokens"), "tools": len(tools), "stream": bool(body.get("stream")),
            "thinking": (body.get("thinking") or {}).get("type", ""),
            "messages": len(body.get("messages", [])), "prompt_chars": len(json.dumps(body)),
            "purpose": classify(body) if path.startswith("/v1/messages") and "count_tokens" not in path
            else "count tokens",
            "system": system_text(body)[:80], "user": last_user_text(body)[:80],
            "headers": {name: headers.get(name, "") for name in HEADERS if headers.get(name)}}


# ------------------------------------------------------------------------------------------- the server
class Recorder(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.records: list[dict] = []
        self.others: list[str] = []
        self.bodies: Path | None = None
        self.calls = 0
        self.saved = 0
        self.approvals = 0
        self.pending: dict[str, list] = {}  # tool calls sent whose results have not come back: [sent at, presses]
        self.last = time.monotonic()
        self.lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def take(self) -> tuple[list[dict], list[str]]:
        with self.lock:
            records, others, self.records, self.others = self.records, self.others, [], []
            self.pending.clear()
        return records, others


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _not_found(self) -> None:
        with self.server.lock:
            self.server.others.append(f"{self.command} {self.path}")
        body = b'{"type":"error","error":{"type":"not_found_error","message":"not found"}}'
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_PUT = do_DELETE = _not_found

    def _json(self, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if path not in ("/v1/messages", "/v1/messages/count_tokens"):
            self._not_found()
            return
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {}
        record = summarize(path, self.headers, body)
        with self.server.lock:
            self.server.records.append(record)
            self.server.last = time.monotonic()
            if self.server.bodies:
                self.server.saved += 1
                (self.server.bodies / f"{self.server.saved:03d}-{body.get('model', '')}.json").write_bytes(raw)
        if path.endswith("count_tokens"):
            self._json({"input_tokens": max(1, len(raw) // 4)})
            return
        model, usage = body.get("model", ""), {"input_tokens": max(1, len(raw) // 4), "output_tokens": 4}
        message = {"id": "msg_tierprobe", "type": "message", "role": "assistant", "model": model,
                   "stop_reason": None, "stop_sequence": None}
        results = {block.get("tool_use_id") for message in body.get("messages", [])
                   if isinstance(message.get("content"), list) for block in message["content"]
                   if isinstance(block, dict) and block.get("type") == "tool_result"}
        call = scripted_tool_call(body)
        if system_text(body).startswith("You are a security monitor"):  # auto mode's classifier: allow
            call, reply = None, "<block>no</block>"
        else:
            reply = REPLY
        with self.server.lock:
            record["reply"] = (f"tool_use {call['name']}" if call else
                                                "verdict allow" if "block" in reply else "text")
            self.server.calls += 1
            number = self.server.calls
            for tool_id in results:
                self.server.pending.pop(tool_id, None)
            if call:
                self.server.pending[f"toolu_tierprobe{number:04d}"] = [time.monotonic(), 0]
        stop = "tool_use" if call else "end_turn"
        if call:
            block = {"type": "tool_use", "id": f"toolu_tierprobe{number:04d}", "name": call["name"],
                     "input": call["input"]}
            start = dict(block, input={})
            delta = {"type": "input_json_delta", "partial_json": json.dumps(call["input"])}
        else:
            block, start = {"type": "text", "text": reply}, {"type": "text", "text": ""}
            delta = {"type": "text_delta", "text": reply}
        if not body.get("stream"):
            self._json(dict(message, content=[block], stop_reason=stop, usage=usage))
            return
        events = [("message_start", {"type": "message_start",
                                     "message": dict(message, content=[], usage=dict(usage, output_tokens=1))}),
                  ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": start}),
                  ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}),
                  ("content_block_stop", {"type": "content_block_stop", "index": 0}),
                  ("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                                     "usage": {"output_tokens": usage["output_tokens"]}}),
                  ("message_stop", {"type": "message_stop"})]
        data = "".join(f"event: {name}\ndata: {json.dumps(payload)}\n\n" for name, payload in events).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


# ------------------------------------------------------------------------------------------- the CLI
def pinned_version() -> str:
    text = (REPO / "roles/claude_code/defaults/main.yml").read_text()
    return re.search(r'^claude_code_version:\s*"?([^"\s]+)"?', text, re.M).group(1)


def find_claude(explicit: str | None) -> Path:
    version = pinned_version()
    if explicit:
        return Path(explicit)
    on_path = shutil.which("claude")
    if on_path and version in subprocess.run([on_path, "--version"], capture_output=True, text=True).stdout:
        return Path(on_path)
    cache = Path(os.environ.get("FLEET_CACHE_DIR") or Path.home() / ".cache" / "claude-vllm-fleet")
    cached = cache / f"claude-code-{version}" / "bin" / "claude"
    if cached.exists():
        return cached
    raise SystemExit(f"no Claude Code {version} found: not `claude` on PATH, not {cached}; install it with "
                     f"`npm install -g --prefix {cached.parent.parent} @anthropic-ai/claude-code@{version}` "
                     f"or pass --claude PATH")


def settings(base_url: str, nonessential_off: bool, max_output_tokens: int = 32000) -> dict:
    """The claude_code role's settings.json, with a served name of its own per tier."""
    env = {"ANTHROPIC_BASE_URL": base_url,
           "ANTHROPIC_DEFAULT_OPUS_MODEL": "tier-opus",
           "ANTHROPIC_DEFAULT_SONNET_MODEL": "tier-sonnet",
           "ANTHROPIC_DEFAULT_HAIKU_MODEL": "tier-haiku",
           "API_TIMEOUT_MS": "3000000",
           "CLAUDE_CODE_ATTRIBUTION_HEADER": "0",
           "CLAUDE_CODE_MAX_OUTPUT_TOKENS": str(max_output_tokens),
           "CLAUDE_CODE_MAX_CONTEXT_TOKENS": "65536",
           "ANTHROPIC_AUTH_TOKEN": "tier-probe-token"}
    if nonessential_off:
        env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] = "1"
    return {"model": "sonnet", "env": env}


def fresh_home(work: Path, name: str, base_url: str, nonessential_off: bool,
               max_output_tokens: int = 32000) -> tuple[Path, Path]:
    """A HOME with the fleet's settings and the onboarding and trust dialogs already answered; its project."""
    home = work / name
    project = home / "project"
    (home / ".claude").mkdir(parents=True)
    project.mkdir()
    (home / ".claude" / "settings.json").write_text(json.dumps(settings(base_url, nonessential_off, max_output_tokens),
                                                                  indent=2))
    state = {"hasCompletedOnboarding": True, "lastOnboardingVersion": pinned_version(), "numStartups": 1,
             "theme": "dark", "bypassPermissionsModeAccepted": False, "hasSeenTasksHint": True,
             "projects": {str(project): {"hasTrustDialogAccepted": True, "hasCompletedProjectOnboarding": True,
                                         "projectOnboardingSeenCount": 1, "allowedTools": []}},
             "customApiKeyResponses": {"approved": [], "rejected": []}}
    (home / ".claude.json").write_text(json.dumps(state, indent=2))
    return home, project


def cli_env(home: Path) -> dict:
    """The CLI's whole environment: its HOME, and TMPDIR in it (subagents' transcripts go to $TMPDIR/claude-UID)."""
    (home / "tmp").mkdir(exist_ok=True)
    return {"HOME": str(home), "TMPDIR": str(home / "tmp"), "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8", "TERM": "xterm-256color"}


def run_print(claude: Path, home: Path, project: Path, extra: list[str]) -> str:
    result = subprocess.run([str(claude), "-p", *extra], cwd=project, env=cli_env(home),
                            capture_output=True, text=True, timeout=300)
    return f"rc={result.returncode} {(result.stdout + result.stderr).strip()[-200:]!r}"


class Terminal:
    """The CLI on a pseudo-terminal: what it printed so far (escape sequences dropped), keys typed."""

    def __init__(self, argv: list[str], cwd: Path, env: dict):
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        self.process = subprocess.Popen(argv, cwd=cwd, env=env, stdin=slave, stdout=slave, stderr=slave,
                                        start_new_session=True, close_fds=True)
        os.close(slave)
        self.raw = b""

    def read(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self.master], [], [], min(left, 0.2))
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:
                    return
                if not chunk:
                    return
                self.raw += chunk

    @property
    def screen(self) -> str:
        text = self.raw.decode(errors="replace")
        return re.sub(r"\x1b\[[0-9;?<>=]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)|\x1b[()][0-9A-B]|\x1b[=>78]",
                      "", text)

    def wait_for(self, needle: str, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.read(0.5)
            if re.sub(r"\s", "", needle) in re.sub(r"\s", "", self.screen):
                return True
            if self.process.poll() is not None:
                return False
        return False

    def type(self, text: str) -> None:
        for char in text:  # one key at a time, as a person types: pasted text is handled differently
            os.write(self.master, char.encode())
            time.sleep(0.02)

    def close(self) -> str:
        for keys in ("/exit", "\x03", "\x03"):
            if self.process.poll() is not None:
                break
            if keys == "/exit":
                self.type(keys)
                self.read(0.5)
                self.type("\r")
            else:
                os.write(self.master, keys.encode())
            self.read(3)
        how = "exited" if self.process.poll() is not None else "killed"
        if how == "killed":
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        os.close(self.master)
        return how


def approve(terminal: Terminal, server: Recorder) -> None:
    """Answer Yes to a permission dialog: a tool call the server sent whose result has not come back within
    2.5 s is waiting for one ("No" is selected, "Yes" is the next option). The screen cannot tell: the TUI
    redraws only the characters that changed, so a second dialog like the first leaves no text to find."""
    now = time.monotonic()
    with server.lock:
        waiting = [tool_id for tool_id, (sent, presses) in server.pending.items() if now - sent > 2.5 * (presses + 1)
                   and presses < 2]
        for tool_id in waiting:
            server.pending[tool_id][1] += 1
    for _ in waiting[:1]:
        server.approvals += 1
        os.write(terminal.master, b"\x1b[B")
        terminal.read(0.3)
        os.write(terminal.master, b"\r")


def settle(terminal: Terminal, server: Recorder, quiet: float, longest: float) -> None:
    """Read the screen until no request has come for `quiet` seconds (at most `longest`)."""
    deadline = time.monotonic() + longest
    started = time.monotonic()
    while time.monotonic() < deadline and (time.monotonic() - max(server.last, started) < quiet or server.pending):
        terminal.read(0.5)
        approve(terminal, server)


def turn(terminal: Terminal, server: Recorder, prompt: str, expected: str) -> bool:
    """Type a prompt and Enter; approve what auto mode asks about; True once `expected` shows."""
    seen, answered = len(terminal.screen), False
    terminal.type(prompt)
    terminal.read(0.5)
    terminal.type("\r")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not answered:
        terminal.read(0.5)
        approve(terminal, server)
        answered = re.sub(r"\s", "", expected).lower() in re.sub(r"\s", "", terminal.screen[seen:]).lower()
    settle(terminal, server, 6, 60)  # what the CLI sends after a turn (titles, subagents) arrives now
    return answered


def run_interactive(claude: Path, home: Path, project: Path, server: Recorder, verbose: bool,
                    extra: list[str]) -> str:
    """Start `claude [EXTRA]` on a pseudo-terminal; type a plain prompt, then the tools prompt; then /exit."""
    terminal = Terminal([str(claude), *extra], project, cli_env(home))
    notes = []
    try:
        notes.append("prompt shown" if terminal.wait_for("\u276f", 60) else "no prompt seen")
        settle(terminal, server, 4, 20)  # what the CLI sends at start-up arrives now
        for number, (prompt, expected) in enumerate(((PROMPT, REPLY), (TOOLS_PROMPT, REPLY))):
            notes.append(f"turn {number + 1} " + ("answered" if turn(terminal, server, prompt, expected)
                                                  else "not answered"))
    finally:
        notes.append(terminal.close())
        if server.bodies:
            (server.bodies / f"screen-{home.name}.txt").write_text(terminal.screen)
        if verbose:
            print(terminal.screen[-3000:])
    notes.append(f"{server.approvals} Yes keys for tool calls left waiting (permission dialogs)")
    server.approvals = 0
    return ", ".join(notes)


# ------------------------------------------------------------------------------------------- the table
def table(rows: list[tuple[str, str, dict]]) -> str:
    lines = [f"{'mode':<12} {'env':<14} {'#':>2} {'tier':<7} {'path':<26} {'max_tokens':>10} {'tools':>5} "
             f"{'stream':<6} {'reply':<14} {'purpose':<20} start of system prompt / last user message"]
    counters: dict[tuple[str, str], int] = {}
    for mode, env, record in rows:
        number = counters[(mode, env)] = counters.get((mode, env), 0) + 1
        start = record["system"][:40] + " / " + record["user"][:40]
        lines.append(f"{mode:<12} {env:<14} {number:>2} {record['tier']:<7} {record['path']:<26} "
                     f"{record['max_tokens']!s:>10} {record['tools']:>5} {record['stream']!s:<6} {record.get('reply', ''):<14} "
                     f"{record['purpose']:<20} {start!r}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claude", help="the claude binary (default: the role's pinned version, found)")
    parser.add_argument("--json", help="write every recorded request (with the raw headers of interest) here")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument("--max-output-tokens", type=int, default=32000,
                        help="CLAUDE_CODE_MAX_OUTPUT_TOKENS in settings.json (the role's value on a large context)")
    parser.add_argument("--bodies", help="write each request's whole body into this folder")
    parser.add_argument("--verbose", action="store_true", help="print the interactive screen at the end")
    args = parser.parse_args()
    claude = find_claude(args.claude)
    version = subprocess.run([str(claude), "--version"], capture_output=True, text=True).stdout.strip()
    header(f"Claude Code requests per model tier ({version}, {claude})")
    server = Recorder()
    if args.bodies:
        server.bodies = Path(args.bodies)
        server.bodies.mkdir(parents=True, exist_ok=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    rows, outcomes, dump = [], [], []
    with tempfile.TemporaryDirectory(prefix="tier-requests-") as work:
        for mode in args.modes.split(","):
            for nonessential_off in (True, False):
                env = "NONESSENTIAL=1" if nonessential_off else "(unset)"
                home, project = fresh_home(Path(work), f"{mode}-{int(nonessential_off)}", server.base_url,
                                           nonessential_off, args.max_output_tokens)
                server.take()
                started = time.monotonic()
                if mode.startswith("interactive"):
                    outcome = run_interactive(claude, home, project, server, args.verbose,
                                              ["--model", "opus"] if mode == "interactive-opus" else [])
                elif mode == "p-compact":  # one turn, then /compact on that conversation
                    outcome = (run_print(claude, home, project, [PROMPT]) + "; then "
                               + run_print(claude, home, project, ["--continue", "/compact"]))
                else:
                    outcome = run_print(claude, home, project, {"p": [PROMPT], "p-haiku": ["--model", "haiku", PROMPT],
                                                                "p-tools": [TOOLS_PROMPT]}[mode])
                records, others = server.take()
                outcomes.append(f"{mode:<12} {env:<14} {time.monotonic() - started:5.1f} s, {outcome}; "
                                f"{len(records)} messages requests; others: {', '.join(others) or 'none'}")
                rows += [(mode, env, record) for record in records]
                dump += [dict(record, mode=mode, env=env) for record in records]
    server.shutdown()
    print(table(rows))
    print("\nruns:")
    print("\n".join(outcomes))
    headers = sorted({f"{name}: {value}" for _, _, record in rows for name, value in record["headers"].items()
                      if name != "x-claude-code-session-id"})
    print("\nheaders seen:\n  " + "\n  ".join(headers))
    if args.json:
        Path(args.json).write_text(json.dumps(dump, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
