"""Exact curvature matrices over ``theta``: Hessian, GGN, residual and Fishers.

All are assembled by one routine (``docs/derivations.md`` §4).  For each parameterised
layer ``l`` with output ``z_l`` (``K_l`` entries per sample) the identity matrix is
pushed forward from ``z_l`` as ``K_l`` tangents per sample, the loss curvature is
applied, and the tangents are pulled back, giving ``d(g_n^m)/dz_l`` for the per-sample
gradient ``g_n^m`` of every later layer ``m >= l``.  Because ``z_l = W_l U_l + b_l``,

    H[theta_l, theta_m] = R sum_n sum_t U_l[n, :, t] (x) d(g_n^m) / dz_l[n, :, t]

which is :meth:`AffineLayer.param_contract`.  Blocks ``m < l`` follow by symmetry.
The cost is ``O(N n^2)`` multiply-adds, the BLAS limit of the problem, instead of
``O(N C n^2)`` for ``J^T Lambda J`` or ``n`` separate Hessian-vector products.

Which matrix is built depends on two choices:

=============  ========================  ==========================================
matrix         loss curvature ``Phi_n``  second-order network terms (``phi''``, ``d U``)
=============  ========================  ==========================================
Hessian        ``Lambda_n``              yes
GGN            ``Lambda_n``              no
residual       ``0``                     yes   (``H = GGN + residual``)
Fisher         ``E_y[g g^T]``            no
MC Fisher      ``mean_s g_s g_s^T``      no
emp. Fisher    ``g_obs g_obs^T``         no
=============  ========================  ==========================================
"""

import math
import sys
import time

import numpy as np

from .. import derivatives as _d
from . import parallel as _par
from . import store as _store
from ..checks import check_flag, check_number, validate
# the refusal of an array too large lives in ..memory, shared with every module that allocates;
# both names stay importable from here
from ..memory import CurvatureTooLargeError, available_memory  # noqa: F401
from ..memory import check_fits, nbytes
from ..nn import AffineLayer, Conv2d, Flatten
from ..nn.base import Layer
from ..nn.activations import Elementwise
from . import dense_pairs as _dp
from ..vocabulary import CURVATURES, FISHERS, check_curvature, renamed_options
from .output_factors import check_draws, check_seed, refuse_monte_carlo_options


def _output_array(n, out, name, max_bytes):
    check_number(max_bytes, "max_bytes", allow_none=True)
    if out is not None:
        if not isinstance(out, np.ndarray) or out.shape != (n, n) or out.dtype != np.float64:
            got = f"{type(out).__name__} {getattr(out, 'shape', '')} {getattr(out, 'dtype', '')}"
            raise ValueError(f"{name}: out must be a float64 array of shape ({n}, {n}), got {got}")
        if not out.flags.writeable:
            raise ValueError(f"{name}: out is read-only")
        return out
    # without max_bytes the assembly's temporaries (4 chunks of CHUNK_FLOATS floats) must fit too
    room = 0 if max_bytes is not None else 8 * 4 * _d.CHUNK_FLOATS
    what = f"the {n} x {n} float64 matrix" + (f" and {room / 2**20:.0f} MiB of temporaries" if room else "")
    check_fits(nbytes((n, n)) + room, name, what, error=CurvatureTooLargeError,
               limit=None if max_bytes is None else (max_bytes, "max_bytes"),
               hint=f"; pass out=numpy.memmap(path, dtype='float64', mode='w+', shape=({n}, {n})) to write it to "
                    "disk")
    return np.empty((n, n))


class _FullSink:
    """Writes block ``(l, m)``, ``m >= l``, into the rows of ``theta_l`` of an ``(n, n)``
    array and mirrors it below the diagonal at the end."""

    def __init__(self, out, offsets, param_layers):
        self.out, self.offsets, self.param_layers = out, offsets, param_layers

    def wants(self, l, m):
        return True

    def target(self, l, m, a, b):
        o = self.offsets
        return self.out[o[l] : o[l + 1], o[m] + a : o[m] + b]

    def finish(self):
        o, out = self.offsets, self.out
        for i, l in enumerate(self.param_layers):
            for m in self.param_layers[i + 1 :]:
                src = out[o[l] : o[l + 1], o[m] : o[m + 1]]
                dst = out[o[m] : o[m + 1], o[l] : o[l + 1]]
                # square tiles: both the rows read and the rows written stay in cache
                # (half the time of whole-row strips for 4160-wide blocks)
                for r in range(0, dst.shape[0], 128):
                    for c in range(0, dst.shape[1], 128):
                        dst[r : r + 128, c : c + 128] = src[c : c + 128, r : r + 128].T
        return out


class _BlockSink:
    """Keeps only the diagonal blocks ``(l, l)``, one array per layer."""

    def __init__(self, model, param_layers):
        self.blocks = {l: np.empty((model[l].n_params,) * 2) for l in param_layers}

    def wants(self, l, m):
        return l == m

    def target(self, l, m, a, b):
        return self.blocks[l][:, a:b]

    def finish(self):
        return sorted(self.blocks.items())


def _assemble(inp, loss_matvec, second_order, sink, progress, name, rows_of=None):
    """Run the assembly into ``sink``; ``rows_of=(l, units)`` restricts it to the rows of
    layer ``l`` (those of output units ``units=(u0, u1)``, or all for ``None``)."""
    check_flag(progress, "progress")
    model, n_samples = inp.model, inp.n_samples
    L = len(model)
    in_shapes = _in_shapes(model, inp.X.shape[1:])
    out_shapes = in_shapes[1:]
    param_layers = _param_layers(model)
    t_start = time.perf_counter()
    whole = []

    def gradient_pass(s0, s1):
        # the pass over the whole batch (one chunk) is shared by every layer's rows
        if s0 > 0 or s1 < n_samples:
            return _d.gradient_pass(inp, inp.X[s0:s1], inp.y[s0:s1])
        if not whole:
            whole.append(_d.gradient_pass(inp, inp.X, inp.y))
            _read_only(whole[0])  # shared: no layer's rows may write into it
        return whole[0]

    for count, l in enumerate(param_layers):
        if rows_of is not None and l != rows_of[0]:
            continue
        layer_l, out_l = model[l], out_shapes[l]
        n_l = layer_l.n_params
        units = None if rows_of is None else rows_of[1]
        # Seed choice (docs §12): the identity on z_l (K = |z_l| directions per sample,
        # contracted with U_l at the end) or the parameter Jacobian dz_l/dtheta_l
        # (K = n_l directions, giving the rows directly), whichever the cost model finds
        # cheaper.  Rows of some output units only: the identity directions of those
        # units, or the Jacobian directions of their parameters.
        if units is None and _through_output(model, l, in_shapes, second_order):
            # only activations with phi'' = 0 and Flatten before the last (dense) layer:
            # the rows factor through the network output (docs §12)
            nc = _d.chunk_length(layer_l.n_params, _output_factor_width(model, l, in_shapes))
            for s0 in range(0, n_samples, nc):
                s1 = min(n_samples, s0 + nc)
                f, caches, douts = gradient_pass(s0, s1)
                _rows_through_output(inp, in_shapes, l, caches, douts, f, inp.y[s0:s1], slice(s0, s1), loss_matvec,
                                     second_order, sink, s0 == 0)
            if progress:
                print(f"{name}: rows of layer {l} ({layer_l!r}) done through the output "
                      f"[{count + 1}/{len(param_layers)}, {time.perf_counter() - t_start:.1f} s]", file=sys.stderr)
            continue
        K_id = int(np.prod(out_l))
        jacobian_seed = _jacobian_seed(model, l, in_shapes)
        if units is None:
            eye_rows = slice(None)
        elif jacobian_seed:
            eye_rows = layer_l.unit_rows(units)
        else:
            per_unit = K_id // layer_l.out_units
            eye_rows = slice(units[0] * per_unit, units[1] * per_unit)
        K = len(np.arange(n_l if jacobian_seed else K_id)[eye_rows])
        # the Jacobian seed's tangents reach the output as J_l = df/dtheta_l; where nothing
        # after l has second-order terms of its own, the rows are products of J_l with the
        # output Jacobians of the later layers, without pulling the n_l tangents back (docs §12)
        back_by_outputs = jacobian_seed and units is None and _back_by_outputs(model, l, in_shapes, second_order)
        # the seed's tangents live in one channel each up to the next convolution: there
        # they are pushed through from that channel alone (docs §12)
        by_channel = _channel_conv(model, l) if back_by_outputs else None
        nc = _d.chunk_length(K, _rows_width(model, l, in_shapes, by_channel))
        for s0 in range(0, n_samples, nc):
            s1 = min(n_samples, s0 + nc)
            first = s0 == 0
            f, caches, douts = gradient_pass(s0, s1)
            xdots = [None] * L
            input_terms = {}
            start = l + 1
            if by_channel is not None:
                t, input_terms = _seed_by_channel(inp, l, by_channel, caches, douts, in_shapes, second_order)
                start = by_channel + 1
            elif jacobian_seed:
                t = layer_l.param_jacobian(caches[l], eye_rows)
            else:
                eye = np.eye(K_id)[eye_rows].reshape((1, K) + out_l)
                t = np.broadcast_to(eye, (s1 - s0, K) + out_l)
            for j in range(start, L):
                xdots[j] = t
                t = model[j].jvp(inp.grouped[j], caches[j], t)
            D = loss_matvec(f, inp.y[s0:s1], t, slice(s0, s1))
            if back_by_outputs:
                _rows_from_output_jacobians(inp, l, caches, douts, t, D, xdots, second_order, sink, first,
                                            input_terms)
                continue
            for j in range(L - 1, l - 1, -1):
                layer = model[j]
                if isinstance(layer, AffineLayer) and sink.wants(l, j):
                    dense = not jacobian_seed and _dense_pair(caches[l], caches[j])
                    dU = (layer.input_tangent_features(xdots[j]) if (second_order and j > l and not dense)
                          else None)
                    target = lambda a, b: sink.target(l, j, a, b)  # noqa: E731
                    if jacobian_seed:
                        block = layer.param_grad_rows(caches[j], D)
                        if dU is not None:
                            block += layer.param_grad_input_tangent(dU, douts[j])
                        _accumulate(target(0, layer.n_params), block, inp.scale, first)
                    elif dense:
                        # dU_m is diagonal only if U_m is m's input itself (not im2col patches)
                        # and only elementwise layers lie between (docs §12)
                        diagonal = not layer.features_copy and all(
                            isinstance(model[k], (Elementwise, Flatten)) for k in range(l + 1, j))
                        _dp.dense_rows(target(0, layer.n_params), layer_l, caches[l], layer, caches[j], D,
                                       xdots[j] if (second_order and j > l) else None, diagonal, douts[j],
                                       inp.scale, first, units, symmetric=(j == l and units is None))
                    else:
                        _rows_from_identity_seed(target, layer_l, caches[l], layer, caches[j], D, dU, douts[j],
                                                 inp.scale, first, units)
                if j == l:
                    break
                Dn = layer.vjp(inp.grouped[j], caches[j], D)
                if second_order and xdots[j] is not None:
                    curv = layer.vjp_curvature(inp.grouped[j], caches[j], douts[j], xdots[j])
                    if curv is not None:
                        Dn += curv
                D = Dn
        if progress:
            print(
                f"{name}: rows of layer {l} ({layer_l!r}) done "
                f"[{count + 1}/{len(param_layers)}, {time.perf_counter() - t_start:.1f} s]",
                file=sys.stderr,
            )
    return sink.finish()


#: private switches for tests: force the seed ("identity" or "jacobian") of every layer,
#: route dense pairs through the per-sample gradient tangents (the general reference route),
#: and push the Jacobian seed's tangents through every channel of the next convolution
_FORCE_SEED = None
_T_ROUTE = False
_ALL_CHANNELS = False


def _channel_conv(model, l):
    """The next affine layer after the convolution ``l`` when it is a convolution reached
    through elementwise layers alone (``None`` otherwise): up to its input, a tangent of
    the Jacobian seed of ``l`` lives in the one channel of ``z_l`` its parameter moves
    (docs §12)."""
    if _ALL_CHANNELS or not isinstance(model[l], Conv2d):
        return None
    for j in range(l + 1, len(model)):
        if isinstance(model[j], Conv2d):
            return j
        if not isinstance(model[j], Elementwise):
            return None
    return None


def _seed_by_channel(inp, l, j, caches, douts, in_shapes, second_order):
    """The Jacobian seed of all parameters of the convolution ``l`` pushed to the output of
    the convolution ``j`` (only elementwise layers between), one channel per direction
    (docs §12): direction ``(c, q)`` (weight ``(c, q)``, or bias ``c`` with the ones
    feature ``q = r``) is ``U_l[q, :]`` in channel ``c`` of ``z_l``, times the product
    ``s`` of the activations' ``phi'`` there, and its im2col features at ``j`` are those
    of that channel alone, ``c_in`` times fewer than :meth:`AffineLayer.features` forms.
    Returns the tangents ``(N, n_l, *out_j)`` and, for the second-order terms, ``{j: the
    dU term of j's rows (n_l, n_j)}``."""
    model = inp.model
    layer_l, layer_j = model[l], model[j]
    U = caches[l][0]
    n, r, T = U.shape
    rows = np.arange(layer_l.n_params)
    weight = rows < layer_l.n_weight
    channels = np.where(weight, rows // r, rows - layer_l.n_weight)
    U1 = np.concatenate([U, np.ones((n, 1, T))], axis=1) if layer_l.bias else U
    spatial = in_shapes[l + 1][1:]
    s = np.ones((n, 1) + in_shapes[l + 1])
    for k in range(l + 1, j):
        s = model[k].jvp(inp.grouped[k], caches[k], s)
    v = U1[:, np.where(weight, rows % r, r), :].reshape((n, len(rows)) + spatial)
    v *= s[:, 0, channels]
    F = layer_j.channel_features(v.reshape((-1,) + spatial))
    F = F.reshape((n, len(rows)) + F.shape[1:])
    t = layer_j.channel_jvp(inp.grouped[j], F, channels, in_shapes[j])
    return t, ({j: layer_j.channel_input_tangent(F, channels, douts[j])} if second_order else {})


def _in_shapes(model, s):
    """Per-sample input shape of every layer, then the network's output shape."""
    shapes = [tuple(s)]
    for layer in model:
        shapes.append(tuple(layer.output_shape(shapes[-1])))
    return shapes


def _rows_width(model, l, in_shapes, by_channel=None):
    """Floats one seeded direction needs per sample in the widest place the rows of layer
    ``l`` reach: its output, and every later layer's input, output and (affine) features
    (the tangents start at ``z_l``, so the layers before it do not count; compare
    :func:`refprune.derivatives.work_width`).  Up to the convolution ``by_channel`` the
    tangents live in one channel (:func:`_seed_by_channel`): one channel's maps and
    features."""
    sizes = [math.prod(in_shapes[l + 1])]
    for j in range(l + 1, len(model)):
        layer = model[j]
        ins = math.prod(in_shapes[j])
        if by_channel is not None and j <= by_channel:
            ins //= in_shapes[j][0]
        sizes.append(ins)
        if by_channel is None or j >= by_channel:
            sizes.append(math.prod(in_shapes[j + 1]))
        if isinstance(layer, AffineLayer):
            r = layer.n_weight // layer.out_units
            if j == by_channel:
                r //= layer.in_channels
            sizes.append(r * (math.prod(in_shapes[j + 1]) // layer.out_units))
    return max(sizes)


def _dense_pair(cache_l, cache_m):
    """Both layers have one location (``T = 1``): their blocks are products of the
    features (``refprune.curvature.dense_pairs``, docs §12)."""
    return not _T_ROUTE and cache_l[0].shape[2] == 1 and cache_m[0].shape[2] == 1


def seed_costs(model, l, in_shapes):
    """Per-sample multiply-adds of layer ``l``'s rows with the identity seed on ``z_l`` and
    with the parameter-Jacobian seed: ``(identity, jacobian)`` (docs §12)."""
    def locations(j):
        return math.prod(in_shapes[j + 1]) // model[j].out_units

    # one direction through every later layer, forward (jvp) and back (vjp)
    prop = 0
    for j in range(l + 1, len(model)):
        layer = model[j]
        if isinstance(layer, AffineLayer):
            prop += 4 * layer.n_weight * locations(j)
        else:
            prop += 2 * (math.prod(in_shapes[j]) + math.prod(in_shapes[j + 1]))
    layer_l = model[l]
    n_l, t_l, k_id = layer_l.n_params, locations(l), math.prod(in_shapes[l + 1])
    later = [j for j in range(l, len(model)) if isinstance(model[j], AffineLayer)]
    identity, jacobian = k_id * prop, n_l * prop + 2 * n_l * layer_l.n_weight * t_l
    for m in later:
        n_m, t_m = model[m].n_params, locations(m)
        jacobian += 2 * n_l * n_m * t_m
        if t_l == 1 and t_m == 1:
            identity += 2 * n_l * n_m  # one product of the features
        else:
            identity += 2 * k_id * n_m * t_m + 2 * t_l * n_l * n_m  # form T, then contract with U_l
    return identity, jacobian


def _jacobian_seed(model, l, in_shapes):
    if _FORCE_SEED is not None:
        return _FORCE_SEED == "jacobian"
    identity, jacobian = seed_costs(model, l, in_shapes)
    return jacobian < identity


def _ends_in_linear(model, l):
    """Some layer follows ``l``, and the network ends in an affine layer whose features
    are its input itself (a ``Linear``: ``features_copy`` is false), the common ground of
    the two routes through the output Jacobians (docs §12)."""
    last = model[len(model) - 1]
    return l < len(model) - 1 and isinstance(last, AffineLayer) and not last.features_copy


def _output_factor_eligible(model, l, second_order):
    """Layer ``l`` is followed only by Flatten and activations (with ``phi'' = 0`` when the
    second-order terms count) and then by a ``Linear`` that is the last layer: the map from
    ``theta_l`` to the output is ``f = W_m (s * z_l(theta_l)) + b_m`` with a mask ``s`` that
    does not depend on ``theta`` to second order."""
    L = len(model)
    if not _ends_in_linear(model, l):
        return False
    for j in range(l + 1, L - 1):
        layer = model[j]
        if isinstance(layer, Flatten):
            continue
        if not isinstance(layer, Elementwise) or (second_order and not layer.zero_second_derivative):
            return False
    return True


def _output_jacobians_eligible(model, l, second_order):
    """After layer ``l`` come only layers without second-order terms of their own
    (``vjp_curvature`` of the base class: affine, Flatten, pooling; activations only with
    ``phi'' = 0`` when those terms count), the last a ``Linear``: then ``d delta_j / d theta_l
    = (df/dz_j)^T Phi J_l`` for every later layer ``j`` (docs §12)."""
    L = len(model)
    if not _ends_in_linear(model, l):
        return False
    for j in range(l + 1, L - 1):
        layer = model[j]
        if isinstance(layer, Elementwise):
            if second_order and not layer.zero_second_derivative:
                return False
        elif type(layer).vjp_curvature is not Layer.vjp_curvature:
            return False
    return True


def back_costs(model, l, in_shapes):
    """Per-sample multiply-adds of the part of the Jacobian-seeded rows of layer ``l`` after
    the forward tangents: pulling the ``n_l`` tangents back (``vjp`` and ``param_grad_rows``
    at every affine layer from ``l`` on), or the output Jacobians of
    :func:`_rows_from_output_jacobians` (``C`` cotangents pulled back, the per-sample
    gradients of the later affine layers, one product per layer):
    ``(pull back, output Jacobians)`` (docs §12)."""
    L = len(model)
    C = model[L - 1].out_units
    n_l = model[l].n_params

    def locations(j):
        return math.prod(in_shapes[j + 1]) // model[j].out_units

    half = 0  # one direction back through every later layer
    for j in range(l + 1, L):
        layer = model[j]
        half += (2 * layer.n_weight * locations(j) if isinstance(layer, AffineLayer)
                 else math.prod(in_shapes[j]) + math.prod(in_shapes[j + 1]))
    pull = n_l * half + 2 * n_l * n_l * locations(l)
    out = C * half + 2 * n_l * n_l * C
    for j in range(l + 1, L):
        layer = model[j]
        if not isinstance(layer, AffineLayer):
            continue
        n_j, t_j = layer.n_params, locations(j)
        pull += 2 * n_l * n_j * t_j
        out += 2 * n_l * n_j if j == L - 1 else 2 * C * n_j * t_j + 2 * n_l * C * n_j
    return pull, out


def _back_by_outputs(model, l, in_shapes, second_order):
    if _FORCE_SEED == "jacobian" or not _output_jacobians_eligible(model, l, second_order):
        return False
    pull, out = back_costs(model, l, in_shapes)
    return out < pull


def _rows_from_output_jacobians(inp, l, caches, douts, J, D, xdots, second_order, sink, first, input_terms):
    """Rows of layer ``l`` from its output Jacobian ``J (N, n_l, C)`` (the Jacobian seed's
    tangents at the output) and ``D = Phi J``: against a later affine layer ``j`` the first
    term is ``sum_n D_n^T (df_n/dtheta_j)``, with ``df/dtheta_j`` the per-sample gradients
    of the ``C`` outputs' cotangents pulled back to ``z_j`` (``param_grad_rows`` for the
    last layer, whose features are shared by the outputs); the second term is the
    ``dU_j`` term of §4 from the forward tangents (``input_terms[j]`` where the forward
    pass formed it already); the diagonal block is ``sum_n D_n^T J_n``."""
    model = inp.model
    L = len(model)
    n, K, C = J.shape
    # the loss scale on D (N n_l C values), not on the blocks; the first chunk of samples
    # is written straight into the result
    D = inp.scale * D
    Dt = D.transpose(1, 0, 2).reshape(K, n * C)
    B = np.broadcast_to(np.eye(C), (n, C, C))  # cotangents of the C outputs at z_j
    for j in range(L - 1, l, -1):
        layer = model[j]
        if isinstance(layer, AffineLayer) and sink.wants(l, j):
            dest = sink.target(l, j, 0, layer.n_params)
            if j == L - 1:
                block = layer.param_grad_rows(caches[j], D, out=dest if first else None)
            else:
                P = layer.per_sample_param_grad(caches[j], B)  # (n, C, n_j)
                block = np.matmul(Dt, P.reshape(n * C, layer.n_params), out=dest if first else None)
            if second_order:
                term = (input_terms[j] if j in input_terms else
                        layer.param_grad_input_tangent(layer.input_tangent_features(xdots[j]), douts[j]))
                block += inp.scale * term
            if not first:
                dest += block
        if j > l + 1 and any(isinstance(model[k], AffineLayer) for k in range(l + 1, j)):
            B = layer.vjp(inp.grouped[j], caches[j], B)
    if sink.wants(l, l):
        Jt = J.transpose(1, 0, 2).reshape(K, n * C)
        _product_into(sink.target(l, l, 0, K), Dt, Jt.T, first)


def _product_into(dest, A, B, first):
    """``dest = A @ B`` (the first chunk of samples: written in place, BLAS given the
    leading dimension of the view) or ``dest += A @ B``."""
    if first:
        np.matmul(A, B, out=dest)
    else:
        dest += np.matmul(A, B)


def output_factor_cost(model, l, in_shapes):
    """Per-sample multiply-adds of layer ``l``'s rows through the output (docs §12): the
    Jacobian ``J_n = df_n / dtheta_l`` (``n_l x C``), the diagonal block ``J^T Phi J``, the
    block against the last layer and the ``dU`` term of the latter."""
    layer_l, layer_m = model[l], model[len(model) - 1]
    n_l, c = layer_l.n_params, layer_m.out_units
    r1 = layer_l.n_weight // layer_l.out_units + 1
    t_l = math.prod(in_shapes[l + 1]) // layer_l.out_units
    jac = 2 * r1 * t_l * layer_l.out_units * c
    return 2 * jac + 2 * n_l * c * c + 2 * n_l * n_l * c + 2 * n_l * layer_m.n_params


def _through_output(model, l, in_shapes, second_order):
    if _FORCE_SEED in ("identity", "jacobian") or not _output_factor_eligible(model, l, second_order):
        return False
    if _FORCE_SEED == "output":
        return True
    return output_factor_cost(model, l, in_shapes) < min(seed_costs(model, l, in_shapes))


def _output_factor_width(model, l, in_shapes):
    """Floats per sample and row of layer ``l`` that :func:`_rows_through_output` holds:
    ``J``, ``Phi J`` and the output's rows of one parameter (``C`` each), and the mask
    times the last weight (``|z_l| C / n_l``, at least one)."""
    c = model[len(model) - 1].out_units
    return 3 * c + max(1, math.prod(in_shapes[l + 1]) * c // model[l].n_params)


def _rows_through_output(inp, in_shapes, l, caches, douts, f, y, idx, loss_matvec, second_order, sink, first):
    """Rows of layer ``l`` when only Flatten and activations lie between it and the last
    layer ``m`` (``Linear``), from the per-sample output Jacobian ``J_n`` (docs §12):

        H[theta_l, theta_l] = R sum_n J_n^T Phi_n J_n
        H[theta_l, theta_m] = R sum_n J_n^T Phi_n (df_n/dtheta_m) + R sum_n delta0_n (x) s_n dz_l/dtheta_l

    ``J_n[(c, q), i] = sum_t W_m[i, (c, t)] s[n, c, t] U_l[n, q, t]`` (``q`` a feature of
    ``l``, a ones feature for its bias): the Jacobian seed's tangents of ``z_l`` are never
    formed.  The second term (Hessian and residual only) is nonzero only where the
    weight column of ``m`` reads unit ``c`` of ``z_l``."""
    model = inp.model
    m = len(model) - 1
    layer_l, layer_m = model[l], model[m]
    U = caches[l][0]
    n, r, T = U.shape
    C, Km = layer_l.out_units, layer_m.out_units
    n_wl, n_l = layer_l.n_weight, layer_l.n_params
    # s = d(input of m)/d z_l, diagonal: ones pushed through the layers between
    s = np.ones((n, 1) + in_shapes[l + 1])
    for j in range(l + 1, m):
        s = model[j].jvp(inp.grouped[j], caches[j], s)
    s = s.reshape(n, C, T)
    U1 = np.concatenate([U, np.ones((n, 1, T))], axis=1) if layer_l.bias else U  # (n, r1, T)
    r1 = U1.shape[1]
    Wm = inp.grouped[m][0].reshape(Km, C, T)
    # V[n, t, (c, i)] = s[n, c, t] W_m[i, c, t];  J1[n, q, (c, i)] = sum_t U1[n, q, t] V[n, t, (c, i)]
    V = (s[:, :, None, :] * Wm.transpose(1, 0, 2)[None]).reshape(n, C * Km, T)
    J1 = np.matmul(U1, V.transpose(0, 2, 1)).reshape(n, r1, C, Km)
    J = np.empty((n, n_l, Km))
    J[:, :n_wl].reshape(n, C, r, Km)[...] = J1[:, :r].transpose(0, 2, 1, 3)
    if layer_l.bias:
        J[:, n_wl:] = J1[:, r]
    # the loss scale on Phi J (N n_l C values), not on the blocks; the first chunk of
    # samples is written straight into the result
    D = inp.scale * loss_matvec(f, y, J, idx)  # R Phi_n J_n, (n, n_l, Km)
    if sink.wants(l, l):
        Dt = D.transpose(1, 0, 2).reshape(n_l, n * Km)
        Jt = J.transpose(1, 0, 2).reshape(n_l, n * Km)
        _product_into(sink.target(l, l, 0, n_l), Dt, Jt.T, first)
    if not sink.wants(l, m):
        return
    dest = sink.target(l, m, 0, layer_m.n_params)
    block = layer_m.param_grad_rows(caches[m], D, out=dest if first else None)
    if second_order:
        # E[t, q, (c, i)] = sum_n U1[n, q, t] s[n, c, t] R delta0[n, i], added at row (c, q),
        # weight column (i, (c, t)) of m
        d0 = inp.scale * layer_m.from_output(douts[m][:, 0])[:, :, 0]  # (n, Km)
        # one product per location, both factors laid out (T, ., n) and (T, n, .) so that
        # each is a BLAS matrix (strided ones would take NumPy's loop, several times slower)
        M = (s.transpose(2, 0, 1)[:, :, :, None] * d0[None, :, None, :]).reshape(T, n, C * Km)
        E = np.matmul(np.ascontiguousarray(U1.transpose(2, 1, 0)), M).reshape(T, r1, C, Km).transpose(2, 1, 3, 0)
        n_wm = layer_m.n_weight
        ci = np.arange(C)
        bw = _dp.view(block[:n_wl, :n_wm], (C, r, Km, C, T))
        bw[ci, :, :, ci, :] += E[:, :r]
        if layer_l.bias:
            bb = _dp.view(block[n_wl:, :n_wm], (C, Km, C, T))
            bb[ci, :, ci, :] += E[:, r]
    if not first:
        dest += block


def _param_layers(model):
    return [j for j, layer in enumerate(model) if isinstance(layer, AffineLayer)]


def _caller(name):
    """The call a matrix named ``name`` comes from, as its refusals name it: the Monte Carlo
    and empirical Fishers are ``refprune.fisher``'s ``curvature=`` choices, not functions."""
    return f"fisher(curvature={name!r})" if name in ("mc_fisher", "empirical_fisher") else name


def _full(inp, out, max_bytes, name):
    res = _output_array(inp.model.n_params, out, _caller(name), max_bytes)
    return _FullSink(res, inp.model.param_offsets(), _param_layers(inp.model))


def layer_blocks(inp, curvature, samples, seed, targets):
    """Diagonal blocks ``[(layer index, (n_l, n_l) array)]`` of one curvature matrix
    (any name of :data:`refprune.vocabulary.CURVATURES`)."""
    check_blocks_fit(inp, "block_diagonal")
    refuse_monte_carlo_options(curvature, samples, seed, targets, "block_diagonal")
    # the draws of "mc_fisher" (without targets=) are checked, memory included, by draw_targets
    matvec = _d.loss_curvature_matvec(inp, curvature, samples, seed, targets=targets, where="block_diagonal")
    return _assemble(inp, matvec, curvature == "hessian", _BlockSink(inp.model, _param_layers(inp.model)), False,
                     "blocks")


def check_blocks_fit(inp, where):
    """Refuse the diagonal blocks ``(n_l, n_l)`` of every layer, and the identity seed of
    the largest (``K`` square for the ``K`` directions chosen by :func:`_assemble`), if
    they would not fit."""
    model = inp.model
    shapes = _in_shapes(model, inp.X.shape[1:])
    total, seed, largest = 0, 0, None
    for l in _param_layers(model):
        layer = model[l]
        n_l = layer.n_params
        total += nbytes((n_l, n_l))
        k = n_l if _jacobian_seed(model, l, shapes) else math.prod(shapes[l + 1])
        seed = max(seed, nbytes((k, k)))
        if largest is None or n_l > largest.n_params:
            largest = layer
    if largest is not None:
        n_l = largest.n_params
        check_fits(total + seed, where, f"the diagonal blocks of every layer (the largest, of {largest!r}, "
                   f"{n_l} x {n_l} float64)", error=CurvatureTooLargeError)


def _read_only(obj):
    """Mark every array in ``obj`` (nested tuples and lists) read-only."""
    if isinstance(obj, np.ndarray):
        obj.flags.writeable = False
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            _read_only(item)


def _accumulate(target, block, scale, first):
    if first:
        np.multiply(block, scale, out=target)
    else:
        target += scale * block


def _rows_from_identity_seed(target, layer_l, cache_l, layer_m, cache_m, D, dU, d0, scale, first, units=None):
    """Rows of layer ``l`` against the columns of layer ``m`` when the tangents were seeded
    with the identity on ``z_l``: form the tangent of ``m``'s per-sample gradient for a
    few output units at a time and contract it with ``U_l`` (``param_contract``)."""
    n, K = D.shape[:2]
    n_l = layer_l.n_params
    q_unit = layer_m.n_params // layer_m.out_units
    chunk = _d.CHUNK_FLOATS
    per_chunk = max(1, min(chunk // (n * K), chunk // n_l) // q_unit)
    for u0 in range(0, layer_m.out_units, per_chunk):
        u1 = min(layer_m.out_units, u0 + per_chunk)
        # T (n, K, q): K runs over z_l's entries (of the units asked for) in C order, as
        # param_contract reads them
        T = layer_m.per_sample_param_grad(cache_m, D, dU, d0, units=(u0, u1))
        C = layer_l.param_contract(cache_l, T, units)
        c0 = 0
        for a, b in layer_m.unit_columns((u0, u1)):
            _accumulate(target(a, b), C[:, c0 : c0 + b - a], scale, first)
            c0 += b - a


def hessian(model, params, X, y, loss, out=None, max_bytes=None, progress=False, executor=None, block_rows=None,
            shards=1):
    """The exact Hessian ``d^2 L / dtheta^2``, ``(n, n)`` in flat parameter order.

    Parameters
    ----------
    out : ndarray (n, n), optional
        Array to write into, e.g. a ``numpy.memmap`` for matrices larger than memory;
        the work is done in blocks of rows per layer, so only temporaries of about
        ``CHUNK_FLOATS`` values are held besides ``out``.
    max_bytes : int, optional
        Refuse (``CurvatureTooLargeError``) to allocate a result larger than this;
        default: the memory currently available.
    progress : bool
        Report each layer's rows (or each block) on stderr.
    executor : None, concurrent.futures.Executor or dask.distributed.Client
        Run the blocks as independent tasks there (``docs/derivations.md`` §11); with
        ``block_rows``, ``shards`` or a Zarr ``out`` and no executor they run here.
    block_rows : int, optional
        Split each layer's rows into blocks of the rows of whole output units, at most
        about this many rows each (default: one block per layer).
    shards : int
        Split the samples into this many contiguous shards, assembled separately and
        summed in order (by the workers, in the store, when they write it:
        ``docs/derivations.md`` §11.1).
    out : also a Zarr array (or any store with ``attrs``); written block by block, and
        it records the blocks done, rows and mirror, so a call with the same ``out``
        after an interruption computes only the missing or overwritten ones (as does a
        ``numpy.memmap`` of a file, whose record is ``<file>.refprune.json``).  The
        record says ``complete`` once every block is written;
        :func:`refprune.load_matrix` reads the result back only then, verified.

    One block per layer over all samples gives the same bits as one process; finer
    blocks or several shards agree to rounding (the same sums grouped differently).
    """
    return _matrix(model, params, X, y, loss, "hessian", None, out, max_bytes, progress, executor, block_rows,
                   shards)


def ggn(model, params, X, y, loss, out=None, max_bytes=None, progress=False, executor=None, block_rows=None, shards=1):
    """The generalized Gauss-Newton ``G = R sum_n J_n^T Lambda_n J_n`` (Schraudolph 2002),
    ``(n, n)``.  Arguments as for :func:`hessian`."""
    return _matrix(model, params, X, y, loss, "ggn", None, out, max_bytes, progress, executor, block_rows, shards)


def residual(model, params, X, y, loss, out=None, max_bytes=None, progress=False, executor=None, block_rows=None,
             shards=1):
    """``H - GGN = R sum_n sum_c (dl_n/df_nc) d^2 f_nc / dtheta^2``, built from the
    network's second derivatives alone (no loss curvature), ``(n, n)``.  Arguments as
    for :func:`hessian`."""
    return _matrix(model, params, X, y, loss, "residual", None, out, max_bytes, progress, executor, block_rows,
                   shards)


@renamed_options(FISHERS, kind="curvature")
def fisher(model, params, X, y, loss, curvature="fisher", samples=1, seed=0, targets=None, out=None,
           max_bytes=None, progress=False, executor=None, block_rows=None, shards=1):
    """A Fisher information matrix ``R sum_n J_n^T Phi_n J_n`` (``docs/conventions.md`` §3).

    Parameters
    ----------
    curvature : {"fisher", "mc_fisher", "empirical_fisher"}
        ``"fisher"`` (the true Fisher): ``Phi_n = E_{y ~ p(.|f_n)}[g g^T]`` computed
        from the likelihood (categorical for cross-entropy, Gaussian with variance 1/2
        for squared error); it equals the GGN.  ``"mc_fisher"``: the expectation
        replaced by the mean over ``samples`` targets drawn with
        ``numpy.random.default_rng(seed)``, or over the caller's ``targets``
        (``(n_mc, N)`` labels or ``(n_mc, N, C)`` values, e.g. another library's draws).
        ``"empirical_fisher"``: ``Phi_n = g g^T`` at the observed targets ``y``.
    seed : int >= 0 or list of them
        ``None`` and a ``numpy.random.Generator`` are refused (not reproducible).
    out, max_bytes, progress, executor, block_rows, shards
        As for :func:`hessian`; Monte Carlo targets are drawn once for the whole batch,
        so every shard and block sees the same draws.
    """
    if curvature in ("hessian", "ggn"):
        raise ValueError(f"fisher: curvature={curvature!r} is not a Fisher; call refprune.{curvature}() or "
                         f"choose one of {FISHERS}")
    check_curvature(curvature, FISHERS, "fisher")
    check_seed(seed, "fisher")
    mc = dict(samples=samples, seed=seed, targets=targets)
    return _matrix(model, params, X, y, loss, curvature, mc, out, max_bytes, progress, executor, block_rows, shards)


#: matrix name -> (output curvature of ``loss_curvature_matvec``, second-order network terms)
_KINDS = {"hessian": ("hessian", True), "ggn": ("ggn", False), "residual": ("zero", True),
          "fisher": ("fisher", False), "mc_fisher": ("mc_fisher", False), "empirical_fisher": ("empirical_fisher", False)}


def _matrix(model, params, X, y, loss, name, mc, out, max_bytes, progress, executor, block_rows, shards):
    inp = validate(model, params, X, y, loss)
    kind, second_order = _KINDS[name]
    mc = mc or {}
    if mc:
        refuse_monte_carlo_options(name, mc["samples"], mc["seed"], mc.get("targets"), "fisher")
    if name == "mc_fisher" and mc.get("targets") is None:
        check_draws(inp, mc["samples"], mc["seed"], "fisher")
    if not _par.wants_tasks(executor, shards, _caller(name), block_rows, out):
        sink = _full(inp, out, max_bytes, name)
        record = None
        if isinstance(out, np.memmap) and out.filename:
            # a file: recorded like the task path's one block per layer (the same bits),
            # so that load_matrix can verify it and a restart as tasks can reuse it
            targets = _mc_targets(inp, name, mc)
            record = _store.BlockRecord(out, _fingerprint(inp, name, targets, None, 1), name, _layout(model, None))
            record.begin(keep=False)
        matvec = _d.loss_curvature_matvec(inp, kind, **mc, where="fisher")
        res = _assemble(inp, matvec, second_order, sink, progress, name)
        if record is not None:
            record.mark_from_store()
            record.finish()
        return res
    return _in_tasks(inp, name, mc, out, max_bytes, progress, executor, block_rows, shards)


def _mc_targets(inp, name, mc):
    """The Monte Carlo targets of ``"mc_fisher"``, drawn once for the whole batch; ``None``
    for every other matrix (``targets=`` with another curvature was refused by
    :func:`_matrix`)."""
    if name != "mc_fisher":
        return None
    from .output_factors import draw_targets

    return draw_targets(inp, _d.forward(inp)[0], mc["samples"], mc["seed"], mc["targets"], "fisher")


def _fingerprint(inp, name, targets, block_rows, shards):
    params = [p for group in inp.grouped for p in group]
    return _store.fingerprint(name, inp.model, inp.loss, *params, inp.X, inp.y, targets, block_rows, shards)


def _layout(model, block_rows):
    """``{key: (first column of the layer, one past its last, [(start, stop) rows])}``."""
    offsets = model.param_offsets()
    return {_block_key(l, units): (int(offsets[l]), int(offsets[l + 1]), rows)
            for l, units, rows in row_blocks(model, block_rows)}


def _block_key(l, units):
    return f"layer {l}" + ("" if units is None else f" units {units[0]}-{units[1]}")


class _RowsSink:
    """The rows of one layer (or of some of its output units) against the columns of
    that layer and every later one: ``(rows, n - offset of the layer)``."""

    def __init__(self, model, l, units):
        self.offsets = model.param_offsets()
        rows = model[l].n_params if units is None else len(model[l].unit_rows(units))
        self.rows = np.empty((rows, model.n_params - self.offsets[l]))
        self.start = self.offsets[l]

    def wants(self, l, m):
        return True

    def target(self, l, m, a, b):
        c = self.offsets[m] - self.start
        return self.rows[:, c + a : c + b]

    def finish(self):
        return self.rows


def rows_task(model, params, X, y, loss, scale, name, targets, layer, units, writer=None, geometry=None, final=True,
              after=None):
    """One task of the block decomposition, a plain function that any worker can run:
    the rows of ``layer`` (of output units ``units``, or all) of matrix ``name`` against
    the columns from that layer on, over the samples ``(X, y)`` with the whole batch's
    loss scale ``scale`` and, for ``"mc_fisher"``, the shard's slice of the targets.

    With a ``writer`` (:class:`refprune.curvature.store.BlockWriter`) and the block's
    ``geometry`` ``(o, end, rows)`` the task writes into the store itself
    (``docs/derivations.md`` §11.1): it adds its rows to those the earlier shards left
    there, checked against their digest ``after`` (``None``: the first shard, which
    assigns), and returns the digest of the rows, or for the ``final`` shard the two
    digests of the rows and their mirror."""
    inp = validate(model, params, X, y, loss)._replace(scale=scale)
    kind, second_order = _KINDS[name]
    matvec = _d.loss_curvature_matvec(inp, kind, targets=targets)
    block = _assemble(inp, matvec, second_order, _RowsSink(model, layer, units), False, name, rows_of=(layer, units))
    if writer is None:
        return block
    return writer.write(*geometry, block, final=final, after=after)


def row_blocks(model, block_rows=None):
    """The blocks of rows: ``[(layer index, units or None, [(start, stop) flat rows])]``
    (``block_rows``, checked by the caller: a positive int or ``None`` for whole layers)."""
    offsets = model.param_offsets()
    out = []
    for l in _param_layers(model):
        layer, o = model[l], int(offsets[l])
        if block_rows is None:
            out.append((l, None, [(o, o + layer.n_params)]))
            continue
        per_unit = layer.n_params // layer.out_units
        step = max(1, int(block_rows) // per_unit)
        for u0 in range(0, layer.out_units, step):
            units = (u0, min(layer.out_units, u0 + step))
            out.append((l, units, [(o + a, o + b) for a, b in layer.unit_columns(units)]))
    return out


def _in_tasks(inp, name, mc, out, max_bytes, progress, executor, block_rows, shards):
    """The matrix from independent tasks: blocks of rows times shards of samples.

    Who writes a block is the rule "Who writes" of ``docs/derivations.md`` §11.1, applied
    here once: with a ``writer`` the tasks write, each block's shards chained in shard
    order (``parallel.run(..., chained=True)``) and returning digests; without one they
    return their rows and ``consume`` writes them."""
    model, n, where = inp.model, inp.model.n_params, _caller(name)
    ex = _par.resolve_executor(executor, where)
    ranges = _par.shard_ranges(inp.n_samples, shards, where)
    targets = _mc_targets(inp, name, mc)
    out = _store.check_store(out, n, where) if _store.is_array_store(out) else _output_array(n, out, where, max_bytes)
    writer = None
    if ex is not None and _store.workers_can_write(out):
        writer = _store.BlockWriter(out, where)
    params = [p for group in inp.grouped for p in group]
    layout = _layout(model, block_rows)
    record = _store.BlockRecord(out, _fingerprint(inp, name, targets, block_rows, shards), name, layout)
    share = _par.sharer(executor)  # each shard's data goes to a cluster once, not with every block
    data = [(share(inp.X[s0:s1]), share(inp.y[s0:s1]), share(None if targets is None else targets[:, s0:s1]))
            for s0, s1 in ranges]
    jobs = []
    for l, units, _rows in row_blocks(model, block_rows):
        key = _block_key(l, units)
        if record.is_done(key):  # its rows and its mirror still hold the recorded bytes
            continue
        parts = [(rows_task, (model, params, Xs, ys, inp.loss, inp.scale, name, ts, l, units)
                  + (() if writer is None else (writer, layout[key], k == len(data) - 1)))
                 for k, (Xs, ys, ts) in enumerate(data)]
        jobs.append((key, parts))
    record.begin()
    first = [True]

    def consume(key, block):
        o, end, rows = layout[key]
        if writer is not None:  # written by the worker; ``block`` is its two digests
            record.mark_written(key, block, verify=first[0], lock=writer.lock)
            first[0] = False
            return
        _store.write_block(out, o, end, rows, block)
        record.mark(key, block)

    if record.persistent:
        on_lost = (f"the finished blocks are recorded in {record.label}: call {name} again with the same out= and a "
                   "new executor to compute only the missing ones")
    else:
        on_lost = (f"nothing was kept (out= is not a Zarr array or a numpy.memmap of a file, which record the "
                   f"finished blocks): call {name} again with a new executor")
    if writer is None:
        _par.run(ex, jobs, consume, progress, name, on_lost)
    else:  # chained: each block's shards add themselves to the store in order
        # (one shard: every task is a whole block and all are submitted at once, as before)
        window = None if len(data) == 1 else _par.chain_window(executor)
        _par.run(ex, jobs, consume, progress, name, on_lost, True, window)
    record.finish()
    return out


def exact_matrix(model, params, X, y, loss, curvature="hessian", samples=1, seed=0, targets=None, **kwargs):
    """The exact matrix of any name in :data:`refprune.vocabulary.CURVATURES`:
    :func:`hessian`, :func:`ggn` or :func:`fisher` (``samples``, ``seed`` and
    ``targets`` for ``"mc_fisher"``); ``kwargs`` (``out``, ``max_bytes``, ``progress``)
    are passed on."""
    check_curvature(curvature, CURVATURES, "exact_matrix")
    if curvature in ("hessian", "ggn"):
        return (hessian if curvature == "hessian" else ggn)(model, params, X, y, loss, **kwargs)
    return fisher(model, params, X, y, loss, curvature=curvature, samples=samples, seed=seed, targets=targets,
                  **kwargs)
