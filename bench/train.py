"""Training benchmark: maas against PyTorch on the same networks and data, in one run.

Started by bench/train.sh. For each workload, maas trains through its HTTP API (a run on an
uploaded dataset; time from the run's start to its end as the server records them, so loading,
preprocessing and per-epoch validation are included) and PyTorch trains the same network in this
process (2 threads, the same z-score preprocessing, split sizes, AdamW settings, batch size,
epochs and per-epoch validation). The CNN workload trains on digits.csv turned into 8x8 grey
PNGs in label folders (an image-zip dataset for maas; the same pixel values, 0-1, as tensors for
PyTorch) with the same convolutions, pools and head. Samples/s = epochs x training rows / seconds. Each side runs
`--repeats` times; the table shows medians and the ratio maas/PyTorch.
"""
import argparse
import csv
import io
import struct
import zipfile
import zlib
import datetime
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from serving import KEY, Server  # noqa: E402

WORKLOADS = [
    # name, dataset file, hidden layers, batch size, epochs, learning rate, conv channels
    ("digits-mlp128", "digits.csv", [128], 32, 30, 0.003, None),
    ("digits-mlp512x256", "digits.csv", [512, 256], 32, 20, 0.001, None),
    ("breast-cancer-mlp32", "breast-cancer.csv", [32], 32, 60, 0.003, None),
    ("digit-images-cnn16x32", "digits.csv", [64], 32, 20, 0.003, [16, 32]),
]


def png(width, height, grey):
    """A minimal 8-bit greyscale PNG."""
    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))
    raw = b"".join(b"\x00" + bytes(grey[y * width:(y + 1) * width]) for y in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def grey(row):
    """digits.csv pixels (0-16) as 0-255 grey levels."""
    return [int(float(v) * 15.9) for v in row]


def image_zip(path):
    """digits.csv as a zip of LABEL/N.png 8x8 images."""
    with open(path) as f:
        rows = list(csv.reader(f))[1:]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for i, r in enumerate(rows):
            z.writestr(f"digits/{r[-1]}/{i:04}.png", png(8, 8, grey(r[:-1])))
    return out.getvalue()


def rfc3339(s):
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def maas_run(server, dataset, hidden, batch, epochs, lr, convs):
    spec = {"mlp": {"hidden": hidden}, "epochs": epochs, "batch_size": batch,
            "optimizer": {"kind": "adamw", "lr": lr}}
    if convs:
        spec["cnn"] = {"channels": convs, "kernel": 3}
    run = server.post("/api/v1/runs", {"dataset": dataset, "model": f"bench-{dataset}",
                                       "spec": spec})
    while True:
        req = urllib.request.Request(f"{server.url}/api/v1/runs/{run['id']}",
                                     headers={"Authorization": "Bearer " + KEY})
        with urllib.request.urlopen(req) as r:
            run = json.loads(r.read())
        if run["state"] not in ("queued", "running"):
            break
        time.sleep(0.05)
    if run["state"] != "succeeded":
        raise SystemExit(f"maas run failed: {run.get('error')}")
    seconds = rfc3339(run["finished_at"]) - rfc3339(run["started_at"])
    return seconds, run["result"]["test_metrics"]["accuracy"], run


def load(path):
    with open(path) as f:
        rows = list(csv.reader(f))
    header, rows = rows[0], rows[1:]
    x = [[float(v) for v in r[:-1]] for r in rows]
    labels = sorted({r[-1] for r in rows})
    y = [labels.index(r[-1]) for r in rows]
    return x, y, len(labels)


def torch_run(path, hidden, batch, epochs, lr, seed, sizes, convs):
    import torch
    torch.set_num_threads(2)
    torch.manual_seed(seed)
    x, y, classes = load(path)
    if convs:
        x = [[v / 255 for v in grey(r)] for r in x]
    order = list(range(len(x)))
    random.Random(seed).shuffle(order)
    n_train, n_val, n_test = sizes
    tr, va, te = order[:n_train], order[n_train:n_train + n_val], order[n_train + n_val:][:n_test]
    X = torch.tensor(x, dtype=torch.float32)
    Y = torch.tensor(y)
    start = time.perf_counter()
    layers, width = [], X.shape[1]
    if convs:
        X = X.reshape(-1, 1, 8, 8)
        channels, side = 1, 8
        for c in convs:
            layers += [torch.nn.Conv2d(channels, c, 3, padding=1), torch.nn.ReLU(),
                       torch.nn.MaxPool2d(2)]
            channels, side = c, side // 2
        layers.append(torch.nn.Flatten())
        width = channels * side * side
    else:
        mean, std = X[tr].mean(0), X[tr].std(0, unbiased=False)
        std[std == 0] = 1
        X = (X - mean) / std
    for h in hidden:
        layers += [torch.nn.Linear(width, h), torch.nn.ReLU()]
        width = h
    layers.append(torch.nn.Linear(width, classes))
    net = torch.nn.Sequential(*layers)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.0)
    loss_fn = torch.nn.CrossEntropyLoss()
    xt, yt = X[tr], Y[tr]
    xv, yv = X[va], Y[va]
    best, best_state = float("inf"), None
    for _ in range(epochs):
        net.train()
        perm = torch.randperm(len(tr))
        for i in range(0, len(tr), batch):
            idx = perm[i:i + batch]
            opt.zero_grad()
            loss = loss_fn(net(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            val = loss_fn(net(xv), yv).item()
        if val < best:
            best, best_state = val, {k: v.clone() for k, v in net.state_dict().items()}
    net.load_state_dict(best_state)
    with torch.no_grad():
        accuracy = (net(X[te]).argmax(1) == Y[te]).float().mean().item()
    return time.perf_counter() - start, accuracy


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--maas", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    import torch
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(args.maas, tmp, [])
        try:
            uploaded = set()
            for name, file, hidden, batch, epochs, lr, convs in WORKLOADS:
                dataset = file.removesuffix(".csv") + ("-images" if convs else "")
                if dataset not in uploaded:
                    body = Path(args.data, file).read_bytes()
                    upload_name = file
                    if convs:
                        body, upload_name = image_zip(Path(args.data, file)), dataset + ".zip"
                    req = urllib.request.Request(
                        f"{server.url}/api/v1/datasets?name={dataset}&filename={upload_name}",
                        data=body, method="POST", headers={"Authorization": "Bearer " + KEY})
                    urllib.request.urlopen(req).read()
                    uploaded.add(dataset)
                m_sps, m_acc, t_sps, t_acc = [], [], [], []
                for r in range(args.repeats):
                    seconds, acc, run = maas_run(server, dataset, hidden, batch, epochs, lr, convs)
                    version = server_get(server, f"/api/v1/models/bench-{dataset}/versions/"
                                                 f"{run['result']['version']}")
                    split = version["lineage"]["split_sizes"]
                    sizes = (split["train"], split["validation"], split["test"])
                    m_sps.append(epochs * sizes[0] / seconds)
                    m_acc.append(acc)
                    seconds, acc = torch_run(Path(args.data, file), hidden, batch, epochs, lr,
                                             42 + r, sizes, convs)
                    t_sps.append(epochs * sizes[0] / seconds)
                    t_acc.append(acc)
                row = (name, statistics.median(m_sps), statistics.median(t_sps),
                       statistics.median(m_acc), statistics.median(t_acc))
                print(f"{name}: maas {row[1]:.0f} samples/s (acc {row[3]:.4f}), "
                      f"PyTorch {row[2]:.0f} samples/s (acc {row[4]:.4f}), "
                      f"ratio {row[1] / row[2]:.2f}x", flush=True)
                lines.append(row)
        finally:
            server.stop()
    date = datetime.date.today().isoformat()
    table = ["| workload | maas samples/s | PyTorch samples/s | maas/PyTorch | maas test acc | PyTorch test acc |",
             "|---|---|---|---|---|---|"]
    for name, ms, ts, ma, ta in lines:
        table.append(f"| {name} | {ms:.0f} | {ts:.0f} | {ms / ts:.2f}x | {ma:.4f} | {ta:.4f} |")
    text = "\n".join([
        f"# Training: maas vs PyTorch ({date})", "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs; PyTorch {torch.__version__} "
        f"(2 threads); maas serve's defaults (--train-threads 1); medians of {args.repeats} runs each; "
        "AdamW, z-score inputs (pixels 0-1 for the CNN), best-validation weights, same split sizes "
        "(maas's seeded stratified split; PyTorch a seeded shuffle). CNN: conv3x3(pad 1)+ReLU+maxpool2 "
        "per channel count, then the MLP head, on 8x8 grey digit images.", "",
        *table, ""])
    out = Path(args.out, f"train-{date}.md")
    out.write_text(text)
    print(text)


def server_get(server, path):
    req = urllib.request.Request(server.url + path, headers={"Authorization": "Bearer " + KEY})
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read())


if __name__ == "__main__":
    main()
