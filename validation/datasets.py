"""scikit-learn's handwritten digits as every study uses them: pixels scaled to [0, 1],
one fixed permutation (``numpy.random.default_rng(0)``), the first ``n_train`` for
training and the rest held out."""

import sys

import numpy as np


def digits(n_train=1000, images=False):
    """``(X_train, y_train, X_test, y_test)``; ``images=True`` gives ``(N, 1, 8, 8)``."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        sys.exit("this study needs scikit-learn: pip install 'refprune[validation]'")
    d = load_digits()
    X = d.data / 16.0
    if images:
        X = X.reshape(-1, 1, 8, 8)
    idx = np.random.default_rng(0).permutation(len(X))
    return X[idx[:n_train]], d.target[idx[:n_train]], X[idx[n_train:]], d.target[idx[n_train:]]
