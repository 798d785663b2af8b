"""A step's container, as the image the Dockerfile builds would run it, on this machine.

The KFP harness (tests/kfp_harness.py) runs each step's command the way a pod runs it in the
project image, as far as one machine allows without a container engine:
- the image's paths: the Dockerfile's final WORKDIR (/opt/litedet) exists, holding what the final
  stage COPYs into it (the curated schema the compiled package names), read-only for the user,
  and the step starts there;
- the image's user: the final USER (10001:10001, not root) with its HOME created and writable;
- only the pod's environment: the image's ENV (the final stage's and the stages it is built on,
  ARG defaults substituted), then the spec's `env`, then the step's own Secrets; nothing of the
  calling process' environment.

How: each step runs in its own mount namespace (`unshare --mount`, which needs root: the CI
machines run as root), where the WORKDIR's and HOME's parents are overlaid by a tmpfs layer so
the image's folders can be made without touching this machine's, then drops to the image's user
(`setpriv`) and execs the command. The interpreter is this machine's: `python` on the PATH is the
project's virtualenv, whose folders (under /root here) are made traversable in that namespace
only. What is not the image: the Python packages (this checkout, installed editable, instead of
the wheel) and the base image's own ENV (tensorflow/tfx's; its PATH is replaced by one naming
this interpreter).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import stat
import subprocess
import sys
import tempfile
from typing import Dict, List, Mapping, Optional


class PodSetupError(RuntimeError):
    pass


def _logical_lines(text: str) -> List[str]:
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    if current:
        lines.append(current)
    return lines


def _substitute(value: str, variables: Mapping[str, str]) -> str:
    def one(match):
        name = match.group(1) or match.group(2)
        return variables.get(name, "")

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)", one, value)


@dataclasses.dataclass
class _Stage:
    env: Dict[str, str] = dataclasses.field(default_factory=dict)
    workdir: str = "/"
    user: str = "0:0"
    copies: List[tuple] = dataclasses.field(default_factory=list)  # (source, destination)


def _inherit(stage: _Stage) -> _Stage:
    """A stage built FROM an earlier one starts with its settings (copies: the earlier stage
    must not see what this one adds)."""
    return dataclasses.replace(stage, env=dict(stage.env), copies=list(stage.copies))


@dataclasses.dataclass
class PodImage:
    """The parts of the final image a step sees: its WORKDIR, USER, ENV and the files the final
    stage copies from the build context into the WORKDIR."""

    workdir: str
    uid: int
    gid: int
    env: Dict[str, str]
    files: Dict[str, str]  # path in the image -> path on this machine
    python: str = sys.executable

    @property
    def home(self) -> str:
        return self.env.get("HOME", "/")

    @classmethod
    def from_dockerfile(cls, dockerfile: str, python: str = sys.executable) -> PodImage:
        context = os.path.dirname(os.path.abspath(dockerfile))
        with open(dockerfile) as f:
            lines = _logical_lines(f.read())
        global_args: Dict[str, str] = {}
        stages: Dict[str, _Stage] = {}
        stage: Optional[_Stage] = None
        args: Dict[str, str] = {}
        for line in lines:
            instruction, _, rest = line.partition(" ")
            instruction, rest = instruction.upper(), rest.strip()
            if instruction == "FROM":
                words = rest.split()
                base = words[0]
                stage = _inherit(stages[base]) if base in stages else _Stage()
                if len(words) >= 3 and words[-2].upper() == "AS":
                    stages[words[-1]] = stage
                args = {}
            elif instruction == "ARG":
                name, has_default, default = rest.partition("=")
                default = " ".join(shlex.split(default))  # ARG X="a b" -> a b
                if stage is None:
                    global_args[name] = default if has_default else ""
                else:
                    args[name] = default if has_default else global_args.get(name, "")
            elif stage is None:
                continue
            elif instruction == "ENV":
                variables = {**args, **stage.env}
                for word in shlex.split(rest):
                    name, _, value = word.partition("=")
                    stage.env[name] = _substitute(value, variables)
            elif instruction == "WORKDIR":
                stage.workdir = os.path.join(stage.workdir, _substitute(rest, args))
            elif instruction == "USER":
                stage.user = rest
            elif instruction == "COPY" and not rest.startswith("--"):
                *sources, destination = shlex.split(rest)
                destination = os.path.join(stage.workdir, destination)
                for source in sources:
                    stage.copies.append((os.path.join(context, source), destination))
        if stage is None:
            raise PodSetupError(f"{dockerfile}: no FROM")
        uid, _, gid = stage.user.partition(":")
        if not uid.isdigit() or (gid and not gid.isdigit()):
            raise PodSetupError(f"{dockerfile}: USER {stage.user!r} is not numeric UID:GID")
        files = {}
        workdir = stage.workdir.rstrip("/") + "/"
        for source, destination in stage.copies:
            if destination.endswith("/"):
                destination = os.path.join(destination, os.path.basename(source))
            destination = os.path.normpath(destination)
            if destination.startswith(workdir):  # the rest is build-time only (removed by RUN)
                files[destination] = source
        return cls(
            workdir=os.path.normpath(stage.workdir),
            uid=int(uid),
            gid=int(gid or uid),
            env=dict(stage.env),
            files=files,
            python=python,
        )

    def pod_env(self, spec_env: Mapping[str, str], secret_env: Mapping[str, str], hostname: str):
        """The container's environment: the image's, then the spec's, then the step's Secrets
        (Kubernetes' order: a later source wins)."""
        env = {
            "PATH": os.pathsep.join(
                [os.path.dirname(self.python)]
                + "/usr/local/sbin /usr/local/bin /usr/sbin /usr/bin /sbin /bin".split()
            ),
            "HOSTNAME": hostname,
        }
        env.update(self.env)
        env.update(spec_env)
        env.update(secret_env)
        return env

    def _overlays(self, keep_visible: List[str]) -> List[str]:
        """Folders to overlay in the step's namespace: the nearest existing parents of the
        WORKDIR and HOME (so they can be made), and every folder above `keep_visible` (the
        interpreter, this checkout) that the image's user could not traverse."""
        chosen = []
        for path in (self.workdir, self.home):
            parent = os.path.dirname(path)
            while not os.path.isdir(parent):
                parent = os.path.dirname(parent)
            if parent == "/":
                raise PodSetupError(
                    f"{path}: no existing folder above it but / to overlay on this machine"
                )
            chosen.append(parent)
        for path in keep_visible:
            current = os.path.dirname(os.path.abspath(path))
            while current != "/":
                mode = os.stat(current).st_mode
                if not mode & stat.S_IXOTH:
                    chosen.append(current)
                current = os.path.dirname(current)
        unique = []
        for path in chosen:
            if path not in unique:
                unique.append(path)
        return unique

    def run(
        self, command: List[str], env: Mapping[str, str], **popen
    ) -> subprocess.CompletedProcess:
        """Runs `command` as the image would: its own mount namespace, the image's WORKDIR and
        files, HOME, user, and only `env`. `popen`: stdout, stderr, timeout."""
        if os.geteuid() != 0:
            raise PodSetupError(
                "the KFP harness runs every step as the image's non-root user in its own mount "
                "namespace, which needs root (unshare, mount, setpriv); run the suite as root"
            )
        keep_visible = [
            os.path.realpath(self.python),
            self.python,
            os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        ]
        overlays = self._overlays(keep_visible)
        scratch = tempfile.mkdtemp(prefix="litedet-pod-")
        steps = ["set -e", f"mount -t tmpfs litedet-pod {shlex.quote(scratch)}"]
        for index, folder in enumerate(overlays):
            upper, work = f"{scratch}/upper{index}", f"{scratch}/work{index}"
            steps += [
                f"mkdir -p {upper} {work}",
                # The overlaid folder's own mode comes from the upper layer's root.
                f"chmod 755 {upper}",
                f"mount -t overlay overlay -o lowerdir={shlex.quote(folder)},upperdir={upper},"
                f"workdir={work} {shlex.quote(folder)}",
            ]
        steps.append(f"mkdir -p {shlex.quote(self.workdir)}")
        for destination, source in sorted(self.files.items()):
            steps += [
                f"mkdir -p {shlex.quote(os.path.dirname(destination))}",
                f"cp {shlex.quote(source)} {shlex.quote(destination)}",
            ]
        steps += [
            f"mkdir -p {shlex.quote(self.home)}",
            f"chown {self.uid}:{self.gid} {shlex.quote(self.home)}",
            f"cd {shlex.quote(self.workdir)}",
            f'exec setpriv --reuid={self.uid} --regid={self.gid} --clear-groups -- "$@"',
        ]
        script = "\n".join(steps)
        try:
            return subprocess.run(
                ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "pod"]
                + list(command),
                env=dict(env),
                **popen,
            )
        finally:
            os.rmdir(scratch)
