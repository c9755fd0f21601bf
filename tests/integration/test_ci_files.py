"""The deployment files are checked by the real tools (issue #20): the Jenkinsfile parsed by
Groovy 2.4 and linted by npm-groovy-lint, every make target it calls exists, the
Dockerfiles pass hadolint, docker-compose validates the compose file, and the image's lock
pins what pyproject.toml asks for. (The images are built and run by tests/container.)"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def docker_compose() -> str:
    """docker-compose, installed by the container story's set-up when missing (a fresh
    machine has it only once the container test ran, which comes after these tests)."""
    if shutil.which("docker-compose") is None:
        done = subprocess.run(["bash", str(ROOT / "ops/container/setup-podman.sh")],
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    found = shutil.which("docker-compose")
    assert found, "ops/container/setup-podman.sh did not install docker-compose"
    return found


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([a-zA-Z][a-zA-Z0-9_-]*):", text, re.M))


def test_the_jenkinsfile_parses_lints_and_calls_only_existing_make_targets(tmp_path: Path) -> None:
    done = subprocess.run([str(ROOT / "ops/ci/check-jenkinsfile.sh")], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "parses" in done.stdout
    text = (ROOT / "Jenkinsfile").read_text(encoding="utf-8")
    commands = [re.split(r"PYTEST_ARGS|\|\|", line)[0] for line in re.findall(r"sh '(make [^']+)'", text)]
    called = {target for command in commands for target in command.split()[1:]}
    assert {"setup", "lint", "test-unit", "test-integration", "test-e2e", "test-container"} <= called
    assert called <= make_targets(), f"not make targets: {called - make_targets()}"
    assert "junit " in text and "COBERTURA" in text and "archiveArtifacts" in text
    assert re.search(r"cron\('", text), "nightly"
    # the check fails on a broken file: an unclosed block does not parse
    broken = tmp_path / "Jenkinsfile"
    broken.write_text(text.rsplit("}", 2)[0], encoding="utf-8")
    bad = subprocess.run([str(ROOT / "ops/ci/check-jenkinsfile.sh"), str(broken)],
                         capture_output=True, text=True, timeout=600)
    assert bad.returncode != 0


def test_the_dockerfiles_pass_hadolint_with_every_ignore_explained() -> None:
    files = [ROOT / "Dockerfile", ROOT / "ops/container/infra.Dockerfile"]
    done = subprocess.run([str(ROOT / ".venv/bin/hadolint"), *map(str, files)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    for path in files:
        lines = path.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            if "hadolint ignore" in line:
                # a comment right above says why
                assert i > 0 and lines[i - 1].startswith("#") and "hadolint" not in lines[i - 1], \
                    f"{path.name}:{i + 1}: an ignore without its reason"


def test_the_compose_file_is_valid_and_publishes_only_the_api(docker_compose: str) -> None:
    done = subprocess.run([docker_compose, "-f", str(ROOT / "docker-compose.yml"), "--profile",
                           "sim", "config"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load(done.stdout)
    published = {name: svc["ports"] for name, svc in config["services"].items() if svc.get("ports")}
    assert set(published) <= {"serve", "grafana"}
    # Grafana, when its profile runs, on loopback only
    assert all(str(p).startswith("127.0.0.1:") if isinstance(p, str) else p.get("host_ip") == "127.0.0.1"
               for p in published.get("grafana", []))
    for name, svc in config["services"].items():
        if name != "topics":
            assert svc.get("restart") == "unless-stopped", name
            assert "healthcheck" in svc, name
            assert svc.get("mem_limit") and svc.get("cpus"), name
    stateful = {"kafka": "/data", "redis": "/data", "serve": "/data/registry",
                "loop": "/data/registry", "consume": "/data/store", "receiver": "/data/alerts"}
    for name, target in stateful.items():
        volumes = config["services"][name]["volumes"]
        named = [v for v in volumes if (v["type"] == "volume" if isinstance(v, dict)
                                        else not v.startswith((".", "/")))]
        mounts = [v["target"] if isinstance(v, dict) else v.split(":")[1] for v in named]
        assert target in mounts, (name, mounts)


def test_the_image_lock_pins_every_runtime_dependency_within_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pins = {}
    for line in (ROOT / "ops/container/requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name] = version
    for text in project["dependencies"] + project["optional-dependencies"]["sim"]:
        req = Requirement(text)
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        assert name in pins, f"{name} is not in the image's lock"
        assert req.specifier.contains(pins[name], prereleases=True), (name, pins[name], str(req.specifier))


def test_against_the_course_the_local_broker_and_the_simulator_stay_off(
        docker_compose: str) -> None:
    done = subprocess.run([docker_compose, "-f", str(ROOT / "docker-compose.yml"), "-f",
                           str(ROOT / "ops/container/compose.course.yml"), "config"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    for name in ("kafka", "topics"):
        assert services[name]["profiles"] == ["local-kafka"], name
    assert services["simulator"]["profiles"] == ["sim"]
    for name in ("serve", "consume", "loop", "online"):
        assert not services[name].get("profiles"), name
        assert "kafka" not in services[name].get("depends_on", []), name
