"""Architectures Keras does not ship: EfficientNet-Lite (TF "same" padding, ReLU6) and Caffe's AlexNet."""
