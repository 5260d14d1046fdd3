"""The bad-input table: one row per case, each a call with one bad or unusual input, the
exception it must raise and words its message must contain (``None``: the call must
succeed, for inputs that are converted deliberately).  Every call gets fresh copies of
the problem, and a test checks afterwards that the caller's arrays are unchanged."""

import numpy as np
import pytest

import refprune as rp
from refprune import conformance as cf
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
    ("hessian max_bytes", lambda m, p, X, y, l: rp.hessian(m, p, X, y, l, max_bytes=100), rp.CurvatureTooLargeError, "needs"),
    ("ggn max_bytes", lambda m, p, X, y, l: rp.ggn(m, p, X, y, l, max_bytes=100), rp.CurvatureTooLargeError, "needs"),
    ("fisher max_bytes", lambda m, p, X, y, l: rp.fisher(m, p, X, y, l, max_bytes=100), rp.CurvatureTooLargeError, "needs"),
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
    ("cli --out in no directory", lambda m, p, X, y, l: _store_hessian_cli(m, p, X, y, l, "--out", "/nonexistent_refprune/H.npy"), SystemExit, "--out /nonexistent_refprune/H.npy: the directory /nonexistent_refprune does not exist"),
    ("cli --out a directory", lambda m, p, X, y, l: _store_hessian_cli(m, p, X, y, l, "--out", "."), SystemExit, "--out . is a directory"),
    ("cli result written with its record", lambda m, p, X, y, l: _store_hessian_cli(m, p, X, y, l, "--out", "H.npy", "--block-rows", "9", check=_store_check_written), None, ""),
    # the command line: refprune demo
    ("cli demo --plot without matplotlib", lambda m, p, X, y, l: _store_without_matplotlib(_store_cli, "demo", "--steps", "1", "--plot", "x.png"), SystemExit, "exit 2: refprune demo: error: --plot x.png: refprune.plot needs matplotlib"),
    ("cli demo --plot into no directory", lambda m, p, X, y, l: _store_cli("demo", "--steps", "1", "--plot", "/nonexistent_refprune/x.png"), SystemExit, "exit 2: refprune demo: error: --plot /nonexistent_refprune/x.png"),
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
]

# ---- options of prune, obs_trace, saliencies, minimize, train and the optimizers; divergence
OPTION_CASES = [
]

# ---- sizes refused up front, numbers given as text or None, ragged input, checkers
SIZE_NUMBER_CASES = [
]

CASES += STORE_CLI_CASES + BRIDGE_FIXTURE_HARNESS_CASES + OPTION_CASES + SIZE_NUMBER_CASES


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
    assert len(CASES) >= 150, len(CASES)
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
