# %% [markdown]
"""
Quickstart: the exact Hessian of a tiny network
===============================================

A 2-3-2 tanh network with a cross-entropy loss has 17 parameters; ``rp.hessian`` returns
its exact 17 x 17 Hessian (float64, in PyTorch's parameter order). We check it against a
Hessian-vector product, which refprune computes by another route, and draw the matrix.
"""

# %%
import matplotlib.pyplot as plt
import numpy as np

import refprune as rp

model = rp.Sequential(rp.Linear(2, 3), rp.Tanh(), rp.Linear(3, 2))
params = model.init(seed=0)
X = np.random.default_rng(0).standard_normal((8, 2))
y = np.array([0, 1] * 4)
loss = rp.CrossEntropyLoss()
H = rp.hessian(model, params, X, y, loss)
v = np.random.default_rng(1).standard_normal(model.n_params)
err = np.abs(H @ v - rp.hvp(model, params, X, y, loss, v)).max()
print(f"H {H.shape}, symmetric: {np.allclose(H, H.T)}, max |H v - hvp(v)| = {err:.1e}")

# %% [markdown]
# Each layer's weights and bias form a diagonal block; the off-diagonal blocks couple the
# two layers.

# %%
lim = np.abs(H).max()
plt.imshow(H, cmap="RdBu_r", vmin=-lim, vmax=lim)
plt.colorbar(label="$H_{ij}$")
plt.xticks(range(0, 17, 4))
plt.yticks(range(0, 17, 4))
plt.title("exact Hessian of a 2-3-2 tanh net")
plt.show()
