"""Drives a running maas server with Triton's own HTTP client (tritonclient[http]), unmodified:
server and model metadata, readiness, the repository extension, and inference with JSON and
with binary tensors. Prints "ok" on success.

Environment: MAAS_URL, MAAS_API_KEY, MODEL (the open-nsfw ONNX graph).
"""

import os

import numpy as np
import tritonclient.http as triton

url = os.environ["MAAS_URL"].removeprefix("http://")
headers = {"Authorization": f"Bearer {os.environ['MAAS_API_KEY']}"}
model = os.environ["MODEL"]

client = triton.InferenceServerClient(url=url)
assert client.is_server_live(headers=headers)
assert client.is_server_ready(headers=headers)
assert "binary_tensor_data" in client.get_server_metadata(headers=headers)["extensions"]

meta = client.get_model_metadata(model, headers=headers)
assert meta["inputs"][0]["name"] == "input:0", meta
assert meta["outputs"][0]["shape"] == [-1, 2], meta
assert client.is_model_ready(model, headers=headers)

client.load_model(model, headers=headers)
index = client.get_model_repository_index(headers=headers)
assert any(m["name"] == model and m["state"] == "READY" for m in index), index

batch = (np.arange(2 * 224 * 224 * 3, dtype=np.int64) * 37 % 255).astype(np.float32) - 127.5
batch = batch.reshape(2, 224, 224, 3)
answers = []
for binary in (False, True):
    inp = triton.InferInput("input:0", list(batch.shape), "FP32")
    inp.set_data_from_numpy(batch, binary_data=binary)
    out = triton.InferRequestedOutput("outputs", binary_data=binary)
    result = client.infer(model, [inp], outputs=[out], request_id="r1", headers=headers)
    scores = result.as_numpy("outputs")
    assert scores.shape == (2, 2), scores.shape
    assert np.allclose(scores.sum(axis=1), 1.0, atol=1e-5), scores
    answers.append(scores)
assert np.array_equal(answers[0], answers[1]), answers

# The server's refusal arrives as the client's own exception, with the server's message.
try:
    bad = triton.InferInput("input:0", [1, 2, 2, 3], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 2, 2, 3), dtype=np.float32))
    client.infer(model, [bad], headers=headers)
    raise SystemExit("a wrong shape was accepted")
except triton.InferenceServerException as e:
    assert "must have shape" in str(e), e

client.unload_model(model, headers=headers)
print("ok")
