"""The settings merge module: user keys survive, conflicts go, writes are atomic and idempotent."""

from __future__ import annotations

import json
import os
import stat

import pytest

from conftest import load_plugin, make_searchable, run_module

settings_module = load_plugin("plugins/modules/claude_code_settings.py", "claude_code_settings_module")

MANAGED_ENV = {
    "ANTHROPIC_BASE_URL": "http://127.0.0.1:8000",
    "ANTHROPIC_DEFAULT_SONNET_MODEL": "Qwen3.5-27B",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
}
CONFLICTS = ["ANTHROPIC_API_KEY", "ANTHROPIC_CUSTOM_MODEL_OPTION"]
USER_FILE = {
    "permissions": {"allow": ["Bash(git status)"]},
    "hooks": {"Stop": [{"hooks": [{"type": "command", "command": "notify-send done"}]}]},
    "model": "Qwen3.5-27B",
    "env": {"MY_PROXY": "http://proxy:3128", "ANTHROPIC_API_KEY": "sk-old", "ANTHROPIC_BASE_URL": "http://x/v1"},
}


@pytest.fixture
def run(monkeypatch):
    def _run(check_mode=False, diff=False, **args):
        args.setdefault("model", "sonnet")
        args.setdefault("env", MANAGED_ENV)
        args.setdefault("secret_env", {"ANTHROPIC_AUTH_TOKEN": "s3cret-token"})
        args.setdefault("remove_env", CONFLICTS)
        return run_module(monkeypatch, settings_module.main, args, check_mode=check_mode, diff=diff)

    return _run


def write(path, data):
    path.write_text(json.dumps(data, indent=4) if not isinstance(data, str) else data)
    path.chmod(0o644)


def backups(path):
    return sorted(p for p in path.parent.iterdir() if p.name.startswith(path.name + ".") and p.name.endswith(".bak"))


def test_merge_keeps_user_keys_and_removes_conflicts():
    merged, updated, removed = settings_module.merge_settings(USER_FILE, "sonnet", MANAGED_ENV, {"T": "x"}, CONFLICTS)
    assert merged["permissions"] == USER_FILE["permissions"] and merged["hooks"] == USER_FILE["hooks"]
    assert merged["env"]["MY_PROXY"] == "http://proxy:3128"
    assert "ANTHROPIC_API_KEY" not in merged["env"]
    assert merged["model"] == "sonnet" and merged["env"]["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:8000"
    assert removed == ["env.ANTHROPIC_API_KEY"]
    assert set(updated) == {"model", "env.ANTHROPIC_BASE_URL", "env.ANTHROPIC_DEFAULT_SONNET_MODEL",
                            "env.CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "env.T"}
    assert USER_FILE["env"]["ANTHROPIC_API_KEY"] == "sk-old", "input must not be mutated"


def test_creates_file_with_mode_and_reports(run, tmp_path):
    path = tmp_path / "settings.json"
    result = run(path=str(path)).result
    assert result["changed"] and result["created"] and "backup_file" not in result
    data = json.loads(path.read_text())
    assert data["model"] == "sonnet" and data["env"]["ANTHROPIC_AUTH_TOKEN"] == "s3cret-token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_existing_file_merged_backed_up_and_idempotent(run, tmp_path):
    path = tmp_path / "settings.json"
    write(path, USER_FILE)
    original = path.read_text()
    first = run(path=str(path)).result
    assert first["changed"] and first["removed_keys"] == ["env.ANTHROPIC_API_KEY"]
    assert [b.read_text() for b in backups(path)] == [original]
    assert stat.S_IMODE(backups(path)[0].stat().st_mode) == 0o600
    data = json.loads(path.read_text())
    assert data["permissions"] == USER_FILE["permissions"] and data["env"]["MY_PROXY"] == "http://proxy:3128"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    second = run(path=str(path)).result
    assert not second["changed"] and second["updated_keys"] == [] and len(backups(path)) == 1


def test_semantically_equal_file_is_not_rewritten(run, tmp_path):
    path = tmp_path / "settings.json"
    run(path=str(path))
    data = json.loads(path.read_text())
    path.write_text(json.dumps(data, separators=(",", ":")))  # the user's own formatting
    path.chmod(0o600)
    before = path.read_text()
    assert not run(path=str(path)).result["changed"]
    assert path.read_text() == before


def test_mode_drift_alone_is_fixed(run, tmp_path):
    path = tmp_path / "settings.json"
    run(path=str(path))
    path.chmod(0o644)
    result = run(path=str(path)).result
    assert result["changed"] and stat.S_IMODE(path.stat().st_mode) == 0o600


def test_drift_of_one_managed_key_is_the_only_change(run, tmp_path):
    path = tmp_path / "settings.json"
    write(path, USER_FILE)
    run(path=str(path))
    data = json.loads(path.read_text())
    data["env"]["ANTHROPIC_BASE_URL"] = "http://127.0.0.1:8000/v1"
    path.write_text(json.dumps(data))
    result = run(path=str(path)).result
    assert result["changed"] and result["updated_keys"] == ["env.ANTHROPIC_BASE_URL"] and result["removed_keys"] == []


def test_check_mode_changes_nothing_and_diff_masks_the_secret(run, tmp_path):
    path = tmp_path / "settings.json"
    write(path, USER_FILE)
    before = path.read_text()
    result = run(path=str(path), check_mode=True, diff=True).result
    assert result["changed"]
    assert path.read_text() == before and backups(path) == []
    diff = result["diff"]
    assert '"ANTHROPIC_BASE_URL": "http://x/v1"' in diff["before"]
    assert '"ANTHROPIC_BASE_URL": "http://127.0.0.1:8000"' in diff["after"]
    assert "s3cret-token" not in json.dumps(result)
    assert "ANTHROPIC_API_KEY" not in diff["after"]


def test_check_mode_without_directory_reports_creation(run, tmp_path):
    result = run(path=str(tmp_path / "missing" / "settings.json"), check_mode=True).result
    assert result["changed"] and result["created"]
    assert not (tmp_path / "missing").exists()


def test_changed_secret_is_reported_without_its_value(run, tmp_path):
    path = tmp_path / "settings.json"
    run(path=str(path))
    result = run(path=str(path), diff=True, secret_env={"ANTHROPIC_AUTH_TOKEN": "rotated-token"}).result
    assert result["changed"] and result["updated_keys"] == ["env.ANTHROPIC_AUTH_TOKEN"]
    assert "rotated-token" not in json.dumps(result) and "s3cret-token" not in json.dumps(result)
    assert "(old)" in result["diff"]["before"] and "(new)" in result["diff"]["after"]


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"env": "oops"}'])
def test_invalid_file_fails_by_default_and_is_untouched(run, tmp_path, content):
    path = tmp_path / "settings.json"
    write(path, content)
    exited = run(path=str(path))
    assert exited.failed and str(path) in exited.result["msg"] and "claude_code_invalid_json" in exited.result["msg"]
    assert path.read_text() == content and backups(path) == []


def test_invalid_file_backup_and_replace(run, tmp_path):
    path = tmp_path / "settings.json"
    write(path, "{not json")
    result = run(path=str(path), on_invalid_json="backup_and_replace").result
    assert result["changed"]
    assert [b.read_text() for b in backups(path)] == ["{not json"]
    assert json.loads(path.read_text())["model"] == "sonnet"


def test_empty_file_is_treated_as_empty_settings(run, tmp_path):
    path = tmp_path / "settings.json"
    write(path, "")
    assert run(path=str(path)).result["changed"]
    assert json.loads(path.read_text())["env"]["ANTHROPIC_DEFAULT_SONNET_MODEL"] == "Qwen3.5-27B"


def test_atomic_write_leaves_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "settings.json"
    path.write_text('{"old": true}')

    def boom(*_args):
        raise OSError("disk full")

    monkeypatch.setattr(settings_module.os, "fsync", boom)
    dir_fd = os.open(tmp_path, os.O_RDONLY)
    try:
        with pytest.raises(OSError):
            settings_module.write_atomically(dir_fd, "settings.json", '{"new": true}\n', 0o600, -1, -1)
    finally:
        os.close(dir_fd)
    assert path.read_text() == '{"old": true}'
    assert [p.name for p in tmp_path.iterdir()] == ["settings.json"], "temporary file must be cleaned up"


def test_unknown_owner_fails(run, tmp_path):
    exited = run(path=str(tmp_path / "settings.json"), owner="no-such-user-xyz")
    assert exited.failed and "no-such-user-xyz" in exited.result["msg"]


# Links and other traps: the role runs this module as root inside users' homes.

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown and to play the attacked root")
NOBODY = None if os.geteuid() != 0 else __import__("pwd").getpwnam("nobody").pw_uid


def user_home(tmp_path):
    """A home owned by 'nobody' (the attacker in these tests), as /home/<user> is.

    The module works in it as 'nobody', so the directories above it must be searchable, as /home is.
    """
    make_searchable(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    os.chown(home, NOBODY, -1)
    return home


def user_claude_dir(tmp_path):
    """That home's ~/.claude, a real directory owned by 'nobody'."""
    claude = user_home(tmp_path) / ".claude"
    claude.mkdir()
    os.chown(claude, NOBODY, -1)
    return claude


@needs_root
def test_directory_is_created_with_owner_and_mode(run, tmp_path):
    home = user_home(tmp_path)
    result = run(path=str(home / ".claude" / "settings.json"), owner="nobody", directory_mode="0700").result
    info = (home / ".claude").stat()
    assert result["changed"] and stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == NOBODY
    (home / ".claude").chmod(0o755)
    assert run(path=str(home / ".claude" / "settings.json"), owner="nobody", directory_mode="0700").result["changed"]
    assert stat.S_IMODE((home / ".claude").stat().st_mode) == 0o700
    assert not run(path=str(home / ".claude" / "settings.json"), owner="nobody", directory_mode="0700").result["changed"]


@needs_root
def test_directory_link_to_a_root_directory_is_refused_and_not_chowned(run, tmp_path):
    home, victim = user_home(tmp_path), tmp_path / "etc"
    victim.mkdir(mode=0o755)
    (victim / "settings.json").write_text('{"root": "secret"}')
    (home / ".claude").symlink_to(victim)
    exited = run(path=str(home / ".claude" / "settings.json"), owner="nobody", directory_mode="0700", diff=True)
    assert exited.failed and "owned by uid 0" in exited.result["msg"] and "Fix:" in exited.result["msg"]
    assert "/.claude is a link into" in exited.result["msg"]
    assert "secret" not in json.dumps(exited.result)
    assert victim.stat().st_uid == 0 and stat.S_IMODE(victim.stat().st_mode) == 0o755
    assert json.loads((victim / "settings.json").read_text()) == {"root": "secret"}


@needs_root
def test_file_link_to_a_root_file_is_refused_unread(run, tmp_path):
    claude = user_claude_dir(tmp_path)
    secret = tmp_path / "shadow.json"
    secret.write_text('{"env": {"ROOT_ONLY": "do-not-leak"}}')
    secret.chmod(0o600)
    (claude / "settings.json").symlink_to(secret)
    exited = run(path=str(claude / "settings.json"), owner="nobody", directory_mode="0700", diff=True)
    assert exited.failed and "is a link into" in exited.result["msg"] and "owned by uid 0" in exited.result["msg"]
    assert "do-not-leak" not in json.dumps(exited.result)
    assert (claude / "settings.json").is_symlink() and backups(claude / "settings.json") == []
    assert secret.stat().st_uid == 0 and secret.read_text() == '{"env": {"ROOT_ONLY": "do-not-leak"}}'


@needs_root
def test_links_into_the_users_own_dotfiles_are_followed_and_kept(run, tmp_path):
    claude = user_claude_dir(tmp_path)
    dotfiles = claude.parent / "dotfiles" / "claude"
    dotfiles.mkdir(parents=True)
    for directory in (claude.parent / "dotfiles", dotfiles):
        os.chown(directory, NOBODY, -1)
    write(dotfiles / "settings.json", USER_FILE)
    os.chown(dotfiles / "settings.json", NOBODY, -1)
    link = claude / "settings.json"
    link.symlink_to("../dotfiles/claude/settings.json")
    result = run(path=str(link), owner="nobody", directory_mode="0700").result
    assert result["changed"] and result["followed_link_to"] == str(dotfiles / "settings.json")
    assert link.is_symlink(), "the user's link must stay a link"
    written = json.loads(link.read_text())
    assert written["permissions"] == USER_FILE["permissions"] and written["model"] == "sonnet"
    assert len(backups(dotfiles / "settings.json")) == 1
    assert not run(path=str(link), owner="nobody", directory_mode="0700").result["changed"]


@needs_root
def test_file_link_to_a_root_file_in_the_users_directory_is_refused(run, tmp_path):
    claude = user_claude_dir(tmp_path)
    planted = claude / "elsewhere.json"
    planted.write_text('{"env": {"ROOT_ONLY": "do-not-leak"}}')  # root-owned, in a directory the user owns
    (claude / "settings.json").symlink_to(planted)
    exited = run(path=str(claude / "settings.json"), owner="nobody", diff=True)
    assert exited.failed and "a file owned by uid 0" in exited.result["msg"]
    assert "do-not-leak" not in json.dumps(exited.result)


@needs_root
def test_a_claude_directory_linked_into_the_users_dotfiles_is_followed_and_kept(run, tmp_path):
    home = user_home(tmp_path)
    stowed = home / "dotfiles" / "claude"  # GNU stow's layout: ~/.claude -> dotfiles/claude
    stowed.mkdir(parents=True, mode=0o755)
    for directory in (home / "dotfiles", stowed):
        os.chown(directory, NOBODY, -1)
    (home / ".claude").symlink_to("dotfiles/claude")
    path = home / ".claude" / "settings.json"
    result = run(path=str(path), owner="nobody", directory_mode="0700").result
    assert result["changed"] and result["created"]
    assert result["followed_link_to"] == str(stowed / "settings.json")
    assert (home / ".claude").is_symlink() and stat.S_IMODE(stowed.stat().st_mode) == 0o755
    assert (stowed / "settings.json").stat().st_uid == NOBODY
    assert json.loads(path.read_text())["model"] == "sonnet"
    assert not run(path=str(path), owner="nobody", directory_mode="0700").result["changed"]


@needs_root
def test_hard_link_to_another_users_file_is_refused(run, tmp_path):
    claude = user_claude_dir(tmp_path)
    secret = claude / "root-owned.json"
    secret.write_text('{"env": {"ROOT_ONLY": "do-not-leak"}}')
    os.link(secret, claude / "settings.json")
    exited = run(path=str(claude / "settings.json"), owner="nobody", diff=True)
    assert exited.failed and "hard link" in exited.result["msg"]
    assert "do-not-leak" not in json.dumps(exited.result)


def test_fifo_is_refused_without_blocking(run, tmp_path):
    os.mkfifo(tmp_path / "settings.json")
    exited = run(path=str(tmp_path / "settings.json"))
    assert exited.failed and "a FIFO" in exited.result["msg"]


def test_missing_home_is_named(run, tmp_path):
    exited = run(path=str(tmp_path / "no-home" / ".claude" / "settings.json"), directory_mode="0700")
    assert exited.failed and "no-home does not exist" in exited.result["msg"]


# The user's own credentials: what root does in a home, the user could have done (issue 11).

def user_file(tmp_path, content, mode=0o644):
    """~/.claude/settings.json of 'nobody', owned by them."""
    path = user_claude_dir(tmp_path) / "settings.json"
    write(path, content)
    path.chmod(mode)
    os.chown(path, NOBODY, -1)
    return path


@needs_root
def test_owner_mode_and_group_are_applied_as_the_user(run, tmp_path):
    path = user_file(tmp_path, USER_FILE)
    result = run(path=str(path), owner="nobody", group="nogroup", directory_mode="0700").result
    assert result["changed"] and result["ran_as"] == f"nobody (uid {NOBODY})"
    info = path.stat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (NOBODY, 0o600)
    assert info.st_gid == __import__("grp").getgrnam("nogroup").gr_gid
    backup = backups(path)[0]
    assert backup.stat().st_uid == NOBODY and stat.S_IMODE(backup.stat().st_mode) == 0o600


@needs_root
def test_a_file_moved_in_from_another_user_is_refused_unread_and_untouched(run, tmp_path):
    # alice (here: nobody) cannot read bob's 0600 file but can mv it out of a shared setgid directory.
    claude = user_claude_dir(tmp_path)
    bob = claude / "settings.json"
    bob.write_text('{"env": {"BOB_SECRET": "bobs-private-value"}}')
    bob.chmod(0o600)
    os.chown(bob, 1, 1)  # daemon: "another user"
    for policy in ("fail", "backup_and_replace"):
        exited = run(path=str(bob), owner="nobody", directory_mode="0700", diff=True, on_invalid_json=policy)
        assert exited.failed and str(bob) in exited.result["msg"] and "owned by uid 1" in exited.result["msg"]
        assert "Fix:" in exited.result["msg"] and "bobs-private-value" not in json.dumps(exited.result)
        assert (bob.stat().st_uid, stat.S_IMODE(bob.stat().st_mode)) == (1, 0o600)
        assert backups(bob) == [] and sorted(p.name for p in claude.iterdir()) == ["settings.json"]


@needs_root
def test_a_readable_file_of_another_user_is_refused_too(run, tmp_path):
    claude = user_claude_dir(tmp_path)
    other = claude / "settings.json"
    write(other, {"env": {"OTHER": "readable-but-not-theirs"}})  # 0644, root's
    exited = run(path=str(other), owner="nobody", diff=True)
    assert exited.failed and "owned by uid 0" in exited.result["msg"]
    assert "readable-but-not-theirs" not in json.dumps(exited.result) and other.stat().st_uid == 0


@needs_root
def test_a_claude_directory_of_another_owner_is_refused_not_chowned(run, tmp_path):
    home = user_home(tmp_path)
    (home / ".claude").mkdir(mode=0o755)  # root's, in the user's home
    exited = run(path=str(home / ".claude" / "settings.json"), owner="nobody", directory_mode="0700")
    assert exited.failed and "owned by uid 0" in exited.result["msg"] and "Fix:" in exited.result["msg"]
    info = (home / ".claude").stat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (0, 0o755)


@needs_root
@pytest.mark.parametrize("kind", ["regular file", "dangling link", "socket"])
def test_a_claude_path_that_is_not_a_directory_is_named(run, tmp_path, kind):
    home = user_home(tmp_path)
    claude = home / ".claude"
    if kind == "regular file":
        claude.write_text("oops")
        os.chown(claude, NOBODY, -1)
    elif kind == "dangling link":
        claude.symlink_to(home / "gone")
    else:
        import socket
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(claude))
        sock.close()
    exited = run(path=str(claude / "settings.json"), owner="nobody", directory_mode="0700")
    msg = exited.result["msg"]
    assert exited.failed and str(claude) in msg and "Fix:" in msg and "[Errno" not in msg


@needs_root
def test_a_socket_as_settings_file_is_refused_by_name(run, tmp_path):
    import socket
    path = user_claude_dir(tmp_path) / "settings.json"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    exited = run(path=str(path), owner="nobody")
    sock.close()
    assert exited.failed and "a socket" in exited.result["msg"] and str(path) in exited.result["msg"]


@needs_root
def test_a_huge_sparse_file_is_refused_before_it_is_read(run, tmp_path):
    path = user_file(tmp_path, "{}", mode=0o600)
    with open(path, "r+b") as handle:
        handle.truncate(1 << 30)  # 1 GiB, sparse
    exited = run(path=str(path), owner="nobody", max_bytes=1048576, on_invalid_json="backup_and_replace")
    assert exited.failed and "1073741824 bytes" in exited.result["msg"] and "claude_code_settings_max_bytes" in \
        exited.result["msg"]
    assert path.stat().st_size == 1 << 30 and backups(path) == []


@needs_root
def test_deep_nesting_is_invalid_json_not_a_crash(run, tmp_path):
    path = user_file(tmp_path, "[" * 200000, mode=0o600)
    exited = run(path=str(path), owner="nobody")
    assert exited.failed and "nested too deeply" in exited.result["msg"] and "claude_code_invalid_json" in \
        exited.result["msg"]


def request_for(path, **overrides):
    """The module's resolved request for `path`, as run_module builds it, for in-process tests."""
    params = dict(path=str(path), model="sonnet", env=MANAGED_ENV, secret_env={"ANTHROPIC_AUTH_TOKEN": "t"},
                  remove_env=CONFLICTS, backup=True, backup_keep=3, max_bytes=1048576, on_invalid_json="fail")
    params.update(overrides)
    return settings_module.Request(params, False, False, NOBODY, -1, 0o600, None, "nobody")


@needs_root
def test_backup_and_replace_copies_what_was_read_and_never_renames_the_name(tmp_path):
    # The race of issue 11: after root's read, the user swaps settings.json for a hard link to a
    # victim file (inotify on the close of the read). The backup must be a copy of what was read;
    # the victim is neither moved, chmodded nor chowned. Run in-process as root (the worst case:
    # the real module also drops to the user, who could not chown the victim anyway).
    path = user_file(tmp_path, "{not json", mode=0o600)
    victim = tmp_path / "victim"
    victim.write_text("root's private key")
    victim.chmod(0o600)
    request = request_for(path, on_invalid_json="backup_and_replace")
    location = settings_module.locate_settings(request)
    try:
        os.unlink(path)
        os.link(victim, path)
        result = settings_module.run_merge(request, location)["result"]
    finally:
        location.close()
    assert result["changed"]
    assert (victim.stat().st_uid, stat.S_IMODE(victim.stat().st_mode)) == (0, 0o600)
    assert victim.read_text() == "root's private key" and victim.stat().st_nlink == 1
    assert [b.read_text() for b in backups(path)] == ["{not json"]
    assert json.loads(path.read_text())["model"] == "sonnet" and path.stat().st_uid == NOBODY


@needs_root
def test_a_fifo_swapped_in_after_the_read_does_not_hang(tmp_path):
    path = user_file(tmp_path, "{not json", mode=0o644)
    request = request_for(path, on_invalid_json="backup_and_replace")
    location = settings_module.locate_settings(request)
    try:
        os.unlink(path)
        os.mkfifo(path)
        os.chown(path, NOBODY, -1)
        result = settings_module.run_merge(request, location)["result"]  # once blocked opening the FIFO
    finally:
        location.close()
    assert result["changed"] and stat.S_ISREG(path.stat().st_mode)
    assert [b.read_text() for b in backups(path)] == ["{not json"]


@needs_root
def test_the_work_runs_with_the_users_credentials(run, tmp_path, monkeypatch):
    seen = []
    real_locate = settings_module.locate_settings

    def record(request):
        dumpable = __import__("ctypes").CDLL(None).prctl(3, 0, 0, 0, 0)  # PR_GET_DUMPABLE
        seen.append((os.getuid(), os.geteuid(), os.getgid(), os.getegid(), os.getgroups(), dumpable))
        location = real_locate(request)
        with open(tmp_path / "ids", "w") as handle:
            handle.write(json.dumps(seen))
        return location

    path = user_file(tmp_path, USER_FILE)
    tmp_path.chmod(0o777)
    monkeypatch.setattr(settings_module, "locate_settings", record)
    run(path=str(path), owner="nobody", group="nogroup")
    ids = json.loads((tmp_path / "ids").read_text())[0]
    assert ids[:4] == [NOBODY, NOBODY, 65534, 65534] and 0 not in ids[4]
    assert ids[5] == 0, "the user must not be able to ptrace the child or read the token from its memory"


@needs_root
def test_a_stopped_child_is_killed_after_the_timeout(run, tmp_path, monkeypatch):
    def hang(_request):
        os.kill(os.getpid(), __import__("signal").SIGSTOP)  # what the user can do to their own process

    monkeypatch.setattr(settings_module, "manage", hang)
    path = user_file(tmp_path, USER_FILE)
    exited = run(path=str(path), owner="nobody", timeout=1)
    assert exited.failed and "did not finish within 1 s" in exited.result["msg"]


def test_diff_shows_managed_keys_only(run, tmp_path):
    path = tmp_path / "settings.json"
    write(path, {"env": {"GITHUB_TOKEN": "ghp_users-own-secret", "ANTHROPIC_API_KEY": "sk-removed-key",
                         "HTTPS_PROXY": "http://me:proxy-pass@proxy:3128", "ANTHROPIC_BASE_URL": "http://x/v1"},
                 "hooks": {"Stop": [{"command": "curl -H 'token: hook-secret'"}]}})
    env = dict(MANAGED_ENV, NO_PROXY_URL="http://fleet:fleet-pass@mirror")
    result = run(path=str(path), check_mode=True, diff=True, env=env).result
    shown = json.dumps(result)
    for secret in ("ghp_users-own-secret", "sk-removed-key", "proxy-pass", "hook-secret", "fleet-pass",
                   "s3cret-token"):
        assert secret not in shown, secret
    before, after = json.loads(result["diff"]["before"]), json.loads(result["diff"]["after"])
    assert before["env"]["ANTHROPIC_BASE_URL"] == "http://x/v1" and "GITHUB_TOKEN" in after["env"]
    assert after["env"]["NO_PROXY_URL"] == "http://****@mirror" and "ANTHROPIC_API_KEY" not in after["env"]


def test_a_broken_file_is_never_dumped_in_the_diff(run, tmp_path):
    path = tmp_path / "settings.json"
    write(path, '{"env": {"ANTHROPIC_AUTH_TOKEN": "rotated-away-token"}, broken' + " " * 100000)
    result = run(path=str(path), check_mode=True, diff=True, on_invalid_json="backup_and_replace").result
    assert "rotated-away-token" not in json.dumps(result) and len(result["diff"]["before"]) < 200
    assert "not valid JSON" in result["diff"]["before"]


def test_backups_are_0600_even_for_a_world_readable_policy_file_and_pruned(run, tmp_path):
    path = tmp_path / "managed-settings.json"
    old = tmp_path / "managed-settings.json.20200101T000000.bak"  # an old 0644 backup holding a token
    old.write_text('{"env": {"ANTHROPIC_AUTH_TOKEN": "old"}}')
    old.chmod(0o644)
    unrelated = tmp_path / "notes.bak"
    unrelated.write_text("mine")
    run(path=str(path), mode="0644")
    for token in ("t1", "t2", "t3", "t4"):
        result = run(path=str(path), mode="0644", backup_keep=2, secret_env={"ANTHROPIC_AUTH_TOKEN": token}).result
        assert result["changed"]
    kept = backups(path)
    assert len(kept) == 2 and not old.exists() and unrelated.read_text() == "mine"
    assert all(stat.S_IMODE(b.stat().st_mode) == 0o600 for b in kept)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert not run(path=str(path), mode="0644", backup_keep=2, secret_env={"ANTHROPIC_AUTH_TOKEN": "t4"}
                   ).result["changed"]


def test_a_loose_old_backup_is_tightened_on_an_unchanged_run(run, tmp_path):
    path = tmp_path / "settings.json"
    run(path=str(path))
    loose = tmp_path / "settings.json.20200101T000000.bak"
    loose.write_text("{}")
    loose.chmod(0o644)
    result = run(path=str(path), check_mode=True).result
    assert result["changed"] and stat.S_IMODE(loose.stat().st_mode) == 0o644
    assert run(path=str(path)).result["changed"] and stat.S_IMODE(loose.stat().st_mode) == 0o600
    assert not run(path=str(path)).result["changed"]
