"""Hassibi & Stork (1993), XOR: which weight do magnitude, OBD and OBS remove first?

The paper's claim (abstract): "Of OBS, Optimal Brain Damage, and magnitude-based methods,
only OBS deletes the correct weights from a trained XOR network in every case."  It is a
claim about which weight each criterion *chooses*.

**Minima.**  A 2-2-1 network with sigmoid units and biases (9 weights; the biases count as
weights, as in the paper) is trained on the four XOR patterns from many random starts to a
minimum of the summed squared error plus a small weight decay (without it the infimum lies
at infinite weights), by ``refprune.minimize`` (trust-region with the exact gradient and
Hessian).  A start counts as a minimum when refprune's own certificate holds (gradient
max-norm within ``grad_tol`` and smallest Hessian eigenvalue above ``eig_tol``:
``refprune/minimizer.py``), whatever SciPy's success flag says.

**Symmetries.**  Parameter order (PyTorch's): ``w(h1<-x1), w(h1<-x2), w(h2<-x1),
w(h2<-x2), b(h1), b(h2), w(o<-h1), w(o<-h2), b(o)``.

* Swapping the hidden units (rows of the first layer with its biases, columns of the
  second) leaves the network function and ``|theta|`` unchanged: a symmetry of the objective.
* Swapping the inputs (columns of the first layer) maps ``f(x1, x2)`` to ``f(x2, x1)``; the
  XOR patterns and targets are invariant under that exchange and ``|theta|`` is unchanged:
  a symmetry of the objective (of the data, not of the network).
* The sigmoid satisfies ``s(-z) = 1 - s(z)``.  Negating hidden unit j's incoming weights and
  bias and its outgoing weight ``v_j``, with ``b(o) -> b(o) + v_j``, leaves the network
  function and so the squared error unchanged, but changes ``|theta|^2`` by
  ``(b(o) + v_j)^2 - b(o)^2``: not a symmetry of the objective with weight decay, nor of
  magnitude's ranking.  The output unit has no such flip (it would turn the outputs into
  ``1 - f``).  Complementing both inputs (``x -> 1 - x`` also keeps the XOR targets) is the
  same kind: loss-preserving, ``|theta|``-changing.

So the objective's symmetry group here is {identity, hidden swap, input swap, both}
(order 4): minima are merged under it.  Minima linked by sign flips compute the same
function up to the weight-decay term; they are reported, not merged: each flipped point is
re-minimised and the minimum it reaches is looked up.

**Choice and update.**  At each minimum that solves XOR, each criterion (magnitude
``|w_q|``, OBD ``w_q^2 h_qq / 2``, OBS ``w_q^2 / (2 [H^-1]_qq)``, with ``H`` the objective's
exact Hessian) chooses its first weight; ties (scores within ``TIE_RTOL`` of the smallest)
go to the lowest index in the parameter order.  Each chosen weight is removed twice: set to
zero with no other change (magnitude's and OBD's own removal), and with OBS's update of
the others (Hassibi & Stork 1993, eq. 5: ``dtheta = -(w_q / [H^-1]_qq) H^-1 e_q``).  From
each, the other eight weights are also re-minimised.  A weight is *correct* when its
removal leaves a network that solves XOR: (C1) right after the removal with OBS's update,
no retraining; (C2) after re-minimising the other eight weights from there to a certified
minimum.

    python validation/xor.py            # writes validation/results/xor.md and xor.png
    python validation/xor.py --quick    # a few starts, to try it (not the study)
"""

import report  # noqa: F401,I001 (first: pins the BLAS thread count before NumPy loads)

import argparse
import os
import sys

import numpy as np

import refprune as rp
from report import RESULTS, equal_to_paper, output_dir, readme_row, table, verdict, write

X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
Y = np.array([[0.0], [1.0], [1.0], [0.0]])
LOSS = rp.MSELoss("sum")
WEIGHT_DECAY = 1e-4
SEEDS, QUICK_SEEDS = 100, 4
NAMES = ["w(h1<-x1)", "w(h1<-x2)", "w(h2<-x1)", "w(h2<-x2)", "b(h1)", "b(h2)", "w(o<-h1)", "w(o<-h2)", "b(o)"]
CRITERIA = ("magnitude", "OBD", "OBS")
UPDATES = ("zeroed", "OBS update")
#: scores within this fraction of the smallest are a tie.  A certified minimum is located to
#: about grad_norm / min_eigenvalue (at most ~1e-6 here), far below the gaps between
#: distinct scores (the report prints the largest tied and the smallest untied gap).
TIE_RTOL = 1e-6
#: two minima are the same when one maps onto the other by a symmetry to this fraction of
#: max(1, |theta|_inf) (the report prints the distances within and between classes).
SAME_RTOL = 1e-6
#: the objective's symmetries as permutations of the parameter order (module docstring)
HIDDEN_SWAP = np.array([2, 3, 0, 1, 5, 4, 7, 6, 8])
INPUT_SWAP = np.array([1, 0, 3, 2, 4, 5, 6, 7, 8])
SYMMETRIES = {"identity": np.arange(9), "hidden swap": HIDDEN_SWAP, "input swap": INPUT_SWAP,
              "hidden and input swap": HIDDEN_SWAP[INPUT_SWAP]}
PAPER = "Hassibi & Stork 1993, XOR"
COMMAND = "python validation/xor.py"


def network():
    return rp.Sequential(rp.Linear(2, 2), rp.Sigmoid(), rp.Linear(2, 1), rp.Sigmoid())


def solves(model, params):
    return bool(np.all((model(params, X) > 0.5) == (Y > 0.5)))


def objective(model, theta):
    """The minimised objective: summed squared error plus ``WEIGHT_DECAY/2 |theta|^2``."""
    return float(rp.loss(model, rp.unflatten_params(model, theta), X, Y, LOSS)) + 0.5 * WEIGHT_DECAY * float(
        theta @ theta)


def trained(seed, scale=3.0):
    """A minimum from PyTorch's initialisation scaled by ``scale`` (more varied starts)."""
    model = network()
    start = [scale * p for p in model.init(seed=seed)]
    return model, rp.minimize(model, start, X, Y, LOSS, weight_decay=WEIGHT_DECAY, gtol=1e-12)


def sign_flip(theta, j):
    """Hidden unit ``j``'s sign flip (module docstring): the same network function."""
    t = np.array(theta, dtype=np.float64)
    t[[2 * j, 2 * j + 1, 4 + j]] *= -1.0
    t[8] += t[6 + j]
    t[6 + j] *= -1.0
    return t


def choose(score):
    """``(q, tied)``: the weight removed first (the lowest index among the tied) and every
    weight whose score is within ``TIE_RTOL`` of the smallest."""
    s = np.asarray(score, dtype=np.float64)
    tied = np.flatnonzero(s <= s.min() + TIE_RTOL * abs(s.min()))
    return int(tied[0]), tied


def removals(model, theta):
    """Every single-weight removal at the minimum ``theta``, in both forms (module
    docstring).  Returns the objective's Hessian ``H``, the three criteria's scores and,
    per update (``"zeroed"``, ``"OBS update"``), arrays over the 9 weights: the removed
    point, its predicted and actual increase of the objective, whether it solves XOR, and
    whether re-minimising the other eight weights from it reaches a certified minimum
    that solves XOR."""
    params = rp.unflatten_params(model, theta)
    H = rp.hessian(model, params, X, Y, LOSS) + WEIGHT_DECAY * np.eye(theta.size)
    Hinv = np.linalg.inv(H)
    kw = dict(include_bias=True)
    scores = {"magnitude": rp.saliencies(model, params, X, Y, LOSS, method="magnitude", **kw),
              "OBD": rp.saliencies(model, params, X, Y, LOSS, method="obd", curvature="hessian",
                                   weight_decay=WEIGHT_DECAY, **kw),
              "OBS": rp.saliencies(model, params, X, Y, LOSS, method="obs", curvature="hessian",
                                   weight_decay=WEIGHT_DECAY, **kw)}
    d = np.diag(Hinv)
    points = {"zeroed": theta[None, :] * (1.0 - np.eye(theta.size)),
              # row q: theta - (w_q / [H^-1]_qq) H^-1 e_q (Hassibi & Stork 1993, eq. 5; H^-1 symmetric)
              "OBS update": theta[None, :] - (theta / d)[:, None] * Hinv}
    np.fill_diagonal(points["OBS update"], 0.0)  # exactly zero (the update leaves rounding there)
    # the quadratic model's increase: w_q^2 h_qq / 2 for a plain zeroing (LeCun et al. 1990,
    # eq. 6 with the exact diagonal), w_q^2 / (2 [H^-1]_qq) with OBS's update (Hassibi & Stork, eq. 5)
    predicted = {"zeroed": theta ** 2 * np.diag(H) / 2.0, "OBS update": theta ** 2 / (2.0 * d)}
    base = objective(model, theta)
    out = dict(H=H, scores=scores)
    for u, P in points.items():
        retrained = []
        for q in range(theta.size):
            mask = np.ones(theta.size, dtype=bool)
            mask[q] = False
            r = rp.minimize(model, rp.unflatten_params(model, P[q]), X, Y, LOSS, weight_decay=WEIGHT_DECAY,
                            mask=mask, gtol=1e-12)
            retrained.append(r.at_minimum and solves(model, r.params))
        out[u] = dict(points=P, predicted=predicted[u],
                      actual=np.array([objective(model, p) for p in P]) - base,
                      solves=np.array([solves(model, rp.unflatten_params(model, p)) for p in P]),
                      retrained=np.array(retrained))
    return out


def run(seeds):
    """One record per start: the minimiser's result, whether it solves XOR and, for the
    certified minima that do, :func:`removals` and each criterion's choice."""
    starts = []
    for seed in range(seeds):
        model, res = trained(seed)
        rec = dict(seed=seed, res=res, theta=rp.flatten_params(res.params), solves=solves(model, res.params))
        if res.at_minimum and rec["solves"]:
            rec["removals"] = removals(model, rec["theta"])
            rec["choice"] = {c: choose(rec["removals"]["scores"][c]) for c in CRITERIA}
        starts.append(rec)
    return starts


def symmetric_distance(a, b):
    """``min_g max|g(a) - b|`` over the objective's symmetries, and the ``g`` attaining it."""
    dist = {name: float(np.abs(a[g] - b).max()) for name, g in SYMMETRIES.items()}
    name = min(dist, key=dist.get)
    return dist[name], name


def same_minimum(a, b):
    """Whether ``a`` maps onto ``b`` by one of the objective's symmetries (``SAME_RTOL``)."""
    return symmetric_distance(a, b)[0] <= SAME_RTOL * max(1.0, float(np.abs(b).max()))


def classes(starts):
    """The distinct certified minima up to the objective's symmetries: a list of dicts with
    the representative ``theta`` (the first start reaching it), the member starts, and the
    symmetries other than the identity that fix it."""
    out = []
    for rec in starts:
        if not rec["res"].at_minimum:
            continue
        for c in out:
            if same_minimum(rec["theta"], c["theta"]):
                c["members"].append(rec)
                break
        else:
            out.append(dict(theta=rec["theta"], members=[rec], solves=rec["solves"]))
    for c in out:
        scale = SAME_RTOL * max(1.0, float(np.abs(c["theta"]).max()))
        c["fixed_by"] = [name for name, g in SYMMETRIES.items()
                         if name != "identity" and np.abs(c["theta"][g] - c["theta"]).max() <= scale]
        c["objective"] = c["members"][0]["res"].objective
    return sorted(out, key=lambda c: (not c["solves"], c["objective"]))


def flip_links(model, found):
    """For each class, the classes reached by re-minimising each sign-flipped copy of its
    representative (hidden unit 1, 2, both): index into ``found``, or ``None`` when the
    reached point is not certified or is a minimum no start reached."""
    links = []
    for c in found:
        reached = []
        for units in ((0,), (1,), (0, 1)):
            t = c["theta"]
            for j in units:
                t = sign_flip(t, j)
            r = rp.minimize(model, rp.unflatten_params(model, t), X, Y, LOSS, weight_decay=WEIGHT_DECAY, gtol=1e-12)
            theta = rp.flatten_params(r.params)
            hit = [i for i, d in enumerate(found) if r.at_minimum and same_minimum(theta, d["theta"])]
            reached.append(hit[0] if hit else None)
        links.append(reached)
    return links


def components(links):
    """Connected groups of classes under the sign-flip links (union-find)."""
    parent = list(range(len(links)))

    def root(i):
        while parent[i] != i:
            i = parent[i]
        return i

    for i, reached in enumerate(links):
        for j in reached:
            if j is not None:
                parent[root(i)] = root(j)
    return [root(i) for i in range(len(links))]


def tie_outcomes_agree(rec, tied):
    """Whether every tied weight gives the same outcomes (solves right after and after
    re-minimising, for both updates; the increase to ``TIE_RTOL``)."""
    R = rec["removals"]
    for u in UPDATES:
        for key in ("solves", "retrained"):
            if len(set(R[u][key][tied].tolist())) > 1:
                return False
        a = R[u]["actual"][tied]
        if np.ptp(a) > TIE_RTOL * np.abs(a).max():
            return False
    return True


def median_ratio(actual, predicted):
    return float(np.median(np.asarray(actual) / np.asarray(predicted)))


def summarise(model, starts, seeds, quick=False):
    res = [r["res"] for r in starts]
    certified = [r for r in starts if r["res"].at_minimum]
    scipy_ok = sum(r.success for r in res)
    rows = [r for r in certified if r["solves"]]
    n = len(rows)
    found = classes(starts)
    solving = [c for c in found if c["solves"]]
    links = flip_links(model, found)
    comp = components(links)
    flip_groups = len(set(comp[i] for i, c in enumerate(found) if c["solves"]))

    def count(f):
        return sum(bool(f(r)) for r in rows)

    def chosen(r, c):
        return r["choice"][c][0]

    def outcome(r, c, u, key):
        return r["removals"][u][key][chosen(r, c)]

    # the distances that justify SAME_RTOL and TIE_RTOL (printed, not assumed)
    within = max((symmetric_distance(m["theta"], c["theta"])[0] for c in found for m in c["members"]), default=0.0)
    between = min((symmetric_distance(a["theta"], b["theta"])[0] for i, a in enumerate(found) for b in found[i + 1:]),
                  default=float("inf"))
    gaps_tied, gaps_untied = [], []
    for r in rows:
        for c in CRITERIA:
            s = np.sort(r["removals"]["scores"][c])
            g = (s[1:] - s[0]) / abs(s[0])
            gaps_tied += g[g <= TIE_RTOL].tolist()
            gaps_untied += g[g > TIE_RTOL].tolist()
    ties = {c: [r for r in rows if len(r["choice"][c][1]) > 1] for c in CRITERIA}
    ties_agree = {c: sum(tie_outcomes_agree(r, r["choice"][c][1]) for r in ties[c]) for c in CRITERIA}

    header = "# XOR (Hassibi & Stork 1993)" + (f" — {seeds} starts, a smoke run, not the study" if quick else "")
    lines = [header, "",
             f"2-2-1 sigmoid network with biases (9 weights, biases counted as weights as in the paper), summed "
             f"squared error plus {WEIGHT_DECAY:g}/2 |theta|^2, minimised by `refprune.minimize` (trust-region, "
             f"exact Hessian) from {seeds} random starts. Written by `{COMMAND}`"
             + (f" with `--quick` or `--seeds {seeds}`" if quick else "")
             + "; the method, the symmetries and the definitions are in the script's docstring.", "",
             "## Minima", "",
             f"- Certified minima (gradient max-norm <= grad_tol = 1e-8 max(1, |objective|), smallest Hessian "
             f"eigenvalue > 1e-10 max|eigenvalue|): **{len(certified)} of {seeds}** starts (largest gradient "
             f"max-norm {max(r.grad_norm for r in res):.1e}, smallest eigenvalue "
             f"{min(r.min_eigenvalue for r in res):.2e}). SciPy's success flag holds at {scipy_ok} of {seeds}; it is "
             "not consulted.",
             f"- Certified minima that solve XOR (every output on the right side of 0.5): **{n} of {seeds}**.",
             f"- Distinct minima up to the objective's symmetries (hidden swap, input swap): **{len(found)}**, of "
             f"which **{len(solving)}** solve XOR. Starts at the same minimum agree to {within:.1e} (after the best "
             f"symmetry); distinct minima differ by at least {between:.2f}.",
             f"- Linked by the sigmoid's sign flips (same network function up to the weight-decay term), the "
             f"{len(solving)} solving minima form {flip_groups} group(s); "
             "weight decay is not invariant under a flip, so each flipped point is re-minimised.", ""]
    body = []
    for i, c in enumerate(found):
        reach = ", ".join("-" if j is None else str(j + 1) for j in links[i])
        R = [m for m in c["members"] if "removals" in m]
        c1 = f"{int(R[0]['removals']['OBS update']['solves'].sum())}" if R else "-"
        c2 = f"{int(R[0]['removals']['OBS update']['retrained'].sum())}" if R else "-"
        body.append((i + 1, f"{c['objective']:.6f}", "yes" if c["solves"] else "no", len(c["members"]),
                     ", ".join(c["fixed_by"]) or "-", reach, c1, c2))
    lines += table(["minimum", "objective", "solves XOR", "starts", "fixed by", "sign flip h1, h2, both reaches",
                    "weights correct (C1)", "weights correct (C2)"], body)
    lines += ["", "Weights correct: how many of the 9 weights are correct at that minimum (C1: removed with OBS's "
              "update it still solves XOR; C2: re-minimising the other eight from there solves it; the script's "
              "docstring). \"-\" in the flip column: the re-minimised point is a minimum no start reached, or not "
              "certified.", ""]

    lines += ["## Which weight each criterion chooses first", "",
              f"Ties: scores within {TIE_RTOL:g} of the smallest (relative); the tie goes to the lowest index in the "
              f"parameter order. Largest tied gap {max(gaps_tied, default=0.0):.1e}, smallest untied gap "
              f"{min(gaps_untied, default=float('inf')):.1e}.", ""]
    body = []
    for c in CRITERIA:
        body.append((c, f"{count(lambda r: chosen(r, c) == chosen(r, 'OBS'))}/{n}",
                     f"{count(lambda r: outcome(r, c, 'OBS update', 'solves'))}/{n}",
                     f"{count(lambda r: outcome(r, c, 'OBS update', 'retrained'))}/{n}",
                     f"{len(ties[c])} ({ties_agree[c]} with the same outcome for every tied weight)"))
    lines += table(["criterion", "same weight as OBS", "choice correct (C1)", "choice correct (C2)", "ties"], body)
    counts = {c: np.bincount([chosen(r, c) for r in rows], minlength=9) if rows else np.zeros(9, int) for c in CRITERIA}
    lines += ["", "Count of each weight chosen first:", ""]
    lines += table(["weight"] + list(CRITERIA), [(NAMES[i],) + tuple(int(counts[c][i]) for c in CRITERIA)
                                                 for i in range(9)])

    lines += ["", "## Each choice with each update", "",
              "Zeroed: the weight set to zero, nothing else changed (magnitude's and OBD's own removal). OBS update: "
              "the other weights moved by OBS's update for that weight (OBS's own removal). Predicted: the quadratic "
              "model's increase of the objective for that removal (w_q^2 h_qq / 2 zeroed, w_q^2 / (2 [H^-1]_qq) with "
              "the update).", ""]
    body = []
    for c in CRITERIA:
        for u in UPDATES:
            own = (u == "OBS update") == (c == "OBS")
            body.append((c, u + (" (own)" if own else ""), f"{count(lambda r: outcome(r, c, u, 'solves'))}/{n}",
                         f"{count(lambda r: outcome(r, c, u, 'retrained'))}/{n}",
                         f"{median_ratio(*[[outcome(r, c, u, k) for r in rows] for k in ('actual', 'predicted')]):.2f}"
                         if rows else "-"))
    lines += table(["choice", "update", "still solves XOR right after", "re-minimised (8 weights) solves XOR",
                    "median actual / predicted"], body)

    # verdicts, from the numbers
    v, every = {}, {}
    for sense, key in (("C1", "solves"), ("C2", "retrained")):
        every[sense] = tuple(c for c in CRITERIA if rows and count(lambda r: outcome(r, c, "OBS update", key)) == n)
        v[sense] = verdict(f"\"only OBS deletes the correct weight in every case\", correct in sense {sense}: "
                           f"criteria whose first choice is correct at all {n} minima", every[sense], ("OBS",),
                           equal_to_paper(), show=lambda t: ", ".join(t) or "none")
    own = {c: count(lambda r: outcome(r, c, "OBS update" if c == "OBS" else "zeroed", "solves")) for c in CRITERIA}
    with_obs = {c: count(lambda r: outcome(r, c, "OBS update", "solves")) for c in CRITERIA}
    same_mag = count(lambda r: chosen(r, "magnitude") == chosen(r, "OBS"))
    gap = own["OBS"] - own["magnitude"]
    closed = with_obs["magnitude"] - own["magnitude"]
    lines += ["", "## Verdicts (computed from the tables above)", "",
              f"- {v['C1'].sentence}", f"- {v['C2'].sentence}",
              f"- Without retraining, each criterion's own removal keeps XOR solved at {own['magnitude']} "
              f"(magnitude), {own['OBD']} (OBD) and {own['OBS']} (OBS) of {n} minima. Given OBS's update, "
              f"magnitude's choice keeps it solved at {with_obs['magnitude']} and OBD's at {with_obs['OBD']}: "
              + (f"the update closes {closed} of the {gap} minima between magnitude and OBS"
                 + (" (all of them), so the gap comes from OBS's update, not from its choice" if gap and closed == gap
                    else "") + "." if gap else "magnitude and OBS do not differ here."),
              f"- Magnitude chooses OBS's weight at {same_mag} of {n} minima, OBD at "
              f"{count(lambda r: chosen(r, 'OBD') == chosen(r, 'OBS'))} of {n} (ties broken by the rule above; "
              f"{sum(len(t) for t in ties.values())} ties in all, "
              f"{sum(ties_agree.values())} of them with the same outcome for every tied weight).",
              "- Predicted against actual: the quadratic model is exact only for a quadratic objective; at these "
              "minima the sigmoids saturate, and removing a weight of size 2-10 moves far outside the region where "
              "it holds (the ratio column).", ""]

    # the README's row, from the same numbers
    correct = {sense: {c: count(lambda r: outcome(r, c, "OBS update", key)) for c in CRITERIA}
               for sense, key in (("C1", "solves"), ("C2", "retrained"))}
    reproduced = [f"{len(certified)} of {seeds} starts are certified minima, {n} solve XOR ({len(solving)} distinct "
                  "minima up to symmetry)"]
    not_reproduced = []
    senses = "removable with OBS's update, and after retraining" if correct["C1"] == correct["C2"] else \
        "removable with OBS's update"
    others = [c for c in CRITERIA if c != "OBS"]
    if correct["C1"]["OBS"] == n:
        worse = [f"{c}'s at {correct['C1'][c]}" for c in others if correct["C1"][c] < n]
        if worse:
            reproduced.append(f"OBS's first choice is correct ({senses}) at {n} of {n} minima, "
                              + " and ".join(worse))
    else:
        not_reproduced.append(f"OBS's first choice is correct ({senses}) at only {correct['C1']['OBS']} of {n} minima")
    for c in others:
        if correct["C1"][c] == n:
            same = count(lambda r: chosen(r, c) == chosen(r, "OBS"))
            tied = len(ties[c])
            not_reproduced.append(
                f"\"only OBS\": {c} chooses OBS's weight at {same} of {n} minima"
                + (f" ({tied} ties, broken by the lowest index, {ties_agree[c]} with the same outcome either way)"
                   if tied else "") + f", so its choice is correct as often")
    if gap and closed == gap:
        not_reproduced.append(f"magnitude's {own['magnitude']} of {n} still solving after zeroing, against OBS's "
                              f"{own['OBS']}, comes from OBS's update, not its choice")
    lines += [readme_row(PAPER, f"`{COMMAND}`", "; ".join(reproduced), "; ".join(not_reproduced))]
    return lines


def figure(starts, out=RESULTS, name="xor.png"):
    from refprune import plot

    rows = [r for r in starts if "removals" in r]
    data = {}
    for c, u in (("OBD", "zeroed"), ("OBS", "OBS update")):
        q = [r["choice"][c][0] for r in rows]
        data[f"{c} ({u})"] = ([r["removals"][u]["predicted"][i] for r, i in zip(rows, q)],
                              [r["removals"][u]["actual"][i] for r, i in zip(rows, q)])
    plot.predicted_vs_actual(data, path=os.path.join(out, name), title="XOR: first removal at each minimum")
    return name


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=None,
                    help=f"random starts (default {SEEDS}, {QUICK_SEEDS} with --quick)")
    ap.add_argument("--quick", action="store_true", help=f"{QUICK_SEEDS} starts: a smoke run, not the study")
    ap.add_argument("--out", default=None, help="directory for the report and figure (default validation/results; "
                                                "validation/out/quick with --quick)")
    args = ap.parse_args(argv)
    seeds = args.seeds if args.seeds is not None else (QUICK_SEEDS if args.quick else SEEDS)
    if seeds < 1:
        ap.error(f"--seeds must be at least 1, got {seeds}")
    starts = run(seeds)
    smoke = args.quick or seeds != SEEDS  # not the study: never over the committed report
    lines = summarise(network(), starts, seeds, quick=smoke)
    lines.insert(-1, f"![predicted against actual]({figure(starts, output_dir(args.out, smoke))})")
    print(write("xor.md", lines, out=output_dir(args.out, smoke)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
