"""Inference: engines (TensorFlow, ONNX Runtime), the input pipeline, the extraction runner and the Embedder."""
