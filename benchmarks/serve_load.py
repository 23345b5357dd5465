"""Load test of ``boneage serve`` over loopback: a real uvicorn process, N concurrent clients, M
requests of one radiograph; p50/p99 latency, throughput, errors, and the server's memory before and
after (extra: serve; the clients use only the standard library).

    nice -n 19 python benchmarks/serve_load.py --clients 8 --requests 500 [--image PNG] [--json OUT]

Every answer must be 200 with the same bone age: anything else counts as an error and the exit
status is 1, so a CI job can run it as a check.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from boneage.cli.arguments import existing_file, non_negative, output_file, positive

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mib(pid: int) -> dict[str, float]:
    """Resident memory now and at its peak (VmHWM), in MiB, from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {k: round(int(fields[k].split()[0]) / 1024, 1) for k in ("VmRSS", "VmHWM")}


def multipart(image: bytes, sex: str, age: str) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in (("sex", sex), ("age", age))]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n'
                 "Content-Type: image/png\r\n\r\n".encode() + image + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def wait_ready(port: int, server: subprocess.Popen[bytes], seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with {server.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("the server was not ready in time")


def load(port: int, body: bytes, content_type: str, clients: int, requests: int) -> dict[str, Any]:
    """``clients`` threads, each on its own keep-alive connection, share ``requests`` requests."""
    latencies: list[float] = []
    errors: list[str] = []
    answers: set[float] = set()
    lock, left = threading.Lock(), [requests]

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while True:
            with lock:
                if left[0] == 0:
                    break
                left[0] -= 1
            start = time.perf_counter()
            try:
                conn.request("POST", "/v1/predict", body=body, headers={"Content-Type": content_type})
                response = conn.getresponse()
                data = response.read()
                elapsed = time.perf_counter() - start
                with lock:
                    if response.status == 200:
                        latencies.append(elapsed)
                        answers.add(json.loads(data)["bone_age_months"])
                    else:
                        errors.append(f"{response.status} {data[:200]!r}")
            except (OSError, http.client.HTTPException) as exc:
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    ordered = sorted(latencies)
    pick = (lambda q: round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)) if ordered else (lambda q: None)
    return {
        "requests": requests, "clients": clients, "ok": len(latencies), "errors": len(errors),
        "error_samples": errors[:5], "distinct_answers": sorted(answers),
        "wall_s": round(wall, 2), "throughput_rps": round(len(latencies) / wall, 2),
        "latency_ms": {"p50": pick(0.50), "p90": pick(0.90), "p99": pick(0.99),
                       "mean": round(1000 * statistics.fmean(ordered), 1) if ordered else None,
                       "max": round(1000 * ordered[-1], 1) if ordered else None},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=positive, default=8)
    parser.add_argument("--requests", type=positive, default=500)
    parser.add_argument("--image", type=existing_file, default=ROOT / "samples" / "1377.png")
    parser.add_argument("--sex", default="female")
    parser.add_argument("--age", default="15y")
    parser.add_argument("--warmup", type=non_negative, default=5, help="requests before the memory is read and timing starts")
    parser.add_argument("--server-args", default="", help="more `boneage serve` options, e.g. '--max-concurrent 2'")
    parser.add_argument("--rounds", type=positive, default=1, help="repeat the load: does the memory settle or keep growing?")
    parser.add_argument("--json", type=output_file, help="also write the results here")
    args = parser.parse_args()

    port = free_port()
    command = [sys.executable, "-m", "boneage", "serve", "--port", str(port), *args.server_args.split()]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(port, server)
        image = args.image.read_bytes()
        body, content_type = multipart(image, args.sex, args.age)
        loaded = rss_mib(server.pid)
        warm = load(port, body, content_type, 1, args.warmup)
        before = rss_mib(server.pid)
        rounds = []
        for _ in range(args.rounds):
            rounds.append(load(port, body, content_type, args.clients, args.requests))
            rounds[-1]["rss_after_mib"] = rss_mib(server.pid)["VmRSS"]
        after = rss_mib(server.pid)
    finally:
        server.terminate()
        server.wait(30)
    report = {
        "command": " ".join(["python", "benchmarks/serve_load.py", *sys.argv[1:]]),
        "image": f"{args.image.name} ({len(image) / 1024:.0f} KiB)", "server": " ".join(command[1:]),
        "cpus": os.cpu_count(), "warmup_errors": warm["errors"],
        "rss_mib": {"loaded": loaded["VmRSS"], "before": before["VmRSS"], "after": after["VmRSS"], "peak": after["VmHWM"]},
        **rounds[0],
        **({"rounds": rounds} if len(rounds) > 1 else {}),
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    answers = {a for r in rounds for a in r["distinct_answers"]}
    return 0 if warm["errors"] == 0 and all(r["errors"] == 0 for r in rounds) and len(answers) == 1 else 1


if __name__ == "__main__":
    sys.exit(main())
