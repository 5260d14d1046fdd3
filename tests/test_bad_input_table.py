"""The bad-input table: one row per case, each a call with one bad or unusual input, the
exception it must raise and words its message must contain (``None``: the call must
succeed, for inputs that are converted deliberately).  Every call gets fresh copies of
the problem, and a test checks afterwards that the caller's arrays are unchanged."""

import numpy as np
import pytest

import refprune as rp
from refprune import conformance as cf
from refprune.conformance import optimizer_quantities as oq
from refprune.testing import check_grad, check_hessian, check_hvp, check_jvp, check_vjp, directional_derivative

from cases import make


def problem():
    return make("conv-tanh-avgpool", "ce-mean", n=4)


def mse_problem():
    return make("mlp-tanh", "mse-mean", n=4)


N_PARAMS = make("conv-tanh-avgpool", "ce-mean")[0].n_params


def nan_at(a, idx=0):
    a = np.array(a, dtype=float)
    a.flat[idx] = np.nan
    return a


def with_X(f, X):
    return lambda m, p, _X, y, l: f(m, p, X, y, l)


def read_only(a):
    a = np.array(a)
    a.setflags(write=False)
    return a


# (id, call(m, p, X, y, l), exception type or None, words)
CASES = [
    # ---- model and parameters
    ("model not a Sequential", lambda m, p, X, y, l: rp.loss(m[0], p, X, y, l), TypeError, "model must be a refprune Sequential"),
    ("params an ndarray", lambda m, p, X, y, l: rp.grad(m, rp.flatten_params(p), X, y, l), TypeError, "params must be a list of arrays"),
    ("params too few", lambda m, p, X, y, l: rp.grad(m, p[:-1], X, y, l), ValueError, "parameter arrays, got"),
    ("params wrong shape", lambda m, p, X, y, l: rp.grad(m, [p[0].T] + p[1:], X, y, l), ValueError, "params[0] must have shape"),
    ("params strings", lambda m, p, X, y, l: rp.grad(m, [np.array(["a"])] + p[1:], X, y, l), TypeError, "params[0] must be a numeric array"),
    ("params NaN", lambda m, p, X, y, l: rp.hessian(m, [nan_at(p[0])] + p[1:], X, y, l), ValueError, "params[0] contains 1 NaN"),
    ("params inf", lambda m, p, X, y, l: rp.ggn(m, p[:1] + [np.full_like(p[1], np.inf)] + p[2:], X, y, l), ValueError, "params[1] contains"),
    ("params complex", lambda m, p, X, y, l: rp.loss(m, [p[0] + 1j] + p[1:], X, y, l), TypeError, "numeric array"),
    ("params object dtype", lambda m, p, X, y, l: rp.loss(m, [p[0].astype(object)] + p[1:], X, y, l), TypeError, "numeric array"),
    ("params float32 converted", lambda m, p, X, y, l: rp.loss(m, [a.astype(np.float32) for a in p], X, y, l), None, ""),
    ("params read-only", lambda m, p, X, y, l: rp.grad(m, [read_only(a) for a in p], X, y, l), None, ""),
    ("params a tuple", lambda m, p, X, y, l: rp.grad(m, tuple(p), X, y, l), None, ""),
    # ---- inputs
    ("X 1-d", lambda m, p, X, y, l: rp.loss(m, p, X[0, 0, 0], y, l), ValueError, "X must have shape (N, ...)"),
    ("X empty batch", lambda m, p, X, y, l: rp.loss(m, p, X[:0], y[:0], l), ValueError, "N >= 1"),
    ("X wrong channels", lambda m, p, X, y, l: rp.grad(m, p, np.concatenate([X, X], 1), y, l), ValueError, "expects per-sample input"),
    ("X too small for the pooling", lambda m, p, X, y, l: rp.grad(m, p, X[:, :, :1, :1], y, l), ValueError, "AvgPool2d(2) expects per-sample input"),
    ("X too small for the kernel", lambda m, p, X, y, l: rp.grad(rp.Sequential(rp.Conv2d(1, 1, 5), rp.Flatten()), [np.ones((1, 1, 5, 5)), np.zeros(1)], X, y, rp.MSELoss()), ValueError, "smaller than the kernel"),
    ("X NaN", lambda m, p, X, y, l: rp.grad(m, p, nan_at(X), y, l), ValueError, "X contains 1 NaN"),
    ("X inf", lambda m, p, X, y, l: rp.hvp(m, p, np.where(X > 1, np.inf, X), y, l, np.ones(N_PARAMS)), ValueError, "X contains"),
    ("X strings", lambda m, p, X, y, l: rp.loss(m, p, X.astype(str), y, l), TypeError, "X must be a numeric array"),
    ("X int converted", lambda m, p, X, y, l: rp.loss(m, p, (X * 3).astype(int), y, l), None, ""),
    ("X bool converted", lambda m, p, X, y, l: rp.loss(m, p, X > 0, y, l), None, ""),
    ("X a nested list", lambda m, p, X, y, l: rp.loss(m, p, X.tolist(), y, l), None, ""),
    ("X read-only", lambda m, p, X, y, l: rp.hessian(m, p, read_only(X), y, l), None, ""),
    ("params overflow the forward pass", lambda m, p, X, y, l: rp.loss(m, [1e308 * a for a in p], X, y, l), FloatingPointError, "not finite"),
    ("huge but finite params accepted", lambda m, p, X, y, l: rp.loss(m, [1e300 * a for a in p], X, y, l), None, ""),
    ("loss overflows", lambda m, p, X, y, l: rp.loss(*_mse_with_targets(1e200)), FloatingPointError, "the loss is not finite"),
    ("Hessian with a huge but finite residual", lambda m, p, X, y, l: rp.hessian(*_mse_with_targets(1e200)), None, ""),
    # ---- targets
    ("labels out of range", lambda m, p, X, y, l: rp.loss(m, p, X, y + 3, l), ValueError, "labels must lie in [0, 3)"),
    ("labels negative", lambda m, p, X, y, l: rp.loss(m, p, X, -1 - y, l), ValueError, "labels must lie in"),
    ("labels float non-integer", lambda m, p, X, y, l: rp.loss(m, p, X, y + 0.5, l), ValueError, "labels must be integers"),
    ("labels float integer converted", lambda m, p, X, y, l: rp.loss(m, p, X, y.astype(float), l), None, ""),
    ("labels NaN", lambda m, p, X, y, l: rp.loss(m, p, X, nan_at(y), l), ValueError, "labels must be integers"),
    ("labels wrong length", lambda m, p, X, y, l: rp.loss(m, p, X, y[:-1], l), ValueError, "labels must have shape (4,)"),
    ("labels 2-d", lambda m, p, X, y, l: rp.loss(m, p, X, y[:, None], l), ValueError, "labels must have shape"),
    ("labels strings", lambda m, p, X, y, l: rp.loss(m, p, X, y.astype(str), l), ValueError, "labels must be integers"),
    ("labels bool", lambda m, p, X, y, l: rp.loss(m, p, X, y > 0, l), ValueError, "labels must be integers"),
    ("loss not a refprune loss", lambda m, p, X, y, l: rp.loss(m, p, X, y, "ce"), TypeError, "loss must be a refprune loss"),
    ("loss reduction", lambda m, p, X, y, l: rp.CrossEntropyLoss("none"), ValueError, "reduction must be one of"),
    ("mse reduction", lambda m, p, X, y, l: rp.MSELoss("batchmean"), ValueError, "reduction must be one of"),
    # ---- HVP directions
    ("hvp v wrong length", lambda m, p, X, y, l: rp.hvp(m, p, X, y, l, np.ones(3)), ValueError, "v must have shape"),
    ("hvp v NaN", lambda m, p, X, y, l: rp.hvp(m, p, X, y, l, nan_at(np.ones(N_PARAMS))), ValueError, "v contains 1 NaN"),
    ("hvp v 3-d", lambda m, p, X, y, l: rp.hvp(m, p, X, y, l, np.ones((1, 1, N_PARAMS))), ValueError, "v must have shape"),
    ("hvp v strings", lambda m, p, X, y, l: rp.hvp(m, p, X, y, l, np.array(["x"] * N_PARAMS)), TypeError, "v must be a numeric array"),
    ("hvp empty stack", lambda m, p, X, y, l: _shape(rp.hvp(m, p, X, y, l, np.zeros((0, N_PARAMS))), (0, N_PARAMS)), None, ""),
    ("hvp int direction converted", lambda m, p, X, y, l: rp.hvp(m, p, X, y, l, np.ones(N_PARAMS, dtype=int)), None, ""),
    ("hvp read-only direction", lambda m, p, X, y, l: rp.hvp(m, p, X, y, l, read_only(np.ones(N_PARAMS))), None, ""),
    # ---- exact curvature options
    ("fisher curvature unknown", lambda m, p, X, y, l: rp.fisher(m, p, X, y, l, curvature="true-ish"), ValueError, "curvature must be one of"),
    ("fisher curvature not a string", lambda m, p, X, y, l: rp.fisher(m, p, X, y, l, curvature=3), ValueError, "curvature must be one of"),
    ("fisher old kind", lambda m, p, X, y, l: rp.fisher(m, p, X, y, l, kind="mc"), TypeError, "was renamed curvature="),
    ("fisher samples 0", lambda m, p, X, y, l: rp.fisher(m, p, X, y, l, curvature="mc_fisher", samples=0), ValueError, "samples must be a positive int"),
    ("fisher samples float", lambda m, p, X, y, l: rp.fisher(m, p, X, y, l, curvature="mc_fisher", samples=2.0), ValueError, "samples must be a positive int"),
    ("fisher samples bool", lambda m, p, X, y, l: rp.fisher(m, p, X, y, l, curvature="mc_fisher", samples=True), ValueError, "samples must be a positive int"),
    ("fisher targets out of range", lambda m, p, X, y, l: rp.fisher(m, p, X, y, l, curvature="mc_fisher", targets=y[None] + 3), ValueError, "labels must lie in"),
    ("fisher targets for the wrong curvature", lambda m, p, X, y, l: rp.fisher(m, p, X, y, l, targets=y[None]), ValueError, "targets= is for curvature='mc_fisher'"),
    ("hessian out wrong shape", lambda m, p, X, y, l: rp.hessian(m, p, X, y, l, out=np.empty((3, 3))), ValueError, "out must be a float64 array of shape"),
    ("hessian out wrong dtype", lambda m, p, X, y, l: rp.hessian(m, p, X, y, l, out=np.empty((N_PARAMS, N_PARAMS), np.float32)), ValueError, "out must be a float64 array"),
    ("hessian out a list", lambda m, p, X, y, l: rp.hessian(m, p, X, y, l, out=[[0.0]]), ValueError, "out must be a float64 array"),
    ("hessian out read-only", lambda m, p, X, y, l: rp.hessian(m, p, X, y, l, out=read_only(np.empty((N_PARAMS, N_PARAMS)))), ValueError, "out is read-only"),
    ("ggn out wrong shape", lambda m, p, X, y, l: rp.ggn(m, p, X, y, l, out=np.empty((2, 2))), ValueError, "out must be a float64 array"),
    ("residual out wrong shape", lambda m, p, X, y, l: rp.residual(m, p, X, y, l, out=np.empty((2, 2))), ValueError, "out must be a float64 array"),
    ("fisher out wrong shape", lambda m, p, X, y, l: rp.fisher(m, p, X, y, l, out=np.empty((2, 2))), ValueError, "out must be a float64 array"),
    ("hessian max_bytes", lambda m, p, X, y, l: rp.hessian(m, p, X, y, l, max_bytes=100), rp.CurvatureTooLargeError, "would need 0.00 GiB (17,672 bytes) but only 0.00 GiB (100 bytes) may be used (max_bytes)"),
    ("ggn max_bytes", lambda m, p, X, y, l: rp.ggn(m, p, X, y, l, max_bytes=100), rp.CurvatureTooLargeError, "would need 0.00 GiB (17,672 bytes) but only 0.00 GiB (100 bytes) may be used (max_bytes)"),
    ("fisher max_bytes", lambda m, p, X, y, l: rp.fisher(m, p, X, y, l, max_bytes=100), rp.CurvatureTooLargeError, "would need 0.00 GiB (17,672 bytes) but only 0.00 GiB (100 bytes) may be used (max_bytes)"),
    ("hessian progress not bool", lambda m, p, X, y, l: rp.hessian(m, p, X, y, l, progress="yes"), TypeError, "progress must be True or False"),
    ("hessian max_bytes negative", lambda m, p, X, y, l: rp.hessian(m, p, X, y, l, max_bytes=-1), ValueError, "max_bytes must be"),
    ("block_diagonal curvature", lambda m, p, X, y, l: rp.block_diagonal(m, p, X, y, l, curvature="kfac"), ValueError, "curvature must be one of"),
    ("curvature_diagonal old name", lambda m, p, X, y, l: rp.curvature_diagonal(m, p, X, y, l, curvature="empirical"), ValueError, "write curvature='empirical_fisher'"),
    ("fisher_diagonal hessian", lambda m, p, X, y, l: rp.fisher_diagonal(m, p, X, y, l, curvature="hessian"), ValueError, "curvature must be one of"),
    ("obd_diagonal lm not bool", lambda m, p, X, y, l: rp.obd_diagonal(m, p, X, y, l, levenberg_marquardt="no"), TypeError, "levenberg_marquardt must be True or False"),
    # ---- operators
    ("ExactCurvature matvec NaN", lambda m, p, X, y, l: rp.ExactCurvature(m, p, X, y, l).matvec(nan_at(np.ones(N_PARAMS))), ValueError, "v contains 1 NaN"),
    ("ExactCurvature matvec wrong length", lambda m, p, X, y, l: rp.ExactCurvature(m, p, X, y, l).matvec(np.ones(3)), ValueError, "v must have shape"),
    ("ExactCurvature matmat 3-d", lambda m, p, X, y, l: rp.ExactCurvature(m, p, X, y, l).matmat(np.ones((N_PARAMS, 1, 1))), ValueError, "V must have shape"),
    ("ExactCurvature matvec strings", lambda m, p, X, y, l: rp.ExactCurvature(m, p, X, y, l).matvec(np.array(["a"] * N_PARAMS)), TypeError, "numeric array"),
    ("ExactCurvature curvature", lambda m, p, X, y, l: rp.ExactCurvature(m, p, X, y, l, curvature="fim"), ValueError, "curvature must be one of"),
    ("ExactCurvature matvec int converted", lambda m, p, X, y, l: rp.ExactCurvature(m, p, X, y, l).matvec(np.ones(N_PARAMS, dtype=int)), None, ""),
    ("ExactCurvature matmat empty", lambda m, p, X, y, l: _shape(rp.ExactCurvature(m, p, X, y, l).matmat(np.zeros((N_PARAMS, 0))), (N_PARAMS, 0)), None, ""),
    ("KFAC matvec NaN", lambda m, p, X, y, l: rp.kfac(m, p, X, y, l).matvec(nan_at(np.ones(N_PARAMS))), ValueError, "v contains 1 NaN"),
    ("KFAC matvec inf", lambda m, p, X, y, l: rp.kfac(m, p, X, y, l).matvec(np.full(N_PARAMS, np.inf)), ValueError, "NaN or inf"),
    ("KFAC matvec wrong length", lambda m, p, X, y, l: rp.kfac(m, p, X, y, l).matvec(np.ones(5)), ValueError, "v must have shape"),
    ("EKFAC matvec NaN", lambda m, p, X, y, l: rp.ekfac(m, p, X, y, l).matvec(nan_at(np.ones(N_PARAMS))), ValueError, "NaN"),
    ("Dense not square", lambda m, p, X, y, l: rp.Dense(np.ones((2, 3))), ValueError, "need a square matrix"),
    ("Dense NaN", lambda m, p, X, y, l: rp.Dense(nan_at(np.eye(2))), ValueError, "NaN or inf"),
    ("Diagonal 2-d", lambda m, p, X, y, l: rp.Diagonal(np.eye(2)), ValueError, "need a vector"),
    ("Diagonal NaN", lambda m, p, X, y, l: rp.Diagonal(nan_at(np.ones(3))), ValueError, "NaN or inf"),
    ("Diagonal matvec NaN", lambda m, p, X, y, l: rp.Diagonal(np.ones(3)).matvec(nan_at(np.ones(3))), ValueError, "NaN"),
    ("BlockDiagonal wrong block", lambda m, p, X, y, l: rp.BlockDiagonal([np.eye(2)], [0, 3], 3), ValueError, "block for [0, 3) must be"),
    # ---- Kronecker options
    ("kfac approx", lambda m, p, X, y, l: rp.kfac(m, p, X, y, l, approx="expnad"), ValueError, "approx must be one of"),
    ("kfac bias", lambda m, p, X, y, l: rp.kfac(m, p, X, y, l, bias="no"), ValueError, "bias must be one of"),
    ("kfac hessian", lambda m, p, X, y, l: rp.kfac(m, p, X, y, l, curvature="hessian"), ValueError, "no Kronecker factorisation"),
    ("kfac old fisher=", lambda m, p, X, y, l: rp.kfac(m, p, X, y, l, fisher="type-2"), TypeError, "renamed curvature="),
    ("kfac type-2", lambda m, p, X, y, l: rp.kfac(m, p, X, y, l, curvature="type-2"), ValueError, "write curvature='ggn'"),
    ("kfac damping negative", lambda m, p, X, y, l: rp.kfac(m, p, X, y, l).damped(-1.0), ValueError, "damping must be a finite number >= 0"),
    ("kfac damping NaN", lambda m, p, X, y, l: rp.kfac(m, p, X, y, l).damped(np.nan), ValueError, "damping must be a finite number"),
    ("kfac damping string", lambda m, p, X, y, l: rp.kfac(m, p, X, y, l).damped("big"), TypeError, "damping must be a number"),
    ("kfac damping form", lambda m, p, X, y, l: rp.kfac(m, p, X, y, l).damped(0.1, "tikhonov"), ValueError, "damping form must be one of"),
    ("kfac inverse singular", lambda m, p, X, y, l: rp.kfac(m, p, X[:1], y[:1], l).inverse(0.0).matvec(np.ones(N_PARAMS)), np.linalg.LinAlgError, "singular or indefinite"),
    ("kfac logdet singular", lambda m, p, X, y, l: rp.kfac(m, p, X[:1], y[:1], l).logdet(), np.linalg.LinAlgError, "log-determinant"),
    ("ekfac factored", lambda m, p, X, y, l: rp.ekfac(m, p, X, y, l).damped(0.1, "factored"), ValueError, "only damping form 'exact'"),
    ("ekfac approx", lambda m, p, X, y, l: rp.ekfac(m, p, X, y, l, approx="both"), ValueError, "approx must be one of"),
    ("ekfac samples", lambda m, p, X, y, l: rp.ekfac(m, p, X, y, l, curvature="mc_fisher", samples=-1), ValueError, "samples must be a positive int"),
    ("express_kfac library", lambda m, p, X, y, l: rp.express_kfac(m, p, X, y, l, "kfac-jax"), ValueError, "library must be one of"),
    # ---- pruning options
    ("prune method", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, method="random"), ValueError, "unknown pruning method"),
    ("prune sparsity 1", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, sparsity=1.0), ValueError, "sparsity must be a number in [0, 1)"),
    ("prune sparsity negative", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, sparsity=-0.1), ValueError, "sparsity must be a number"),
    ("prune sparsity string", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, sparsity="half"), ValueError, "sparsity must be a number"),
    ("prune sparsity bool", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, sparsity=True), ValueError, "sparsity must be a number"),
    ("prune sparsity NaN", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, sparsity=np.nan), ValueError, "sparsity must be a number"),
    ("prune count and sparsity", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, count=3, sparsity=0.5), ValueError, "not both"),
    ("prune count negative", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, count=-1), ValueError, "count must be a non-negative int"),
    ("prune count float", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, count=2.0), ValueError, "count must be a non-negative int"),
    ("prune count bool", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, count=True), ValueError, "count must be a non-negative int"),
    ("prune count too many", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, method="magnitude", count=10**6), ValueError, "fewer prunable"),
    ("prune steps 0", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, steps=0), ValueError, "steps must be a positive int"),
    ("prune steps bool", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, steps=True), ValueError, "steps must be a positive int"),
    ("prune scope", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, scope="local"), ValueError, "scope must be 'global' or 'layer'"),
    ("prune group_size 0", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, group_size=0), ValueError, "group_size must be a positive int"),
    ("prune group_size True", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, group_size=True), ValueError, "group_size must be a positive int"),
    ("prune damping negative", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, damping=-1.0), ValueError, "damping must be a finite number >= 0"),
    ("prune damping string", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, damping="1e-3"), ValueError, "damping must be a finite number"),
    ("prune weight_decay NaN", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, weight_decay=np.nan), ValueError, "weight_decay must be"),
    ("prune include_bias string", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, include_bias="no"), TypeError, "include_bias must be True or False"),
    ("prune skip_emptied int", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, skip_emptied=1), TypeError, "skip_emptied must be True or False"),
    ("prune progress string", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, progress="loud"), TypeError, "progress must be True or False"),
    ("prune taylor", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, taylor="first"), ValueError, "taylor must be one of"),
    ("prune taylor full for obd", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, method="obd", taylor="full"), ValueError, "taylor='full' is OBS's"),
    ("prune indefinite", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, indefinite="ignore"), ValueError, "indefinite must be one of"),
    ("prune selection", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, method="layer_obs", selection="best"), ValueError, "selection must be one of"),
    ("prune eigenvalues", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, method="eigendamage", eigenvalues="exact"), ValueError, "eigenvalues must be 'ekfac' or 'kfac'"),
    ("prune diagonal old name", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, method="obd", diagonal="fisher"), ValueError, "write curvature='mc_fisher'"),
    ("prune diagonal unknown", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, method="obd", diagonal="kfac"), ValueError, "diagonal must be one of"),
    ("prune curvature for magnitude", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, method="magnitude", curvature="ggn"), ValueError, "uses no curvature"),
    ("prune curvature unknown", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, curvature="kfac"), ValueError, "curvature must be one of"),
    ("prune curvature matrix wrong shape", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, curvature=np.eye(2)), ValueError, "precomputed curvature must be"),
    ("prune curvature matrix NaN", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, curvature=nan_at(np.eye(N_PARAMS))), ValueError, "contains NaN"),
    ("prune old fisher=", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, fisher="mc"), TypeError, "renamed curvature="),
    ("prune mask wrong shape", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, mask=np.ones(3, bool)), ValueError, "mask must be a bool array of shape"),
    ("prune mask not bool", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, mask=np.ones(N_PARAMS)), ValueError, "mask must be a bool array"),
    ("prune protected wrong shape", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, protected=np.ones(3, bool)), ValueError, "protected must be a bool array"),
    ("prune protected for kron_obs", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, method="kron_obs", protected=np.zeros(N_PARAMS, bool)), ValueError, "protected= and skip_emptied= apply to"),
    ("prune weight_decay for kron_obs", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, method="kron_obs", weight_decay=0.1), ValueError, "weight_decay= applies to"),
    ("prune singular curvature", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, method="obs", curvature="ggn"), rp.SingularCurvatureError, "would make it positive definite"),
    ("prune woodfisher no damping", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, method="woodfisher"), rp.SingularCurvatureError, "WoodFisher needs damping > 0"),
    ("prune empties a layer", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, method="magnitude", sparsity=0.99), ValueError, "would remove every weight of layer"),
    ("prune eigendamage steps", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, method="eigendamage", steps=2), ValueError, "eigendamage is one-shot"),
    ("prune retrain not a dict", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, method="magnitude", retrain=5), TypeError, "retrain must be a dict"),
    ("OBS grad NaN", lambda m, p, X, y, l: rp.OBS(np.eye(2), np.ones(2), grad=np.array([np.nan, 0.0]), H=np.eye(2)), ValueError, "OBS: grad contains 1 NaN"),
    ("OBS H inf", lambda m, p, X, y, l: rp.OBS(np.eye(2), np.ones(2), grad=np.ones(2), H=np.full((2, 2), np.inf)), ValueError, "OBS: H contains 4 NaN"),
    ("OBS grad strings", lambda m, p, X, y, l: rp.OBS(np.eye(2), np.ones(2), grad=np.array(["a", "b"])), TypeError, "OBS: grad must be a numeric array"),
    ("prune obd operator NaN diagonal", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, method="obd", curvature=_NanDiagonal()), ValueError, "the precomputed curvature's diagonal contains"),
    ("saliencies method", lambda m, p, X, y, l: rp.saliencies(m, p, X, y, l, method="layer_obs"), ValueError, "method must be one of"),
    ("obs_trace count", lambda m, p, X, y, l: rp.obs_trace(m, p, X, y, l, count=10**6, damping=0.1), ValueError, "count must be an int in"),
    ("obs_trace metrics", lambda m, p, X, y, l: rp.obs_trace(m, p, X, y, l, damping=0.1, metrics=[len]), TypeError, "metrics must be a dict"),
    ("obs_trace taylor", lambda m, p, X, y, l: rp.obs_trace(m, p, X, y, l, taylor="third"), ValueError, "taylor must be one of"),
    ("minimize method", lambda m, p, X, y, l: rp.minimize(m, p, X, y, l, method="BFGS"), ValueError, "trust-region"),
    ("minimize mask", lambda m, p, X, y, l: rp.minimize(m, p, X, y, l, mask=np.ones(2, bool)), ValueError, "mask must be a bool array"),
    # ---- training
    ("train epochs negative", lambda m, p, X, y, l: rp.train(m, p, X, y, l, epochs=-1), ValueError, "epochs must be a non-negative int"),
    ("train batch_size 0", lambda m, p, X, y, l: rp.train(m, p, X, y, l, batch_size=0), ValueError, "batch_size must be a positive int"),
    ("train lr NaN", lambda m, p, X, y, l: rp.train(m, p, X, y, l, lr=np.nan), ValueError, "lr must be a finite number"),
    ("train lr string", lambda m, p, X, y, l: rp.train(m, p, X, y, l, lr="0.1"), TypeError, "lr must be a number"),
    ("train momentum negative", lambda m, p, X, y, l: rp.train(m, p, X, y, l, momentum=-0.5), ValueError, "momentum must be"),
    ("train mask wrong shape", lambda m, p, X, y, l: rp.train(m, p, X, y, l, mask=np.ones(3, bool)), ValueError, "mask must have shape"),
    ("train diverges", lambda m, p, X, y, l: rp.train(m, p, X, y, l, lr=1e308, epochs=2), FloatingPointError, "lower lr"),
    ("train mask not bool", lambda m, p, X, y, l: rp.train(m, p, X, y, l, mask=np.ones(N_PARAMS)), TypeError, "mask must be a bool array"),
    ("train optimizer a string", lambda m, p, X, y, l: rp.train(m, p, X, y, l, optimizer="kfac"), TypeError, "optimizer must be a refprune.optim optimizer"),
    ("train lr with an optimizer", lambda m, p, X, y, l: rp.train(m, p, X, y, l, lr=0.1, optimizer=rp.optim.SGD()), TypeError, "lr belong to the optimizer"),
    ("train callback not callable", lambda m, p, X, y, l: rp.train(m, p, X, y, l, callback=3), TypeError, "callback must be callable"),
    # ---- tasks and executors
    ("executor a string", lambda m, p, X, y, l: rp.hessian(m, p, X, y, l, executor="dask"), TypeError, "executor must be None, a concurrent.futures.Executor or a dask.distributed.Client"),
    ("shards bool", lambda m, p, X, y, l: rp.ggn(m, p, X, y, l, shards=True), ValueError, "shards must be a positive int"),
    ("shards more than samples", lambda m, p, X, y, l: rp.hessian_diagonal(m, p, X, y, l, shards=99), ValueError, "shards=99 is more than the 4 samples"),
    ("block_rows float", lambda m, p, X, y, l: rp.residual(m, p, X, y, l, block_rows=2.5), ValueError, "block_rows must be a positive int"),
    ("tasks out wrong shape", lambda m, p, X, y, l: rp.hessian(m, p, X, y, l, out=np.empty((3, 3)), shards=2), ValueError, "out must be a float64 array of shape"),
    ("tasks targets without mc", lambda m, p, X, y, l: rp.fisher(m, p, X, y, l, curvature="fisher", targets=y[None], shards=2), ValueError, "targets= is for curvature='mc_fisher'"),
    # ---- optimizers
    ("optim lr negative", lambda m, p, X, y, l: rp.optim.SGD(lr=-1), ValueError, "SGD: lr must be a finite number >= 0"),
    ("optim momentum 1", lambda m, p, X, y, l: rp.optim.KFAC(momentum=1.0), ValueError, "momentum must be < 1"),
    ("optim kl_clip 0", lambda m, p, X, y, l: rp.optim.EKFAC(kl_clip=0.0), ValueError, "kl_clip must be > 0"),
    ("optim damping NaN", lambda m, p, X, y, l: rp.optim.KFAC(damping=np.nan), ValueError, "KFAC: damping must be a finite number"),
    ("optim damping form unknown", lambda m, p, X, y, l: rp.optim.KFAC(damping_form="tikhonov"), ValueError, "damping_form must be one of ('exact', 'factored', 'pi')"),
    ("optim curvature hessian for K-FAC", lambda m, p, X, y, l: rp.optim.KFAC(curvature="hessian"), ValueError, "no Kronecker factorisation"),
    ("optim curvature old spelling", lambda m, p, X, y, l: rp.optim.NaturalGradient(curvature="type-2"), ValueError, "'ggn'"),
    ("optim structure unknown", lambda m, p, X, y, l: rp.optim.NaturalGradient(structure="diagonal"), ValueError, "structure must be one of ('full', 'layer')"),
    ("optim refresh_interval 0", lambda m, p, X, y, l: rp.optim.KFAC(refresh_interval=0), ValueError, "refresh_interval must be a positive int"),
    ("optim scale_interval bool", lambda m, p, X, y, l: rp.optim.EKFAC(scale_interval=True), ValueError, "scale_interval must be a positive int"),
    ("optim ema_decay 1", lambda m, p, X, y, l: rp.optim.EKFAC(ema_decay=1.0), ValueError, "ema_decay must be < 1"),
    ("optim step mask wrong shape", lambda m, p, X, y, l: rp.optim.SGD().step(m, p, X, y, l, mask=np.ones(2, bool)), ValueError, "mask must have shape"),
    ("optim step NaN in X", lambda m, p, X, y, l: rp.optim.KFAC().step(m, p, nan_at(X), y, l), ValueError, "X contains 1 NaN"),
    ("optim step labels out of range", lambda m, p, X, y, l: rp.optim.EKFAC().step(m, p, X, y + 10, l), ValueError, "labels must lie in [0, 3)"),
    ("optim step singular", lambda m, p, X, y, l: rp.optim.NaturalGradient(damping=0.0).step(m, p, X, y, l), np.linalg.LinAlgError, "larger damping"),
    # ---- layers
    ("Linear in 0", lambda m, p, X, y, l: rp.Linear(0, 2), ValueError, "in_features must be a positive int"),
    ("Linear float", lambda m, p, X, y, l: rp.Linear(3.0, 2), ValueError, "in_features must be a positive int"),
    ("Linear bool", lambda m, p, X, y, l: rp.Linear(True, 2), ValueError, "in_features must be a positive int"),
    ("Linear numpy int accepted", lambda m, p, X, y, l: rp.Linear(np.int64(3), np.int32(2)), None, ""),
    ("Linear bias string", lambda m, p, X, y, l: rp.Linear(3, 2, bias="yes"), TypeError, "bias must be True or False"),
    ("Conv2d kernel 0", lambda m, p, X, y, l: rp.Conv2d(1, 2, 0), ValueError, "kernel_size"),
    ("Conv2d stride 0", lambda m, p, X, y, l: rp.Conv2d(1, 2, 3, stride=0), ValueError, "stride"),
    ("Conv2d padding negative", lambda m, p, X, y, l: rp.Conv2d(1, 2, 3, padding=-1), ValueError, "padding"),
    ("Conv2d channels float", lambda m, p, X, y, l: rp.Conv2d(1.5, 2, 3), ValueError, "in_channels must be a positive int"),
    ("Conv2d stride float", lambda m, p, X, y, l: rp.Conv2d(1, 2, 3, stride=2.0), ValueError, "stride must be an int or a pair of ints, got 2.0"),
    ("Conv2d stride bool", lambda m, p, X, y, l: rp.Conv2d(1, 2, 3, stride=True), ValueError, "stride must be an int or a pair of ints, got True"),
    ("Conv2d kernel string", lambda m, p, X, y, l: rp.Conv2d(1, 2, "3"), ValueError, "kernel_size must be an int or a pair of ints"),
    ("Conv2d bias string", lambda m, p, X, y, l: rp.Conv2d(1, 2, 3, bias="no"), TypeError, "bias must be True or False"),
    ("MaxPool2d kernel 0", lambda m, p, X, y, l: rp.MaxPool2d(0), ValueError, "kernel_size must be a positive int"),
    ("AvgPool2d kernel tuple", lambda m, p, X, y, l: rp.AvgPool2d((2, 2)), ValueError, "kernel_size must be a positive int"),
    ("Sequential of non-layers", lambda m, p, X, y, l: rp.Sequential("Linear"), TypeError, "layer"),
    ("init seed string", lambda m, p, X, y, l: m.init(seed="a"), (TypeError, ValueError), "seed"),
    ("unflatten wrong length", lambda m, p, X, y, l: rp.unflatten_params(m, np.ones(3)), ValueError, "theta must have shape"),
    ("model output not a vector", lambda m, p, X, y, l: rp.loss(rp.Sequential(rp.Conv2d(1, 2, 3)), rp.Sequential(rp.Conv2d(1, 2, 3)).init(), X, y, l), ValueError, "per-sample output must be a vector"),
    # ---- testing kit
    ("check_grad directions 0", lambda m, p, X, y, l: check_grad(np.sum, np.ones_like, np.ones(3), directions=0), ValueError, "checks nothing"),
    ("check_hvp directions 0", lambda m, p, X, y, l: check_hvp(np.ones_like, lambda t, v: v, np.ones(3), directions=0), ValueError, "checks nothing"),
    ("check_jvp directions bool", lambda m, p, X, y, l: check_jvp(np.sin, lambda t, v: v, np.ones(3), directions=True), ValueError, "positive int"),
    ("check_vjp directions 0", lambda m, p, X, y, l: check_vjp(lambda t, v: v, lambda t, u: u, np.ones(3), (3,), directions=0), ValueError, "checks nothing"),
    ("check_hessian no columns", lambda m, p, X, y, l: check_hessian(np.ones_like, np.eye(3), np.ones(3), columns=[]), ValueError, "no columns"),
    ("directional_derivative order", lambda m, p, X, y, l: directional_derivative(np.sum, np.ones(3), np.ones(3), order=3), ValueError, "order must be 2 or 4"),
    ("directional_derivative step", lambda m, p, X, y, l: directional_derivative(np.sum, np.ones(3), np.ones(3), step=-1.0), ValueError, "step must be a positive"),
    ("directional_derivative direction shape", lambda m, p, X, y, l: directional_derivative(np.sum, np.ones(3), np.ones(2)), ValueError, "direction must have the shape"),
    ("kink_margin wrong params", lambda m, p, X, y, l: rp.testing.kink_margin(m, p[:1], X), ValueError, "parameter arrays"),
    # ---- conformance and bridges (torch-free parts)
    ("conformance unknown quantity", lambda m, p, X, y, l: cf.Adapter(hessain=len), ValueError, "unknown quantities"),
    ("conformance no quantity", lambda m, p, X, y, l: cf.Adapter(), ValueError, "at least one quantity"),
    ("conformance rtol", lambda m, p, X, y, l: cf.check(cf.Adapter(grad=len), rtol=2.0), ValueError, "rtol for grad"),
    ("make_case architecture", lambda m, p, X, y, l: cf.make_case("resnet", "ce-mean"), ValueError, "unknown architecture"),
    ("make_case loss", lambda m, p, X, y, l: cf.make_case("linear", "huber"), ValueError, "unknown loss"),
    ("from_jax not a dict", lambda m, p, X, y, l: rp.from_jax([1], m), TypeError, "expected a dict of arrays"),
    ("load_fixtures missing", lambda m, p, X, y, l: rp.testing.load_fixtures("/nonexistent"), FileNotFoundError, "no manifest.json"),
]


# ==== Rows added for the surfaces since the first table (stores, the CLI, bridges,
# fixtures, the harness, options, optimizers, sizes). Each block is one surface.

# ---- stores, interrupts and the command line
STORE_CLI_CASES = [
    # the reader of a stored result (refprune.load_matrix)
    ("load_matrix a complete memmap", lambda m, p, X, y, l: _store_read(m, p, X, y, l, block_rows=5), None, ""),
    ("load_matrix a complete Zarr store", lambda m, p, X, y, l: _store_read(m, p, X, y, l, kind="zarr"), None, ""),
    ("load_matrix a memmap of one pass", lambda m, p, X, y, l: _store_read(m, p, X, y, l, kind="one pass"), None, ""),
    ("load_matrix no record", lambda m, p, X, y, l: _store_read(m, p, X, y, l, edit=_store_drop_record), ValueError, "there is no record"),
    ("load_matrix record not JSON", lambda m, p, X, y, l: _store_read(m, p, X, y, l, edit=_store_text("{not json")), ValueError, "is not valid JSON (Expecting property name"),
    ("load_matrix record {}", lambda m, p, X, y, l: _store_read(m, p, X, y, l, edit=_store_text("{}")), ValueError, "it lacks the keys format, version, matrix, n, fingerprint, complete, blocks"),
    ("load_matrix record a list", lambda m, p, X, y, l: _store_read(m, p, X, y, l, edit=_store_text("[]")), ValueError, "is not a refprune block record (a JSON object with the keys"),
    ("load_matrix record an unknown key", lambda m, p, X, y, l: _store_read(m, p, X, y, l, edit=_store_record(lambda r: r.update(extra=1))), ValueError, "it has unknown keys extra"),
    ("load_matrix record of version 1", lambda m, p, X, y, l: _store_read(m, p, X, y, l, edit=_store_text('{"fingerprint": "0", "done": {}}')), ValueError, "is of version 1, which did not record the mirrored blocks"),
    ("load_matrix record for another size", lambda m, p, X, y, l: _store_read(m, p, X, y, l, edit=_store_record(lambda r: r.update(n=5))), ValueError, f"it is for a 5 x 5 matrix, the store holds {N_PARAMS} x {N_PARAMS}"),
    ("load_matrix record blocks overlap", lambda m, p, X, y, l: _store_read(m, p, X, y, l, edit=_store_record(lambda r: r["blocks"]["layer 4"].update(rows=[[19, 47]]))), ValueError, "rows must be [start, stop] pairs within [20, 47)"),
    ("load_matrix record a layer left out", lambda m, p, X, y, l: _store_read(m, p, X, y, l, edit=_store_record(lambda r: r["blocks"].pop("layer 4"))), ValueError, "the blocks stop at row 20 of 47"),
    ("load_matrix record digest not hex", lambda m, p, X, y, l: _store_read(m, p, X, y, l, edit=_store_record(lambda r: r["blocks"]["layer 0"].update(digest="xyz"))), ValueError, "block 'layer 0': digest must be null or 64 hexadecimal digits"),
    ("load_matrix record complete a string", lambda m, p, X, y, l: _store_read(m, p, X, y, l, edit=_store_record(lambda r: r.update(complete="yes"))), ValueError, "complete must be true or false, got 'yes'"),
    ("load_matrix a block missing", lambda m, p, X, y, l: _store_read(m, p, X, y, l, edit=_store_record(_store_forget_layer_4)), ValueError, "is incomplete: blocks missing: layer 4 (rows 20:47)"),
    ("load_matrix not marked complete", lambda m, p, X, y, l: _store_read(m, p, X, y, l, edit=_store_record(lambda r: r.update(complete=False))), ValueError, "does not mark the result complete"),
    ("load_matrix rows damaged", lambda m, p, X, y, l: _store_read(m, p, X, y, l, edit=_store_poke(3, 30)), ValueError, "blocks damaged (bytes or mirror differ from the record): layer 0 (rows 0:20)"),
    ("load_matrix mirror damaged", lambda m, p, X, y, l: _store_read(m, p, X, y, l, edit=_store_poke(30, 3)), ValueError, "blocks damaged (bytes or mirror differ from the record): layer 0 (rows 0:20)"),
    ("load_matrix Zarr mirror zeroed", lambda m, p, X, y, l: _store_read(m, p, X, y, l, kind="zarr", edit=_store_zero_mirror), ValueError, "blocks damaged"),
    ("load_matrix Zarr attrs an int", lambda m, p, X, y, l: _store_read(m, p, X, y, l, kind="zarr", edit=_store_zarr_attrs(5)), ValueError, "is not a refprune block record (a JSON object with the keys format"),
    ("load_matrix not an .npy file", lambda m, p, X, y, l: _store_read(m, p, X, y, l, edit=_store_overwrite(b"garbage")), ValueError, "is not an .npy file"),
    ("load_matrix a float32 file", lambda m, p, X, y, l: _store_read(m, p, X, y, l, edit=_store_overwrite(np.zeros((N_PARAMS, N_PARAMS), np.float32))), ValueError, "must be a square float64 matrix, got shape (47, 47) and dtype float32"),
    ("load_matrix source an int", lambda m, p, X, y, l: rp.load_matrix(3), TypeError, "load_matrix: source must be a path to an .npy file or a Zarr store, a numpy.memmap of a file or a Zarr array, got int"),
    ("load_matrix no such path", lambda m, p, X, y, l: rp.load_matrix("/nonexistent/h.npy"), FileNotFoundError, "load_matrix: no file or Zarr store at '/nonexistent/h.npy'"),
    # stores that a restart must not trust
    ("Zarr restart with the mirror zeroed", lambda m, p, X, y, l: _store_restart(m, p, X, y, l, kind="zarr", edit=_store_zero_mirror), None, ""),
    ("memmap restart with the mirror zeroed", lambda m, p, X, y, l: _store_restart(m, p, X, y, l, block_rows=5, edit=_store_zero_mirror), None, ""),
    ("memmap restart with a record not JSON", lambda m, p, X, y, l: _store_restart(m, p, X, y, l, edit=_store_text("{not json"), warns="is not valid JSON"), None, ""),
    ("memmap restart with a record a list", lambda m, p, X, y, l: _store_restart(m, p, X, y, l, edit=_store_text("[1, 2]"), warns="got list"), None, ""),
    ("memmap restart with a record {}", lambda m, p, X, y, l: _store_restart(m, p, X, y, l, edit=_store_text("{}"), warns="it lacks the keys"), None, ""),
    # lost workers: the function's name and advice that fits it
    ("lost worker in hessian_diagonal", lambda m, p, X, y, l: rp.hessian_diagonal(m, p, X, y, l, executor=_StoreBrokenPool()), rp.curvature.parallel.WorkerLostError, "hessian_diagonal: a worker process died after 0 of 1 blocks; nothing was kept: call hessian_diagonal again with a new executor"),
    ("lost worker in ggn without a store", lambda m, p, X, y, l: rp.ggn(m, p, X, y, l, executor=_StoreBrokenPool()), rp.curvature.parallel.WorkerLostError, "ggn: a worker process died after 0 of 2 blocks; nothing was kept (out= is not a Zarr array or a numpy.memmap of a file"),
    # the command line: refprune hessian
    ("cli --params lacks an entry", lambda m, p, X, y, l: _store_hessian_cli(m, p, X, y, l, params={"param0": p[0]}), SystemExit, "exit 2: refprune hessian: error: --params params.npz lacks param1, param2, param3; the model expects param0 (2, 1, 3, 3), param1 (2,), param2 (3, 8), param3 (3,)"),
    ("cli --params a wrong shape", lambda m, p, X, y, l: _store_hessian_cli(m, p, X, y, l, params={"param0": p[0].reshape(1, 2, 3, 3), "param1": p[1], "param2": p[2], "param3": p[3]}), SystemExit, "--params params.npz: param0 has shape (1, 2, 3, 3); the model expects param0 (2, 1, 3, 3)"),
    ("cli --params an extra array", lambda m, p, X, y, l: _store_hessian_cli(m, p, X, y, l, params={**{f"param{i}": a for i, a in enumerate(p)}, "param9": p[0]}), SystemExit, "--params params.npz has arrays the model does not: param9"),
    ("cli --params an .npy file", lambda m, p, X, y, l: _store_hessian_cli(m, p, X, y, l, params=p[1]), SystemExit, "--params params.npz: expected an .npz file of named arrays"),
    ("cli --data X of another shape", lambda m, p, X, y, l: _store_hessian_cli(m, p, X, y, l, data={"X": X.reshape(4, 16), "y": y}), SystemExit, "--data data.npz: "),
    ("cli --data labels out of range", lambda m, p, X, y, l: _store_hessian_cli(m, p, X, y, l, data={"X": X, "y": y + 3}), SystemExit, "--data data.npz: CrossEntropyLoss: labels must lie in [0, 3)"),
    ("cli --data lacks y", lambda m, p, X, y, l: _store_hessian_cli(m, p, X, y, l, data={"X": X}), SystemExit, "--data data.npz must hold arrays 'X' (N, per-sample input shape) and 'y' (N labels or N x outputs); it holds ['X']"),
    ("cli --data of objects", lambda m, p, X, y, l: _store_hessian_cli(m, p, X, y, l, data={"X": np.array([X, None], dtype=object), "y": y}), SystemExit, "--data data.npz: cannot be read as an .npz file"),
    ("cli --model-json not JSON", lambda m, p, X, y, l: _store_hessian_cli(m, p, X, y, l, model_json="[{"), SystemExit, "--model-json model.json: not valid JSON"),
    ("cli --model-json a layer without type", lambda m, p, X, y, l: _store_hessian_cli(m, p, X, y, l, model_json='[{"in_features": 3, "out_features": 2}]'), SystemExit, "--model-json model.json: cannot build the model"),
    ("cli --model-json network a number", lambda m, p, X, y, l: _store_hessian_cli(m, p, X, y, l, model_json='{"network": 5}'), SystemExit, "--model-json model.json: cannot build the model"),
    ("cli --resume with nothing to resume", lambda m, p, X, y, l: _store_hessian_cli(m, p, X, y, l, "--out", "H.npy", "--resume"), SystemExit, "--resume continues an interrupted run, but there is no"),
    ("cli --resume a partial file of another shape", lambda m, p, X, y, l: _store_hessian_cli(m, p, X, y, l, "--out", "H.npy", "--resume", files={"H.npy.partial": np.zeros((3, 3))}), SystemExit, "holds a float64 array of shape (3, 3), not (47, 47) float64"),
    ("cli --resume a result without record", lambda m, p, X, y, l: _store_hessian_cli(m, p, X, y, l, "--out", "H.npy", "--resume", files={"H.npy": np.zeros((N_PARAMS, N_PARAMS))}), SystemExit, "is there but not a verified result"),
    ("cli --resume with --dry-run", lambda m, p, X, y, l: _store_hessian_cli(m, p, X, y, l, "--out", "H.npy", "--resume", "--dry-run", files={"H.npy": np.zeros((N_PARAMS, N_PARAMS))}), SystemExit, "--dry-run estimates a new run; --resume continues one"),
    ("cli --mc-samples for a Hessian", lambda m, p, X, y, l: _store_hessian_cli(m, p, X, y, l, "--mc-samples", "3"), SystemExit, "--mc-samples applies only to --curvature mc_fisher, got --curvature hessian"),
    ("cli --input-shape with --data", lambda m, p, X, y, l: _store_hessian_cli(m, p, X, y, l, "--input-shape", "1", "4", "4"), SystemExit, "--input-shape is for random data"),
    ("cli --samples with --data", lambda m, p, X, y, l: _store_hessian_cli(m, p, X, y, l, "--samples", "9"), SystemExit, "--samples is for random data"),
    ("cli --seed with --data and --params", lambda m, p, X, y, l: _store_hessian_cli(m, p, X, y, l, "--seed", "3", params={f"param{i}": a for i, a in enumerate(p)}), SystemExit, "--seed draws random data, initial parameters or Monte Carlo targets"),
    ("cli --out in no directory", lambda m, p, X, y, l: _store_hessian_cli(m, p, X, y, l, "--out", "/proc/nonexistent_refprune/H.npy"), SystemExit, "--out /proc/nonexistent_refprune/H.npy: the directory /proc/nonexistent_refprune does not exist"),
    ("cli --out a directory", lambda m, p, X, y, l: _store_hessian_cli(m, p, X, y, l, "--out", "."), SystemExit, "--out . is a directory"),
    ("cli result written with its record", lambda m, p, X, y, l: _store_hessian_cli(m, p, X, y, l, "--out", "H.npy", "--block-rows", "9", check=_store_check_written), None, ""),
    # the command line: refprune demo
    ("cli demo --plot without matplotlib", lambda m, p, X, y, l: _store_without_matplotlib(_store_cli, "demo", "--steps", "1", "--plot", "x.png"), SystemExit, "exit 2: refprune demo: error: --plot x.png: refprune.plot needs matplotlib"),
    ("cli demo --plot into no directory", lambda m, p, X, y, l: _store_cli("demo", "--steps", "1", "--plot", "/proc/nonexistent_refprune/x.png"), SystemExit, "exit 2: refprune demo: error: --plot /proc/nonexistent_refprune/x.png"),
    ("cli demo --heatmaps a directory", lambda m, p, X, y, l: _store_cli("demo", "--steps", "1", "--heatmaps", "/tmp"), SystemExit, "exit 2: refprune demo: error: --heatmaps /tmp"),
]


def _store_cli(*argv):
    """``refprune.cli.main(argv)``; a non-zero exit raises ``SystemExit("exit CODE: line")``
    with its one line on stderr (more lines are an AssertionError)."""
    import contextlib
    import io

    from refprune.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:
            code = e.code
    lines = [s for s in err.getvalue().splitlines() if s.strip() and ": block " not in s and "rows of layer" not in s]
    if code:
        assert len(lines) == 1, f"exit {code} with {len(lines)} lines on stderr: {lines}"
        raise SystemExit(f"exit {code}: {lines[0]}")
    return code


_STORE_SPEC = "Conv2d(1, 2, 3, padding=1) Tanh AvgPool2d(2) Flatten Linear(8, 3)"


def _store_hessian_cli(m, p, X, y, l, *extra, data=None, params=None, model_json=None, files=None, check=None):
    """``refprune hessian`` in a scratch directory on the table's problem (its data in
    ``data.npz``; ``data``, ``params`` (``params.npz``, or ``.npy`` content for an array),
    ``model_json`` and ``files`` written there first), then ``check(directory)``."""
    import contextlib
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp):
        np.savez("data.npz", **({"X": X, "y": y} if data is None else data))
        argv = ["hessian", "--data", "data.npz"]
        if model_json is None:
            argv += ["--model", _STORE_SPEC]
        else:
            with open("model.json", "w") as fh:
                fh.write(model_json)
            argv += ["--model-json", "model.json"]
        if params is not None:
            if isinstance(params, dict):
                np.savez("params.npz", **params)
            else:
                with open("params.npz", "wb") as fh:
                    np.save(fh, params)
            argv += ["--params", "params.npz"]
        for name, a in (files or {}).items():
            with open(name, "wb") as fh:
                np.save(fh, a)
        _store_cli(*argv, *extra)
        if check is not None:
            check(m, p, X, y, l)


def _store_check_written(m, p, X, y, l):
    """``H.npy`` (no ``.partial`` left) equals the in-memory Hessian at the parameters the
    command line drew (PyTorch's init, seed 0), and its record says complete."""
    import json
    import os

    H = rp.hessian(m, m.init(seed=0), X, y, l)
    assert not os.path.exists("H.npy.partial")
    _store_same(rp.load_matrix("H.npy"), H)
    with open("H.npy.refprune.json") as fh:
        rec = json.load(fh)
    assert rec["complete"] is True and len(rec["blocks"]) > 2, rec


def _store_without_matplotlib(f, *args):
    import sys

    saved = {k: sys.modules[k] for k in list(sys.modules) if k == "matplotlib" or k.startswith("matplotlib.")}
    for k in saved:
        del sys.modules[k]
    sys.modules["matplotlib"] = None  # import matplotlib raises ImportError
    try:
        return f(*args)
    finally:
        del sys.modules["matplotlib"]
        sys.modules.update(saved)


class _StoreBrokenPool(__import__("concurrent.futures").futures.Executor):
    """An executor whose every worker is lost (``BrokenProcessPool``)."""

    def submit(self, fn, *args, **kwargs):
        from concurrent.futures.process import BrokenProcessPool

        fut = __import__("concurrent.futures").futures.Future()
        fut.set_exception(BrokenProcessPool("gone"))
        return fut


def _store_same(M, H):
    M = np.asarray(M[:] if not isinstance(M, np.ndarray) else M)
    err = np.abs(M - H).max() / np.abs(H).max()
    assert err <= 1e-12, f"the store's matrix differs from the in-memory one by {err:.2e} of max |H|"


def _store_write(m, p, X, y, l, tmp, kind="memmap", **kw):
    """The Hessian written to a store in ``tmp``: a memmap through tasks, a Zarr array, or
    a memmap in one pass (no tasks); returns its path."""
    import os

    n = m.n_params
    if kind == "zarr":
        zarr = pytest.importorskip("zarr")
        path = os.path.join(tmp, "h.zarr")
        rp.hessian(m, p, X, y, l, out=zarr.open_array(store=path, mode="w", shape=(n, n), chunks=(8, 8),
                                                      dtype="f8"), **kw)
        return path
    path = os.path.join(tmp, "h.npy")
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float64, shape=(n, n))
    rp.hessian(m, p, X, y, l, out=out, **({} if kind == "one pass" else dict(shards=2, **kw)))
    del out
    return path


def _store_read(m, p, X, y, l, kind="memmap", edit=None, **kw):
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = _store_write(m, p, X, y, l, tmp, kind, **kw)
        if edit is not None:
            edit(path)
        _store_same(rp.load_matrix(path), rp.hessian(m, p, X, y, l))


def _store_restart(m, p, X, y, l, kind="memmap", edit=None, warns=None, **kw):
    """Write, damage with ``edit``, call again on the same store: the result must equal the
    in-memory Hessian, be symmetric where mirrored, verify with load_matrix, and (with
    ``warns``) a damaged record must have been reported and replaced."""
    import tempfile
    import warnings

    with tempfile.TemporaryDirectory() as tmp:
        path = _store_write(m, p, X, y, l, tmp, kind, **kw)
        edit(path)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if kind == "zarr":
                zarr = pytest.importorskip("zarr")
                M = rp.hessian(m, p, X, y, l, out=zarr.open_array(store=path, mode="r+"), **kw)[:]
            else:
                M = np.array(rp.hessian(m, p, X, y, l, out=np.load(path, mmap_mode="r+"), shards=2, **kw))
        _store_same(M, rp.hessian(m, p, X, y, l))
        assert np.array_equal(M[20:, :20], M[:20, 20:].T), "the mirror is not the transpose of the rows"
        _store_same(rp.load_matrix(path), rp.hessian(m, p, X, y, l))
        if warns is not None:
            assert any(warns in str(w.message) for w in caught), [str(w.message) for w in caught]


def _store_drop_record(path):
    import os

    os.remove(path + ".refprune.json")


def _store_text(text):
    def edit(path):
        with open(path + ".refprune.json", "w") as fh:
            fh.write(text)

    return edit


def _store_record(change):
    def edit(path):
        import json

        with open(path + ".refprune.json") as fh:
            rec = json.load(fh)
        change(rec)
        with open(path + ".refprune.json", "w") as fh:
            json.dump(rec, fh)

    return edit


def _store_forget_layer_4(rec):
    rec["blocks"]["layer 4"].update(digest=None, mirror_digest=None)
    rec["complete"] = False


def _store_poke(i, j):
    def edit(path):
        out = np.load(path, mmap_mode="r+")
        out[i, j] += 1.0
        out.flush()

    return edit


def _store_zero_mirror(path):
    """Zero the mirror of layer 0 (rows 20: of its columns :20), as a user's stray write would."""
    if path.endswith(".zarr"):
        import zarr

        z = zarr.open_array(store=path, mode="r+")
        z[20:, :20] = 0.0
    else:
        out = np.load(path, mmap_mode="r+")
        out[20:, :20] = 0.0
        out.flush()


def _store_zarr_attrs(value):
    def edit(path):
        import zarr

        zarr.open_array(store=path, mode="r+").attrs["refprune"] = value

    return edit


def _store_overwrite(content):
    def edit(path):
        with open(path, "wb") as fh:
            if isinstance(content, bytes):
                fh.write(content)
            else:
                np.save(fh, content)

    return edit

# ---- from_torch, fixtures and the conformance harness
BRIDGE_FIXTURE_HARNESS_CASES = [
    # harness: what an adapter returns
    ("harness adapter all NaN", lambda m, p, X, y, l: _bfh_conforms(grad=lambda c: np.full(c.n_params, np.nan)), AssertionError, "8 NaN and 0 inf entries of 8"),
    ("harness adapter one NaN", lambda m, p, X, y, l: _bfh_conforms(grad=lambda c: nan_at(rp.grad(*c.args()), 2)), AssertionError, "1 NaN and 0 inf entries of 8"),
    ("harness adapter complex gradient", lambda m, p, X, y, l: _bfh_conforms(grad=lambda c: rp.grad(*c.args()) + 1e-3j), AssertionError, "the adapter's grad for case linear/ce-mean is complex (complex128)"),
    ("harness adapter complex Hessian, tiny imaginary part", lambda m, p, X, y, l: _bfh_conforms(hessian=lambda c: rp.hessian(*c.args()) + 1e-30j), AssertionError, "hessian for case linear/ce-mean is complex"),
    ("harness adapter complex64 loss", lambda m, p, X, y, l: _bfh_conforms(loss=lambda c: np.complex64(rp.loss(*c.args()))), AssertionError, "is complex (complex64)"),
    ("harness adapter returns text", lambda m, p, X, y, l: _bfh_conforms(grad=lambda c: "0.1 0.2"), AssertionError, "grad for case linear/ce-mean must be a real numeric array, got dtype <U7"),
    ("harness adapter returns booleans", lambda m, p, X, y, l: _bfh_conforms(grad=lambda c: rp.grad(*c.args()) > 0), AssertionError, "must be a real numeric array, got dtype bool"),
    ("harness adapter returns None", lambda m, p, X, y, l: _bfh_conforms(ggn=lambda c: None), AssertionError, "ggn for case linear/ce-mean must be a real numeric array, got dtype object"),
    ("harness adapter ragged list", lambda m, p, X, y, l: _bfh_conforms(grad=lambda c: [[1.0], [1.0, 2.0]]), AssertionError, "cannot be read as an array"),
    ("harness kfac_factors not a list", lambda m, p, X, y, l: _bfh_conforms(kfac_factors=lambda c: 3), AssertionError, "kfac_factors for case linear/ce-mean must be a list of (S, A) pairs, got int"),
    ("harness kfac_factors not pairs", lambda m, p, X, y, l: _bfh_conforms(kfac_factors=lambda c: [np.eye(2)]), AssertionError, "entry 0 must be a pair (S, A), got ndarray"),
    ("harness kfac_factors complex S", lambda m, p, X, y, l: _bfh_conforms(kfac_factors=lambda c: [(b.S + 1e-9j, b.A) for b in rp.kfac(*c.args()).blocks]), AssertionError, "S of pair 0 is complex"),
    # harness: rtol and the other arguments
    ("harness rtol np.float32 accepted", lambda m, p, X, y, l: _bfh_check(rtol=np.float32(1e-4)), None, ""),
    ("harness rtol np.int64 0 accepted", lambda m, p, X, y, l: _bfh_check(rtol=np.int64(0)), None, ""),
    ("harness rtol dict of np.float32 accepted", lambda m, p, X, y, l: _bfh_check(rtol={"grad": np.float32(1e-6)}), None, ""),
    ("harness rtol bool", lambda m, p, X, y, l: _bfh_check(rtol=True), TypeError, "rtol must be a real number in [0, 1) or a dict"),
    ("harness rtol np.bool_", lambda m, p, X, y, l: _bfh_check(rtol={"grad": np.True_}), TypeError, "check: rtol for grad must be a real number in [0, 1), got bool"),
    ("harness rtol string", lambda m, p, X, y, l: _bfh_check(rtol="1e-6"), TypeError, "got str '1e-6'"),
    ("harness rtol a list", lambda m, p, X, y, l: _bfh_check(rtol=[1e-6]), TypeError, "rtol must be a real number in [0, 1) or a dict of them per quantity, got list"),
    ("harness rtol names a quantity not computed", lambda m, p, X, y, l: _bfh_check(rtol={"hessain": 1e-6}), ValueError, "rtol names ['hessain'], which the adapter does not compute"),
    ("harness cases not Cases", lambda m, p, X, y, l: _bfh_check(cases=[(m, p, X, y, l)]), TypeError, "cases must be a list of refprune.conformance.Case, got tuple"),
    ("harness cases a string", lambda m, p, X, y, l: _bfh_check(cases="zoo"), TypeError, "cases must be a list of refprune.conformance.Case, got str"),
    ("harness progress not bool", lambda m, p, X, y, l: _bfh_check(progress="yes"), TypeError, "check: progress must be True or False, got 'yes'"),
    ("relative_error complex", lambda m, p, X, y, l: cf.relative_error(np.ones(3) + 1e-3j, np.ones(3)), TypeError, "relative_error: a is complex (complex128)"),
    ("relative_error reference NaN", lambda m, p, X, y, l: cf.relative_error(np.ones(3), nan_at(np.ones(3))), ValueError, "relative_error: the reference b contains 1 NaN"),
    ("relative_error strings", lambda m, p, X, y, l: cf.relative_error(np.array(["1"]), np.ones(1)), TypeError, "relative_error: a must be a real numeric array, got dtype <U1"),
    ("diagnose complex", lambda m, p, X, y, l: cf.diagnose(np.ones(8) + 1j, np.ones(8), _bfh_cases()[0], 1e-9), TypeError, "diagnose: a is complex"),
    # from_jax (a dict of arrays keyed like a state dict)
    ("from_jax complex entry", lambda m, p, X, y, l: rp.from_jax(_bfh_tree(m, p, "0.weight", lambda a: a + 1e-3j), m), TypeError, "from_jax: entry '0.weight' is complex (complex128)"),
    ("from_jax boolean entry", lambda m, p, X, y, l: rp.from_jax(_bfh_tree(m, p, "4.bias", lambda a: a > 0), m), TypeError, "from_jax: entry '4.bias' must be a real numeric array, got dtype bool"),
    ("from_jax text entry", lambda m, p, X, y, l: rp.from_jax(_bfh_tree(m, p, "0.bias", lambda a: a.astype(str)), m), TypeError, "entry '0.bias' must be a real numeric array"),
    # fixtures: damaged files and manifests (a one-case fixture set in a temporary directory)
    ("fixtures array re-saved with another shape", lambda m, p, X, y, l: _bfh_damaged("reshape"), ValueError, "array 'grad' is <f8 of shape [1, 8], the manifest says <f8 of shape [8]"),
    ("fixtures array re-saved with another dtype", lambda m, p, X, y, l: _bfh_damaged("view"), ValueError, "array 'grad' is <i8 of shape [8], the manifest says <f8"),
    ("fixtures array added", lambda m, p, X, y, l: _bfh_damaged("extra"), ValueError, "not listed ['extra']"),
    ("fixtures loss reduction edited in the manifest", lambda m, p, X, y, l: _bfh_damaged("reduction"), ValueError, "manifest.json' does not match its SHA-256 in"),
    ("fixtures manifest.sha256 missing", lambda m, p, X, y, l: _bfh_damaged("no sha256"), FileNotFoundError, "no manifest.sha256 beside"),
    ("fixtures truncated npz", lambda m, p, X, y, l: _bfh_damaged("truncate"), ValueError, "linear__ce-mean.npz' cannot be read as an .npz"),
    ("fixtures manifest not JSON", lambda m, p, X, y, l: _bfh_damaged("not json"), ValueError, "manifest.json' is not valid JSON"),
    ("fixtures manifest {}", lambda m, p, X, y, l: _bfh_damaged("empty"), ValueError, "manifest.json' lacks ['format_version', 'cases']"),
    ("fixtures input_shape with N", lambda m, p, X, y, l: _bfh_damaged("input_shape"), ValueError, "the manifest's n_samples and input_shape say"),
    ("fixtures loss type of the old dialect", lambda m, p, X, y, l: _bfh_damaged("squared_error"), ValueError, "case 0 ('linear/ce-mean'): loss_from_spec: expected {'type': one of"),
    ("load_fixtures verify a string", lambda m, p, X, y, l: rp.testing.load_fixtures("fixtures/golden", verify="no"), TypeError, "load_fixtures: verify must be True or False, got 'no'"),
    ("model_from_spec pooling stride", lambda m, p, X, y, l: rp.testing.model_from_spec([{"type": "AvgPool2d", "kernel_size": 2, "stride": 1}]), ValueError, "layer 0 (AvgPool2d) has unknown argument(s) ['stride'] (refprune pools with stride = kernel_size)"),
    ("model_from_spec no type", lambda m, p, X, y, l: rp.testing.model_from_spec([{"type": "Flatten"}, {"kernel_size": 2}]), ValueError, "layer 1 {'kernel_size': 2} has no 'type'; accepted types: Linear, Conv2d"),
    ("model_from_spec misspelt argument", lambda m, p, X, y, l: rp.testing.model_from_spec([{"type": "Linear", "in_features": 3, "out_features": 2, "bais": True}]), ValueError, "Linear accepts ['in_features', 'out_features', 'bias']"),
    ("model_from_spec unknown type", lambda m, p, X, y, l: rp.testing.model_from_spec([{"type": "Tanh"}, {"type": "GELU"}]), ValueError, "layer 1 has unknown type 'GELU'; accepted types"),
    ("model_from_spec a dict", lambda m, p, X, y, l: rp.testing.model_from_spec({"network": [{"type": "Tanh"}]}), TypeError, "expected a list of layer specifications"),
    ("compare_with_fixture complex", lambda m, p, X, y, l: _bfh_with_fixture(lambda fx: rp.testing.compare_with_fixture(fx, "grad", fx["grad"] + 1e-3j)), TypeError, "compare_with_fixture: value for 'grad' is complex"),
    ("compare_with_fixture all NaN", lambda m, p, X, y, l: _bfh_with_fixture(lambda fx: rp.testing.compare_with_fixture(fx, "grad", np.full(8, np.nan))), AssertionError, "8 NaN and 0 inf entries"),
    ("compare_with_fixture rtol a string", lambda m, p, X, y, l: _bfh_with_fixture(lambda fx: rp.testing.compare_with_fixture(fx, "grad", fx["grad"], rtol="1e-6")), TypeError, "compare_with_fixture: rtol must be a real number in [0, 1), got str"),
    # a torch loss where refprune's is expected (a stand-in with torch's module name: the table runs without torch)
    ("loss is torch's CrossEntropyLoss", lambda m, p, X, y, l: rp.loss(m, p, X, y, _bfh_torch_like_loss("CrossEntropyLoss", "sum")), TypeError, "got torch's torch.nn.modules.loss.CrossEntropyLoss: use refprune's rp.CrossEntropyLoss(reduction='sum')"),
    ("loss is torch's MSELoss with reduction none", lambda m, p, X, y, l: rp.grad(*mse_problem()[:4], _bfh_torch_like_loss("MSELoss", "none")), TypeError, "use refprune's rp.MSELoss(reduction='mean' or 'sum')"),
    # harness: K-FAC options and the zoo's arguments
    ("harness kfac_options unknown key", lambda m, p, X, y, l: cf.Adapter(kfac=len, kfac_options={"aprox": "reduce"}), ValueError, "Adapter: kfac_options has unknown keys ['aprox']"),
    ("harness kfac_options bad approx", lambda m, p, X, y, l: cf.Adapter(ekfac=len, kfac_options={"approx": "both"}), ValueError, "Adapter: kfac_options: approx must be one of"),
    ("harness kfac_options not a dict", lambda m, p, X, y, l: cf.Adapter(kfac=len, kfac_options=["reduce"]), TypeError, "Adapter: kfac_options must be a dict"),
    ("harness kfac_options without a K-FAC quantity", lambda m, p, X, y, l: cf.Adapter(grad=len, kfac_options={"bias": "separate"}), ValueError, "kfac_options apply to ['kfac', 'kfac_factors', 'ekfac'], which the adapter does not compute"),
    ("make_case n 0", lambda m, p, X, y, l: cf.make_case("linear", "ce-mean", n=0), ValueError, "build_case: n must be a positive int, got 0"),
    ("make_case n float", lambda m, p, X, y, l: cf.make_case("linear", "ce-mean", n=2.5), ValueError, "build_case: n must be a positive int, got 2.5"),
    ("make_case seed negative", lambda m, p, X, y, l: cf.make_case("linear", "mse-sum", seed=-1), ValueError, "build_case: seed must be a non-negative int, got -1"),
    ("make_case mc_samples 0", lambda m, p, X, y, l: cf.make_case("mlp-tanh", "ce-sum", mc_samples=0), ValueError, "build_case: mc_samples must be a positive int"),
    ("zoo architectures a string", lambda m, p, X, y, l: cf.zoo("linear"), TypeError, "zoo: architectures must be a list of names"),
    ("zoo losses empty", lambda m, p, X, y, l: cf.zoo(losses=[]), ValueError, "zoo: losses [] not known"),
    ("drawn_zoo count 0", lambda m, p, X, y, l: cf.drawn_zoo(0), ValueError, "drawn_zoo: count must be a positive int, got 0"),
    ("fixture ill-defined EKFAC left out", lambda m, p, X, y, l: _bfh_with_fixture(lambda fx: fx["ekfac/ggn/reduce"], "conv-tanh-avgpool"), KeyError, "not uniquely defined"),
]


def _bfh_torch_like_loss(name, reduction):
    """An object that looks like a torch loss module to refprune (its class lives in
    ``torch.nn.modules.loss``), without importing torch."""
    return type(name, (), {"__module__": "torch.nn.modules.loss", "reduction": reduction})()


def _bfh_cases():
    return [cf.make_case("linear", "ce-mean")]


def _bfh_conforms(**quantities):
    return cf.assert_conforms(cf.Adapter(**quantities), _bfh_cases())


def _bfh_check(cases=None, **options):
    report = cf.check(cf.Adapter(grad=lambda c: rp.grad(*c.args())), _bfh_cases() if cases is None else cases, **options)
    assert report.ok, report
    return report


def _bfh_tree(model, params, key, change):
    """``params`` as a dict keyed like a state dict, with entry ``key`` changed."""
    names = [f"{i}.{k}" for i, layer in enumerate(model) if isinstance(layer, rp.nn.AffineLayer)
             for k in (("weight", "bias") if layer.bias else ("weight",))]
    tree = dict(zip(names, params))
    tree[key] = change(tree[key])
    return tree


def _bfh_with_fixture(fn, arch="linear", lossname="ce-mean"):
    """``fn(fixture)`` on a one-case fixture set written to a temporary directory."""
    import tempfile

    from refprune.fixtures import write_fixtures

    with tempfile.TemporaryDirectory() as d:
        write_fixtures(d, [cf.make_case(arch, lossname)])
        return fn(rp.testing.load_fixtures(d)[0])


def _bfh_damaged(kind):
    """Write the linear/ce-mean fixtures to a temporary directory, damage them one way
    and load them."""
    import json
    import os
    import tempfile

    from refprune.fixtures import write_fixtures

    with tempfile.TemporaryDirectory() as d:
        write_fixtures(d, [cf.make_case("linear", "ce-mean")])
        npz, man = os.path.join(d, "linear__ce-mean.npz"), os.path.join(d, "manifest.json")
        with np.load(npz) as z:
            arrays = {k: z[k] for k in z.files}
        with open(man) as fh:
            manifest = json.load(fh)
        entry = manifest["cases"][0]
        if kind in ("reshape", "view", "extra"):
            change = {"reshape": lambda a: a.reshape(1, -1), "view": lambda a: a.view(np.int64)}
            if kind == "extra":
                arrays["extra"] = np.zeros(2)
            else:
                arrays["grad"] = change[kind](arrays["grad"])
            np.savez(npz, **arrays)
        elif kind == "truncate":
            with open(npz, "rb") as fh:
                data = fh.read()
            with open(npz, "wb") as fh:
                fh.write(data[: len(data) // 2])
        elif kind == "no sha256":
            os.remove(os.path.join(d, "manifest.sha256"))
        elif kind == "not json":
            with open(man, "w") as fh:
                fh.write('{"cases": [{"name": ')
        else:
            if kind == "reduction":
                entry["loss"]["reduction"] = "sum"
            elif kind == "empty":
                manifest = {}
            elif kind == "input_shape":
                entry["input_shape"] = [entry["n_samples"]] + entry["input_shape"]
            elif kind == "squared_error":
                entry["loss"]["type"] = "squared_error"
            data = json.dumps(manifest).encode()
            with open(man, "wb") as fh:
                fh.write(data)
            if kind != "reduction":  # the manifest's hash made to match: the other checks must catch it
                from refprune.fixtures import manifest_checksum_line

                with open(os.path.join(d, "manifest.sha256"), "w") as fh:
                    fh.write(manifest_checksum_line(data))
        return rp.testing.load_fixtures(d)

# ---- options of prune, obs_trace, saliencies, minimize, train and the optimizers; divergence
OPTION_CASES = [
    # Monte Carlo options given to a curvature that draws nothing
    ("fisher seed with the true Fisher", lambda m, p, X, y, l: rp.fisher(m, p, X, y, l, curvature="fisher", seed=3), ValueError, "fisher: seed=3 is for curvature='mc_fisher', got curvature='fisher'"),
    ("fisher samples with the empirical Fisher", lambda m, p, X, y, l: rp.fisher(m, p, X, y, l, curvature="empirical_fisher", samples=3), ValueError, "fisher: samples=3 is for curvature='mc_fisher', got curvature='empirical_fisher'"),
    ("kfac seed with the GGN", lambda m, p, X, y, l: rp.kfac(m, p, X, y, l, curvature="ggn", seed=3), ValueError, "kfac: seed=3 is for curvature='mc_fisher', got curvature='ggn'"),
    ("kfac samples and seed with the Fisher", lambda m, p, X, y, l: rp.kfac(m, p, X, y, l, curvature="fisher", samples=2, seed=1), ValueError, "kfac: samples=2, seed=1 are for curvature='mc_fisher'"),
    ("ekfac seed with the GGN", lambda m, p, X, y, l: rp.ekfac(m, p, X, y, l, seed=3), ValueError, "ekfac: seed=3 is for curvature='mc_fisher', got curvature='ggn'"),
    ("fisher_diagonal seed with the true Fisher", lambda m, p, X, y, l: rp.fisher_diagonal(m, p, X, y, l, seed=3), ValueError, "fisher_diagonal: seed=3 is for curvature='mc_fisher'"),
    ("curvature_diagonal samples with the Hessian", lambda m, p, X, y, l: rp.curvature_diagonal(m, p, X, y, l, curvature="hessian", samples=3), ValueError, "curvature_diagonal: samples=3 is for curvature='mc_fisher', got curvature='hessian'"),
    ("block_diagonal seed with the Hessian", lambda m, p, X, y, l: rp.block_diagonal(m, p, X, y, l, curvature="hessian", seed=3), ValueError, "block_diagonal: seed=3 is for curvature='mc_fisher', got curvature='hessian'"),
    ("ExactCurvature seed with the GGN", lambda m, p, X, y, l: rp.ExactCurvature(m, p, X, y, l, curvature="ggn", seed=3), ValueError, "ExactCurvature: seed=3 is for curvature='mc_fisher', got curvature='ggn'"),
    ("ExactCurvature targets with the Hessian", lambda m, p, X, y, l: rp.ExactCurvature(m, p, X, y, l, targets=y[None]), ValueError, "ExactCurvature: targets= is for curvature='mc_fisher', got curvature='hessian'"),
    ("Monte Carlo defaults with the GGN accepted", lambda m, p, X, y, l: rp.kfac(m, p, X, y, l, curvature="ggn", samples=1, seed=0), None, ""),
    # obs_trace: flags are booleans, numbers are numbers, Monte Carlo options need "mc_fisher"
    ("obs_trace include_bias 'no'", lambda m, p, X, y, l: rp.obs_trace(m, p, X, y, l, damping=0.1, count=1, include_bias="no"), TypeError, "obs_trace: include_bias must be True or False, got 'no'"),
    ("obs_trace skip_emptied 'no'", lambda m, p, X, y, l: rp.obs_trace(m, p, X, y, l, damping=0.1, count=1, skip_emptied="no"), TypeError, "obs_trace: skip_emptied must be True or False, got 'no'"),
    ("obs_trace evaluate_loss 'no'", lambda m, p, X, y, l: rp.obs_trace(m, p, X, y, l, damping=0.1, count=1, evaluate_loss="no"), TypeError, "obs_trace: evaluate_loss must be True or False, got 'no'"),
    ("obs_trace damping None", lambda m, p, X, y, l: rp.obs_trace(m, p, X, y, l, damping=None), TypeError, "obs_trace: damping must be a finite number >= 0, got None (damping must be a number, not None)"),
    ("obs_trace weight_decay text", lambda m, p, X, y, l: rp.obs_trace(m, p, X, y, l, damping=0.1, weight_decay="0.1"), TypeError, "obs_trace: weight_decay must be a finite number >= 0, got '0.1' (weight_decay must be a number, not text)"),
    ("block_diagonal samples with targets", lambda m, p, X, y, l: rp.block_diagonal(m, p, X, y, l, curvature="mc_fisher", samples=2, targets=y[None]), ValueError, "block_diagonal: samples=2 does not apply with targets="),
    ("fisher samples with targets", lambda m, p, X, y, l: rp.fisher(m, p, X, y, l, curvature="mc_fisher", samples=2, targets=y[None]), ValueError, "fisher: samples=2 does not apply with targets="),
    ("ExactCurvature samples with targets", lambda m, p, X, y, l: rp.ExactCurvature(m, p, X, y, l, curvature="mc_fisher", samples=2, targets=y[None]), ValueError, "ExactCurvature: samples=2 does not apply with targets="),
    ("obs_trace targets with the GGN", lambda m, p, X, y, l: rp.obs_trace(m, p, X, y, l, damping=0.1, count=1, targets=y[None]), ValueError, "obs_trace: targets= is for curvature='mc_fisher', got curvature='ggn'"),
    ("obs_trace samples with the Fisher", lambda m, p, X, y, l: rp.obs_trace(m, p, X, y, l, curvature="fisher", damping=0.1, count=1, samples=4), ValueError, "obs_trace: samples= is for curvature='mc_fisher', got curvature='fisher'"),
    ("obs_trace non-symmetric curvature", lambda m, p, X, y, l: rp.obs_trace(m, p, X, y, l, curvature=_opt_asymmetric(), count=1), ValueError, "obs_trace: the precomputed curvature is not symmetric"),
    # saliencies
    ("saliencies include_bias 'no'", lambda m, p, X, y, l: rp.saliencies(m, p, X, y, l, method="magnitude", include_bias="no"), TypeError, "saliencies: include_bias must be True or False, got 'no'"),
    ("saliencies weight_decay negative", lambda m, p, X, y, l: rp.saliencies(m, p, X, y, l, damping=1.0, weight_decay=-0.1), ValueError, "saliencies: weight_decay must be a finite number >= 0, got -0.1"),
    ("saliencies damping None", lambda m, p, X, y, l: rp.saliencies(m, p, X, y, l, damping=None), TypeError, "saliencies: damping must be a finite number >= 0, got None"),
    ("saliencies taylor full for obd", lambda m, p, X, y, l: rp.saliencies(m, p, X, y, l, method="obd", taylor="full"), ValueError, "saliencies: taylor='full' needs a dense curvature (method 'obs')"),
    ("saliencies mask for kron_obs", lambda m, p, X, y, l: rp.saliencies(m, p, X, y, l, method="kron_obs", damping=0.1, mask=np.ones(N_PARAMS, bool)), ValueError, "saliencies: mask= (given) does not apply to method 'kron_obs'; mask= applies to magnitude, obd, obs and woodfisher"),
    ("saliencies include_bias for kron_obs", lambda m, p, X, y, l: rp.saliencies(m, p, X, y, l, method="kron_obs", damping=0.1, include_bias=True), ValueError, "saliencies: include_bias=True does not apply to method 'kron_obs'"),
    ("saliencies targets with the Hessian", lambda m, p, X, y, l: rp.saliencies(m, p, X, y, l, curvature="hessian", damping=10.0, targets=y[None]), ValueError, "saliencies: targets= is for curvature='mc_fisher', got curvature='hessian'"),
    ("saliencies seed with the GGN", lambda m, p, X, y, l: rp.saliencies(m, p, X, y, l, damping=0.1, seed=3), ValueError, "saliencies: seed= is for curvature='mc_fisher', got curvature='ggn'"),
    ("saliencies weight_decay for magnitude", lambda m, p, X, y, l: rp.saliencies(m, p, X, y, l, method="magnitude", weight_decay=0.1), ValueError, "saliencies: weight_decay=0.1 does not apply to method 'magnitude'"),
    ("saliencies diagonal for obs", lambda m, p, X, y, l: rp.saliencies(m, p, X, y, l, damping=0.1, diagonal="obd"), ValueError, "saliencies: diagonal='obd' does not apply to method 'obs'; diagonal= applies to obd"),
    ("saliencies indefinite for woodfisher", lambda m, p, X, y, l: rp.saliencies(m, p, X, y, l, method="woodfisher", damping=0.1, indefinite="damp"), ValueError, "saliencies: indefinite='damp' does not apply to method 'woodfisher'; indefinite= applies to obs"),
    ("saliencies non-symmetric curvature", lambda m, p, X, y, l: rp.saliencies(m, p, X, y, l, curvature=_opt_asymmetric()), ValueError, "saliencies: the precomputed curvature is not symmetric: ||C - C^T|| = 7.071e-01 exceeds 1e-10 ||C||"),
    ("saliencies non-symmetric curvature for obd", lambda m, p, X, y, l: rp.saliencies(m, p, X, y, l, method="obd", curvature=_opt_asymmetric()), ValueError, "largest asymmetry |C[0, 1] - C[1, 0]| = 5.000e-01"),
    # prune: options that do not apply to the method are refused by name
    ("prune selection for obs", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, method="obs", damping=0.1, selection="greedy"), ValueError, "prune: selection='greedy' does not apply to method 'obs'; selection= applies to layer_obs"),
    ("prune group_size for magnitude", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, method="magnitude", group_size=2), ValueError, "prune: group_size=2 does not apply to method 'magnitude'; group_size= applies to obs and woodfisher"),
    ("prune diagonal for obs", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, method="obs", damping=0.1, diagonal="obd"), ValueError, "prune: diagonal='obd' does not apply to method 'obs'; diagonal= applies to obd"),
    ("prune diagonal old spelling for obs", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, method="obs", damping=0.1, diagonal="fisher"), ValueError, "write curvature='mc_fisher'"),
    ("prune damping for magnitude", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, method="magnitude", damping=0.1), ValueError, "prune: damping=0.1 does not apply to method 'magnitude'"),
    ("prune damping for eigendamage", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, method="eigendamage", damping=0.1), ValueError, "prune: damping=0.1 does not apply to method 'eigendamage'"),
    ("prune damping for c_obd", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, method="c_obd", damping=0.1), ValueError, "prune: damping=0.1 does not apply to method 'c_obd'"),
    ("prune scope for kron_obs", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, method="kron_obs", damping=0.1, scope="layer"), ValueError, "prune: scope='layer' does not apply to method 'kron_obs'"),
    ("prune mask for eigendamage", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, method="eigendamage", mask=np.ones(N_PARAMS, bool)), ValueError, "prune: mask= (given) does not apply to method 'eigendamage'"),
    ("prune include_bias for layer_obs", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, method="layer_obs", damping=0.1, include_bias=True), ValueError, "prune: include_bias=True does not apply to method 'layer_obs'"),
    ("prune max_layer_fraction for obs", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, method="obs", damping=0.1, max_layer_fraction=0.5), ValueError, "prune: max_layer_fraction=0.5 does not apply to method 'obs'; max_layer_fraction= applies to eigendamage"),
    ("prune eigenvalues for obs", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, method="obs", damping=0.1, eigenvalues="kfac"), ValueError, "prune: eigenvalues='kfac' does not apply to method 'obs'"),
    ("prune indefinite for woodfisher", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, method="woodfisher", damping=0.1, indefinite="damp"), ValueError, "prune: indefinite='damp' does not apply to method 'woodfisher'"),
    ("prune samples with the GGN", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, method="obs", damping=0.1, samples=3), ValueError, "prune: samples= is for curvature='mc_fisher', got curvature='ggn'"),
    ("prune seed without mc_fisher or retrain", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, method="obs", damping=0.1, seed=2), ValueError, "prune: seed= is for curvature='mc_fisher' (or with retrain=), got curvature='ggn'"),
    ("prune non-symmetric curvature", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, method="obs", curvature=_opt_asymmetric()), ValueError, "prune: the precomputed curvature is not symmetric"),
    ("prune damping None", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, damping=None), TypeError, "prune: damping must be a finite number >= 0, got None"),
    ("prune weight_decay text", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, weight_decay="0.1"), TypeError, "prune: weight_decay must be a finite number >= 0, got '0.1'"),
    ("prune steps text", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, steps="2"), TypeError, "prune: steps must be a positive int, got '2'"),
    ("prune max_layer_fraction text", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, method="eigendamage", max_layer_fraction="0.5"), TypeError, "prune: max_layer_fraction must be in (0, 1], got '0.5'"),
    ("prune retrain epochs text", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, method="magnitude", retrain=dict(epochs="2")), TypeError, "prune: retrain: epochs must be a non-negative int, got '2'"),
    ("prune retrain mask", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, method="magnitude", retrain=dict(epochs=1, mask=None)), ValueError, "prune: retrain has options train does not take here: ['mask']"),
    ("prune retrain optimizer with weight decay", lambda m, p, X, y, l: rp.prune(m, p, X, y, l, method="magnitude", weight_decay=0.1, retrain=dict(epochs=1, optimizer=rp.optim.SGD())), None, ""),
    # minimize
    ("minimize weight_decay text", lambda m, p, X, y, l: rp.minimize(m, p, X, y, l, weight_decay="0.1"), TypeError, "minimize: weight_decay must be a finite number >= 0, got '0.1' (weight_decay must be a number, not text)"),
    ("minimize gtol negative", lambda m, p, X, y, l: rp.minimize(m, p, X, y, l, gtol=-1), ValueError, "minimize: gtol must be a finite number > 0, got -1"),
    ("minimize gtol None", lambda m, p, X, y, l: rp.minimize(m, p, X, y, l, gtol=None), TypeError, "minimize: gtol must be a finite number > 0, got None"),
    ("minimize maxiter negative", lambda m, p, X, y, l: rp.minimize(m, p, X, y, l, maxiter=-1), ValueError, "minimize: maxiter must be a positive int, got -1"),
    ("minimize maxiter float", lambda m, p, X, y, l: rp.minimize(m, p, X, y, l, maxiter=2.5), TypeError, "minimize: maxiter must be a positive int, got 2.5"),
    ("minimize progress 'yes'", lambda m, p, X, y, l: rp.minimize(m, p, X, y, l, progress="yes"), TypeError, "minimize: progress must be True or False, got 'yes'"),
    # train and the optimizers
    ("train epochs text", lambda m, p, X, y, l: rp.train(m, p, X, y, l, epochs="3"), TypeError, "train: epochs must be a non-negative int, got '3'"),
    ("train seed text", lambda m, p, X, y, l: rp.train(m, p, X, y, l, epochs=1, seed="a"), TypeError, "train: seed must be a non-negative int, got 'a'"),
    ("train progress 'yes'", lambda m, p, X, y, l: rp.train(m, p, X, y, l, epochs=1, progress="yes"), TypeError, "train: progress must be True or False, got 'yes'"),
    ("train momentum text", lambda m, p, X, y, l: rp.train(m, p, X, y, l, momentum="0.9"), TypeError, "train: momentum must be a finite number >= 0 and < 1 or None, got '0.9' (momentum must be a number, not text)"),
    ("SGD lr text", lambda m, p, X, y, l: rp.optim.SGD(lr="0.1"), TypeError, "SGD: lr must be a finite number >= 0, got '0.1' (lr must be a number, not text)"),
    ("SGD momentum None", lambda m, p, X, y, l: rp.optim.SGD(momentum=None), TypeError, "SGD: momentum must be a finite number >= 0 and < 1, got None"),
    ("EKFAC scale_decay 1", lambda m, p, X, y, l: rp.optim.EKFAC(scale_decay=1), ValueError, "EKFAC: scale_decay must be a finite number >= 0 and < 1, got 1 (scale_decay must be < 1)"),
    ("KFAC refresh_interval text", lambda m, p, X, y, l: rp.optim.KFAC(refresh_interval="2"), TypeError, "KFAC: refresh_interval must be a positive int, got '2'"),
    ("KFAC samples 0", lambda m, p, X, y, l: rp.optim.KFAC(samples=0), ValueError, "KFAC: samples must be a positive int, got 0"),
    ("KFAC seed negative", lambda m, p, X, y, l: rp.optim.KFAC(seed=-1), ValueError, "KFAC: seed must be a non-negative int, got -1"),
    ("KFAC samples with the GGN", lambda m, p, X, y, l: rp.optim.KFAC(curvature="ggn", samples=3), ValueError, "KFAC: samples= is for curvature='mc_fisher', got curvature='ggn'"),
    ("EKFAC seed with the Fisher", lambda m, p, X, y, l: rp.optim.EKFAC(curvature="fisher", seed=4), ValueError, "EKFAC: seed= is for curvature='mc_fisher', got curvature='fisher'"),
    ("NaturalGradient samples with the Fisher", lambda m, p, X, y, l: rp.optim.NaturalGradient(samples=2), ValueError, "NaturalGradient: samples= is for curvature='mc_fisher', got curvature='fisher'"),
    ("NaturalGradient max_bytes text", lambda m, p, X, y, l: rp.optim.NaturalGradient(max_bytes="1e6"), TypeError, "NaturalGradient: max_bytes must be a finite number of bytes >= 0 or None (the memory available), got '1e6'"),
    ("NaturalGradient max_bytes with per-layer blocks", lambda m, p, X, y, l: rp.optim.NaturalGradient(structure="layer", max_bytes=10**6), ValueError, "NaturalGradient: max_bytes= applies to structure='full' (the whole matrix)"),
    ("unit_saliencies shortcut 'no'", lambda m, p, X, y, l: rp.pruning.unit_saliencies(m, p, X, y, l, damping=0.1, shortcut="no"), TypeError, "unit_saliencies: shortcut must be True or False, got 'no'"),
    ("unit_saliencies damping negative", lambda m, p, X, y, l: rp.pruning.unit_saliencies(m, p, X, y, l, method="kron_obd", damping=-1.0), ValueError, "unit_saliencies: damping must be a finite number >= 0, got -1.0"),
    # divergence: an update to inf is an error naming the step, lr and the largest update
    ("SGD step diverges", lambda m, p, X, y, l: rp.optim.SGD(lr=1e300).step(*_opt_steep()), rp.DivergenceError, "SGD: step 1 diverged: lr=1e+300 times the step |buf| = "),
    ("KFAC step diverges", lambda m, p, X, y, l: rp.optim.KFAC(lr=1e308).step(m, p, X, y, l), rp.DivergenceError, "KFAC: step 1 diverged: lr=1e+308"),
    ("NaturalGradient step diverges", lambda m, p, X, y, l: rp.optim.NaturalGradient(lr=1e308).step(m, p, X, y, l), FloatingPointError, "NaturalGradient: step 1 diverged"),
    ("train diverges in the first step", lambda m, p, X, y, l: rp.train(*_opt_steep(), lr=1e300, epochs=2, batch_size=2), rp.DivergenceError, "train: epoch 1, batch 1: SGD: step 1 diverged: lr=1e+300"),
]


def _opt_asymmetric():
    """The identity with one entry above the diagonal: ||C - C^T|| = 0.5 sqrt(2)."""
    C = np.eye(N_PARAMS)
    C[0, 1] = 0.5
    return C


def _opt_steep():
    """A linear model with inputs of size 1e6: its gradient is about 1e11, so SGD with
    lr=1e300 overflows in the first step while the forward pass stays finite."""
    rng = np.random.default_rng(0)
    model = rp.Sequential(rp.Linear(3, 2))
    return model, model.init(0), 1e6 * rng.standard_normal((5, 3)), np.zeros((5, 2)), rp.MSELoss()

# ---- sizes refused up front, numbers given as text or None, ragged input, checkers
# The sizes are real and huge (terabytes): each must be refused from the shapes alone,
# instantly, before anything is allocated (a raw MemoryError, or worse an overcommitted
# allocation, was what came before).
SIZE_NUMBER_CASES = [
    # -- parameters too large to draw
    ("size: init of a 2**20 x 2**20 Linear model", lambda m, p, X, y, l: rp.Sequential(rp.Linear(2**20, 2**20)).init(), MemoryError, "init: the 1099512676352 float64 parameters of the model would need 8192.01 GiB but only"),
    ("size: Linear(2**20, 2**20).init", lambda m, p, X, y, l: rp.Linear(2**20, 2**20).init(np.random.default_rng(0)), MemoryError, "init: the 1099512676352 float64 parameters of Linear(1048576, 1048576, bias=True) would need"),
    ("size: Conv2d init of 2**40 weights", lambda m, p, X, y, l: rp.Conv2d(2**12, 2**12, 2**8).init(np.random.default_rng(0)), MemoryError, "init: the 1099511631872 float64 parameters of Conv2d(4096, 4096"),
    ("layer init with a seed for a Generator", lambda m, p, X, y, l: rp.Linear(2, 3).init(0), TypeError, "Linear(2, 3, bias=True).init: rng must be a numpy.random.Generator, got int"),
    ("split_flat of the wrong width", lambda m, p, X, y, l: rp.Linear(2, 3).split_flat(np.ones((1, 5))), ValueError, "Linear(2, 3, bias=True).split_flat: V must have shape (K, 9), got (1, 5)"),
    # -- curvature of a layer 2**20 wide (its weights take 8 MB)
    ("size: block_diagonal with one 8 TB block", lambda m, p, X, y, l: rp.block_diagonal(*_size_wide_input()), rp.CurvatureTooLargeError, "block_diagonal: the diagonal blocks of every layer (the largest, of Linear(1048576, 1, bias=True), 1048577 x 1048577 float64) would need 8192.02 GiB"),
    ("size: kfac input factor of a 2**20-wide layer", lambda m, p, X, y, l: rp.kfac(*_size_wide_input()), rp.CurvatureTooLargeError, "kfac: the Kronecker factors S and A of every layer (the largest, of Linear(1048576, 1, bias=True): S 1 x 1, A 1048577 x 1048577 float64)"),
    ("size: ekfac input factor of a 2**20-wide layer", lambda m, p, X, y, l: rp.ekfac(*_size_wide_input()), rp.CurvatureTooLargeError, "ekfac: the Kronecker factors S and A"),
    ("size: kfac output factor of 2**20 outputs", lambda m, p, X, y, l: rp.kfac(*_size_wide_output(rp.MSELoss())), rp.CurvatureTooLargeError, "S 1048576 x 1048576, A 2 x 2 float64) would need"),
    ("size: ggn_diagonal with 2**20 classes", lambda m, p, X, y, l: rp.ggn_diagonal(*_size_wide_output(rp.CrossEntropyLoss())), rp.CurvatureTooLargeError, "ggn_diagonal: the columns back-propagated at layer 0 (Linear(1, 1048576, bias=True)) for 1 sample(s) would need"),
    ("size: curvature_diagonal fisher with 2**20 classes", lambda m, p, X, y, l: rp.curvature_diagonal(*_size_wide_output(rp.CrossEntropyLoss()), curvature="fisher"), rp.CurvatureTooLargeError, "fisher_diagonal: the columns back-propagated"),
    ("size: obd_diagonal with 2**20 classes", lambda m, p, X, y, l: rp.obd_diagonal(*_size_wide_output(rp.CrossEntropyLoss())), MemoryError, "obd_diagonal: the square roots of the loss Hessians (1 x 1048576 x 1048576 float64"),
    ("size: hessian_diagonal through 2**17 tanh units", lambda m, p, X, y, l: rp.hessian_diagonal(*_size_wide_hidden()), rp.CurvatureTooLargeError, "hessian_diagonal: the columns back-propagated at layer 1 (Tanh()) for 1 sample(s) would need"),
    # -- dense matrices of operators over 2**20 parameters
    ("size: kfac to_dense of 2**20 parameters", lambda m, p, X, y, l: rp.kfac(*_size_many_params()).to_dense(), rp.CurvatureTooLargeError, "KFAC.to_dense: the 528384 x 528384 float64 matrix (2080.12 GiB) with its temporaries would need"),
    ("size: kfac inverse to_dense", lambda m, p, X, y, l: rp.kfac(*_size_many_params()).inverse(1.0).to_dense(), rp.CurvatureTooLargeError, "KFAC.to_dense: the 528384 x 528384"),
    ("size: kfac block dense", lambda m, p, X, y, l: rp.kfac(*_size_many_params(1, 1024)).blocks[0].dense(), rp.CurvatureTooLargeError, "KroneckerBlock.dense: the 1049600 x 1049600 float64 block"),
    ("size: ekfac to_dense", lambda m, p, X, y, l: rp.ekfac(*_size_many_params(256, 46)).to_dense(), rp.CurvatureTooLargeError, "EKFAC.to_dense: the 553472 x 553472"),
    ("size: Diagonal to_dense of 2**20", lambda m, p, X, y, l: rp.Diagonal(np.ones(2**20)).to_dense(), rp.CurvatureTooLargeError, "Diagonal.to_dense: the 1048576 x 1048576 float64 matrix would need 8192.00 GiB"),
    ("size: BlockDiagonal to_dense of 2**20", lambda m, p, X, y, l: rp.BlockDiagonal([np.eye(2)], [0, 2], 2**20).to_dense(), rp.CurvatureTooLargeError, "BlockDiagonal.to_dense: the 1048576 x 1048576"),
    ("size: operator to_dense from products", lambda m, p, X, y, l: _size_Identity().to_dense(), rp.CurvatureTooLargeError, "_size_Identity.to_dense: the 1048576 x 1048576 float64 matrix (8192.00 GiB) with its temporaries"),
    ("size: operator diagonal from products", lambda m, p, X, y, l: _size_Identity().diagonal(), rp.CurvatureTooLargeError, "_size_Identity.diagonal: the 1048576 x 1048576 float64 matrix (8192.00 GiB) with its temporaries would need 16384.00 GiB but only"),
    ("size: Dense of a 2**20-square broadcast", lambda m, p, X, y, l: rp.Dense(np.broadcast_to(1.0, (2**20, 2**20))), MemoryError, "Dense: M: checking the float64 array of shape (1048576 x 1048576) for NaN and inf would need"),
    ("size: inverse_spd of a 2**20-square broadcast", lambda m, p, X, y, l: rp.pruning.obs.inverse_spd(np.broadcast_to(1.0, (2**20, 2**20))), MemoryError, "inverse_spd: the damped copy, Cholesky factor and inverse of the 1048576 x 1048576 float64 matrix would need 24576.00 GiB"),
    ("size: OBS of 2**20 weights", lambda m, p, X, y, l: rp.pruning.obs.OBS(np.broadcast_to(1.0, (2**20, 2**20)), np.ones(2**20)), MemoryError, "OBS: the copy of the 1048576 x 1048576 float64 Hinv would need"),
    # -- BlockDiagonal's layout (blocks and ranges were paired by zip, the extra ones dropped)
    ("BlockDiagonal a block without a range", lambda m, p, X, y, l: rp.BlockDiagonal([np.eye(2), np.eye(1)], [0, 2], 3), ValueError, "BlockDiagonal: offsets must have len(blocks) + 1 = 3 entries (the start of each block and the end of the last), got 2"),
    ("BlockDiagonal a range without a block", lambda m, p, X, y, l: rp.BlockDiagonal([np.eye(2)], [0, 2, 3], 3), ValueError, "BlockDiagonal: offsets must have len(blocks) + 1 = 2 entries"),
    ("BlockDiagonal a range past n", lambda m, p, X, y, l: rp.BlockDiagonal([np.eye(5)], [0, 5], 3), ValueError, "BlockDiagonal: offsets must be non-decreasing ints in [0, 3], got [0, 5]"),
    ("BlockDiagonal n a float", lambda m, p, X, y, l: rp.BlockDiagonal([np.eye(2)], [0, 2], 3.5), ValueError, "BlockDiagonal: n must be a non-negative int, got 3.5"),
    ("BlockDiagonal offsets floats", lambda m, p, X, y, l: rp.BlockDiagonal([np.eye(2)], [0.0, 2.0], 3), ValueError, "BlockDiagonal: offsets must be non-decreasing ints in [0, 3], got [0.0, 2.0]"),
    ("Dense not symmetric", lambda m, p, X, y, l: rp.Dense([[1.0, 2.0], [0.0, 1.0]]), ValueError, "Dense: M must be symmetric, got max |M - M^T| = 2.000e+00 with max |M| = 2.000e+00"),
    ("KFAC.damped form named by the method", lambda m, p, X, y, l: rp.kfac(m, p, X, y, l).damped(0.1, "tikhonov"), ValueError, "KFAC.damped: damping form must be one of ('exact', 'factored', 'pi'), got 'tikhonov'"),
    ("KFAC.inverse damping named by the method", lambda m, p, X, y, l: rp.kfac(m, p, X, y, l).inverse(-1.0), ValueError, "KFAC.inverse: damping must be a finite number >= 0, got -1.0"),
    ("curvature_diagonal hessian with targets", lambda m, p, X, y, l: rp.curvature_diagonal(m, p, X, y, l, curvature="hessian", targets=np.zeros((2, 4), int)), ValueError, "curvature_diagonal: targets= is for curvature='mc_fisher', got curvature='hessian'"),
    ("Monte Carlo targets with samples", lambda m, p, X, y, l: rp.kfac(m, p, X, y, l, curvature="mc_fisher", targets=np.zeros((2, 4), int), samples=5), ValueError, "kfac: samples=5 does not apply with targets= (the number of draws is their first axis)"),
    # -- Monte Carlo targets: 10**12 draws per sample
    ("size: kfac 10**12 Monte Carlo samples", lambda m, p, X, y, l: rp.kfac(m, p, X, y, l, curvature="mc_fisher", samples=10**12), MemoryError, "kfac: 1000000000000 Monte Carlo target(s) for each of 4 sample(s) with 3 outputs would need"),
    ("size: fisher 10**12 Monte Carlo samples", lambda m, p, X, y, l: rp.fisher(m, p, X, y, l, curvature="mc_fisher", samples=10**12), MemoryError, "fisher: 1000000000000 Monte Carlo target(s)"),
    ("size: fisher_diagonal 10**12 Monte Carlo samples", lambda m, p, X, y, l: rp.fisher_diagonal(m, p, X, y, l, curvature="mc_fisher", samples=10**12), MemoryError, "fisher_diagonal: 1000000000000 Monte Carlo target(s)"),
    ("size: ExactCurvature 10**12 Monte Carlo samples", lambda m, p, X, y, l: rp.ExactCurvature(m, p, X, y, l, curvature="mc_fisher", samples=10**12), MemoryError, "ExactCurvature: 1000000000000 Monte Carlo target(s)"),
    ("size: block_diagonal 10**12 Monte Carlo samples", lambda m, p, X, y, l: rp.block_diagonal(m, p, X, y, l, curvature="mc_fisher", samples=10**12), MemoryError, "block_diagonal: 1000000000000 Monte Carlo target(s)"),
    # -- convolutions whose im2col features or outputs are terabytes
    ("size: im2col of a 1000x1000 kernel", lambda m, p, X, y, l: rp.loss(*_size_big_kernel()), MemoryError, "Conv2d(1, 1, kernel_size=(1000, 1000), stride=(1, 1), padding=(0, 0), bias=True).forward: a batch of 1: the outputs (1 x 1 x 1002001), im2col features (1 x 1000000 x 1002001) and input-shaped results would need"),
    ("size: conv outputs of 2**20 channels", lambda m, p, X, y, l: rp.loss(*_size_many_channels()), MemoryError, "Conv2d(1, 1048576, kernel_size=(1, 1)"),
    ("size: kink_margin through a 1000x1000 kernel", lambda m, p, X, y, l: rp.testing.kink_margin(*_size_big_kernel()[:3]), MemoryError, "forward: a batch of 1: the outputs"),
    # -- user arrays whose float64 copy would be terabytes (broadcast views of huge shape)
    ("size: X an int broadcast of 2**36 samples", lambda m, p, X, y, l: rp.loss(m, p, np.broadcast_to((X[:1] > 0).astype(int), (2**36,) + X.shape[1:]), y, l), MemoryError, "X: converting the int64 array of shape (68719476736 x 1 x 4 x 4) to float64 and checking it would need"),
    ("size: X a float broadcast of 2**40 samples", lambda m, p, X, y, l: rp.loss(m, p, np.broadcast_to(X[:1], (2**40,) + X.shape[1:]), y, l), MemoryError, "X: checking the float64 array of shape (1099511627776 x 1 x 4 x 4) for NaN and inf"),
    ("size: params[0] an int broadcast of 2**40", lambda m, p, X, y, l: rp.grad(m, [np.broadcast_to(np.int64(1), (2**40,))] + p[1:], X, y, l), MemoryError, "params[0]: converting the int64 array of shape (1099511627776)"),
    # -- ragged nested lists
    ("ragged X", lambda m, p, X, y, l: rp.loss(m, p, [[1, 2], [3]], y, l), ValueError, "X is a ragged nested list: X[1] has shape (1,) but X[0] has shape (2,)"),
    ("ragged X deep inside", lambda m, p, X, y, l: rp.loss(m, p, _size_ragged(X), y, l), ValueError, "X is a ragged nested list: X[3][0][2] has shape (3,) but X[3][0][0] has shape (4,)"),
    ("ragged labels", lambda m, p, X, y, l: rp.loss(m, p, X, [[0], 1, 2, 0], l), ValueError, "CrossEntropyLoss: labels is a ragged nested list: y[1] has shape () but y[0] has shape (1,)"),
    ("ragged regression targets", lambda m, p, X, y, l: rp.loss(*_size_ragged_targets()), ValueError, "MSELoss: targets is a ragged nested list: y[3] has shape (2,) but y[0] has shape (3,)"),
    ("ragged params", lambda m, p, X, y, l: rp.grad(m, [p[0].tolist()[:1] + [[[1.0]]]] + p[1:], X, y, l), ValueError, "params[0] is a ragged nested list: params[0][1] has shape (1, 1) but params[0][0] has shape (1, 3, 3)"),
    ("ragged Dense matrix", lambda m, p, X, y, l: rp.Dense([[1.0, 2.0], [3.0]]), ValueError, "Dense: M is a ragged nested list: M[1] has shape (1,) but M[0] has shape (2,)"),
    ("ragged Monte Carlo targets", lambda m, p, X, y, l: rp.kfac(m, p, X, y, l, curvature="mc_fisher", targets=[[0, 1, 2, 0], [0, 1]]), ValueError, "targets is a ragged nested list: targets[1] has shape (2,)"),
    ("ragged check_grad x", lambda m, p, X, y, l: check_grad(np.sum, np.ones_like, [[1.0, 2.0], [3.0]]), ValueError, "check_grad: x is a ragged nested list: x[1] has shape (1,)"),
    # -- Monte Carlo seeds
    ("seed -1 kfac", lambda m, p, X, y, l: rp.kfac(m, p, X, y, l, curvature="mc_fisher", seed=-1), ValueError, "kfac: seed must be an int >= 0 or a list of them, got -1"),
    ("seed -1 ekfac", lambda m, p, X, y, l: rp.ekfac(m, p, X, y, l, curvature="mc_fisher", seed=-1), ValueError, "ekfac: seed must be an int >= 0"),
    ("seed -1 fisher", lambda m, p, X, y, l: rp.fisher(m, p, X, y, l, curvature="mc_fisher", seed=-1), ValueError, "fisher: seed must be an int >= 0"),
    ("seed -1 fisher_diagonal", lambda m, p, X, y, l: rp.fisher_diagonal(m, p, X, y, l, curvature="mc_fisher", seed=-1), ValueError, "fisher_diagonal: seed must be an int >= 0"),
    ("seed -1 curvature_diagonal", lambda m, p, X, y, l: rp.curvature_diagonal(m, p, X, y, l, curvature="mc_fisher", seed=-1), ValueError, "curvature_diagonal: seed must be an int >= 0"),
    ("seed -1 ExactCurvature", lambda m, p, X, y, l: rp.ExactCurvature(m, p, X, y, l, curvature="mc_fisher", seed=-1), ValueError, "ExactCurvature: seed must be an int >= 0"),
    ("seed -1 block_diagonal", lambda m, p, X, y, l: rp.block_diagonal(m, p, X, y, l, curvature="mc_fisher", seed=-1), ValueError, "block_diagonal: seed must be an int >= 0"),
    ("seed -1 refused where no draws are made", lambda m, p, X, y, l: rp.kfac(m, p, X, y, l, seed=-1), ValueError, "kfac: seed must be an int >= 0"),
    ("seed a list with a negative entry", lambda m, p, X, y, l: rp.kfac(m, p, X, y, l, curvature="mc_fisher", seed=[1, -2]), ValueError, "kfac: seed must be an int >= 0 or a list of them, got [1, -2]"),
    ("seed a Generator", lambda m, p, X, y, l: rp.kfac(m, p, X, y, l, curvature="mc_fisher", seed=np.random.default_rng(0)), TypeError, "kfac: seed must be an int >= 0 or a list of them, got Generator(PCG64)"),
    ("seed None", lambda m, p, X, y, l: rp.fisher(m, p, X, y, l, curvature="mc_fisher", seed=None), TypeError, "fisher: seed must be an int >= 0 or a list of them, got None (the Monte Carlo draws must be reproducible"),
    ("seed a float", lambda m, p, X, y, l: rp.fisher_diagonal(m, p, X, y, l, curvature="mc_fisher", seed=1.5), TypeError, "fisher_diagonal: seed must be an int >= 0 or a list of them, got 1.5"),
    ("samples 0 names the function", lambda m, p, X, y, l: rp.fisher_diagonal(m, p, X, y, l, curvature="mc_fisher", samples=0), ValueError, "fisher_diagonal: samples must be a positive int, got 0"),
    # -- curvature names suggested only where they are taken
    ("fisher_diagonal kind=type-2 suggests no ggn", lambda m, p, X, y, l: rp.fisher_diagonal(m, p, X, y, l, kind="type-2"), TypeError, "fisher_diagonal takes curvature= one of ('fisher', 'mc_fisher', 'empirical_fisher'), got kind='type-2'"),
    ("fisher curvature=type-2 suggests no ggn", lambda m, p, X, y, l: rp.fisher(m, p, X, y, l, curvature="type-2"), ValueError, "fisher: curvature='type-2' is an earlier spelling of 'ggn', which fisher does not take; choose one of"),
    ("fisher_diagonal curvature=ggn names ggn_diagonal", lambda m, p, X, y, l: rp.fisher_diagonal(m, p, X, y, l, curvature="ggn"), ValueError, "for its diagonal call refprune.ggn_diagonal()"),
    ("curvature_diagonal kind= refused by name", lambda m, p, X, y, l: rp.curvature_diagonal(m, p, X, y, l, kind="mc"), TypeError, "curvature_diagonal: the option kind= was renamed curvature=; write curvature='mc_fisher'"),
    ("kfac fisher=hessian suggests no hessian", lambda m, p, X, y, l: rp.kfac(m, p, X, y, l, fisher="hessian"), TypeError, "kfac takes curvature= one of ('ggn', 'fisher', 'mc_fisher', 'empirical_fisher')"),
    # -- finite-difference checkers and kink_margin: shapes checked up front
    ("check_grad grad of the wrong shape", lambda m, p, X, y, l: check_grad(np.sum, lambda t: t[:2], np.ones(3)), ValueError, "check_grad: grad(x) must return an array of shape (3,) (the shape of x), got (2,)"),
    ("check_grad fun not a scalar", lambda m, p, X, y, l: check_grad(np.sin, np.cos, np.ones(3)), ValueError, "check_grad: fun(x) must return an array of shape () (a scalar), got (3,)"),
    ("check_hessian H of the wrong shape", lambda m, p, X, y, l: check_hessian(lambda t: 2 * t, np.eye(2), np.ones(3)), ValueError, "check_hessian: H must have shape (3, 3) for x of shape (3,), got (2, 2)"),
    ("check_hessian column out of range", lambda m, p, X, y, l: check_hessian(lambda t: 2 * t, 2 * np.eye(3), np.ones(3), columns=[5]), ValueError, "check_hessian: columns must be ints in [0, 3), got 5"),
    ("check_hessian x a matrix", lambda m, p, X, y, l: check_hessian(lambda t: 2 * t, 2 * np.eye(4), np.ones((2, 2))), ValueError, "check_hessian: x must be a vector (n,), got shape (2, 2)"),
    ("check_hessian grad of the wrong shape", lambda m, p, X, y, l: check_hessian(lambda t: 2 * t[:2], 2 * np.eye(3), np.ones(3)), ValueError, "check_hessian: grad(x) must return an array of shape (3,)"),
    ("check_vjp vjp of the wrong shape", lambda m, p, X, y, l: check_vjp(lambda t, v: v, lambda t, u: u[:2], np.ones(3), (3,)), ValueError, "check_vjp: vjp(x, u) must return an array of shape (3,) (the shape of x), got (2,)"),
    ("check_vjp jvp not of out_shape", lambda m, p, X, y, l: check_vjp(lambda t, v: v, lambda t, u: u, np.ones(3), (2,)), ValueError, "check_vjp: jvp(x, v) must return an array of shape (2,) (out_shape), got (3,)"),
    ("check_vjp out_shape a string", lambda m, p, X, y, l: check_vjp(lambda t, v: v, lambda t, u: u, np.ones(3), "3"), ValueError, "check_vjp: out_shape must be a tuple of non-negative ints, got '3'"),
    ("check_jvp jvp of the wrong shape", lambda m, p, X, y, l: check_jvp(np.sin, lambda t, v: v[:2], np.ones(3)), ValueError, "check_jvp: jvp(x, v) must return an array of shape (3,) (the shape of fun(x)), got (2,)"),
    ("check_hvp hvp of the wrong shape", lambda m, p, X, y, l: check_hvp(lambda t: 2 * t, lambda t, v: v[:2], np.ones(3)), ValueError, "check_hvp: hvp(x, v) must return an array of shape (3,) (the shape of grad(x)), got (2,)"),
    ("check_grad seed -1", lambda m, p, X, y, l: check_grad(np.sum, np.ones_like, np.ones(3), seed=-1), ValueError, "check_grad: seed must be an int >= 0"),
    ("check_grad rtol negative", lambda m, p, X, y, l: check_grad(np.sum, np.ones_like, np.ones(3), rtol=-1.0), ValueError, "check_grad: rtol must be a finite number >= 0, got -1.0"),
    ("check_vjp atol NaN", lambda m, p, X, y, l: check_vjp(lambda t, v: v, lambda t, u: u, np.ones(3), (3,), atol=np.nan), ValueError, "check_vjp: atol must be a finite number >= 0"),
    ("check_jvp step a string", lambda m, p, X, y, l: check_jvp(np.sin, lambda t, v: np.cos(t) * v, np.ones(3), step="1e-3"), TypeError, "check_jvp: step must be a positive finite number or None, got '1e-3'"),
    ("check_hessian order 3", lambda m, p, X, y, l: check_hessian(lambda t: 2 * t, 2 * np.eye(3), np.ones(3), order=3), ValueError, "check_hessian: order must be 2 or 4, got 3"),
    ("check_jvp directions 0 names the checker", lambda m, p, X, y, l: check_jvp(np.sin, lambda t, v: np.cos(t) * v, np.ones(3), directions=0), ValueError, "check_jvp: directions must be a positive int"),
    ("kink_margin X of the wrong shape", lambda m, p, X, y, l: rp.testing.kink_margin(m, p, X[:, :, :2]), ValueError, "kink_margin: X of shape (4, 1, 2, 4) does not fit the model: layer 4"),
    ("kink_margin X without a batch axis", lambda m, p, X, y, l: rp.testing.kink_margin(m, p, X[0, 0]), ValueError, "kink_margin: X of shape (4, 4) does not fit the model: layer 0"),
    ("kink_margin X NaN", lambda m, p, X, y, l: rp.testing.kink_margin(m, p, nan_at(X)), ValueError, "kink_margin: X contains 1 NaN"),
    ("kink_margin explain a string", lambda m, p, X, y, l: rp.testing.kink_margin(m, p, X, explain="no"), TypeError, "kink_margin: explain must be True or False, got 'no'"),
    # -- OBS: the weights it may remove and the sets it removes
    ("OBS prunable of the wrong length", lambda m, p, X, y, l: rp.pruning.obs.OBS(np.eye(3), np.ones(3), prunable=[True, False]), ValueError, "OBS: prunable must have shape (3,) like w, got (2,)"),
    ("OBS.remove a repeated coordinate", lambda m, p, X, y, l: rp.pruning.obs.OBS(np.eye(3), np.ones(3)).remove([1, 1]), ValueError, "OBS.remove: Q must hold distinct coordinates in [0, 3), got [1, 1]"),
    ("OBS.remove a coordinate out of range", lambda m, p, X, y, l: rp.pruning.obs.OBS(np.eye(3), np.ones(3)).remove([3]), ValueError, "OBS.remove: Q must hold distinct coordinates in [0, 3), got [3]"),
    ("OBS.remove a negative coordinate", lambda m, p, X, y, l: rp.pruning.obs.OBS(np.eye(3), np.ones(3)).remove(-1), ValueError, "OBS.remove: Q must hold distinct coordinates in [0, 3), got [-1]"),
    ("OBS.group_saliency of floats", lambda m, p, X, y, l: rp.pruning.obs.OBS(np.eye(3), np.ones(3)).group_saliency([0.0, 1.0]), ValueError, "OBS.group_saliency: Q must be a non-empty list of ints, got [0.0, 1.0]"),
    ("kink_margin X strings", lambda m, p, X, y, l: rp.testing.kink_margin(m, p, X.astype(str)), TypeError, "kink_margin: X must be a numeric array"),
]


def _size_wide_input():
    """One Linear layer 2**20 inputs wide: 8 MB of weights, an 8 TB Hessian block and input factor."""
    n = 2**20
    return rp.Sequential(rp.Linear(n, 1)), [np.zeros((1, n)), np.zeros(1)], np.ones((1, n)), np.zeros((1, 1)), rp.MSELoss()


def _size_wide_output(loss):
    """One Linear layer with 2**20 outputs: an 8 TB output factor and loss-Hessian square root."""
    n = 2**20
    y = np.zeros(1, dtype=int) if isinstance(loss, rp.CrossEntropyLoss) else np.zeros((1, n))
    return rp.Sequential(rp.Linear(1, n)), [np.zeros((n, 1)), np.zeros(n)], np.ones((1, 1)), y, loss


def _size_wide_hidden():
    """2**17 tanh units: the Hessian diagonal's one-hot residual columns are 2**34 per sample."""
    n = 2**17
    model = rp.Sequential(rp.Linear(1, n), rp.Tanh(), rp.Linear(n, 1))
    return model, [np.ones((n, 1)), np.zeros(n), np.ones((1, n)), np.zeros(1)], np.ones((2, 1)), np.zeros((2, 1)), rp.MSELoss()


def _size_many_params(layers=32, width=128):
    """32 Linear(128, 128): small Kronecker factors, 528,384 parameters, a 2 TB dense matrix
    (one Linear(1024, 1024) for a single 8 TB block; 256 Linear(46, 46) for EKFAC, whose
    eigendecompositions of small factors cost least)."""
    rng = np.random.default_rng(0)
    model = rp.Sequential(*[rp.Linear(width, width) for _ in range(layers)])
    return model, model.init(0), rng.standard_normal((2, width)), rng.standard_normal((2, width)), rp.MSELoss()


def _size_big_kernel():
    """A 1000 x 1000 kernel over a 2000 x 2000 image: im2col features of 10**6 x 1002001."""
    model = rp.Sequential(rp.Conv2d(1, 1, 1000), rp.Flatten())
    return (model, [np.zeros((1, 1, 1000, 1000)), np.zeros(1)], np.zeros((1, 1, 2000, 2000)),
            np.zeros((1, 1001 * 1001)), rp.MSELoss())


def _size_many_channels():
    """A 1 x 1 convolution to 2**20 channels of a 1000 x 1000 image: 8 PB of outputs."""
    n = 2**20
    model = rp.Sequential(rp.Conv2d(1, n, 1), rp.AvgPool2d(1000), rp.Flatten(), rp.Linear(n, 1))
    return (model, [np.zeros((n, 1, 1, 1)), np.zeros(n), np.zeros((1, n)), np.zeros(1)],
            np.zeros((1, 1, 1000, 1000)), np.zeros((1, 1)), rp.MSELoss())


class _size_Identity(rp.curvature.operators.CurvatureOperator):
    """An operator over 2**20 parameters known only by its products."""

    n = 2**20

    def _matmat(self, V):
        return V


def _size_ragged(X):
    """``X`` as nested lists with one innermost row one entry short."""
    rows = X.tolist()
    rows[3][0][2] = rows[3][0][2][:3]
    return rows


def _size_ragged_targets():
    m, p, X, y, l = mse_problem()
    rows = y.tolist()
    rows[3] = rows[3][:2]
    return m, p, X, rows, l



def bce_problem():
    return make("mlp-tanh", "bce-mean", n=4)  # 3 outputs, 0/1 targets (4, 3)


def _bce(y=None, loss=None):
    """The binary cross-entropy problem with other targets or another loss."""
    m, p, X, y0, l = bce_problem()
    return m, p, X, y0 if y is None else y, l if loss is None else loss


def _bce_targets(value, idx=0):
    y = np.array(bce_problem()[3], dtype=float)
    y.flat[idx] = value
    return _bce(y)


def _torch_like(name, **attrs):
    """A stand-in for a torch loss module (its class in ``torch.nn.modules.loss``) with
    the attributes given, without importing torch."""
    return type(name, (), {"__module__": "torch.nn.modules.loss", "reduction": "mean", **attrs})()


BCE_CASES = [
    # -- targets: the outputs' shape, numbers in [0, 1]
    ("bce targets as labels (N,)", lambda m, p, X, y, l: rp.loss(*_bce(np.array([0, 1, 1, 0]))), ValueError, "BCEWithLogitsLoss: targets must have the outputs' shape (4, 3), got (4,)"),
    ("bce targets transposed", lambda m, p, X, y, l: rp.grad(*_bce(np.zeros((3, 4)))), ValueError, "BCEWithLogitsLoss: targets must have the outputs' shape (4, 3), got (3, 4)"),
    ("bce target above 1", lambda m, p, X, y, l: rp.hessian(*_bce_targets(1.5)), ValueError, "BCEWithLogitsLoss: targets must lie in [0, 1], got range [0.0, 1.5]"),
    ("bce target negative", lambda m, p, X, y, l: rp.ggn(*_bce_targets(-0.25, 5)), ValueError, "BCEWithLogitsLoss: targets must lie in [0, 1], got range [-0.25, 1.0]"),
    ("bce target a label 2", lambda m, p, X, y, l: rp.loss(*_bce(np.full((4, 3), 2))), ValueError, "targets must lie in [0, 1], got range [2.0, 2.0]"),
    ("bce target NaN", lambda m, p, X, y, l: rp.fisher(*_bce_targets(np.nan)), ValueError, "BCEWithLogitsLoss: targets contain NaN or inf; they must be probabilities in [0, 1]"),
    ("bce target inf", lambda m, p, X, y, l: rp.kfac(*_bce_targets(np.inf, 3)), ValueError, "BCEWithLogitsLoss: targets contain NaN or inf"),
    ("bce targets strings", lambda m, p, X, y, l: rp.loss(*_bce(np.full((4, 3), "1"))), ValueError, "BCEWithLogitsLoss: targets must be numeric, got dtype <U1"),
    ("bce targets complex", lambda m, p, X, y, l: rp.loss(*_bce(np.zeros((4, 3)) + 0.5j)), ValueError, "BCEWithLogitsLoss: targets must be numeric, got dtype complex128"),
    ("bce targets ragged", lambda m, p, X, y, l: rp.loss(*_bce([[0, 1, 1], [1, 0], [0, 0, 0], [1, 1, 1]])), ValueError, "BCEWithLogitsLoss: targets is a ragged nested list"),
    ("bce soft targets accepted", lambda m, p, X, y, l: rp.loss(*_bce(np.full((4, 3), 0.3))), None, None),
    ("bce boolean targets accepted", lambda m, p, X, y, l: rp.loss(*_bce(np.ones((4, 3), dtype=bool))), None, None),
    ("bce integer targets accepted", lambda m, p, X, y, l: rp.grad(*_bce(np.ones((4, 3), dtype=np.int32))), None, None),
    ("bce reduction none", lambda m, p, X, y, l: rp.BCEWithLogitsLoss("none"), ValueError, "BCEWithLogitsLoss: reduction must be one of ('mean', 'sum'), got 'none'"),
    # -- Monte Carlo targets given by the caller: values, not labels
    ("bce mc targets as labels", lambda m, p, X, y, l: rp.fisher(*bce_problem(), curvature="mc_fisher", targets=np.zeros((2, 4), dtype=int)), ValueError, "BCEWithLogitsLoss: targets must have the outputs' shape (4, 3), got (2, 4)"),
    ("bce mc targets out of range", lambda m, p, X, y, l: rp.kfac(*bce_problem(), curvature="mc_fisher", targets=np.full((2, 4, 3), 3.0)), ValueError, "BCEWithLogitsLoss: targets must lie in [0, 1], got range [3.0, 3.0]"),
    # -- torch's modules where refprune's loss is expected
    ("bce torch module", lambda m, p, X, y, l: rp.loss(*_bce(loss=_torch_like("BCEWithLogitsLoss", weight=None, pos_weight=None))), TypeError, "got torch's torch.nn.modules.loss.BCEWithLogitsLoss: use refprune's rp.BCEWithLogitsLoss(reduction='mean')"),
    ("bce torch module with pos_weight", lambda m, p, X, y, l: rp.grad(*_bce(loss=_torch_like("BCEWithLogitsLoss", weight=None, pos_weight=np.ones(3)))), TypeError, "refprune does not model pos_weight= (set on this module), so the weighted loss has no refprune equivalent"),
    ("bce torch module with weight", lambda m, p, X, y, l: rp.hessian(*_bce(loss=_torch_like("BCEWithLogitsLoss", weight=np.ones(3), pos_weight=None))), TypeError, "refprune does not model weight= (set on this module)"),
    ("bce torch module with both weights", lambda m, p, X, y, l: rp.ggn(*_bce(loss=_torch_like("BCEWithLogitsLoss", weight=np.ones(3), pos_weight=np.ones(3)))), TypeError, "refprune does not model weight= or pos_weight="),
    ("bce torch BCELoss on probabilities", lambda m, p, X, y, l: rp.loss(*_bce(loss=_torch_like("BCELoss", reduction="sum"))), TypeError, "refprune's binary loss takes logits: drop the network's final Sigmoid and use rp.BCEWithLogitsLoss(reduction='sum')"),
    ("bce torch_loss of a torch module", lambda m, p, X, y, l: rp.bridges.torch_loss(_torch_like("BCEWithLogitsLoss")), TypeError, "torch_loss: loss must be a refprune loss (rp.CrossEntropyLoss, rp.MSELoss or rp.BCEWithLogitsLoss)"),
    # -- other libraries without the loss, or without it for C > 1
    ("bce express_kfac backpack with 3 outputs", lambda m, p, X, y, l: rp.express_kfac(*bce_problem(), "backpack"), ValueError, "express_kfac: BackPACK supports BCEWithLogitsLoss for one output only (C = 1), the model has C = 3"),
    ("bce express_kfac asdl true Fisher", lambda m, p, X, y, l: rp.express_kfac(*bce_problem(), "asdl", curvature="fisher"), ValueError, "ASDL's fisher_exact and fisher_mc support loss_type 'cross_entropy' and 'mse' only, not BCEWithLogitsLoss; curvature must be 'empirical_fisher' (fisher_emp), got 'fisher'"),
    ("bce express_kfac asdl empirical accepted", lambda m, p, X, y, l: rp.express_kfac(*bce_problem(), "asdl", curvature="empirical_fisher"), None, None),
    # -- the zoo's names and sizes
    ("bce zoo loss name without reduction", lambda m, p, X, y, l: cf.zoo(losses=["bce"]), ValueError, "zoo: losses ['bce'] not known; choose from ('ce-mean', 'ce-sum', 'mse-mean', 'mse-sum', 'bce-mean', 'bce-sum')"),
    ("size: obd_diagonal with 2**20 binary outputs", lambda m, p, X, y, l: rp.obd_diagonal(*_size_wide_output(rp.BCEWithLogitsLoss())), MemoryError, "obd_diagonal: the square roots of the loss Hessians (1 x 1048576 x 1048576 float64"),
]


# ---- the harness's quantities, their per-quantity options and the layout helpers
def _hq_conforms(options=None, **quantities):
    return cf.assert_conforms(cf.Adapter(options=options, **quantities), [cf.make_case("mlp-tanh", "ce-mean")])


def _hq_pairs(m):
    return rp.kfac(*problem()).factors()


HARNESS_QUANTITIES = [
    # quantity names and the options argument
    ("harness quantity misspelt", lambda m, p, X, y, l: cf.Adapter(kron_obs_saliency=len), ValueError, "Adapter: unknown quantities ['kron_obs_saliency']"),
    ("harness options not a dict", lambda m, p, X, y, l: cf.Adapter(grad=len, options=[("grad", {})]), TypeError, "Adapter: options must be a dict {quantity name: {option: value}}, got list"),
    ("harness options for a quantity not computed", lambda m, p, X, y, l: cf.Adapter(grad=len, options={"kfac": {}}), ValueError, "Adapter: options names 'kfac', which the adapter does not compute"),
    ("harness options entry not a dict", lambda m, p, X, y, l: cf.Adapter(unit_updates=len, options={"unit_updates": "shortcut"}), TypeError, "Adapter: options['unit_updates'] must be a dict {option: value}, got str"),
    ("harness options and kfac_options for one quantity", lambda m, p, X, y, l: cf.Adapter(kfac=len, kfac_options={"approx": "reduce"}, options={"kfac": {"bias": "separate"}}), ValueError, "kfac has options both in kfac_options and in options"),
    # an option the quantity does not take
    ("harness shortcut for c_obd", lambda m, p, X, y, l: cf.Adapter(c_obd_saliencies=len, options={"c_obd_saliencies": {"shortcut": True}}), ValueError, "options['c_obd_saliencies'] has unknown keys ['shortcut']; its options: ['curvature']"),
    ("harness shortcut for c_obs", lambda m, p, X, y, l: cf.Adapter(c_obs_saliencies=len, options={"c_obs_saliencies": {"shortcut": False}}), ValueError, "options['c_obs_saliencies'] has unknown keys ['shortcut']"),
    ("harness damping for c_obd", lambda m, p, X, y, l: cf.Adapter(c_obd_saliencies=len, options={"c_obd_saliencies": {"damping": 0.1}}), ValueError, "unknown keys ['damping']"),
    ("harness options for grad", lambda m, p, X, y, l: cf.Adapter(grad=len, options={"grad": {"curvature": "ggn"}}), ValueError, "options['grad'] has unknown keys ['curvature']; it takes no options"),
    ("harness eigenvalues for kron_obs", lambda m, p, X, y, l: cf.Adapter(kron_obs_saliencies=len, options={"kron_obs_saliencies": {"eigenvalues": "kfac"}}), ValueError, "unknown keys ['eigenvalues']"),
    ("harness approx for layer_obs_losses", lambda m, p, X, y, l: cf.Adapter(layer_obs_losses=len, options={"layer_obs_losses": {"approx": "reduce"}}), ValueError, "its options: ['damping']"),
    ("harness kfac_options eigenvalues key", lambda m, p, X, y, l: cf.Adapter(ekfac=len, kfac_options={"eigenvalues": "kfac"}), ValueError, "Adapter: kfac_options has unknown keys ['eigenvalues']"),
    # values, through the options table
    ("harness shortcut as text", lambda m, p, X, y, l: cf.Adapter(kron_obd_saliencies=len, options={"kron_obd_saliencies": {"shortcut": "yes"}}), TypeError, "Adapter: options['kron_obd_saliencies']: shortcut must be True or False, got 'yes'"),
    ("harness shortcut as 1", lambda m, p, X, y, l: cf.Adapter(unit_updates=len, options={"unit_updates": {"shortcut": 1}}), TypeError, "shortcut must be True or False, got 1"),
    ("harness shortcut np.bool_ accepted", lambda m, p, X, y, l: cf.Adapter(unit_updates=len, options={"unit_updates": {"shortcut": np.True_}}), None, ""),
    ("harness damping negative", lambda m, p, X, y, l: cf.Adapter(kron_obs_saliencies=len, options={"kron_obs_saliencies": {"damping": -0.1}}), ValueError, "options['kron_obs_saliencies']: damping must be a finite number >= 0, got -0.1"),
    ("harness damping NaN", lambda m, p, X, y, l: cf.Adapter(layer_obs_weights=len, options={"layer_obs_weights": {"damping": float("nan")}}), ValueError, "damping must be a finite number >= 0, got nan"),
    ("harness damping as text", lambda m, p, X, y, l: cf.Adapter(c_obs_saliencies=len, options={"c_obs_saliencies": {"damping": "1e-3"}}), TypeError, "damping must be a number, not text"),
    ("harness damping None", lambda m, p, X, y, l: cf.Adapter(c_obs_saliencies=len, options={"c_obs_saliencies": {"damping": None}}), TypeError, "damping must be a number, not None"),
    ("harness damping np.float32 accepted", lambda m, p, X, y, l: cf.Adapter(c_obs_saliencies=len, options={"c_obs_saliencies": {"damping": np.float32(0.5)}}), None, ""),
    ("harness eigenvalues unknown", lambda m, p, X, y, l: cf.Adapter(eigendamage_importances=len, options={"eigendamage_importances": {"eigenvalues": "exact"}}), ValueError, "eigenvalues must be one of ('ekfac', 'kfac'), got 'exact'"),
    ("harness curvature hessian for a unit criterion", lambda m, p, X, y, l: cf.Adapter(kron_obs_saliencies=len, options={"kron_obs_saliencies": {"curvature": "hessian"}}), ValueError, "curvature must be one of ('ggn', 'fisher', 'mc_fisher', 'empirical_fisher'), got 'hessian'"),
    ("harness approx unknown in options", lambda m, p, X, y, l: cf.Adapter(ekfac_scales=len, options={"ekfac_scales": {"approx": "both"}}), ValueError, "options['ekfac_scales']: approx must be one of ('expand', 'reduce'), got 'both'"),
    ("harness bias unknown in options", lambda m, p, X, y, l: cf.Adapter(kfac_factors=len, options={"kfac_factors": {"bias": "none"}}), ValueError, "bias must be one of ('fold', 'separate'), got 'none'"),
    ("harness check progress via the table", lambda m, p, X, y, l: _bfh_check(progress=1), TypeError, "check: progress must be True or False, got 1"),
    # what an adapter of a per-layer quantity returns
    ("harness per-layer quantity one array", lambda m, p, X, y, l: _hq_conforms(layer_hessians=lambda c: np.eye(3)), AssertionError, "layer_hessians for case mlp-tanh/ce-mean must be a list of arrays, one per layer, got ndarray"),
    ("harness per-layer quantity a dict", lambda m, p, X, y, l: _hq_conforms(ekfac_scales=lambda c: {0: np.ones((4, 4))}), AssertionError, "must be a list of arrays, one per layer, got dict"),
    ("harness per-layer quantity too few", lambda m, p, X, y, l: _hq_conforms(layer_hessians=lambda c: [np.eye(3)]), AssertionError, "1 entries, refprune has 2 (one per layer"),
    ("harness per-layer quantity wrong shape", lambda m, p, X, y, l: _hq_conforms(layer_hessians=lambda c: [np.eye(3), np.eye(3)]), AssertionError, "entry 1: shape (3, 3), refprune's is (4, 4)"),
    ("harness per-layer quantity complex", lambda m, p, X, y, l: _hq_conforms(layer_obs_losses=lambda c: [np.ones((4, 3)) * 1j, np.ones((3, 4))]), AssertionError, "layer_obs_losses for case mlp-tanh/ce-mean: entry 0 is complex"),
    ("harness unit saliencies per layer dict", lambda m, p, X, y, l: _hq_conforms(kron_obs_saliencies=lambda c: rp.pruning.unit_saliencies(*c.args(), damping=1e-3)), AssertionError, "kron_obs_saliencies for case mlp-tanh/ce-mean must be a real numeric array"),
    ("harness unit saliencies wrong length", lambda m, p, X, y, l: _hq_conforms(c_obd_saliencies=lambda c: np.ones(3)), AssertionError, "shape (3,), refprune's is (4,)"),
    # the layout helpers
    ("blocks_to_flat too few blocks", lambda m, p, X, y, l: rp.blocks_to_flat(m, _hq_pairs(m)[:1]), ValueError, "blocks_to_flat: blocks has 1 entries, the model has 2 blocks with bias='fold' (one per Linear/Conv2d)"),
    ("blocks_to_flat separate count", lambda m, p, X, y, l: rp.blocks_to_flat(m, _hq_pairs(m), bias="separate"), ValueError, "the model has 4 blocks with bias='separate' (one per Linear/Conv2d, two per layer with a bias: weights, then bias)"),
    ("blocks_to_flat S and A swapped", lambda m, p, X, y, l: rp.blocks_to_flat(m, [(A, S) for S, A in _hq_pairs(m)]), ValueError, "blocks_to_flat: block 0 (Conv2d(1, 2, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=True): c = 2, p = 10) must have S of shape (2, 2) and A of shape (10, 10), got S (10, 10) and A (2, 2)"),
    ("blocks_to_flat A without the bias row", lambda m, p, X, y, l: rp.blocks_to_flat(m, [(S, A[:-1, :-1]) for S, A in _hq_pairs(m)]), ValueError, "A of shape (10, 10), got S (2, 2) and A (9, 9)"),
    ("blocks_to_flat a triple", lambda m, p, X, y, l: rp.blocks_to_flat(m, [(S, A, 1.0) for S, A in _hq_pairs(m)]), ValueError, "must be a pair (S, A) or a (20, 20) matrix, got a tuple of length 3"),
    ("blocks_to_flat matrix of the wrong size", lambda m, p, X, y, l: rp.blocks_to_flat(m, [np.eye(18), np.eye(27)]), ValueError, "block 0 (Conv2d(1, 2, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=True): c = 2, p = 10) must be a pair (S, A) or a (20, 20) matrix over vec([W | b]), got shape (18, 18)"),
    ("blocks_to_flat complex A", lambda m, p, X, y, l: rp.blocks_to_flat(m, [(S, A + 1e-9j) for S, A in _hq_pairs(m)]), TypeError, "blocks_to_flat: A of block 0"),
    ("blocks_to_flat text S", lambda m, p, X, y, l: rp.blocks_to_flat(m, [("S", A) for S, A in _hq_pairs(m)]), TypeError, "blocks_to_flat: S of block 0"),
    ("blocks_to_flat blocks a dict", lambda m, p, X, y, l: rp.blocks_to_flat(m, dict(enumerate(_hq_pairs(m)))), TypeError, "blocks_to_flat: blocks must be a list of (S, A) pairs or matrices, one per block, got dict"),
    ("blocks_to_flat bias misspelt", lambda m, p, X, y, l: rp.blocks_to_flat(m, _hq_pairs(m), bias="seperate"), ValueError, "blocks_to_flat: bias must be one of ('fold', 'separate'), got 'seperate'"),
    ("blocks_to_flat model a list of layers", lambda m, p, X, y, l: rp.blocks_to_flat(list(m), _hq_pairs(m)), TypeError, "blocks_to_flat: model must be a refprune.Sequential, got list"),
    ("flat_to_blocks K of the wrong size", lambda m, p, X, y, l: rp.flat_to_blocks(m, np.eye(5)), ValueError, f"flat_to_blocks: K must be ({N_PARAMS}, {N_PARAMS}) for the model's n = {N_PARAMS} parameters, got shape (5, 5)"),
    ("flat_to_blocks K a vector", lambda m, p, X, y, l: rp.flat_to_blocks(m, np.zeros(N_PARAMS)), ValueError, f"got shape ({N_PARAMS},)"),
    ("flat_to_blocks K complex", lambda m, p, X, y, l: rp.flat_to_blocks(m, np.eye(N_PARAMS) * 1j), TypeError, "flat_to_blocks: K is complex"),
    ("flat_to_blocks bias None", lambda m, p, X, y, l: rp.flat_to_blocks(m, np.eye(N_PARAMS), bias=None), ValueError, "flat_to_blocks: bias must be one of ('fold', 'separate'), got None"),
]

# ---- from a torch training setup: from_torch's loss=, left-out and compiled modules, torch's names
# (the rows build torch modules when they run; without torch the block is empty)
TORCH_SETUP = [
    ("torch setup: CrossEntropyLoss weight=", lambda m, p, X, y, l: _ts_convert(loss=_ts_loss("CrossEntropyLoss", weight=_ts_ones(3))), ValueError, "from_torch: loss CrossEntropyLoss: weight= is not implemented by refprune (every sample and class weighs 1)"),
    ("torch setup: CrossEntropyLoss ignore_index used", lambda m, p, X, y, l: _ts_convert(loss=_ts_loss("CrossEntropyLoss", ignore_index=0)), ValueError, "ignore_index=0 is not implemented by refprune (a label in [0, C) would be left out of the loss"),
    ("torch setup: CrossEntropyLoss ignore_index negative accepted", lambda m, p, X, y, l: _ts_convert(loss=_ts_loss("CrossEntropyLoss", ignore_index=-7)), None, ""),
    ("torch setup: CrossEntropyLoss label_smoothing", lambda m, p, X, y, l: _ts_convert(loss=_ts_loss("CrossEntropyLoss", label_smoothing=0.05)), ValueError, "label_smoothing=0.05 is not implemented by refprune (the targets are the labels themselves)"),
    ("torch setup: CrossEntropyLoss reduction none", lambda m, p, X, y, l: _ts_convert(loss=_ts_loss("CrossEntropyLoss", reduction="none")), ValueError, "from_torch: loss CrossEntropyLoss: reduction='none' is not implemented by refprune (the loss is one number"),
    ("torch setup: MSELoss reduction none", lambda m, p, X, y, l: _ts_convert(loss=_ts_loss("MSELoss", reduction="none")), ValueError, "from_torch: loss MSELoss: reduction='none'"),
    ("torch setup: BCEWithLogitsLoss pos_weight", lambda m, p, X, y, l: _ts_convert(loss=_ts_loss("BCEWithLogitsLoss", pos_weight=_ts_ones(1))), ValueError, "from_torch: loss BCEWithLogitsLoss: pos_weight= is not implemented by refprune"),
    ("torch setup: BCEWithLogitsLoss weight", lambda m, p, X, y, l: _ts_convert(loss=_ts_loss("BCEWithLogitsLoss", weight=_ts_ones(1))), ValueError, "from_torch: loss BCEWithLogitsLoss: weight= is not implemented"),
    ("torch setup: NLLLoss", lambda m, p, X, y, l: _ts_convert(loss=_ts_loss("NLLLoss")), TypeError, "got torch.nn.modules.loss.NLLLoss; for log_softmax followed by NLLLoss, end the network with the logits and use CrossEntropyLoss"),
    ("torch setup: HuberLoss", lambda m, p, X, y, l: _ts_convert(loss=_ts_loss("HuberLoss")), TypeError, "from_torch: loss must be a torch loss module refprune implements (CrossEntropyLoss, MSELoss"),
    ("torch setup: loss class not instance", lambda m, p, X, y, l: _ts_convert(loss=_ts_torch().nn.CrossEntropyLoss), TypeError, "got the class torch.nn.modules.loss.CrossEntropyLoss: pass an instance, CrossEntropyLoss()"),
    ("torch setup: loss a string", lambda m, p, X, y, l: _ts_convert(loss="mse"), TypeError, "from_torch: loss must be a torch loss module refprune implements"),
    ("torch setup: loss subclass of torch's", lambda m, p, X, y, l: _ts_convert(loss=type("MyMSE", (_ts_torch().nn.MSELoss,), {})()), TypeError, "torch.nn's classes exactly, or a refprune loss), got "),
    ("torch setup: CrossEntropyLoss sum converted", lambda m, p, X, y, l: _ts_same_loss(_ts_convert(loss=_ts_loss("CrossEntropyLoss", reduction="sum"))[2], rp.CrossEntropyLoss("sum")), None, ""),
    ("torch setup: Dropout in training mode", lambda m, p, X, y, l: _ts_convert(train=True), ValueError, "from_torch: layer 1 (Dropout(p=0.5, inplace=False)): Dropout in training mode is not modelled by refprune"),
    ("torch setup: Dropout2d in training mode, nested", lambda m, p, X, y, l: rp.from_torch(_ts_seq(("Conv2d", 1, 1, 2), ("Sequential", ("ReLU",), ("Dropout2d", 0.1)))), ValueError, "from_torch: layer 1.1 (Dropout2d(p=0.1, inplace=False)): Dropout2d in training mode"),
    ("torch setup: Dropout in evaluation mode left out", lambda m, p, X, y, l: _ts_layers(_ts_convert()[0], ["Linear", "Tanh", "Linear"]), None, ""),
    ("torch setup: Dropout p=0 in training mode left out", lambda m, p, X, y, l: _ts_layers(rp.from_torch(_ts_seq(("Linear", 2, 2), ("Dropout", 0.0)))[0], ["Linear"]), None, ""),
    ("torch setup: Identity left out", lambda m, p, X, y, l: _ts_layers(rp.from_torch(_ts_seq(("Identity",), ("Linear", 2, 2), ("Identity",)))[0], ["Linear"]), None, ""),
    ("torch setup: only identities", lambda m, p, X, y, l: rp.from_torch(_ts_seq(("Identity",), ("Dropout", 0.5)).eval()), ValueError, "from_torch: the network has no layer refprune models (only Identity or Dropout)"),
    ("torch setup: GELU named by its nested name", lambda m, p, X, y, l: rp.from_torch(_ts_seq(("Linear", 2, 2), ("Sequential", ("Tanh",), ("GELU",)))), ValueError, "from_torch: layer 1.1 (GELU) is not a module refprune models"),
    ("torch setup: dilation named by its nested name", lambda m, p, X, y, l: rp.from_torch(_ts_seq(("Sequential", ("Sequential", ("Conv2d", 1, 1, 2, 1, 0, 2))))), ValueError, "from_torch: layer 0.0.0 (Conv2d"),
    ("torch setup: tied module in a nested Sequential", lambda m, p, X, y, l: rp.from_torch(_ts_tied()), ValueError, "from_torch: layer 1.0 (Linear(in_features=2, out_features=2, bias=True)) is the same module as layer 0"),
    ("torch setup: state dict misshapen, torch's layer name", lambda m, p, X, y, l: _ts_bad_state_dict(), ValueError, "'2.1.weight' has shape (2, 2), layer 2.1 Linear(3, 2, bias=True) expects (2, 3) for its weight"),
    ("torch setup: compiled network unwrapped", lambda m, p, X, y, l: _ts_layers(rp.from_torch(_ts_torch().compile(_ts_seq(("Linear", 2, 3), ("Tanh",))))[0], ["Linear", "Tanh"]), None, ""),
    ("torch setup: compiled network with a training-mode Dropout", lambda m, p, X, y, l: rp.from_torch(_ts_torch().compile(_ts_seq(("Linear", 2, 3), ("Dropout", 0.2)))), ValueError, "from_torch: layer 1 (Dropout(p=0.2, inplace=False)): Dropout in training mode"),
    ("torch setup: compiled block named with _orig_mod", lambda m, p, X, y, l: rp.from_torch(_ts_seq(("Linear", 2, 2)).append(_ts_torch().compile(_ts_seq(("ReLU",), ("GELU",))))), ValueError, "from_torch: layer 1._orig_mod.1 (GELU) is not a module refprune models"),
]


def _ts_torch():
    import torch

    return torch


def _ts_ones(k):
    return _ts_torch().ones(k)


def _ts_loss(name, **kw):
    return getattr(_ts_torch().nn, name)(**kw)


def _ts_seq(*specs):
    """A float64 torch ``Sequential`` from ``(module name, args...)`` specs (nested for
    ``"Sequential"``), in training mode as torch builds it."""
    nn = _ts_torch().nn

    def build(spec):
        name, *args = spec
        if name == "Sequential":
            return nn.Sequential(*[build(s) for s in args])
        return getattr(nn, name)(*args)

    return nn.Sequential(*[build(s) for s in specs]).double()


def _ts_convert(loss=None, train=False):
    """``from_torch`` of Linear -> Dropout -> Tanh -> Linear, in evaluation mode unless ``train``."""
    net = _ts_seq(("Linear", 3, 4), ("Dropout", 0.5), ("Tanh",), ("Linear", 4, 3))
    net.train(train)
    return rp.from_torch(net) if loss is None else rp.from_torch(net, loss=loss)


def _ts_layers(model, names):
    assert [type(layer).__name__ for layer in model] == names, model
    return model


def _ts_same_loss(a, b):
    assert type(a) is type(b) and a.reduction == b.reduction, (a, b)


def _ts_tied():
    torch = _ts_torch()
    shared = torch.nn.Linear(2, 2)
    return torch.nn.Sequential(shared, torch.nn.Sequential(shared))


def _ts_bad_state_dict():
    net = _ts_seq(("Linear", 3, 3), ("Dropout", 0.1), ("Sequential", ("Tanh",), ("Linear", 3, 2))).eval()
    sd = net.state_dict()
    sd["2.1.weight"] = sd["2.1.weight"][:, :2]
    return rp.from_torch(sd, model=net)


try:
    import importlib.util

    _HAVE_TORCH = importlib.util.find_spec("torch") is not None
except ImportError:  # pragma: no cover
    _HAVE_TORCH = False

def _oq(name, m, p, X, y, l, **options):
    """Optimizer quantity ``name`` (refprune.conformance.optimizer_quantities) on the problem as a Case."""
    return oq.OPTIMIZER_QUANTITIES[name][0](cf.Case("bad-input", m, p, X, y, l), options)


def _oq_factors(m, p, X, y, l, drop=0):
    return [(S, A) for S, A in rp.kfac(m, p, X, y, l).factors()][drop:]


OPTIMIZER_QUANTITIES_CASES = [
    ("optimizer quantity unknown option", lambda m, p, X, y, l: _oq("kfac_step", m, p, X, y, l, dampnig=0.1), ValueError, "optimizer quantity kfac_step: unknown options ['dampnig']; it takes"),
    ("optimizer quantity damping_form for EKFAC", lambda m, p, X, y, l: _oq("ekfac_direction", m, p, X, y, l, damping_form="pi"), ValueError, "optimizer quantity ekfac_direction: unknown options ['damping_form']"),
    ("optimizer quantity k for one step", lambda m, p, X, y, l: _oq("natural_gradient_step", m, p, X, y, l, k=2), ValueError, "optimizer quantity natural_gradient_step: unknown options ['k']"),
    ("optimizer quantity damping text", lambda m, p, X, y, l: _oq("kfac_direction", m, p, X, y, l, damping="0.1"), TypeError, "optimizer quantity kfac_direction: damping must be a finite number >= 0, got '0.1'"),
    ("optimizer quantity damping negative", lambda m, p, X, y, l: _oq("ekfac_step", m, p, X, y, l, damping=-1.0), ValueError, "optimizer quantity ekfac_step: damping must be a finite number >= 0, got -1.0"),
    ("optimizer quantity lr None", lambda m, p, X, y, l: _oq("kfac_step", m, p, X, y, l, lr=None), TypeError, "optimizer quantity kfac_step: lr must be a finite number >= 0, got None"),
    ("optimizer quantity momentum 1", lambda m, p, X, y, l: _oq("kfac_steps", m, p, X, y, l, momentum=1.0), ValueError, "optimizer quantity kfac_steps: momentum must be a finite number >= 0 and < 1, got 1.0"),
    ("optimizer quantity kl_clip zero", lambda m, p, X, y, l: _oq("natural_gradient_step", m, p, X, y, l, kl_clip=0.0), ValueError, "optimizer quantity natural_gradient_step: kl_clip must be a finite number > 0 or None (no clipping), got 0.0"),
    ("optimizer quantity damping_form unknown", lambda m, p, X, y, l: _oq("kfac_step", m, p, X, y, l, damping_form="tikhonov"), ValueError, "optimizer quantity kfac_step: damping_form must be one of ('exact', 'factored', 'pi'), got 'tikhonov'"),
    ("optimizer quantity K-FAC of the Hessian", lambda m, p, X, y, l: _oq("kfac_direction", m, p, X, y, l, curvature="hessian"), ValueError, "optimizer quantity kfac_direction: curvature='hessian' has no Kronecker factorisation"),
    ("optimizer quantity structure unknown", lambda m, p, X, y, l: _oq("natural_gradient_direction", m, p, X, y, l, structure="diag"), ValueError, "optimizer quantity natural_gradient_direction: structure must be one of ('full', 'layer'), got 'diag'"),
    ("optimizer quantity ema_start unknown", lambda m, p, X, y, l: _oq("kfac_steps", m, p, X, y, l, ema_start="ones"), ValueError, "optimizer quantity kfac_steps: ema_start must be one of ('first', 'zero', 'zero_debiased', 'identity'), got 'ones'"),
    ("optimizer quantity ema_decay 1", lambda m, p, X, y, l: _oq("kfac_steps", m, p, X, y, l, ema_decay=1.0), ValueError, "optimizer quantity kfac_steps: ema_decay must be a finite number >= 0 and < 1, got 1.0"),
    ("optimizer quantity ema_decay without a state", lambda m, p, X, y, l: _oq("kfac_step", m, p, X, y, l, ema_decay=0.5), ValueError, "optimizer quantity kfac_step: ema_decay=0.5 does not apply to a first step from the start with ema_start='first'"),
    ("optimizer quantity ema_decay with the identity start accepted", lambda m, p, X, y, l: _oq("kfac_step", m, p, X, y, l, ema_decay=0.5, ema_start="identity"), None, ""),
    ("optimizer quantity k zero", lambda m, p, X, y, l: _oq("ekfac_steps", m, p, X, y, l, k=0), ValueError, "optimizer quantity ekfac_steps: k must be a positive int, got 0"),
    ("optimizer quantity k float", lambda m, p, X, y, l: _oq("ekfac_steps", m, p, X, y, l, k=2.0), TypeError, "optimizer quantity ekfac_steps: k must be a positive int, got 2.0"),
    ("optimizer quantity batches unknown", lambda m, p, X, y, l: _oq("natural_gradient_steps", m, p, X, y, l, batches="shuffle"), ValueError, "optimizer quantity natural_gradient_steps: batches must be one of ('split', 'repeat'), got 'shuffle'"),
    ("optimizer quantity split into more batches than samples", lambda m, p, X, y, l: _oq("kfac_steps", m, p, X, y, l, k=5), ValueError, "k=5 steps with batches='split' need at least k samples; case bad-input has 4"),
    ("optimizer quantity refresh_interval zero", lambda m, p, X, y, l: _oq("kfac_steps", m, p, X, y, l, refresh_interval=0), ValueError, "optimizer quantity kfac_steps: refresh_interval must be a positive int, got 0"),
    ("optimizer quantity updates without factors", lambda m, p, X, y, l: _oq("kfac_step", m, p, X, y, l, updates=3), ValueError, "optimizer quantity kfac_step: updates=3 needs the averaged factors they made (factors=)"),
    ("optimizer quantity updates negative", lambda m, p, X, y, l: _oq("kfac_step", m, p, X, y, l, updates=-1), ValueError, "optimizer quantity kfac_step: updates must be a non-negative int, got -1"),
    ("optimizer quantity updates bool", lambda m, p, X, y, l: _oq("ekfac_step", m, p, X, y, l, updates=True), TypeError, "optimizer quantity ekfac_step: updates must be a non-negative int, got True"),
    ("optimizer quantity factors with updates 0", lambda m, p, X, y, l: _oq("kfac_step", m, p, X, y, l, factors=_oq_factors(m, p, X, y, l)), ValueError, "factors= given with updates=0; with ema_start='first' an average exists only after an update"),
    ("optimizer quantity factors one pair short", lambda m, p, X, y, l: _oq("kfac_step", m, p, X, y, l, factors=_oq_factors(m, p, X, y, l, 1), updates=1), ValueError, "optimizer quantity kfac_step: factors must be a list of 2 (S, A) pairs (one per K-FAC block, bias='fold'), got list of length 1"),
    ("optimizer quantity factors swapped", lambda m, p, X, y, l: _oq("ekfac_direction", m, p, X, y, l, factors=[(A, S) for S, A in _oq_factors(m, p, X, y, l)], updates=1), ValueError, "optimizer quantity ekfac_direction: factors[0] S must have shape (2, 2), got (10, 10)"),
    ("optimizer quantity factors accepted", lambda m, p, X, y, l: _oq("kfac_direction", m, p, X, y, l, factors=_oq_factors(m, p, X, y, l), updates=2), None, ""),
    ("optimizer quantity buf wrong shape", lambda m, p, X, y, l: _oq("kfac_step", m, p, X, y, l, buf=np.zeros(3)), ValueError, f"optimizer quantity kfac_step: buf must have shape ({N_PARAMS},), got (3,)"),
    ("optimizer quantity buf complex", lambda m, p, X, y, l: _oq("kfac_step", m, p, X, y, l, buf=np.zeros(N_PARAMS) + 1j), TypeError, "optimizer quantity kfac_step: buf must be a real array"),
    ("optimizer quantity buf NaN", lambda m, p, X, y, l: _oq("natural_gradient_step", m, p, X, y, l, buf=nan_at(np.zeros(N_PARAMS))), ValueError, "optimizer quantity natural_gradient_step: buf contains NaN or inf"),
    ("optimizer quantity buf read-only accepted", lambda m, p, X, y, l: _oq("kfac_step", m, p, X, y, l, buf=read_only(np.ones(N_PARAMS)), momentum=0.5), None, ""),
    ("optimizer quantity matrix wrong shape", lambda m, p, X, y, l: _oq("natural_gradient_direction", m, p, X, y, l, matrix=np.eye(3), updates=1), ValueError, f"optimizer quantity natural_gradient_direction: matrix must have shape ({N_PARAMS}, {N_PARAMS}), got (3, 3)"),
    ("optimizer quantity case not a Case", lambda m, p, X, y, l: oq.OPTIMIZER_QUANTITIES["kfac_step"][0]((m, p, X, y, l), {}), TypeError, "optimizer quantity kfac_step: case must be a refprune.conformance.Case, got tuple"),
    ("optimizer quantity options not a dict", lambda m, p, X, y, l: oq.OPTIMIZER_QUANTITIES["kfac_step"][0](cf.Case("bad-input", m, p, X, y, l), [("lr", 1.0)]), TypeError, "optimizer quantity kfac_step: options must be a dict, got list"),
    ("optimizer quantity neighbours refuse a bad option", lambda m, p, X, y, l: oq.OPTIMIZER_NEIGHBOURS["ekfac_steps"](cf.Case("bad-input", m, p, X, y, l), dict(scale_interval=0)), ValueError, "optimizer quantity ekfac_steps: scale_interval must be a positive int, got 0"),
]


# ---- the command line's options, checked through the options table (refprune.options, CLI section)
_CLI_RANDOM = ("hessian", "--model", "Linear(3, 4) Tanh Linear(4, 2)", "--input-shape", "3", "--samples", "6")
CLI_OPTIONS = [
    # numbers read from text: type, then range, each naming the option and the text
    ("cli opt --block-rows 0", lambda m, p, X, y, l: _store_cli(*_CLI_RANDOM, "--block-rows", "0"), SystemExit, "exit 2: refprune hessian: error: --block-rows must be a positive int, got 0"),
    ("cli opt --block-rows 2.5", lambda m, p, X, y, l: _store_cli(*_CLI_RANDOM, "--block-rows", "2.5"), SystemExit, "--block-rows must be a positive int, got '2.5' (not an int)"),
    ("cli opt --shards 0", lambda m, p, X, y, l: _store_cli(*_CLI_RANDOM, "--shards", "0"), SystemExit, "--shards must be a positive int, got 0"),
    ("cli opt --shards text", lambda m, p, X, y, l: _store_cli(*_CLI_RANDOM, "--shards", "two"), SystemExit, "--shards must be a positive int, got 'two' (not an int)"),
    ("cli opt --shards above the samples", lambda m, p, X, y, l: _store_cli(*_CLI_RANDOM, "--shards", "7"), SystemExit, "--shards 7 is more than the 6 samples"),
    ("cli opt --workers -1", lambda m, p, X, y, l: _store_cli(*_CLI_RANDOM, "--workers", "-1"), SystemExit, "--workers must be a non-negative int, got -1"),
    ("cli opt --workers 1.0", lambda m, p, X, y, l: _store_cli(*_CLI_RANDOM, "--workers", "1.0"), SystemExit, "--workers must be a non-negative int, got '1.0' (not an int)"),
    ("cli opt --samples 0", lambda m, p, X, y, l: _store_cli(*_CLI_RANDOM, "--samples", "0"), SystemExit, "--samples must be a positive int, got 0"),
    ("cli opt --input-shape with a zero", lambda m, p, X, y, l: _store_cli("hessian", "--model", "Linear(3, 2)", "--input-shape", "3", "0"), SystemExit, "--input-shape must be one or more positive ints, got '3 0'"),
    ("cli opt --input-shape text", lambda m, p, X, y, l: _store_cli("hessian", "--model", "Linear(3, 2)", "--input-shape", "3x"), SystemExit, "--input-shape must be one or more positive ints, got '3x' ('3x' is not an int)"),
    ("cli opt --mc-samples 0", lambda m, p, X, y, l: _store_cli(*_CLI_RANDOM, "--curvature", "mc_fisher", "--mc-samples", "0"), SystemExit, "--mc-samples must be a positive int, got 0"),
    ("cli opt --seed -1", lambda m, p, X, y, l: _store_cli(*_CLI_RANDOM, "--seed", "-1"), SystemExit, "--seed must be a non-negative int, got -1"),
    ("cli opt --seed 0.5", lambda m, p, X, y, l: _store_cli(*_CLI_RANDOM, "--seed", "0.5"), SystemExit, "--seed must be a non-negative int, got '0.5' (not an int)"),
    # choices
    ("cli opt --curvature KFAC", lambda m, p, X, y, l: _store_cli(*_CLI_RANDOM, "--curvature", "KFAC"), SystemExit, "--curvature must be one of ('hessian', 'ggn', 'residual', 'fisher', 'mc_fisher', 'empirical_fisher'), got 'KFAC'"),
    ("cli opt --loss nll", lambda m, p, X, y, l: _store_cli(*_CLI_RANDOM, "--loss", "nll"), SystemExit, "--loss must be one of ('ce', 'mse', 'bce'), got 'nll'"),
    ("cli opt --reduction none", lambda m, p, X, y, l: _store_cli(*_CLI_RANDOM, "--reduction", "none"), SystemExit, "--reduction must be one of ('mean', 'sum'), got 'none'"),
    # paths
    ("cli opt --data a directory", lambda m, p, X, y, l: _store_cli("hessian", "--model", "Linear(3, 2)", "--data", "/tmp"), SystemExit, "--data /tmp is a directory; it must be an existing .npz file"),
    ("cli opt --params no such file", lambda m, p, X, y, l: _store_cli(*_CLI_RANDOM, "--params", "/proc/nonexistent_refprune/p.npz"), SystemExit, "--params /proc/nonexistent_refprune/p.npz: no such file; it must be an existing .npz file"),
    ("cli opt --model-json no such file", lambda m, p, X, y, l: _store_cli("hessian", "--model-json", "/proc/nonexistent_refprune/m.json", "--input-shape", "3"), SystemExit, "--model-json /proc/nonexistent_refprune/m.json: no such file; it must be an existing JSON file"),
    ("cli opt --model and --model-json", lambda m, p, X, y, l: _store_cli(*_CLI_RANDOM, "--model-json", "m.json"), SystemExit, "argument --model-json: not allowed with argument --model"),
    # options that do not apply to the run: refused by name, even when typed at their default
    ("cli opt --samples at its default with --data", lambda m, p, X, y, l: _store_hessian_cli(m, p, X, y, l, "--samples", "32"), SystemExit, "--samples is for random data; --data data.npz gives the samples and their shape (got --samples 32)"),
    ("cli opt --mc-samples 1 for the true Fisher", lambda m, p, X, y, l: _store_hessian_cli(m, p, X, y, l, "--curvature", "fisher", "--mc-samples", "1"), SystemExit, "--mc-samples applies only to --curvature mc_fisher, got --curvature fisher (got --mc-samples 1)"),
    ("cli opt --seed 0 with nothing drawn", lambda m, p, X, y, l: _store_hessian_cli(m, p, X, y, l, "--seed", "0", "--curvature", "ggn", params={f"param{i}": a for i, a in enumerate(p)}), SystemExit, "--seed draws random data, initial parameters or Monte Carlo targets; with --data, --params and --curvature ggn nothing is drawn (got --seed 0)"),
    ("cli opt --seed with mc_fisher is used", lambda m, p, X, y, l: _store_hessian_cli(m, p, X, y, l, "--seed", "2", "--curvature", "mc_fisher", "--mc-samples", "2", params={f"param{i}": a for i, a in enumerate(p)}), None, ""),
    ("cli opt --resume without --out", lambda m, p, X, y, l: _store_cli(*_CLI_RANDOM, "--resume", "--block-rows", "3"), SystemExit, "--resume continues an interrupted run: give the --out FILE.npy it was writing"),
    ("cli opt --resume with --dry-run", lambda m, p, X, y, l: _store_cli(*_CLI_RANDOM, "--resume", "--dry-run", "--out", "/tmp/refprune_unused.npy"), SystemExit, "--resume with --dry-run: --dry-run estimates a new run; --resume continues one"),
    ("cli opt --resume with other --block-rows", lambda m, p, X, y, l: _cli_opt_resume(("--block-rows", "9")), SystemExit, "--resume: H.npy.partial was written in other blocks (layer 0 units 0-1, layer 0 units 1-2, layer 0 units 2-3, ...) than --block-rows 9 gives; give the --block-rows of the interrupted run to keep its 1 finished block"),
    ("cli opt --resume with other --shards", lambda m, p, X, y, l: _cli_opt_resume(("--block-rows", "3", "--shards", "3")), SystemExit, "--resume with --shards 3: H.npy.partial was written with --shards 2; give --shards 2 to keep its 1 finished block"),
    ("cli opt --resume with another seed", lambda m, p, X, y, l: _cli_opt_resume(("--block-rows", "3", "--shards", "2", "--seed", "1")), SystemExit, "--resume: H.npy.partial was written for another computation (other data, parameters, loss, --curvature, --seed, --block-rows or --shards than these)"),
    ("cli opt --resume with other --block-rows, same blocks", lambda m, p, X, y, l: _cli_opt_resume(("--block-rows", "5", "--shards", "2")), SystemExit, "--resume: H.npy.partial was written for another computation (other data, parameters, loss, --curvature, --seed, --block-rows or --shards than these)"),
    ("cli opt --resume with the same options", lambda m, p, X, y, l: _cli_opt_resume(("--block-rows", "3", "--shards", "2")), None, ""),
    ("cli opt forward pass overflows", lambda m, p, X, y, l: _store_hessian_cli(m, p, np.full_like(X, 1e300), y, l, params={"param0": np.ones_like(p[0]), "param1": p[1], "param2": np.full_like(p[2], 1e308), "param3": p[3]}), SystemExit, "refprune hessian: error: the model at --data data.npz and --params params.npz: the network's output is not finite"),
    # refprune demo, fixtures
    ("cli opt demo --hidden 0", lambda m, p, X, y, l: _store_cli("demo", "--hidden", "0"), SystemExit, "exit 2: refprune demo: error: --hidden must be a positive int, got 0"),
    ("cli opt demo --net resnet", lambda m, p, X, y, l: _store_cli("demo", "--net", "resnet"), SystemExit, "--net must be one of ('mlp', 'conv'), got 'resnet'"),
    ("cli opt demo --lr 0", lambda m, p, X, y, l: _store_cli("demo", "--lr", "0"), SystemExit, "--lr must be a finite number > 0, got 0.0 (--lr must be > 0)"),
    ("cli opt demo --lr inf", lambda m, p, X, y, l: _store_cli("demo", "--lr", "inf"), SystemExit, "--lr must be a finite number > 0, got inf"),
    ("cli opt demo --lr text", lambda m, p, X, y, l: _store_cli("demo", "--lr", "fast"), SystemExit, "--lr must be a finite number > 0, got 'fast' (not a number)"),
    ("cli opt demo --steps 0", lambda m, p, X, y, l: _store_cli("demo", "--steps", "0"), SystemExit, "--steps must be a positive int, got 0"),
    ("cli opt demo --seed -2", lambda m, p, X, y, l: _store_cli("demo", "--seed", "-2"), SystemExit, "--seed must be a non-negative int, got -2"),
    ("cli opt demo diverges", lambda m, p, X, y, l: _store_cli("demo", "--lr", "1000", "--steps", "10"), SystemExit, "--lr 1000: training diverged (the loss rose from"),
    ("cli opt demo --plot a directory", lambda m, p, X, y, l: _store_cli("demo", "--plot", "/tmp"), SystemExit, "--plot /tmp is a directory; give a file name such as /tmp/plot.png"),
    ("cli opt fixtures into no directory", lambda m, p, X, y, l: _store_cli("fixtures", "/proc/nonexistent_refprune/fx"), SystemExit, "refprune fixtures: error: directory /proc/nonexistent_refprune/fx: the directory /proc/nonexistent_refprune does not exist"),
    ("cli opt fixtures into a file", lambda m, p, X, y, l: _store_cli("fixtures", "/etc/hostname"), SystemExit, "directory /etc/hostname is a file; it must be a directory, or a path whose parent exists"),
    ("cli opt hessian --plot", lambda m, p, X, y, l: _store_cli(*_CLI_RANDOM, "--plot", "x.png"), SystemExit, "unrecognized arguments: --plot x.png"),
]


def _cli_opt_resume(again):
    """``refprune hessian --out H.npy --block-rows 3 --shards 2`` stopped after its first
    block, then ``--resume`` with the options ``again``."""
    import contextlib
    import io
    import tempfile

    from refprune.cli import main
    from refprune.curvature import store

    argv = (*_CLI_RANDOM, "--out", "H.npy")
    real = store.BlockRecord.mark

    def mark_then_stop(self, key, block):
        real(self, key, block)
        if self.persistent:
            raise KeyboardInterrupt

    with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp):
        store.BlockRecord.mark = mark_then_stop
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                assert main([*argv, "--block-rows", "3", "--shards", "2"]) == 130
        finally:
            store.BlockRecord.mark = real
        assert err.getvalue().splitlines()[-1].startswith("refprune hessian: interrupted"), err.getvalue()
        _store_cli(*argv, "--resume", *again)


# ---- one case at a time (check_case), whole drawn cases (strategies.cases()), the pytest plugin's options
def _pl_case(m, p, X, y, l):
    return cf.Case("t", m, p, X, y, l)


def _pl_check(m, p, X, y, l, fn=None, **kw):
    return cf.check_case(fn if fn is not None else (lambda c: rp.loss(*c.args())), _pl_case(m, p, X, y, l), **kw)


def _pl_cases(**kw):
    from refprune.testing.strategies import cases

    return cases(**kw)


def _pl_mlps():
    from refprune.testing.strategies import mlps

    return mlps()


def _pl_equal(got, expected):
    assert got == expected and type(got) is type(expected), (got, expected)


def _pl_count(value):
    from refprune.testing.pytest_plugin import parse_count

    return parse_count(value, "--refprune-drawn")


PLUGIN_CASES = [
    ("check_case case a tuple", lambda m, p, X, y, l: cf.check_case(lambda c: 0.0, (m, p, X, y, l), quantity="loss"), TypeError, "check_case: case must be a refprune.conformance.Case"),
    ("check_case implementation a name", lambda m, p, X, y, l: _pl_check(m, p, X, y, l, fn="grad", quantity="grad"), TypeError, "check_case: implementation must be a refprune.conformance.Adapter or a function"),
    ("check_case function without quantity", lambda m, p, X, y, l: _pl_check(m, p, X, y, l), TypeError, "check_case: give quantity="),
    ("check_case function with two quantities", lambda m, p, X, y, l: _pl_check(m, p, X, y, l, quantity=["loss", "grad"]), TypeError, "check_case: a function computes one quantity"),
    ("check_case unknown quantity", lambda m, p, X, y, l: _pl_check(m, p, X, y, l, quantity="gradient"), ValueError, "check_case: unknown quantity 'gradient'"),
    ("check_case options a list", lambda m, p, X, y, l: _pl_check(m, p, X, y, l, quantity="kfac", options=["bias"]), TypeError, "check_case: options must be a dict {option: value} of kfac"),
    ("check_case option the quantity lacks", lambda m, p, X, y, l: _pl_check(m, p, X, y, l, quantity="loss", options={"bias": "fold"}), ValueError, "options['loss'] has unknown keys ['bias']; it takes no options"),
    ("check_case options with an Adapter", lambda m, p, X, y, l: _pl_check(m, p, X, y, l, fn=cf.Adapter(loss=lambda c: 0.0), options={}), ValueError, "check_case: options apply to a function; an Adapter holds its own"),
    ("check_case quantity the Adapter lacks", lambda m, p, X, y, l: _pl_check(m, p, X, y, l, fn=cf.Adapter(loss=lambda c: 0.0), quantity="grad"), ValueError, "check_case: quantity ['grad'] is not computed by the adapter"),
    ("check_case quantity an empty list", lambda m, p, X, y, l: _pl_check(m, p, X, y, l, fn=cf.Adapter(loss=lambda c: 0.0), quantity=[]), TypeError, "check_case: quantity must be a name or a non-empty list"),
    ("check_case rtol text", lambda m, p, X, y, l: _pl_check(m, p, X, y, l, quantity="loss", rtol="1e-6"), TypeError, "check_case: rtol must be a real number in [0, 1)"),
    ("check_case rtol negative", lambda m, p, X, y, l: _pl_check(m, p, X, y, l, quantity="loss", rtol=-1e-3), ValueError, "rtol for loss must be a number in [0, 1)"),
    ("check_case rtol names a quantity of no adapter", lambda m, p, X, y, l: _pl_check(m, p, X, y, l, fn=cf.Adapter(loss=lambda c: 0.0), rtol={"grad": 1e-6}), ValueError, "check_case: rtol names ['grad'], which the adapter does not compute"),
    ("check_case a result off by 2 fails with its factor", lambda m, p, X, y, l: _pl_check(m, p, X, y, l, fn=lambda c: 2 * rp.loss(*c.args()), quantity="loss"), AssertionError, "loss on case t (rtol 1e-09)"),
    ("check_case a matching function passes", lambda m, p, X, y, l: _pl_check(m, p, X, y, l, quantity="loss"), None, ""),
    ("cases kinds a string", lambda m, p, X, y, l: _pl_cases(kinds="mse"), TypeError, "cases: kinds must be a non-empty tuple of names"),
    ("cases kinds unknown", lambda m, p, X, y, l: _pl_cases(kinds=("hinge",)), ValueError, "cases: kinds ['hinge'] not known"),
    ("cases reductions empty", lambda m, p, X, y, l: _pl_cases(reductions=()), TypeError, "cases: reductions must be a non-empty tuple"),
    ("cases reductions unknown", lambda m, p, X, y, l: _pl_cases(reductions=("none",)), ValueError, "cases: reductions ['none'] not known"),
    ("cases max_samples 0", lambda m, p, X, y, l: _pl_cases(max_samples=0), ValueError, "cases: max_samples must be an int >= 1, got 0"),
    ("cases max_width 1", lambda m, p, X, y, l: _pl_cases(max_width=1), ValueError, "cases: max_width must be an int >= 2, got 1"),
    ("cases max_size 2", lambda m, p, X, y, l: _pl_cases(max_size=2), ValueError, "cases: max_size must be an int >= 3, got 2"),
    ("cases max_depth True", lambda m, p, X, y, l: _pl_cases(max_depth=True), ValueError, "cases: max_depth must be an int >= 1, got True"),
    ("cases max_channels a float", lambda m, p, X, y, l: _pl_cases(max_channels=2.0), ValueError, "cases: max_channels must be an int >= 1, got 2.0"),
    ("cases size limit with architectures", lambda m, p, X, y, l: _pl_cases(architectures=_pl_mlps(), max_width=3), ValueError, "cases: ['max_width'] do not apply with architectures="),
    ("cases activations with architectures", lambda m, p, X, y, l: _pl_cases(architectures=_pl_mlps(), activations=(rp.Tanh,)), ValueError, "cases: ['activations'] do not apply with architectures="),
    ("cases architectures a list", lambda m, p, X, y, l: _pl_cases(architectures=[_pl_mlps()]), TypeError, "cases: architectures must be a hypothesis strategy"),
    ("cases activations a class", lambda m, p, X, y, l: _pl_cases(activations=rp.ReLU), ValueError, "cases: activations must be a non-empty tuple of"),
    ("cases activations empty", lambda m, p, X, y, l: _pl_cases(activations=()), ValueError, "cases: activations must be a non-empty tuple of"),
    ("cases activations a layer", lambda m, p, X, y, l: _pl_cases(activations=(rp.Linear,)), ValueError, "cases: activations must be a non-empty tuple of"),
    ("plugin count negative", lambda m, p, X, y, l: _pl_count("-1"), pytest.UsageError, "--refprune-drawn must be a non-negative integer, got '-1'"),
    ("plugin count decimal text", lambda m, p, X, y, l: _pl_count("1.5"), pytest.UsageError, "got '1.5'"),
    ("plugin count exponent text", lambda m, p, X, y, l: _pl_count("1e3"), pytest.UsageError, "got '1e3'"),
    ("plugin count empty text", lambda m, p, X, y, l: _pl_count(""), pytest.UsageError, "got ''"),
    ("plugin count superscript digit", lambda m, p, X, y, l: _pl_count("\u00b2"), pytest.UsageError, "non-negative integer"),
    ("plugin count a bool", lambda m, p, X, y, l: _pl_count(True), pytest.UsageError, "got bool True"),
    ("plugin count a float", lambda m, p, X, y, l: _pl_count(2.0), pytest.UsageError, "got float 2.0"),
    ("plugin count an int accepted", lambda m, p, X, y, l: _pl_equal(_pl_count(3), 3), None, ""),
    ("plugin count padded text accepted", lambda m, p, X, y, l: _pl_equal(_pl_count(" 4 "), 4), None, ""),
]




# ---- workers that write the store themselves (docs/derivations.md §11.1)
def _sw_memmap(kind):
    """A memmap of the problem's size in a fresh directory: the whole map (``"whole"``), a
    view of a larger one (``"view"``) or a copy-on-write map (``"c"``)."""
    import os
    import tempfile

    path = os.path.join(tempfile.mkdtemp(), "h.npy")
    big = N_PARAMS + (1 if kind == "view" else 0)
    np.lib.format.open_memmap(path, mode="w+", dtype=np.float64, shape=(big, big))
    if kind == "view":
        return np.load(path, mmap_mode="r+")[:N_PARAMS, :N_PARAMS]
    return np.load(path, mmap_mode="c" if kind == "c" else "r+")


def _sw_zarr(mode=None, memory=False):
    import os
    import tempfile

    zarr = pytest.importorskip("zarr")
    store = zarr.storage.MemoryStore() if memory else os.path.join(tempfile.mkdtemp(), "h.zarr")
    z = zarr.create_array(store=store, shape=(N_PARAMS, N_PARAMS), chunks=(7, 5), dtype="f8")
    return z if mode is None else zarr.open_array(store=store, mode=mode)


def _sw_run(m, p, X, y, l, out, **kw):
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        H = rp.hessian(m, p, X, y, l, out=out, executor=ex, block_rows=5, **kw)
    _store_same(H, rp.hessian(m, p, X, y, l))


STORE_WORKER_CASES = [
    ("store workers memmap view", lambda m, p, X, y, l: _sw_run(m, p, X, y, l, _sw_memmap("view")), ValueError, "hessian: out is a view of a numpy.memmap of"),
    ("store workers memmap copy-on-write", lambda m, p, X, y, l: _sw_run(m, p, X, y, l, _sw_memmap("c")), ValueError, "hessian: out is a copy-on-write numpy.memmap (mode 'c')"),
    ("store workers memmap whole", lambda m, p, X, y, l: _sw_run(m, p, X, y, l, _sw_memmap("whole")), None, ""),
    ("store workers memmap view, shards (workers write them too)", lambda m, p, X, y, l: _sw_run(m, p, X, y, l, _sw_memmap("view"), shards=2), ValueError, "hessian: out is a view of a numpy.memmap of"),
    ("store workers Zarr read-only", lambda m, p, X, y, l: _sw_run(m, p, X, y, l, _sw_zarr(mode="r")), ValueError, "hessian: out is a read-only Array (opened with mode 'r'); open it with mode 'r+' or 'a'"),
    ("store workers Zarr chunks 7x5", lambda m, p, X, y, l: _sw_run(m, p, X, y, l, _sw_zarr()), None, ""),
    ("store workers Zarr in memory (driver writes)", lambda m, p, X, y, l: _sw_run(m, p, X, y, l, _sw_zarr(memory=True)), None, ""),
    ("store workers WorkerPool workers 0", lambda m, p, X, y, l: rp.curvature.parallel.WorkerPool(0), ValueError, "WorkerPool: workers must be a positive int, got 0"),
    ("store workers WorkerPool threads 0", lambda m, p, X, y, l: rp.curvature.parallel.WorkerPool(1, threads=0), ValueError, "WorkerPool: threads must be a positive int, got 0"),
    ("store workers WorkerPool threads True", lambda m, p, X, y, l: rp.curvature.parallel.WorkerPool(1, threads=True), ValueError, "WorkerPool: threads must be a positive int, got True"),
    ("store workers worker_threads -1", lambda m, p, X, y, l: rp.curvature.parallel.worker_threads(-1), ValueError, "worker_threads: workers must be a positive int, got -1"),
    ("store workers limit_blas_threads 0", lambda m, p, X, y, l: rp.curvature.parallel.limit_blas_threads(0), ValueError, "limit_blas_threads: threads must be a positive int, got 0"),
]

CASES += STORE_CLI_CASES + BRIDGE_FIXTURE_HARNESS_CASES + OPTION_CASES + SIZE_NUMBER_CASES + (
    TORCH_SETUP if _HAVE_TORCH else []) + OPTIMIZER_QUANTITIES_CASES + HARNESS_QUANTITIES + CLI_OPTIONS + BCE_CASES + \
    PLUGIN_CASES + STORE_WORKER_CASES


class _NanDiagonal(rp.curvature.operators.CurvatureOperator):
    """A curvature operator whose diagonal holds a NaN."""

    shape = (N_PARAMS, N_PARAMS)

    def diagonal(self):
        return nan_at(np.ones(N_PARAMS))


def _mse_with_targets(value):
    m, p, X, y, l = mse_problem()
    return m, p, X, np.full_like(y, value), l


def _shape(a, shape):
    assert np.shape(a) == shape, (np.shape(a), shape)
    return a


def test_the_table_is_large_enough():
    assert len(CASES) >= 500, len(CASES)
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("name, call, exc, words", CASES, ids=[c[0] for c in CASES])
def test_bad_input(name, call, exc, words):
    m, p, X, y, l = problem()
    copies = [a.copy() for a in p] + [X.copy(), np.array(y).copy()]
    if exc is None:
        call(m, p, X, y, l)
    else:
        with pytest.raises(exc) as err:
            call(m, p, X, y, l)
        assert words in str(err.value), f"message {str(err.value)!r} lacks {words!r}"
        assert "Traceback" not in str(err.value)
    for a, b in zip(copies, list(p) + [X, y]):  # the caller's arrays are never modified
        assert np.array_equal(a, b, equal_nan=True)
