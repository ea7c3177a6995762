"""A traced TensorFlow function as an ONNX model whose only inputs are the function's own arguments.

``tf2onnx.convert.from_function`` names every non-variable input of the concrete function as an ONNX graph
input, and those include the tensors the function *captured*: Keras 3's ``Normalization`` keeps its mean and
variance as constant tensors (not variables), so a model with one became an ONNX graph that asks for them at
run time (``.../normalization/Sub/y:0``, ``.../Sqrt/x:0``) and fails with "Required inputs ... are missing".
Here every capture (variables and constant tensors alike) is frozen into the graph first, and only the
signature's arguments are declared as inputs.
"""

from __future__ import annotations

import logging

from bottleneck import _tf


def function_to_onnx(fn, input_signature, *, input_name: str, output_name: str, opset: int = 17):
    """The ONNX ModelProto of ``fn`` (a tf.function of one tensor) traced at ``input_signature``.

    The graph has exactly one input, ``input_name``, and one output, ``output_name``; every weight and captured
    constant is an initializer. Needs tf2onnx (imported here, with the environment it changes put back).
    """
    tf = _tf.tensorflow()
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    concrete = fn.get_concrete_function(*input_signature)
    # The frozen function's inputs are the signature's placeholders only: captures became Const nodes.
    frozen = convert_variables_to_constants_v2(concrete, lower_control_flow=False, aggressive_inlining=True)
    inputs = [t.name for t in frozen.inputs]
    outputs = [t.name for t in frozen.outputs]
    assert len(inputs) == len(input_signature) and len(outputs) == 1, (inputs, outputs)
    graph_def = frozen.graph.as_graph_def(add_shapes=True)
    with _tf.environment_kept():
        import tf2onnx

        tf2onnx.logging.set_level(logging.ERROR)
        with tf.device("/cpu:0"):
            proto, _ = tf2onnx.convert.from_graph_def(
                graph_def,
                name="bottleneck",
                input_names=inputs,
                output_names=outputs,
                opset=opset,
                tensors_to_rename={inputs[0]: input_name, outputs[0]: output_name},
            )
    return proto
