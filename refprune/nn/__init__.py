"""The network stack: stateless layers, ``Sequential`` and losses."""

from .activations import ReLU, Sigmoid, Softplus, Tanh
from .affine import AffineLayer
from .base import Layer
from .conv import Conv2d
from .flatten import Flatten
from .linear import Linear
from .losses import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss
from .pooling import AvgPool2d, MaxPool2d
from .sequential import Sequential

__all__ = [
    "Layer", "AffineLayer", "Linear", "Conv2d", "ReLU", "Tanh", "Sigmoid", "Softplus",
    "AvgPool2d", "MaxPool2d", "Flatten", "Sequential", "CrossEntropyLoss", "MSELoss",
    "BCEWithLogitsLoss",
]
