"""The app served by `python app.py` in a subprocess, and raw HTTP requests to it (httpx, no gradio_client): what the
benchmarks that measure the server (its memory, its throughput) share.

A request goes as a stranger's script or the page sends it: the picture uploaded to /gradio_api/upload, then POST
/gradio_api/call/<endpoint> with every parameter, then the event stream read to its end; each such call is a new
session, as a new visitor is.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


class Server:
    """`python app.py` in a subprocess on a free local port, its output in a log file; torch limited to `threads`
    threads when given."""

    def __init__(self, env: dict[str, str], log_path: Path, threads: int | None = None):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/"
        self.log_path = log_path
        # a cache folder of its own: Gradio names its files by their content, and a server that stops deletes the ones
        # it made (delete_cache), which would take them from any other server on the machine sharing the folder
        env = {"GRADIO_TEMP_DIR": tempfile.mkdtemp(prefix="gradio-")} | env | {
            "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port)}
        code = (f"import runpy, torch; torch.set_num_threads({threads})" if threads else "import runpy") + \
            "; runpy.run_path('app.py', run_name='__main__')"
        self.log = open(log_path, "w")
        started = time.perf_counter()
        self.process = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=self.log,
                                        stderr=subprocess.STDOUT)
        self._wait_until_up(timeout_s=600)
        self.start_seconds = time.perf_counter() - started

    def _wait_until_up(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the app exited with {self.process.returncode}:\n{self.log_tail(0)}")
            try:
                if httpx.get(self.url, timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(2)
        raise RuntimeError(f"the app did not answer within {timeout_s} s:\n{self.log_tail(0)}")

    def log_offset(self) -> int:
        self.log.flush()
        return self.log_path.stat().st_size

    def log_tail(self, offset: int, chars: int = 6000) -> str:
        text = self.log_path.read_text(errors="replace")[offset:]
        return text[-chars:]

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()

    def rss_mib(self) -> float:
        """The server process's resident memory now, in MiB."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS in /proc/PID/status")

    def parameters(self) -> dict[str, list[tuple[str, object]]]:
        """Each endpoint's (parameter name, default), as the app publishes them at /gradio_api/info."""
        info = httpx.get(f"{self.url}gradio_api/info", timeout=30).json()["named_endpoints"]
        return {name.lstrip("/"): [(p["parameter_name"], p.get("parameter_default")) for p in spec["parameters"]]
                for name, spec in info.items()}

    def upload(self, path) -> dict:
        """A local picture uploaded as a browser uploads it: the FileData an endpoint takes."""
        with open(path, "rb") as f:
            paths = httpx.post(f"{self.url}gradio_api/upload", files={"files": f}, timeout=60).json()
        return {"path": paths[0], "meta": {"_type": "gradio.FileData"}}

    def call(self, endpoint: str, data: list, timeout: float = 1800) -> tuple[str, str]:
        """POST the endpoint's arguments and read its event stream to the end: ("complete" or "error", the last
        data line)."""
        event_id = httpx.post(f"{self.url}gradio_api/call/{endpoint}", json={"data": data},
                              timeout=60).json()["event_id"]
        stream = httpx.get(f"{self.url}gradio_api/call/{endpoint}/{event_id}", timeout=timeout).text
        events = [line.removeprefix("event: ") for line in stream.splitlines() if line.startswith("event: ")]
        payloads = [line.removeprefix("data: ") for line in stream.splitlines() if line.startswith("data: ")]
        return events[-1], payloads[-1]
