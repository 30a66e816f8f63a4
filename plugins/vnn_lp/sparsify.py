"""The VNN pass: re-solve each affine layer's weights with an LP, first layer first.

Differences from the paper's public code (see docs/vnn_lp.md): each layer's LP sees the
activations of the already-sparsified earlier layers (not the original network's), the
argmax (and an optional logit margin) is a constraint, and the output layer is sparsified too.

Each layer step is accepted only when the whole network, in float64 and in float32, still
keeps every kept validation sample's patterns, argmax and margin (:func:`check_network`:
the constraint rows, plus a direct comparison of the two networks' layer values on every given
sample, degenerate ones included, which are reported but cannot fail the check);
otherwise the layer keeps its original weights. The final network is exported and checked in
onnxruntime; if that check fails the last sparsified layers are restored one at a time (every
such prefix passed its own step check), so a network that breaks the guarantee is never
returned.
"""
from __future__ import annotations

import os
import time
from typing import Optional, Sequence, Union

import numpy as np

from vnnx.errors import SolverError, VnnxError
from vnnx.executor import Executor, ExecutorSpec, Task, open_executor
from vnnx.network import Network
from vnnx.solvers import LinearProblem, Solution, solve

from .formulation import LayerBounds, LayerLP, Parametrisation, coupled_lp, group_lp, later_rows, layer_bounds, paper_lp
from .guarantee import GuaranteeCheck, check_network, check_onnx, export_checked, onnx_affine_outputs
from .options import SparsifyOptions
from .patterns import Reference, affine_outputs, apply_layer, build_reference, check_inputs, split_segments
from .report import LayerReport, SparsifyReport, l1_norm, layer_report, nonzeros

#: A group LP smaller than this is solved in the calling process even with ``workers > 1``.
_MIN_GROUPS_FOR_POOL = 8


def _progress(iterable, enabled: bool, **kw):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, **kw)


#: Small LPs (per-neuron/per-channel) go to the simplex without presolve; an LP with at least
#: this many non-zeros (a coupled layer LP) goes to HiGHS's interior point method with crossover
#: (still a basic optimal solution). Measured 2026-11-23 on mnist_relu_3_50's first layer at
#: ε = 0.1 with 200 samples (11,807 rows, 58,140 columns, 2.8M non-zeros): IPM 50 s, while
#: the simplex had not finished after 4 minutes.
_IPM_MIN_NNZ = 200_000
_SMALL_LP_OPTIONS = {"presolve": "off"}
_LARGE_LP_OPTIONS = {"solver": "ipm", "run_crossover": "on"}


def _highs_options(problem: LinearProblem) -> dict:
    return dict(_LARGE_LP_OPTIONS if int(problem.A.nnz) >= _IPM_MIN_NNZ else _SMALL_LP_OPTIONS)


def _reset_highs_scheduler() -> None:
    try:
        import highspy

        highspy.Highs.resetGlobalScheduler(True)
    except (ImportError, AttributeError):  # an older highspy without it: nothing to reset
        pass


def _solve_one(args: tuple[LinearProblem, Optional[float], str]) -> Solution:
    problem, time_limit, backend = args
    # Small LPs: presolve off; they are solved once each and HiGHS's presolve costs more than
    # it saves (3_50 at eps 0: 3.2 s instead of 4.6 s, measured 2026-11-23). Large ones: IPM.
    return solve(problem, time_limit=time_limit, backend=backend, threads=1, highs_options=_highs_options(problem))


def _solve_chunk(jobs: Sequence[tuple[LinearProblem, Optional[float], str]]) -> list[Solution]:
    """Several LPs in one task: a task per LP would cost more in scheduling than the LP."""
    return [_solve_one(j) for j in jobs]


def _solve_many(problems: Sequence[LinearProblem], opts: SparsifyOptions, desc: str,
                executor: Optional[Executor] = None) -> list[Solution]:
    """Solve independent LPs, on ``executor``'s workers (local processes or a Dask cluster) when
    it has several and there are enough LPs to pay for it, else here. Each LP is solved alone
    whichever runs it, so the optimum does not depend on the back end."""
    jobs = [(p, opts.time_limit, opts.solver) for p in problems]
    if executor is None or executor.slots < 2 or len(jobs) < _MIN_GROUPS_FOR_POOL:
        return [_solve_one(j) for j in _progress(jobs, opts.progress, desc=desc, leave=False)]
    size = max(1, -(-len(jobs) // (4 * executor.slots)))
    tasks = [Task(f"{desc} {c}", _solve_chunk, (jobs[c:c + size],)) for c in range(0, len(jobs), size)]
    # A forked child inherits HiGHS's global thread scheduler without its threads (the parent
    # made it on its first solve): every solve in the child then fails unless it is reset there.
    sols: dict[int, list[Solution]] = {}
    for outcome in executor.run(tasks, isolate=False, progress=opts.progress, desc=desc,
                                initializer=_reset_highs_scheduler):
        if outcome.status != "ok":
            raise SolverError(f"{desc}: {outcome.reason}")
        sols[int(outcome.task.key.rsplit(" ", 1)[1])] = outcome.value
    return [s for c in sorted(sols) for s in sols[c]]


def _lp_size(lps: Sequence[LayerLP]) -> tuple[int, int, int]:
    return (sum(lp.problem.n_rows for lp in lps), sum(lp.problem.n_cols for lp in lps),
            sum(int(lp.problem.A.nnz) for lp in lps))


def _cross_group_pairs(param: Parametrisation, bounds: LayerBounds) -> np.ndarray:
    pc = bounds.pairs
    return param.position_group(pc.p) != param.position_group(pc.q)


def solve_layer(network: Network, ref: Reference, t: int, opts: SparsifyOptions,
                rep: LayerReport, executor: Optional[Executor] = None) -> Optional[np.ndarray]:
    """Solve segment t's LP(s) for the current ``network``; return θ (None: keep the layer).
    ``executor``: where the per-neuron LPs run (:func:`open_executor`; None: here).

    Fills the LP fields of ``rep``. Groups whose own LP fails keep their original parameters
    (the caller's check decides whether that is still sound).
    """
    seg = ref.segments[t]
    layer = network.layers[seg.affine]
    outs = affine_inputs(network, ref.x, seg.affine)
    param = Parametrisation(layer, outs)
    center = layer.apply(outs)
    bounds = layer_bounds(ref.blocks[t], center, opts.epsilon, opts.epsilon_mode, opts.slack, opts.margin,
                          drop_redundant_pairs=opts.formulation == "auto")
    if opts.formulation == "paper":
        lps = [paper_lp(network, ref, t, param, bounds, opts.slack, opts.margin)]
        rep.formulation = "paper"
    else:
        drop = opts.formulation == "auto"
        later = later_rows(network, ref, t, bounds, opts.slack, opts.margin, drop_redundant=drop)
        rep.later_rows_total, rep.later_rows_kept = later.n_total, later.n_rows
        cross = _cross_group_pairs(param, bounds)
        if drop and later.n_rows == 0 and not cross.any():
            rep.formulation = "per-neuron" if param.L == 1 else "per-channel"
            lps = [group_lp(param, g, bounds, param.position_group(bounds.pairs.p) == g) for g in range(param.G)]
        else:
            rep.formulation = "coupled"
            lps = [coupled_lp(param, bounds, later)]
    rep.n_lps = len(lps)
    rep.lp_rows, rep.lp_cols, rep.lp_nnz = _lp_size(lps)
    sols = _solve_many([lp.problem for lp in lps], opts, desc=f"layer {seg.affine} LPs", executor=executor)
    rep.lp_seconds = float(sum(s.seconds for s in sols))
    theta = param.theta0.copy()
    failed = [(g, s) for g, s in enumerate(sols) if s.status != "optimal" or s.x is None]
    if len(lps) == 1 and failed:
        rep.message = f"LP {failed[0][1].status}" + (f" ({failed[0][1].message})" if failed[0][1].message else "")
        return None
    for g, (lp, sol) in enumerate(zip(lps, sols)):
        if sol.status != "optimal" or sol.x is None:
            continue
        idx = param.group_params(g) if len(lps) > 1 else np.arange(param.n_params)
        theta[idx] = 0.0
        theta[lp.columns] = lp.theta(sol.x)
    notes = []
    if failed:
        statuses = sorted({s.status for _, s in failed})
        notes.append(f"{len(failed)} of {len(lps)} groups kept their weights (LP {', '.join(statuses)})")
        if len(failed) == len(lps):
            rep.groups_kept_original = len(failed)
            rep.message = notes[0]
            return None
    reverted = []
    if len(lps) > 1:
        # Separate LPs: a group whose solution breaks one of its own rows (float64 or float32)
        # takes its original parameters back, instead of failing the whole layer's check.
        reverted = _groups_breaking_rows(param, theta, outs, ref.blocks[t])
        for g in reverted:
            idx = param.group_params(g)
            theta[idx] = param.theta0[idx]
        if reverted:
            notes.append(f"{len(reverted)} groups broke their own rows after the LP and kept their weights")
    rep.groups_kept_original = len(failed) + len(reverted)
    rep.message = "; ".join(notes)
    if rep.groups_kept_original == len(lps) > 1:
        return None
    return theta


def _groups_breaking_rows(param: Parametrisation, theta: np.ndarray, inputs: np.ndarray, blk) -> list[int]:
    """Groups of the target layer with a violated row of its own block, for parameters
    ``theta``, evaluated in float64 and in float32."""
    layer = param.make_layer(theta)
    c = blk.constraints
    bad = np.zeros(param.G, dtype=bool)
    for dtype in (np.float64, np.float32):
        z = apply_layer(layer, inputs.astype(dtype), dtype)
        broken = ~c.satisfied(c.values(z), margin_tol=0.0)
        for idx in (c.p[broken], c.q[broken]):
            bad[param.position_group(idx[idx >= 0])] = True
    return [int(g) for g in np.flatnonzero(bad)]


def affine_inputs(network: Network, x: np.ndarray, k: int) -> np.ndarray:
    """The input of ``network.layers[k]`` on ``x`` (N, n_inputs), float64."""
    h = np.asarray(x, dtype=np.float64)
    for layer in network.layers[:k]:
        h = layer.apply(h)
    return h


def _with_layer(network: Network, k: int, layer) -> Network:
    layers = list(network.layers)
    layers[k] = layer
    return Network(network.input_shape, network.output_shape, layers)


def _targets(n_segments: int, layers) -> list[int]:
    if layers == "all":
        return list(range(n_segments))
    k = int(layers)
    if k > n_segments:
        raise VnnxError(f"vnn-lp: --layers {k} but the network has only {n_segments} affine layers")
    return list(range(k))


def sparsify(network: Network, x_val, y_val, options: Optional[SparsifyOptions] = None,
             out: Union[str, os.PathLike, None] = None) -> tuple[Network, SparsifyReport]:
    """Sparsify ``network`` with VNN's LPs so that every validation sample keeps its behaviour.

    Args:
        network: a piecewise-linear plain view (Dense/Conv/ReLU/MaxPool), float64.
        x_val: (N, ...) validation inputs in model-input space, N·n_inputs values.
        y_val: (N,) integer labels.
        options: :class:`SparsifyOptions` (defaults: ε = 0, no margin, every layer, HiGHS).
        out: where to write the result as ONNX: exactly the file that passed the onnxruntime
            check, written atomically (nothing is written if anything fails).

    Returns:
        ``(sparsified network, report)``. On every kept validation sample (all but the
        degenerate ones, counted in the report) the result keeps, in float32 onnxruntime
        inference of its exported ONNX file, each ReLU's activation pattern, each MaxPool's
        winner, the argmax (the label where the original was right, else its prediction) and
        a logit margin of at least ``min(margin, original margin) − margin_tol``.

    Raises:
        ShapeMismatchError: data that does not fit the network; UnsupportedOpError: a
        Sigmoid/Tanh layer; ConfigError: bad options.

    Example::

        net = to_network(load_onnx("mnist_relu_3_50.onnx"))
        sparse, report = sparsify(net, x[:200], y[:200], SparsifyOptions(epsilon=0.1))
        print(report.table())
    """
    opts = (options or SparsifyOptions()).validate()
    start = time.perf_counter()
    x, y = check_inputs(network, x_val, y_val)
    _, segments = split_segments(network)
    targets = _targets(len(segments), opts.layers)
    if opts.check_onnx:
        original_model = export_checked(network)
        f32 = onnx_affine_outputs(original_model, network, segments, x)
    else:
        f32 = affine_outputs(network, x, segments, np.float32)
    ref = build_reference(network, x, y, opts.margin, f32)
    if len(ref.x) == 0:
        raise VnnxError(f"vnn-lp: all {len(x)} validation samples are degenerate for this network "
                        f"({ref.degenerate_reasons}); nothing to keep")
    reports = [layer_report(seg.affine, network.layers[seg.affine]) for seg in segments]
    spec = ExecutorSpec(jobs=int(opts.workers), scheduler=opts.scheduler, local_cluster=opts.local_cluster)
    with open_executor(spec) as executor:
        current, accepted = _sparsify_layers(network, ref, segments, targets, reports, opts, executor)
    current, final, model = _final_check(current, ref, accepted, reports, opts, network)
    if out is not None:
        from vnnx.io.onnx import write_atomic

        if model is None:
            model = export_checked(current)
        write_atomic(out, model.SerializeToString())
    for rep in reports:
        rep.nnz_after = nonzeros(current.layers[rep.index])
        rep.l1_after = l1_norm(current.layers[rep.index])
    report = SparsifyReport(opts.as_dict(), len(x), len(ref.x), ref.n_degenerate, ref.degenerate_reasons,
                            int(ref.argmax_exempt.sum()), reports, final.as_dict(), time.perf_counter() - start)
    return current, report


def _sparsify_layers(network: Network, ref: Reference, segments, targets: list[int], reports: list[LayerReport],
                     opts: SparsifyOptions, executor: Executor) -> tuple[Network, list]:
    """Each target layer in turn: its LPs, then the step check; returns (network, accepted)."""
    current = network
    accepted: list[tuple[int, object]] = []          # (layer index, original layer) in order
    for t in _progress(targets, opts.progress, desc="vnn-lp layers"):
        seg = segments[t]
        rep = reports[t]
        t0 = time.perf_counter()
        try:
            theta = solve_layer(current, ref, t, opts, rep, executor)
        except VnnxError as exc:
            theta = None
            rep.message = f"solver error: {exc}"
        if theta is None:
            rep.status = "fallback"
        else:
            new_layer, check = _accept(current, ref, seg.affine, theta, opts, network)
            if new_layer is None:
                rep.status = "fallback"
                rep.message = (rep.message + "; " if rep.message else "") + \
                    f"guarantee check failed after the LP ({check.violations}); original weights kept"
            else:
                accepted.append((seg.affine, current.layers[seg.affine]))
                current = _with_layer(current, seg.affine, new_layer)
                rep.status = "partial" if rep.groups_kept_original else "sparsified"
        rep.nnz_after = nonzeros(current.layers[seg.affine])
        rep.l1_after = l1_norm(current.layers[seg.affine])
        rep.seconds = time.perf_counter() - t0
    return current, accepted


def _accept(network: Network, ref: Reference, k: int, theta: np.ndarray, opts: SparsifyOptions, original: Network):
    """The new layer k for parameters ``theta`` if the network then passes the step check:
    first with weights |w| <= zero_tol set to 0, else as solved. Returns (layer or None, check)."""
    make = _layer_factory(network.layers[k])
    rounded = np.where(np.abs(theta) <= opts.zero_tol, 0.0, theta)
    check = None
    for cand in ([rounded, theta] if np.any(rounded != theta) else [theta]):
        layer = make(cand)
        check = check_network(_with_layer(network, k, layer), ref, opts.margin_tol, original)
        if check.passed:
            return layer, check
    return None, check


def _layer_factory(layer):
    """θ -> layer, with the θ layout of :class:`Parametrisation` (which needs no inputs for it)."""
    from vnnx.network import Conv, Dense

    G = layer.weight.shape[0]
    K = int(np.prod(layer.weight.shape[1:]))

    def make(theta: np.ndarray):
        w = theta[:G * K].reshape(layer.weight.shape).copy()
        b = theta[G * K:].copy()
        if isinstance(layer, Dense):
            return Dense(w, b, layer.in_shape, layer.out_shape)
        return Conv(w, b, layer.in_shape, layer.out_shape, layer.stride, layer.padding, layer.dilation, layer.groups)

    return make


def _final_check(network: Network, ref: Reference, accepted: list, reports: list[LayerReport],
                 opts: SparsifyOptions, original: Network):
    """Check the exported network in onnxruntime; restore the last sparsified layers until it
    passes (each such prefix state passed its step check; the original passes by the
    construction of the kept set). Returns (network, check, checked ONNX model or None)."""
    by_index = {r.index: r for r in reports}
    while True:
        model = None
        if opts.check_onnx:
            model = export_checked(network)
            check = check_onnx(model, network, ref, opts.margin_tol, original)
        else:
            check = check_network(network, ref, opts.margin_tol, original)
        if check.passed or not accepted:
            if not check.passed:
                raise VnnxError(f"vnn-lp: the original network fails its own float32 check ({check.violations}); "
                                "this is a bug in the degenerate-sample filter")
            return network, check, model
        k, old_layer = accepted.pop()
        network = _with_layer(network, k, old_layer)
        rep = by_index[k]
        rep.status = "fallback"
        rep.message = (rep.message + "; " if rep.message else "") + \
            f"restored: the exported file failed the onnxruntime check ({check.violations})"
