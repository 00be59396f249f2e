"""Writes a wide fully connected network ("dense tower", as in a recommender's ranking model) to
ONNX: FP32 features [N, 1024] -> 4096 -> ReLU -> 4096 -> ReLU -> 256 scores. Its 22 M weights
(87 MB) are larger than this kind of machine's caches, so one row at a time is bound by memory
bandwidth and many rows at a time by arithmetic: the case where dynamic batching pays on a CPU.
Weights are random (seeded); the benchmark measures serving, not accuracy.

Usage: python bench/dense_tower.py OUT.onnx   (needs numpy and onnx)
"""
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

WIDTHS = [1024, 4096, 4096, 256]


def build():
    rng = np.random.default_rng(0)
    nodes, weights = [], []
    x = "features"
    for i, (fan_in, fan_out) in enumerate(zip(WIDTHS, WIDTHS[1:])):
        w = (rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32)
        b = np.zeros(fan_out, dtype=np.float32)
        weights += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        last = i == len(WIDTHS) - 2
        y = "scores" if last else f"h{i}"
        nodes.append(helper.make_node("Gemm", [x, f"w{i}", f"b{i}"], [y if last else f"z{i}"]))
        if not last:
            nodes.append(helper.make_node("Relu", [f"z{i}"], [y]))
        x = y
    graph = helper.make_graph(
        nodes, "dense_tower",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", WIDTHS[0]])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", WIDTHS[-1]])],
        initializer=weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


if __name__ == "__main__":
    onnx.save(build(), sys.argv[1])
