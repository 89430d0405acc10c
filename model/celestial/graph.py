"""ONNX graph surgery on the exported served model: the standardisation fused into one LayerNormalization,
and (for a feature-distance OOD score) a second output computed in the graph."""

from __future__ import annotations

import numpy as np

from .config import OOD_OUTPUT, STANDARDIZE_EPS

STANDARDIZE_OPS = ["ReduceMean", "Sub", "Mul", "ReduceMean", "Add", "Sqrt", "Div"]


def fuse_layer_norm(proto, shape: list) -> None:
    """Replace the exported standardisation (ReduceMean, Sub, Mul, ReduceMean, Add, Sqrt, Div) at the
    graph's start with one LayerNormalization(axis=1, epsilon) node: the same formula in one kernel.
    The parity check (ONNX Runtime vs Keras) verifies the result."""
    from onnx import helper, numpy_helper

    g = proto.graph
    nodes = list(g.node)
    ops = [n.op_type for n in nodes[:7]]
    if sorted(ops) != sorted(STANDARDIZE_OPS):
        raise SystemExit(f"unexpected standardisation subgraph {ops}")
    x, y = nodes[0].input[0], nodes[6].output[0]
    if x != g.input[0].name or nodes[6].op_type != "Div":
        raise SystemExit("standardisation does not start at the input / end with Div")
    used = {i for n in nodes[:7] for i in n.input}
    g.initializer.append(numpy_helper.from_array(np.ones(shape, np.float32), "standardize_scale"))
    del g.node[:7]
    g.node.insert(
        0,
        helper.make_node(
            "LayerNormalization", [x, "standardize_scale"], [y], axis=1, epsilon=STANDARDIZE_EPS, name="standardize"
        ),
    )
    still = {i for n in g.node for i in n.input}
    for init in [i for i in g.initializer if i.name in used and i.name not in still]:
        g.initializer.remove(init)


def add_knn_output(proto, bank: np.ndarray) -> None:
    """Append the OOD score output `ood_score` [N] = 1 - max_i cos(f, bank_i) to the exported graph, f being
    the pooled features (the input of the logits MatMul) and bank the unit-length reference features:
    MatMul(f, -bank^T) -> ReduceMin over the bank -> divided by ||f|| (+1e-12) -> + 1."""
    from onnx import TensorProto, helper, numpy_helper

    g = proto.graph
    mm = [n for n in g.node if n.op_type == "MatMul"]
    if len(mm) != 1:
        raise SystemExit("expected one MatMul (the logits layer) in the exported graph")
    f = mm[0].input[0]
    g.initializer.extend(
        [
            numpy_helper.from_array((-bank.T).astype(np.float32), "ood_bank_neg_t"),
            numpy_helper.from_array(np.array(1e-12, np.float32), "ood_eps"),
            numpy_helper.from_array(np.array(1.0, np.float32), "ood_one"),
        ]
    )
    g.node.extend(
        [
            helper.make_node("MatMul", [f, "ood_bank_neg_t"], ["ood_neg_dots"], name="ood_dots"),
            helper.make_node("ReduceMin", ["ood_neg_dots"], ["ood_neg_max_dot"], axes=[1], keepdims=0, name="ood_max"),
            helper.make_node("ReduceL2", [f], ["ood_norm"], axes=[1], keepdims=0, name="ood_norm"),
            helper.make_node("Add", ["ood_norm", "ood_eps"], ["ood_norm_eps"], name="ood_norm_eps"),
            helper.make_node("Div", ["ood_neg_max_dot", "ood_norm_eps"], ["ood_neg_cos"], name="ood_cos"),
            helper.make_node("Add", ["ood_neg_cos", "ood_one"], [OOD_OUTPUT], name="ood_score"),
        ]
    )
    g.output.append(helper.make_tensor_value_info(OOD_OUTPUT, TensorProto.FLOAT, ["N"]))


def dynamic_batch(proto, name: str = "N") -> None:
    """A readable dynamic batch dimension name on every graph input and output."""
    for value in list(proto.graph.input) + list(proto.graph.output):
        dim0 = value.type.tensor_type.shape.dim[0]
        dim0.ClearField("dim_value")
        dim0.dim_param = name
