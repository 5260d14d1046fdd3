"""Wang et al. (2019), EigenDamage, at small scale: structured pruning of a conv net on digits.

The paper's claim (its experiments, one-pass pruning of VGG and ResNet on CIFAR and
Tiny-ImageNet): pruned in the Kronecker-factored eigenbasis (EigenDamage), a network keeps
more test accuracy than pruned by whole units (C-OBD, C-OBS, Kron-OBD, Kron-OBS) at the
same reduction in FLOPs, after fine-tuning.

**Network and data.**  ``Conv(1, 32, 3) - ReLU - Conv(32, 64, 3) - ReLU - MaxPool 2 -
Linear(256, 10)`` on scikit-learn's 8x8 digits (``datasets.digits``): the first 1,000 for
training, of which the last ``n_val`` are a validation split, the other 797 for test.  The
test set is used for nothing but the reported accuracies.

**What is pruned.**  The two convolutions; the classifier (the last layer) is excluded for
every method, as the authors do (their pruner drops the last module,
``self.modules[fix_layers:-1]``) and as the unit methods must (removing an output unit
removes a class).

**EigenDamage, the authors' form** (their ``use_patch=True`` code path, which builds the
bottleneck).  The input factor of a convolution is taken over channels only:
``A_c = mean over the kernel offsets o of E[[a_o; 1/kk] [a_o; 1/kk]^T]`` with ``a_o`` the
``c_in`` input channels seen at offset ``o`` and ``kk = kh kw`` (the bias enters once per
offset as ``1/kk``); here it is read off refprune's KFC factor ``A`` (expand) by averaging
its per-offset diagonal blocks, and ``S`` is refprune's.  With ``A_c = U_A diag(alpha)
U_A^T`` and ``S = U_S diag(sigma) U_S^T``, each offset's ``[W_o | b]`` is rotated to
``W*_o = U_S^T [W_o | b] U_A``; the importance of entry ``(i, j)`` is ``sum_o W*_o,ij^2
sigma_i alpha_j / 2`` (their eq. 9 with K-FAC's eigenvalues), a direction's importance is
its row (output) or column (input) sum, and the directions of both convolutions are
removed in one global ranking, lowest first, at most ``LAYER_CAP`` of either side of a
layer.  The kept directions form ``1x1 conv (U_A'^T, the bias as U_A' row / kk) -> kxk
conv (W*') -> 1x1 conv (U_S')``, kept only when it has fewer parameters than the layer
(otherwise the layer stays as it was, as in the authors' code).  With every direction
kept the bottleneck computes the layer exactly (no padding; tests/test_studies.py).
refprune's ``method="eigendamage"`` builds a different bottleneck (a kxk convolution of
``U_A`` over the unfolded input, then two 1x1) and prunes every layer, so the study
builds this one itself.

**Unit methods** are refprune's ``prune`` (GGN K-FAC, which for cross-entropy is the
Fisher; factored damping ``DAMPING`` where the criterion takes it; C-OBD ranks by the
exact diagonal), removing output channels of the two convolutions.

**Matched FLOPs.**  FLOPs are the multiply-adds of the affine layers for one image.  For
each method and target reduction, the pruning amount (units, or eigen-directions) is found
by bisection on the FLOPs reduction it gives, and the amount nearest the target is taken;
a match counts when it is within ``FLOPS_TOL`` (percentage points of the unpruned
network's FLOPs).  Units are removed one at a time by the lowest saliency, so the FLOPs of
the first ``k`` removals are read off one run's removal order; the chosen ``k`` is then
pruned on its own and its FLOPs checked against that reading.  A pair (EigenDamage and a
unit method, same seed and target) is matched when both are within the tolerance of the
target.  A channel's FLOPs come in one step (and so do an eigen-direction's, a few
points wide), so a network can end farther; then EigenDamage pruned by the same bisection
to the unit method's own reduction (and fine-tuned the same way) stands in, and the pair is
matched when the two are within the tolerance of each other.  Other pairs are left out;
the report lists every network off its target and every pair left out.

**Fine-tuning**, the same for every method: SGD (momentum ``MOMENTUM``, batch
``BATCH_SIZE``) on the training split, every parameter of the pruned network free, until the
validation loss has not improved for ``PATIENCE`` epochs or the epoch cap is reached; the
parameters of the best validation epoch are kept.  The learning rate and the cap are
chosen on the validation split alone, on a separate selection seed (``SELECTION_SEED``,
never a reported seed): every method at the middle target, each learning rate of
``lr_grid`` with a cap of ``selection_cap`` epochs; the rate with the lowest mean best validation loss is taken, and
the cap is three times the latest best-validation epoch seen at that rate (at least
``min_cap``).  The unpruned networks are trained the same way (rate ``base_lr``).

**Seeds and statistics.**  Seed ``s`` draws the initial weights and every batch order.
For each seed, target and unit method, the paired difference is EigenDamage's test
accuracy minus the unit method's; the report gives its mean over the ``n`` seeds with a
two-sided 95% Student-t interval.  Each seed's results are saved to
``<cache>/seed_<s>.json`` (default ``validation/out/eigendamage_digits/``, not committed)
with the configuration they were made with; a file whose configuration differs from the
run's, or that is unreadable or incomplete, is recomputed, so an interrupted run resumes
at the first missing seed.  The configuration is :data:`FULL` (:data:`QUICK` with
``--quick``).

    python validation/eigendamage_digits.py            # the study (writes validation/results/...)
    python validation/eigendamage_digits.py --quick    # a tiny instance, to try it (not the study)
"""

import report  # noqa: F401,I001 (first: pins the BLAS thread count before NumPy loads)

import argparse
import json
import os
import sys
import time
import warnings

import numpy as np
import scipy.stats

import refprune as rp
from datasets import digits
from report import equal_to_paper, output_dir, readme_row, table, verdict, write

LOSS = rp.CrossEntropyLoss()
UNIT_METHODS = ("c_obd", "c_obs", "kron_obd", "kron_obs")
METHODS = ("eigendamage",) + UNIT_METHODS
NAMES = {"eigendamage": "EigenDamage", "c_obd": "C-OBD", "c_obs": "C-OBS", "kron_obd": "Kron-OBD",
         "kron_obs": "Kron-OBS"}
DAMPING = 1e-3
LAYER_CAP = 0.95  # the authors' prune_ratio_limit
FLOPS_TOL = 0.01
MOMENTUM, BATCH_SIZE, PATIENCE = 0.9, 32, 5
SELECTION_SEED = 1000
PAPER = "Wang et al. 2019, EigenDamage"
COMMAND = "python validation/eigendamage_digits.py"

#: the study's configuration; every seed file records it (a mismatch recomputes the seed)
FULL = dict(channels=[32, 64], n_train=1000, n_val=200, seeds=8, targets=[0.5, 0.75, 0.9], base_lr=0.05,
            base_cap=100, lr_grid=[0.01, 0.03, 0.1], selection_cap=60, min_cap=50, patience=PATIENCE,
            batch_size=BATCH_SIZE, momentum=MOMENTUM, damping=DAMPING, layer_cap=LAYER_CAP, flops_tol=FLOPS_TOL,
            version=3)
QUICK = dict(FULL, channels=[3, 6], n_train=300, n_val=60, seeds=2, targets=[0.5], base_cap=4, lr_grid=[0.05],
             selection_cap=3, min_cap=4, flops_tol=0.1)


def network(channels):
    c1, c2 = channels
    return rp.Sequential(rp.Conv2d(1, c1, 3), rp.ReLU(), rp.Conv2d(c1, c2, 3), rp.ReLU(), rp.MaxPool2d(2),
                         rp.Flatten(), rp.Linear(c2 * 4, 10))


def flops(model, in_shape=(1, 8, 8)):
    """Multiply-adds of the affine layers (weights, not biases) for one input."""
    total, s = 0, tuple(in_shape)
    for layer in model:
        out = layer.output_shape(s)
        if isinstance(layer, rp.nn.AffineLayer):
            total += layer.n_weight * (int(np.prod(out)) // layer.out_units)
        s = out
    return total


def accuracy(model, params, X, y):
    return float(np.mean(model(params, X).argmax(1) == y))


def prunable(model):
    """Indices of the affine layers that are pruned: all but the last (the classifier)."""
    return [j for j, layer in enumerate(model) if isinstance(layer, rp.nn.AffineLayer)][:-1]


# ---------------------------------------------------------------- EigenDamage, the authors' form


def offsets(layer):
    """Kernel offsets ``kk`` of a convolution (1 for a Linear layer)."""
    return int(np.prod(layer.kernel_size)) if isinstance(layer, rp.Conv2d) else 1


def channel_factor(layer, A):
    """The authors' input factor over channels from KFC's factor ``A`` over the unfolded
    input (features in PyTorch's order ``c kh kw``, then the bias 1): the mean over kernel
    offsets of the ``(c_in + 1)`` second moments of ``[a_o; 1/kk]`` (module docstring)."""
    kk = offsets(layer)
    c = layer.n_weight // layer.out_units // kk
    r = c * kk
    out = np.empty((c + 1, c + 1))
    out[:c, :c] = np.einsum("aobo->ab", A[:r, :r].reshape(c, kk, c, kk)) / kk
    out[:c, c] = out[c, :c] = A[:r, r].reshape(c, kk).sum(axis=1) / kk ** 2
    out[c, c] = A[r, r] / kk ** 2
    return out


def per_offset(layer, W, b):
    """``[W_o | b]`` for every kernel offset ``o``: ``(kk, c_out, c_in + 1)``."""
    kk = offsets(layer)
    Wo = W.reshape(layer.out_units, -1, kk).transpose(2, 0, 1)
    return np.concatenate([Wo, np.broadcast_to(b[None, :, None], (kk, layer.out_units, 1))], axis=2)


def eigendamage_state(model, params, X, y):
    """Everything EigenDamage needs at ``params``: per pruned layer its eigenbases, rotated
    weights and importances, and the global removal order of the directions."""
    if any(not model[j].bias for j in prunable(model)):
        raise ValueError("eigendamage_state: the study's form needs every pruned layer to have a bias")
    K = rp.kfac(model, params, X, y, LOSS, curvature="ggn")
    blocks = {b.layout.layer_offset: b for b in K.blocks}
    grouped = model.group_params(params)
    offs = model.param_offsets()
    layers, dirs = [], []
    for li, j in enumerate(prunable(model)):
        layer = model[j]
        if isinstance(layer, rp.Conv2d) and any(layer.padding):
            raise ValueError(f"eigendamage_state: {layer!r} is padded; the 1/kk bias channel is exact only "
                             "without padding")
        block = blocks[offs[j]]
        sigma, US = np.linalg.eigh(block.S)
        alpha, UA = np.linalg.eigh(channel_factor(layer, block.A))
        # eigenvalues of a PSD factor are >= 0 up to rounding (the authors clamp them too)
        scale = np.outer(np.maximum(sigma, 0.0), np.maximum(alpha, 0.0))
        Wstar = np.einsum("si,osa,aj->oij", US, per_offset(layer, *grouped[j]), UA)
        imp = (Wstar ** 2).sum(axis=0) * scale / 2
        layers.append(dict(j=j, US=US, UA=UA, Wstar=Wstar, imp=imp))
        dirs += [(float(v), li, 0, i) for i, v in enumerate(imp.sum(axis=1))]  # 0: output (S) side
        dirs += [(float(v), li, 1, i) for i, v in enumerate(imp.sum(axis=0))]  # 1: input (A) side
    # one global order, lowest importance first; a side already at the cap is skipped
    taken = {(li, side): 0 for li in range(len(layers)) for side in (0, 1)}
    order = []
    for v, li, side, i in sorted(dirs):
        n = layers[li]["imp"].shape[side]
        if taken[(li, side)] < min(int(np.floor(LAYER_CAP * n)), n - 1):
            taken[(li, side)] += 1
            order.append((li, side, i))
    return dict(model=model, params=params, layers=layers, order=order)


def bottleneck(layer, US, UA, Wstar):
    """``1x1 (U_A^T, bias U_A[c_in] / kk) -> kxk (W*) -> 1x1 (U_S)`` (Linear: three
    Linear layers) and their parameter lists."""
    kk = offsets(layer)
    c = UA.shape[0] - 1
    kA, kS = UA.shape[1], US.shape[1]
    if isinstance(layer, rp.Conv2d):
        l1 = rp.Conv2d(c, kA, 1)
        l2 = rp.Conv2d(kA, kS, layer.kernel_size, stride=layer.stride, bias=False)
        l3 = rp.Conv2d(kS, layer.out_channels, 1, bias=False)
        w2 = Wstar.transpose(1, 2, 0).reshape((kS, kA) + layer.kernel_size)
        return [l1, l2, l3], [[UA[:c].T.reshape(kA, c, 1, 1), UA[c] / kk], [w2], [US.reshape(-1, kS, 1, 1)]]
    l1, l2, l3 = rp.Linear(c, kA), rp.Linear(kA, kS, bias=False), rp.Linear(kS, layer.out_features, bias=False)
    return [l1, l2, l3], [[UA[:c].T, UA[c]], [Wstar[0]], [US]]


def eigendamage_prune(state, count):
    """The network with the first ``count`` directions of ``state["order"]`` removed:
    ``(model, params, layers made bottlenecks)``."""
    model, grouped = state["model"], state["model"].group_params(state["params"])
    removed = {}
    for li, side, i in state["order"][:count]:
        removed.setdefault((li, side), []).append(i)
    by_j = {d["j"]: (li, d) for li, d in enumerate(state["layers"])}
    layers, params, made = [], [], []
    for j, layer in enumerate(model):
        if j in by_j:
            li, d = by_j[j]
            keepS = np.setdiff1d(np.arange(d["US"].shape[1]), removed.get((li, 0), []))
            keepA = np.setdiff1d(np.arange(d["UA"].shape[1]), removed.get((li, 1), []))
            b_layers, b_params = bottleneck(layer, d["US"][:, keepS], d["UA"][:, keepA],
                                            d["Wstar"][:, keepS][:, :, keepA])
            if sum(p.size for g in b_params for p in g) < layer.n_params:
                layers += b_layers
                params += [p for g in b_params for p in g]
                made.append(j)
                continue
        layers.append(layer)
        params += list(grouped[j])
    return rp.Sequential(*layers), params, made


# ---------------------------------------------------------------- matching FLOPs


def bisect(reduction, hi, target):
    """The amount ``k`` in ``[0, hi]`` whose FLOPs reduction is nearest ``target``: bisection
    for the smallest ``k`` reaching it (``reduction`` grows with ``k`` where it matters),
    then the nearer of it and ``k - 1``; ties to the smaller amount."""
    memo = {}

    def f(k):
        if k not in memo:
            memo[k] = reduction(k)
        return memo[k]

    lo = 0
    if f(hi) < target:
        return hi, f(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if f(mid) >= target:
            hi = mid
        else:
            lo = mid
    k = min((lo, hi), key=lambda a: (abs(f(a) - target), a))
    return k, f(k)


def eigendamage_at(state, target):
    """EigenDamage's network whose FLOPs reduction is nearest ``target``: ``(model,
    params, amount, reduction)``."""
    base = flops(state["model"])
    k, r = bisect(lambda a: 1.0 - flops(eigendamage_prune(state, a)[0]) / base, len(state["order"]), target)
    return eigendamage_prune(state, k)[:2] + (k, r)


def unit_prune(model, params, X, y, method, count):
    extra = dict(damping=DAMPING) if method != "c_obd" else {}  # C-OBD ranks by the undamped exact diagonal
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rp.PruningWarning)
        return rp.prune(model, params, X, y, LOSS, method=method, count=count, curvature="ggn", **extra)


def unit_flops_by_count(model, params, order):
    """FLOPs after the first ``k`` unit removals of ``order`` (a list of ``(layer, unit)``)."""
    from refprune.pruning.surgery import remove_units

    def at(k):
        keep = {j: np.ones(model[j].out_units, dtype=bool) for j in prunable(model)}
        for j, i in order[:k]:
            keep[j][i] = False
        return flops(remove_units(model, params, keep, (1, 8, 8))[0])

    return at


def matched(model, params, X, y, targets):
    """Per method and target: the pruned network whose FLOPs reduction is nearest the
    target, found by bisection on the pruning amount.  Returns ``{(method, target):
    (model, params, amount, reduction)}``."""
    base = flops(model)
    out = {}
    state = eigendamage_state(model, params, X, y)
    for t in targets:
        out[("eigendamage", t)] = eigendamage_at(state, t)
    most = sum(model[j].out_units - 1 for j in prunable(model))  # one unit stays in each layer
    for method in UNIT_METHODS:
        full = unit_prune(model, params, X, y, method, most)
        at = unit_flops_by_count(model, params, full.steps[0].removed_units)
        for t in targets:
            k, r = bisect(lambda a: 1.0 - at(a) / base, most, t)
            res = unit_prune(model, params, X, y, method, k)
            if 1.0 - flops(res.model) / base != r:
                raise RuntimeError(f"matched: {method} with {k} units gives {1 - flops(res.model) / base}, not the "
                                   f"{r} read off the removal order")
            out[(method, t)] = (res.model, res.params, k, r)
    return out


# ---------------------------------------------------------------- training


class _Stop(Exception):
    pass


def fit(model, params, data, lr, cap, seed, patience=PATIENCE):
    """SGD until the validation loss has not improved for ``patience`` epochs or ``cap``
    epochs (or a divergence: a rate too large for the network); returns the best-validation
    parameters and ``dict(best_epoch, epochs, diverged)``."""
    Xtr, ytr, Xval, yval = data
    best = dict(loss=float(rp.loss(model, params, Xval, yval, LOSS)), params=params, epoch=0, ran=0, diverged=False)

    def watch(epoch, p, _):
        best["ran"] = epoch
        v = float(rp.loss(model, p, Xval, yval, LOSS))
        if v < best["loss"]:
            best.update(loss=v, params=p, epoch=epoch)
        elif epoch - best["epoch"] >= patience:
            raise _Stop

    try:
        rp.train(model, params, Xtr, ytr, LOSS, epochs=cap, batch_size=BATCH_SIZE, lr=lr, momentum=MOMENTUM,
                 seed=seed, callback=watch)
    except _Stop:
        pass
    except rp.DivergenceError:  # the best epoch before it stands
        best["diverged"] = True
    return best["params"], dict(best_epoch=best["epoch"], epochs=best["ran"], diverged=best["diverged"],
                                val_loss=best["loss"])


def split(config):
    X, y, Xte, yte = digits(n_train=config["n_train"], images=True)
    if config["n_train"] < 1797:
        Xte, yte = Xte[:797], yte[:797]
    v = config["n_val"]
    return (X[:-v], y[:-v], X[-v:], y[-v:]), (Xte, yte)


def base_network(config, data, seed):
    model = network(config["channels"])
    params, info = fit(model, model.init(seed), data, config["base_lr"], config["base_cap"], seed)
    return model, params, info


def select(config, data):
    """The fine-tuning rate and cap, from the validation loss on ``SELECTION_SEED``."""
    model, params, _ = base_network(config, data, SELECTION_SEED)
    mid = config["targets"][len(config["targets"]) // 2]
    pruned = matched(model, params, data[0], data[1], [mid])
    rows = []
    for lr in config["lr_grid"]:
        for method in METHODS:
            m, p, _, r = pruned[(method, mid)]
            q, info = fit(m, p, data, lr, config["selection_cap"], SELECTION_SEED, config["patience"])
            rows.append(dict(info, lr=lr, method=method, val=accuracy(m, q, data[2], data[3])))
    mean = [float(np.mean([r["val_loss"] for r in rows if r["lr"] == lr])) for lr in config["lr_grid"]]
    lr = min(zip(config["lr_grid"], mean), key=lambda a: (a[1], a[0]))[0]
    cap = max(config["min_cap"], 3 * max(r["best_epoch"] for r in rows if r["lr"] == lr))
    return dict(lr=lr, cap=cap, target=mid, rows=rows, mean=mean)


def shape(model):
    """The affine layers' (inputs, outputs): the pruned network's widths."""
    return [[int(layer.n_weight // layer.out_units), int(layer.out_units)] for layer in model
            if isinstance(layer, rp.nn.AffineLayer)]


def run_seed(config, chosen, data, test, seed):
    start = time.perf_counter()
    model, params, trained = base_network(config, data, seed)
    Xte, yte = test
    out = dict(seed=seed, base=dict(trained, flops=flops(model), params=model.n_params, n_test=len(yte),
                                    test=accuracy(model, params, Xte, yte), val=accuracy(model, params, *data[2:])))
    rows = []
    for (method, t), (m, p, k, r) in matched(model, params, data[0], data[1], config["targets"]).items():
        q, info = fit(m, p, data, chosen["lr"], chosen["cap"], seed, config["patience"])
        rows.append(dict(info, method=method, target=t, amount=int(k), reduction=r, params=m.n_params,
                         pruned=accuracy(m, p, Xte, yte), tuned=accuracy(m, q, Xte, yte),
                         val=accuracy(m, q, *data[2:]), at_cap=info["epochs"] == chosen["cap"],
                         shape=shape(m)))
    # a unit method's FLOPs step (a whole channel) can leave it more than the tolerance from
    # the target: EigenDamage is then matched to that method's reduction instead (pairs)
    state, nominal = None, {r["target"]: r for r in rows if r["method"] == "eigendamage"}
    extra = {}
    for u in [r for r in rows if r["method"] != "eigendamage"]:
        if abs(nominal[u["target"]]["reduction"] - u["reduction"]) <= config["flops_tol"]:
            continue
        state = state or eigendamage_state(model, params, data[0], data[1])
        m, p, k, r = eigendamage_at(state, u["reduction"])
        if k not in extra and k != nominal[u["target"]]["amount"]:
            q, info = fit(m, p, data, chosen["lr"], chosen["cap"], seed, config["patience"])
            extra[k] = dict(info, method="eigendamage", target=None, amount=int(k), reduction=r, params=m.n_params,
                            pruned=accuracy(m, p, Xte, yte), tuned=accuracy(m, q, Xte, yte),
                            val=accuracy(m, q, *data[2:]), at_cap=info["epochs"] == chosen["cap"], shape=shape(m))
        u["paired_amount"] = int(k)
    out["rows"] = rows
    out["extra"] = [extra[k] for k in sorted(extra)]
    out["seconds"] = time.perf_counter() - start
    return out


def cached(path, config, compute, complete=lambda result: True):
    """The result stored at ``path`` if it was made with ``config`` and is ``complete``,
    else ``compute()`` (saved with ``config``; written to a temporary file and renamed, so
    an interrupted run leaves no partial file)."""
    if os.path.exists(path):
        try:
            with open(path) as fh:
                stored = json.load(fh)
        except (OSError, ValueError):
            stored = {}
        if not isinstance(stored, dict) or stored.get("config") != config:
            print(f"{path}: made with another configuration (or unreadable); recomputing", file=sys.stderr)
        elif not complete(stored.get("result")):
            print(f"{path}: incomplete; recomputing", file=sys.stderr)
        else:
            return stored["result"]
    result = compute()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(dict(config=config, result=result), fh)
    os.replace(tmp, path)
    return result


def run(config, cache):
    data, test = split(config)
    chosen = cached(os.path.join(cache, "selection.json"), config, lambda: select(config, data))
    seeds = []
    expected = sorted((m, t) for m in METHODS for t in config["targets"])
    for s in range(config["seeds"]):
        cfg = dict(config, lr=chosen["lr"], cap=chosen["cap"])
        seeds.append(cached(os.path.join(cache, f"seed_{s}.json"), cfg,
                            lambda: run_seed(config, chosen, data, test, s),
                            lambda r: isinstance(r, dict) and r.get("seed") == s and sorted(
                                (x["method"], x["target"]) for x in r.get("rows", [])) == expected))
        print(f"seed {s} done", file=sys.stderr, flush=True)
    return chosen, seeds


# ---------------------------------------------------------------- the report


def t_interval(d, level=0.95):
    """Mean and two-sided Student-t interval of the paired differences ``d``."""
    d = np.asarray(d, dtype=np.float64)
    n, m = d.size, float(d.mean())
    if n < 2:
        return m, float("nan"), float("nan")
    h = float(scipy.stats.t.ppf(0.5 + level / 2, n - 1) * d.std(ddof=1) / np.sqrt(n))
    return m, m - h, m + h


def direction(mean, lo, hi):
    """What the interval says: EigenDamage better, worse, or no difference resolved."""
    if lo > 0:
        return "EigenDamage more accurate"
    if hi < 0:
        return "unit pruning more accurate"
    return "no difference resolved"


def summarise(config, chosen, seeds, quick=False):
    n = len(seeds)
    base = seeds[0]["base"]
    tol = config["flops_tol"]
    within = f"±{tol * 100:g} point" + ("" if tol == 0.01 else "s")
    rows = [dict(r, seed=s["seed"]) for s in seeds for r in s["rows"]]
    targets = config["targets"]

    def get(method, t):
        return sorted((r for r in rows if r["method"] == method and r["target"] == t), key=lambda r: r["seed"])

    def sd(x):
        return float(np.std(x, ddof=1)) if len(x) > 1 else 0.0

    c1, c2 = config["channels"]
    header = "# EigenDamage at small scale (Wang et al. 2019)" + (" — a tiny instance, not the study" if quick
                                                                   else "")
    base_acc = [s["base"]["test"] for s in seeds]
    lines = [header, "",
             f"Conv net {c1}c3-{c2}c3-pool-10 (ReLU) on scikit-learn's 8x8 digits: "
             f"{config['n_train'] - config['n_val']} training, {config['n_val']} validation and {base['n_test']} "
             f"test images; {base['params']} parameters, {base['flops']} multiply-adds per image. Written by "
             f"`{COMMAND}`" + (" with `--quick`" if quick else "") + "; the method is in the script's docstring.",
             "",
             "- Pruned: the two convolutions; the classifier is excluded for every method.",
             "- EigenDamage: the authors' bottleneck (1x1 conv into the input channels' eigenbasis, kxk conv in "
             "the eigenbasis, 1x1 conv out of the output channels' eigenbasis), K-FAC eigenvalues of the GGN (the "
             f"Fisher, for cross-entropy), one global ranking of directions, at most {LAYER_CAP:.0%} of a side per "
             "layer, a layer's bottleneck kept only when it has fewer parameters than the layer.",
             f"- Unit methods: refprune's C-OBD (exact diagonal), C-OBS, Kron-OBD, Kron-OBS (GGN K-FAC, factored "
             f"damping {DAMPING:g}), removing output channels.",
             f"- FLOPs matched by bisection on each method's amount (units or directions removed); a match is "
             f"within {within} (of the unpruned network's FLOPs) of the target reduction.",
             f"- Fine-tuning, the same for every method: SGD, momentum {MOMENTUM}, batch {BATCH_SIZE}, learning rate "
             f"{chosen['lr']:g}, every parameter free, until the validation loss has not improved for "
             f"{config['patience']} epochs or {chosen['cap']} epochs; the best validation epoch is kept.",
             f"- Unpruned networks, trained the same way (rate {config['base_lr']:g}): test accuracy "
             f"{np.mean(base_acc):.3f} ± {sd(base_acc):.3f} over {n} seeds.",
             "- Intervals: two-sided 95% Student-t intervals of the mean paired difference over the n seeds.", ""]

    lines += ["## Fine-tuning settings, chosen on the validation split", "",
              f"Selection seed {SELECTION_SEED} (not a reported seed); every method pruned to {chosen['target']:.0%} "
              f"of the FLOPs and fine-tuned at each rate with a cap of {config['selection_cap']} epochs. Validation "
              "accuracy per method, the mean best validation loss (the criterion) and the latest best epoch:", ""]
    body = []
    for lr, mean in zip(config["lr_grid"], chosen["mean"]):
        sel = [r for r in chosen["rows"] if r["lr"] == lr]
        body.append((f"{lr:g}",) + tuple(f"{next(r['val'] for r in sel if r['method'] == m):.3f}" for m in METHODS)
                    + (f"{mean:.4f}", str(max(r["best_epoch"] for r in sel)),
                       str(sum(r["diverged"] for r in sel))))
    lines += table(["learning rate"] + [NAMES[m] for m in METHODS]
                   + ["mean validation loss", "latest best epoch", "diverged"], body)
    lines += ["", f"Chosen: rate {chosen['lr']:g} (lowest mean validation loss), cap {chosen['cap']} epochs "
              f"(three times the latest best epoch at that rate, at least {config['min_cap']}).", ""]

    lines += [f"## Accuracy at matched FLOPs ({n} seeds)", "",
              "FLOPs removed: mean and range over seeds. Accuracies on the test set, mean over seeds (fine-tuned: "
              "± standard deviation). Shape: the pruned network's affine layers, outputs per layer, at the first "
              "seed.", ""]
    body, off = [], []
    for t in targets:
        for m in METHODS:
            rs = get(m, t)
            red = np.array([r["reduction"] for r in rs])
            off += [(m, t, r["seed"]) for r in rs if abs(r["reduction"] - t) > tol + 1e-12]
            tuned = [r["tuned"] for r in rs]
            body.append((f"{t:.0%}", NAMES[m], f"{red.mean():.1%} ({red.min():.1%} to {red.max():.1%})",
                         f"{np.mean([1 - r['params'] / base['params'] for r in rs]):.1%}",
                         f"{np.mean([r['pruned'] for r in rs]):.3f}", f"{np.mean(tuned):.3f} ± {sd(tuned):.3f}",
                         f"{np.mean([r['epochs'] for r in rs]):.1f}", str(sum(r["at_cap"] for r in rs)),
                         "-".join(str(o) for _, o in rs[0]["shape"])))
    lines += table(["target", "method", "FLOPs removed", "parameters removed", "accuracy pruned",
                    "accuracy fine-tuned", "epochs run", "runs at the cap", "shape"], body)
    at_cap = sum(r["at_cap"] for r in rows) + sum(r["at_cap"] for s in seeds for r in s["extra"])
    lines += ["", (f"Every network is within {within} of its target." if not off else
                   f"{len(off)} of {len(rows)} networks are more than {within} from the target (the "
                   "amounts on either side of it are farther: a channel's FLOPs come in one step): "
                   + ", ".join(f"{NAMES[m]} at {t:.0%}, seed {s}" for m, t, s in off) + "."),
              f"Fine-tuning runs that reached the cap of {chosen['cap']} epochs (not stopped by the validation "
              f"rule): {at_cap}.", ""]

    # the pairs: EigenDamage's network at the target, or re-matched to the unit method's reduction
    # when that is more than the tolerance from EigenDamage's (run_seed)
    extra = {(s["seed"], r["amount"]): r for s in seeds for r in s["extra"]}
    body, stats, stats0, rematched, left_out = [], {}, {}, 0, []
    for t in targets:
        ed = {r["seed"]: r for r in get("eigendamage", t)}
        for m in UNIT_METHODS:
            pairs = []
            for r in get(m, t):
                a = ed[r["seed"]]
                if max(abs(a["reduction"] - t), abs(r["reduction"] - t)) > tol + 1e-12:
                    # one of the two is off the target: EigenDamage at the unit method's reduction
                    a = extra.get((r["seed"], r.get("paired_amount")), a)
                    rematched += a is not ed[r["seed"]]
                    if abs(a["reduction"] - r["reduction"]) > tol + 1e-12:
                        left_out.append((m, t, r["seed"]))
                        continue
                pairs.append((a, r))
            d = [100 * (a["tuned"] - b["tuned"]) for a, b in pairs]
            d0 = [100 * (a["pruned"] - b["pruned"]) for a, b in pairs]
            stats[(m, t)], stats0[(m, t)] = t_interval(d) + (len(d),), t_interval(d0)
            mean, lo, hi, _ = stats[(m, t)]
            mean0, lo0, hi0 = stats0[(m, t)]
            body.append((f"{t:.0%}", NAMES[m], str(len(d)), f"{mean:+.2f} [{lo:+.2f}, {hi:+.2f}]",
                         f"{sum(x > 0 for x in d)}/{sum(x < 0 for x in d)}", direction(mean, lo, hi),
                         f"{mean0:+.2f} [{lo0:+.2f}, {hi0:+.2f}]"))
    lines += ["## Paired differences: EigenDamage minus each unit method", "",
              "Test accuracy, EigenDamage's minus the unit method's on the same seed, in percentage points: mean "
              "and 95% t interval over the n seeds whose pair is matched; before fine-tuning too. A pair is "
              f"matched when both networks are within {within} of the target; when one is not, "
              "EigenDamage pruned (by the same bisection) to the unit method's own reduction and fine-tuned the "
              f"same way stands in, and the pair is matched when the two are within {within} of each "
              f"other ({rematched} pairs). Pairs still unmatched, left out: {len(left_out)}"
              + (" (" + ", ".join(f"{NAMES[m]} at {t:.0%}, seed {s}" for m, t, s in left_out) + ")" if left_out
                 else "") + ".", ""]
    lines += table(["target", "unit method", "n", "fine-tuned: mean [95% t interval]", "EigenDamage ahead/behind",
                    "the interval says", "before fine-tuning: mean [95% t interval]"], body)

    verdicts = []
    for t in targets:
        outcome = tuple(direction(*stats[(m, t)][:3]) for m in UNIT_METHODS)
        verdicts.append((t, outcome, verdict(
            f"EigenDamage against C-OBD, C-OBS, Kron-OBD and Kron-OBS at {t:.0%} of the FLOPs removed, after "
            f"fine-tuning (95% t intervals, n = {min(stats[(m, t)][3] for m in UNIT_METHODS)})", outcome,
            ("EigenDamage more accurate",) * len(UNIT_METHODS), equal_to_paper(),
            show=lambda o: "; ".join(f"{x} against {o.count(x)} of {len(o)}" for x in sorted(set(o))))))
    ahead = [(t, m) for t, o, _ in verdicts for m, x in zip(UNIT_METHODS, o) if x == "EigenDamage more accurate"]
    behind = [(t, m) for t, o, _ in verdicts for m, x in zip(UNIT_METHODS, o) if x == "unit pruning more accurate"]
    tied = [(t, m) for t, o, _ in verdicts for m, x in zip(UNIT_METHODS, o) if x == "no difference resolved"]
    before = {k: direction(*v) for k, v in stats0.items()}
    spread = {t: (lambda a: (max(a) - min(a)) * 100)([np.mean([r["tuned"] for r in get(m, t)]) for m in METHODS])
              for t in targets}
    spread0 = {t: (lambda a: (max(a) - min(a)) * 100)([np.mean([r["pruned"] for r in get(m, t)]) for m in METHODS])
               for t in targets}
    made = {t: sum(len(r["shape"]) - 3 for r in get("eigendamage", t)) / max(1, len(get("eigendamage", t)))
            for t in targets}
    lines += ["", "## Verdicts: what reproduces, what does not, and why (computed from the tables above)", ""]
    lines += [f"- {v.sentence}" for _, _, v in verdicts]
    lines += [f"- Of {len(stats)} comparisons (target × unit method), EigenDamage is resolved ahead in {len(ahead)}, "
              f"behind in {len(behind)}, and {len(tied)} are not resolved at n = {n}. Before fine-tuning it is ahead "
              f"in {sum(v == 'EigenDamage more accurate' for v in before.values())} and behind in "
              f"{sum(v == 'unit pruning more accurate' for v in before.values())}. With {len(stats)} intervals at "
              f"95% each, about {0.05 * len(stats):.1f} would exclude zero by chance if no method differed.",
              "- The five methods' mean accuracies lie within "
              + ", ".join(f"{spread[t]:.1f} points at {t:.0%}" for t in targets) + " after fine-tuning, against "
              + ", ".join(f"{spread0[t]:.1f}" for t in targets) + " before: fine-tuning "
              + ("narrows" if all(spread[t] < spread0[t] for t in targets) else "does not always narrow")
              + " the gaps between criteria.",
              "- EigenDamage's bottlenecks (layers replaced, of 2, mean over seeds): "
              + ", ".join(f"{made[t] / 2:.1f} at {t:.0%}" for t in targets)
              + ". A bottleneck adds two 1x1 convolutions, so it is kept only once most of a layer's directions "
              f"are gone; with {c1} and {c2} channels there is little room before that point.",
              f"- What differs from the paper, and may matter: convolutions of {c1} and {c2} channels on 8x8 "
              "images against "
              "VGG19 and ResNet32 with hundreds of channels on CIFAR and Tiny-ImageNet (the paper's gains grow "
              "with the network and the data set's difficulty); fine-tuning stopped on a "
              f"{config['n_val']}-image validation split, where the paper fine-tunes for 150 epochs.", ""]
    lines += ["![accuracy against FLOPs removed](eigendamage_digits.png)", ""]

    def pts(pairs_):
        by_t = {}
        for t, m in pairs_:
            by_t.setdefault(t, []).append(NAMES[m])
        return "; ".join(", ".join(ms) + f" at {t:.0%}" for t, ms in by_t.items())

    setting = (f"{c1}-{c2} channel conv net on digits, classifier excluded, authors' bottleneck, FLOPs matched "
               f"within {within}, fine-tuned to a validation stop, {n} seeds, 95% t intervals")
    ahead0 = [(t, m) for t in targets for m in UNIT_METHODS if before[(m, t)] == "EigenDamage more accurate"]
    k = len(stats)
    reproduced = "; ".join(x for x in (
        f"after fine-tuning, EigenDamage more accurate in {len(ahead)} of {k} comparisons: {pts(ahead)}" if ahead
        else "",
        f"before fine-tuning (one-shot), EigenDamage more accurate in {len(ahead0)} of {k} comparisons "
        f"({pts(ahead0)})" if ahead0 else "") if x)
    not_reproduced = ""
    if len(ahead) < k:
        not_reproduced = (f"after fine-tuning (the paper's claim), EigenDamage ahead in {len(ahead)} of {k} "
                          f"comparisons, behind in {len(behind)}" + (f" ({pts(behind)})" if behind else "")
                          + f", {len(tied)} unresolved; the methods lie within {max(spread.values()):.1f} points "
                          f"({setting}); the paper's gains are on far wider networks and harder data")
    lines += [readme_row(PAPER, f"`{COMMAND}`", reproduced, not_reproduced)]
    return lines


def figure(config, seeds, out, name="eigendamage_digits.png"):
    """Test accuracy against the FLOPs removed, before and after fine-tuning: mean ± sd
    over seeds at each target (methods offset sideways to be readable)."""
    plt = report.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=False)
    rows = [r for s in seeds for r in s["rows"]]
    for ax, key, title in zip(axes, ("pruned", "tuned"), ("without fine-tuning", "fine-tuned")):
        for k, m in enumerate(METHODS):
            xs, ys, es = [], [], []
            for t in config["targets"]:
                rs = [r for r in rows if r["method"] == m and r["target"] == t]
                xs.append(np.mean([r["reduction"] for r in rs]))
                acc = [r[key] for r in rs]
                ys.append(np.mean(acc))
                es.append(np.std(acc, ddof=1) if len(acc) > 1 else 0.0)
            ax.errorbar(np.array(xs) + 0.004 * (k - 2), ys, yerr=es, marker="o", ms=4, capsize=3, label=NAMES[m])
        ax.axhline(np.mean([s["base"]["test"] for s in seeds]), color="k", ls="--", lw=1, label="unpruned")
        ax.set_xlabel("fraction of FLOPs removed")
        ax.set_title(f"{title}, mean ± sd over {len(seeds)} seeds")
    axes[0].set_ylabel("test accuracy")
    axes[1].legend(fontsize=8)
    return report.save(fig, name, out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a tiny instance, to try it (not the study)")
    ap.add_argument("--out", default=None, help="directory for the report and figure (default validation/results; "
                                                "validation/out/quick with --quick)")
    ap.add_argument("--cache", default=None, help="directory of the per-seed files (default "
                    "validation/out/eigendamage_digits[/quick])")
    args = ap.parse_args(argv)
    config = QUICK if args.quick else FULL
    cache = args.cache or os.path.join(os.path.dirname(os.path.abspath(__file__)), "out", "eigendamage_digits",
                                       *(["quick"] if args.quick else []))
    chosen, seeds = run(config, cache)
    lines = summarise(config, chosen, seeds, quick=args.quick)
    figure(config, seeds, output_dir(args.out, args.quick))
    print(write("eigendamage_digits.md", lines, out=output_dir(args.out, args.quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
