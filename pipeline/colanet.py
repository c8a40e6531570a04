"""CoLaNET: the spiking classifier of stage two (typed records and public API).

The algorithm is ``shared/spec/colanet.md``; this module fixes every choice
the spec leaves open so that the Numba kernels (:mod:`pipeline.colanet_kernels`)
and the plain NumPy reference (:mod:`pipeline.colanet_reference`) compute the
*same* thing: identical spikes, votes and state arrays, bit for bit
(``tests/test_differential.py``).

Network
-------
``E`` independent copies (ensemble).  Each copy has ``C`` columns (one per
class) of ``M`` plastic L neurons, ``N = C * M``; neuron ``n`` belongs to
column ``n // M``.  Every input ``j`` (``D`` of them) feeds every L neuron
through a plastic synapse with resource ``r`` and weight ``w(r)``.  OUT and
GATE neurons of each column are logic, not simulated membranes.

Time
----
A sample occupies ``P = present_ticks + silent_ticks`` (15) global ticks;
local tick ``k = 0..P-1``, global tick ``t = t0 + k`` with ``t0 = state.t`` at
the sample's start (``state.t`` advances continuously over samples).  Input
spikes are emitted at local ticks ``0..present_ticks-1`` and arrive at the L
neurons ``input_delay`` ticks later (ticks 1..10 with the defaults).

Rate coding
-----------
``d_j = clip(x_j / sat, 0, 1)`` (0 for ``x_j <= 0``).

* ``coder="accumulator"``: ``acc_j`` (float64) is zeroed at each sample start
  unless ``carry_accumulator``; each presentation tick ``acc_j += d_j`` and,
  if ``acc_j >= 1``, input ``j`` spikes and ``acc_j -= 1``.  A feature at
  ``sat`` spikes 10 times, one at ``sat/2`` five times, one ``<= 0`` never.
* ``coder="bernoulli"``: spike when ``U(seed, sample_index, k, j) < d_j``.

All randomness is a counter-based hash (splitmix64 finaliser of a chained
key, 53-bit float), never a stateful generator, so results do not depend on
chunking, threads or resume point.  Noise is keyed by
``(seed, copy, stream, sample_index, k, n)`` with stream 0 in training and 1
in inference.  ``sample_index`` is the sample's global id: give a sample
seen in a second epoch a new id if it should get new noise.

Per tick, per copy, in this order
---------------------------------
1. ``k == 0``: ``u = 0`` for all neurons; column blocks are cleared.
2. Leak and noise: ``u = u * (1 - 1/tau) + s_stim * U(...)``.
3. Input: if inputs arrive this tick and the neuron's column is not blocked
   (``t < block_until[c]``, the neuron that set the block is exempt):
   ``u += g * I`` with ``I = sum_j w[j, n]`` over the arriving inputs in
   ascending ``j``, accumulated in float64.  Then ``u = max(u, 0)``.
4. Unforced spikes: in each column, among neurons with
   ``u >= theta0 + theta_add`` only the most depolarised fires (ties: lowest
   index); the others keep their ``u``.  With ``firing="all_above_threshold"``
   every one of them fires.  A spike sets ``u = 0``, is one OUT vote for its
   column (``t_out[c] = t``) and, with ``blocking="column"``, sets
   ``block_until[c] = t + block_ticks`` with the spiker exempt (the most
   depolarised spiker, when several fire; ``block_span="block_ticks"``:
   ``t + block_ticks + 1``, so that the ``block_ticks`` ticks after the spike
   are gated, not ``block_ticks - 1``).
   Burst bookkeeping: the neuron is *in a burst* when ``t - t_spike < isi_max``
   and, with ``burst_scope="sample"`` (default), ``t_spike >= t0`` (its last
   spike was in this sample: bursts end with their sample, like ``u`` and the
   blocks).  In a burst the spike continues it (status 3, or stays 1 if the
   burst is forced), else a burst starts (status 2, ``t_first = t``);
   ``t_spike = t``.
   Training: anti-Hebbian step (below).
5. Teacher (training only), label ``y``:
   at ``label_tick`` GATE y fires unless ``t_out[y] > t - gate_ticks``
   (``gate_ticks=None``: ``block_ticks``); with ``gate_scope="sample"``,
   unless ``t_out[y] >= t0`` (column y answered in this sample);
   if it fired, at ``force_tick`` the most depolarised L neuron of column y
   (ties: lowest index; ``forcing="all"``: every one) that did not spike in
   step 4 of this tick is forced: ``u = 0``, ``t_spike = t``, burst status 1
   (forced), ``t_first = t`` if it was not in a burst, and its threshold falls
   (``theta_shift -= theta_fall``); no vote, no block, no anti-Hebbian step.
   At ``dopamine_tick`` every L neuron of column y receives dopamine
   ``Dp = dopamine`` (step below); then every neuron outside column y that
   fired in this sample (``t_spike >= t0``), a spike no dopamine rewarded,
   raises its threshold: ``theta_shift += theta_rise``.
6. Conservation (training only) for every neuron.

Plasticity (training only)
--------------------------
"Input j arrived in [a, b]" is a test on the arrival history, which keeps the
last 64 ticks: windows reaching further back are clipped to ``[t - 63, t]``.
Every resource change is ``dr * min(2^-S, 1)`` and is mirrored into the
neuron's free pool (``F -= dr * count``); touched weights are recomputed,
``w = w(r)``, and ``theta_add = k_thr * (g * sum_j max(w_jn, 0)) + theta_shift``
after every change that moved a weight or the shift (the sum in float64 in a fixed order: 8
partial sums over ``j % 8``, combined pairwise; see
:func:`pipeline.colanet_kernels.positive_weight_sum`).  With ``theta_refresh="anti_hebbian"``
``theta_add`` is set that way at every anti-Hebbian step (whether or not a
weight moved) and nowhere else: dopamine and conservation leave it as it is
(a threshold adaptation step adds its change to it).
Contribution windows start ``L`` ticks before the burst's first spike, with
``L = t_syn`` (``t_syn + 1`` ticks for a lone spike) or, with
``syn_window="t_syn"``, ``L = t_syn - 1`` (``t_syn`` ticks).

* Anti-Hebbian, at each unforced spike: inputs that arrived in
  ``[t_first - L, t]`` and not in ``[t_first - L, last_ah_tick]``
  (when ``last_ah_tick >= t_first``, i.e. already depressed in this burst) get
  ``dr = d_h``; then ``last_ah_tick = t``.
* Dopamine: if ``t - t_spike <= t_dop`` the inputs that arrived in
  ``[t_first - L, t_spike]`` get ``dr = Dp``.  Then stability: if the
  neuron's last burst is forced ``S = max(0, S - r_s*Dp)``, else
  ``S = max(0, S + r_s*Dp*max(2 - |t - t_first - isi_max| / isi_max, -1))``.
* Conservation, at the end of every tick: a neuron out of a burst (see
  step 4) with ``|F| >= f_thr`` gets
  ``r[:, n] += F / (D + n_silent)`` on all its synapses and ``F = 0``.

Synaptic resource: ``w(r) = w_min + span * r+ / (span + r+)`` with
``span = w_max - w_min``; inverse ``r(w) = (w - w_min) * span / (w_max - w)``.
Synapses start at ``r = r(0)`` (weight 0).

Precision: ``r``, ``w`` float32 (changes are done in float64 and rounded),
``u``, ``theta_add``, ``S``, ``F`` and currents float64.

Readout: votes per class summed over copies; argmax (ties: lowest class); a
sample with no vote at all is "not answered".
"""

from __future__ import annotations

import collections
import dataclasses
from dataclasses import dataclass
from typing import Annotated, NamedTuple

import numpy as np

from . import colanet_kernels as K

NEVER = K.NEVER

_CODERS = ("accumulator", "bernoulli")
_FORCINGS = ("most_depolarised", "all")
_BLOCKINGS = ("column", "none")
_BURST_SCOPES = ("sample", "continuous")
_SAT_SCOPES = ("feature", "global")
_CODINGS = ("saturation", "centred", "on_off", "whitened")
_ORDERS = ("store", "balanced", "sqrt", "equal")
_FIRINGS = ("column_argmax", "all_above_threshold")
_THETA_REFRESHES = ("every_change", "anti_hebbian")
_GATE_SCOPES = ("window", "sample")
_SYN_WINDOWS = ("t_syn+1", "t_syn")
_BLOCK_SPANS = ("block_ticks-1", "block_ticks")

#: The string fields and their allowed values (the first one of each tuple is not necessarily the
#: default: see the fields).
_CHOICES = {"coder": _CODERS, "forcing": _FORCINGS, "blocking": _BLOCKINGS,
            "burst_scope": _BURST_SCOPES, "sat_scope": _SAT_SCOPES, "coding": _CODINGS,
            "firing": _FIRINGS, "theta_refresh": _THETA_REFRESHES, "gate_scope": _GATE_SCOPES,
            "syn_window": _SYN_WINDOWS, "block_span": _BLOCK_SPANS, "order": _ORDERS}

_FLOAT_FIELDS = ("tau", "theta0", "k_thr", "s_stim", "w_min", "w_max", "gain_total", "d_h",
                 "dopamine", "r_s", "f_thr", "sat_percentile", "copy_share", "input_share",
                 "whiten_shrinkage", "theta_rise", "theta_fall")
_INT_FIELDS = ("t_syn", "isi_max", "t_dop", "n_silent", "m", "e", "present_ticks", "silent_ticks",
               "block_ticks", "label_tick", "force_tick", "dopamine_tick", "input_delay", "seed",
               "class_floor")


@dataclass(frozen=True)
class ColanetConfig:
    """The whole model configuration of a CoLaNET ensemble: network, plasticity, the readings of
    the spec as named choices, and the input coding. Frozen and validated on construction; its
    ``to_dict`` is what a checkpoint stores and a resume compares whole. Each field's one-line
    help is its ``Annotated`` metadata (the command line's option help).

    Coding: the rate coder's saturation level ``sat`` is the ``sat_percentile`` of the positive
    train features, one level per feature (``sat_scope="feature"``: ``d_j = clip(x_j / sat_j, 0,
    1)``) or one for all (``"global"``, the spec); the resolved levels are stored beside the model.
    ``coding`` says what is coded: ``"saturation"`` (the spec) codes the features as they are;
    ``"centred"`` first subtracts each feature's train-split mean, so only above-average activity
    spikes (the levels are then percentiles of the centred features); ``"on_off"`` codes both
    signs of the centred features as two inputs each (``max(x - mean, 0)``, ``max(mean - x, 0)``:
    ``2 D`` inputs, :func:`coded_inputs`); ``"whitened"`` codes the positive part of the
    features decorrelated on the train split: ``z = (sqrt±(x) - mean) W`` with the shrunk ZCA map
    ``W = ((1 - a) Cov + a tr(Cov)/D I)^(-1/2)``, ``a = whiten_shrinkage``, ``sqrt±`` the signed
    square root (label-free statistics of the train split, stored with the model; a nearest
    class mean on such features approaches a linear probe, docs/accuracy.md). The kernels never
    read ``coding``: the training engine codes the features before they reach them.
    Views (whitened coding): the copies are split into ``n_views`` contiguous groups
    (:func:`copy_groups`; ``views``, by default one per copy), each coding its own view of the
    whitened inputs: view 0 is ``z`` itself, view ``v`` is ``z R_v`` with ``R_v`` a seeded
    random rotation of groups of 32 inputs (:func:`pipeline.streaming.view_rotations`; label
    free, stored with the model). A rotation keeps the distances (what a prototype can tell
    apart), but the positive parts the coder spikes on differ, so the copies err on different
    samples and their summed votes gain (docs/accuracy.md, eleventh round). The coder then codes
    ``n_views D`` inputs; a copy of view ``v`` sees inputs ``v D .. (v+1) D - 1`` as its ``D``.

    Presentation: ``order="store"`` learns the train split in store order (later passes shuffle
    each stretch); ``"balanced"`` shows each sample of class c ``max(1, n_mean / n_c)`` times in
    expectation (integer part always, the fraction by a seeded draw), each stretch shuffled, so a
    small class is learned about as often as the mean class (``n_c``: the class's train rows);
    ``"equal"`` shows it ``n_mean / n_c`` times, so every class is presented ``n_mean`` times a
    pass (a large class a fresh seeded subsample each pass) and a pass stays N presentations;
    ``"sqrt"`` lies between: ``1 / sqrt(n_c)`` scaled to N presentations a pass.
    ``class_floor`` raises the mean class of ``"balanced"`` and ``"equal"`` to at least that many
    presentations a pass: ``n_mean`` above is ``max(n_mean, class_floor)``, so on data with few
    rows a class every class's rows are repeated within the pass (0: the mean class as it is).
    ``copy_share`` below 1 makes the copies differ in what they learn (bagging): copy e sits out
    training sample i, neither learning from it nor voting on it, when the counter-based uniform
    of (seed, e, i) is ``>= copy_share``; sitting out leaves its state as it was.
    ``input_share`` below 1 makes them differ in what they see (random subspaces): copy e sees
    input j only when the counter-based uniform of (seed, e, j) is ``< input_share``; an input a
    copy does not see never arrives at it (its synapses there move only by conservation).

    Equations (details and the exact per-tick order: module docstring):

    * L neuron:  ``u <- u (1 - 1/tau) + s_stim U[0,1) + g sum_j w_jn s_j``,
      spike when ``u >= theta0 + theta_add``, then ``u = 0``; ``u >= 0``.
    * Weight of resource: ``w(r) = w_min + (w_max-w_min) r+ / (w_max-w_min + r+)``.
    * Threshold growth: ``theta_add = k_thr * sum_j max(g w_jn, 0) + theta_shift``.
    * Threshold adaptation: ``theta_shift += theta_rise`` at ``dopamine_tick`` for a neuron
      outside column y that fired in the sample (a spike that got no dopamine);
      ``theta_shift -= theta_fall`` at each forced spike.
    * Anti-Hebbian: ``dr = d_h`` on contributed synapses at unforced spikes.
    * Dopamine: ``dr = dopamine`` on contributed synapses of column y's
      neurons that spiked within ``t_dop`` ticks.
    * Every ``dr`` is scaled by ``min(2^-S, 1)`` and mirrored ``F -= dr``.
    * Stability: ``S -= r_s Dp`` (forced) or
      ``S += r_s Dp max(2 - |t - t_first - isi_max|/isi_max, -1)``, ``S >= 0``.
    * Conservation: ``r_jn += F / (D + n_silent)`` when ``|F| >= f_thr`` and the
      neuron is out of a burst.

    ``gain=None`` means ``gain_total / n_inputs`` (see :meth:`resolved_gain`).

    Defaults: the spec's table, except those chosen on validation data by
    ``bench/defaults.py`` (see docs/accuracy.md): ``gain_total`` 1263 (spec:
    640), ``d_h``, ``dopamine``, ``r_s``, ``k_thr``, ``s_stim``, ``m`` 8,
    ``e`` 13, ``forcing="all"``, ``blocking="none"``, ``burst_scope="sample"``,
    the coding (``sat_percentile`` 97.29 per feature; ``coding="whitened"`` with
    ``whiten_shrinkage`` 0.95, chosen by 5-fold validation in the seventh round) and the
    presentation (``order="balanced"``) and the threshold adaptation (``theta_rise`` and
    ``theta_fall`` 0.5, chosen by 5-fold validation in the tenth round; 0 and 0 turn it off,
    the behaviour before it), the views (one per copy, eleventh round) and bagging
    (``copy_share`` 0.8, twelfth round; 1: every copy learns every sample, the behaviour
    before it) and the floor of presentations a class (``class_floor`` 50, twelfth round; 0: the
    behaviour before it).
    Named choices: ``coder`` ("accumulator" | "bernoulli"),
    ``carry_accumulator`` (keep the accumulator across training samples),
    ``forcing`` ("most_depolarised" | "all"), ``blocking`` ("column" |
    "none"), ``burst_scope`` ("sample": a burst ends when its sample ends, as
    the potential and the blocks are reset there | "continuous": spikes less
    than ``isi_max`` apart chain across samples, as in the sources), ``seed``
    (key of all counter-based randomness).

    Readings of the spec (docs/accuracy.md, "Readings of the spec, as named options"); each
    default keeps the simulator's earlier behaviour, the spec's reading is the other value:

    * ``firing``: ``"column_argmax"`` (default): per column and tick only the most depolarised
      neuron above threshold fires (ties: lowest index), whatever ``blocking`` says |
      ``"all_above_threshold"`` (spec: "fire when u >= theta"): every neuron above threshold
      fires, each spike one vote; with ``blocking="column"`` the most depolarised of them sets
      the block and is exempt from it.
    * ``theta_refresh``: ``"every_change"`` (default): ``theta_add`` follows the weights after
      every change (anti-Hebbian step, dopamine, conservation) | ``"anti_hebbian"`` (spec:
      "Recompute theta_add" in the anti-Hebbian step only): it is recomputed from the current
      weights at every unforced spike and left as it is after dopamine and conservation (it is
      then state of its own, and a checkpoint stores it).
    * ``gate_scope``: ``"window"`` (default): GATE y fires at ``label_tick`` unless column y's
      OUT fired within the last ``gate_ticks`` ticks (``t_out[y] > t - gate_ticks``), so an
      answer early in the sample does not silence it | ``"sample"`` (spec: "If column y has not
      answered in this sample, GATE y fires"): any OUT spike of column y in this sample
      silences it (``gate_ticks`` unused).
    * ``gate_ticks``: the GATE's silence after an OUT spike with ``gate_scope="window"``;
      ``None`` (default) reuses ``block_ticks``; the spec: 10 ("OUT c silences GATE c for 10
      ticks").
    * ``syn_window``: ``"t_syn+1"`` (default): a synapse contributed to a spike at t if its input
      arrived in ``[t - t_syn, t]``, ``t_syn + 1`` ticks (bursts: ``[t_first - t_syn, ...]``) |
      ``"t_syn"`` (spec: "within the last T_syn = 10 ticks"): ``[t - t_syn + 1, t]``.
    * ``block_span``: ``"block_ticks-1"`` (default): an unforced spike at t sets
      ``block_until = t + block_ticks``, gating the column's input on the ``block_ticks - 1``
      ticks after it | ``"block_ticks"`` (spec: "blocks ... for 10 ticks"):
      ``block_until = t + block_ticks + 1``, the ``block_ticks`` ticks after it.
    """

    tau: Annotated[float, "membrane time constant in ticks (leak 1 - 1/tau)"] = 5.0
    theta0: Annotated[float, "base firing threshold of the L neurons"] = 8.531
    k_thr: Annotated[float, "threshold growth: theta_add = k_thr * g * sum of positive weights"
                     ] = 0.0007989
    s_stim: Annotated[float, "membrane noise: u += s_stim * U[0, 1) every tick"] = 1.882
    w_min: Annotated[float, "lowest synaptic weight (resource <= 0)"] = -1.634
    w_max: Annotated[float, "highest synaptic weight (approached as the resource grows)"] = 1.714
    gain: Annotated[float | None,
                    "input gain g of every synaptic current (default: gain_total / n_inputs)"
                    ] = None
    gain_total: Annotated[float, "g = gain_total / n_inputs when gain is not set"] = 1263.0
    d_h: Annotated[float, "anti-Hebbian resource step of contributed synapses (<= 0)"] = -0.4362
    dopamine: Annotated[float, "dopamine resource step of the label column's recent spikers"
                        ] = 0.5618
    t_syn: Annotated[int, "contribution window: inputs that arrived this recently contributed"
                     ] = 10
    isi_max: Annotated[int, "spikes less than this many ticks apart form a burst"] = 10
    t_dop: Annotated[int, "dopamine reaches a neuron that spiked within this many ticks"] = 15
    r_s: Annotated[float, "stability rate (plasticity scales by min(2^-S, 1))"] = 0.07294
    # Threshold adaptation (tenth round, chosen by 5-fold validation; docs/accuracy.md).
    theta_rise: Annotated[float, "a neuron that fired in a sample of another class raises its "
                                 "threshold by this much at dopamine_tick (0: no adaptation)"
                          ] = 0.5
    theta_fall: Annotated[float, "a forced spike lowers the neuron's threshold by this much "
                                 "(0: no adaptation)"] = 0.5
    n_silent: Annotated[int, "fictitious synapses that absorb part of the conserved resource"] = 9
    f_thr: Annotated[float, "the free resource pool F is spread back when |F| >= f_thr"] = 1.0
    m: Annotated[int, "L neurons (microcolumns) per class"] = 8
    e: Annotated[int, "ensemble copies (their votes are summed)"] = 13
    present_ticks: Annotated[int, "ticks on which a sample's input spikes are emitted"] = 10
    silent_ticks: Annotated[int, "silent ticks after the presentation"] = 5
    block_ticks: Annotated[int, "lateral block of a column after an unforced spike (blocking "
                                "column; see block_span)"] = 10
    label_tick: Annotated[int, "local tick at which the label reaches the GATE"] = 11
    force_tick: Annotated[int, "local tick at which a firing GATE forces the label column"] = 13
    dopamine_tick: Annotated[int, "local tick at which the label column receives dopamine"] = 14
    input_delay: Annotated[int, "ticks from an input spike to its arrival at the L neurons"] = 1
    coder: Annotated[str, "rate coder: accumulator | bernoulli"] = "accumulator"
    carry_accumulator: Annotated[bool, "keep the accumulator coder's state from sample to sample"
                                 ] = False
    forcing: Annotated[str, "the teacher forces the most_depolarised or all L neurons of the "
                            "label column"] = "all"
    blocking: Annotated[str, "an unforced spike blocks the input of its column's other neurons "
                             "(column) or not (none)"] = "none"
    burst_scope: Annotated[str, "a burst ends with its sample (sample) or chains across samples "
                                "(continuous)"] = "sample"
    seed: Annotated[int, "key of all counter-based randomness (noise, Bernoulli coder)"] = 0
    # Coding (spec: 99 and one global level; chosen on validation data, see docs/accuracy.md).
    sat_percentile: Annotated[float, "coder saturation: this percentile of the positive train "
                                     "features"] = 97.29
    sat_scope: Annotated[str, "one saturation level per feature (feature) or one for all "
                              "(global)"] = "feature"
    coding: Annotated[str, "code the features as they are (saturation), minus their train-split "
                           "mean (centred), or both signs of that as two inputs (on_off), or "
                           "decorrelated on the train split (whitened)"
                      ] = "whitened"
    whiten_shrinkage: Annotated[float, "coding whitened: the share of the identity in the "
                                       "shrunk covariance that is whitened (1: no whitening)"
                                ] = 0.95
    views: Annotated[int | None, "coding whitened: groups of copies, each coding its own seeded "
                                 "rotation of the whitened inputs (default: one per copy; 1: "
                                 "all copies code the same)"] = None
    # Presentation (chosen on validation data like the rest; docs/accuracy.md).
    order: Annotated[str, "present the train split in store order (store), with each class "
                          "shown at least as often as the mean class (balanced), every class "
                          "equally often, large ones subsampled (equal), or in between, a "
                          "sample 1/sqrt(n_c) times, scaled to N a pass (sqrt)"] = "balanced"
    class_floor: Annotated[int, "orders balanced and equal: every class is presented at least "
                                "this many times a pass, its rows repeated (0: as often as the "
                                "mean class only)"] = 50
    copy_share: Annotated[float, "each copy learns from this share of the training samples, its "
                                 "own seeded draw (bagging; 1: every copy learns every sample)"
                          ] = 0.8
    input_share: Annotated[float, "each copy sees this share of the inputs, its own seeded draw "
                                  "(random subspaces; 1: every copy sees every input)"] = 1.0
    # Readings of the spec (see the docstring and docs/accuracy.md; defaults: the earlier
    # behaviour, the other value: the spec's).
    firing: Annotated[str, "per column and tick the most depolarised neuron above threshold fires "
                           "(column_argmax) or every one (all_above_threshold: spec)"
                      ] = "column_argmax"
    theta_refresh: Annotated[str, "theta_add follows the weights after every_change or only at "
                                  "the anti_hebbian step (spec)"] = "every_change"
    gate_scope: Annotated[str, "the GATE is silenced by an OUT spike within gate_ticks (window) or "
                               "any time in the sample (sample: spec)"] = "window"
    gate_ticks: Annotated[int | None, "GATE silence after an OUT spike with gate_scope window "
                                      "(default: block_ticks; spec: 10)"] = None
    syn_window: Annotated[str, "the contribution window spans t_syn+1 ticks or t_syn (spec)"
                          ] = "t_syn+1"
    block_span: Annotated[str, "a block gates the block_ticks-1 ticks after its spike or "
                               "block_ticks (spec)"] = "block_ticks-1"

    def __post_init__(self):
        def bad(name, why):
            raise ValueError(f"ColanetConfig.{name}={getattr(self, name)!r}: {why}")

        for name in _FLOAT_FIELDS:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                bad(name, "must be a number")
            if not np.isfinite(v):
                bad(name, "must be finite")
            object.__setattr__(self, name, float(v))
        for name in _INT_FIELDS:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                bad(name, "must be an integer")
            object.__setattr__(self, name, int(v))
        if self.gain is not None:
            if isinstance(self.gain, bool) or not isinstance(self.gain, (int, float, np.integer, np.floating)):
                bad("gain", "must be a positive number or None (None: gain_total / n_inputs)")
            if not (np.isfinite(self.gain) and self.gain > 0):
                bad("gain", "must be a positive finite number or None")
            object.__setattr__(self, "gain", float(self.gain))
        if self.gate_ticks is not None:
            if isinstance(self.gate_ticks, bool) or not isinstance(self.gate_ticks, (int, np.integer)):
                bad("gate_ticks", "must be an integer >= 0 or None (None: block_ticks)")
            if self.gate_ticks < 0:
                bad("gate_ticks", "must be >= 0 or None (None: block_ticks)")
            object.__setattr__(self, "gate_ticks", int(self.gate_ticks))
        if not isinstance(self.carry_accumulator, (bool, np.bool_)):
            bad("carry_accumulator", "must be a bool")
        object.__setattr__(self, "carry_accumulator", bool(self.carry_accumulator))
        if self.tau < 1.0:
            bad("tau", "must be >= 1 (leak factor 1 - 1/tau in [0, 1))")
        if not 0 <= self.class_floor <= 1000:  # above, a stretch's repeated rows may not fit memory
            bad("class_floor", "must lie between 0 and 1000: the fewest presentations of a class "
                               "a pass")
        if not 0.0 < self.copy_share <= 1.0:
            bad("copy_share", "must lie in (0, 1]: the share of the training samples each copy "
                              "learns from")
        if not 0.0 < self.whiten_shrinkage <= 1.0:
            bad("whiten_shrinkage", "must lie in (0, 1]: the identity's share of the shrunk "
                                    "covariance (0 would invert a singular one)")
        if self.views is not None:
            if isinstance(self.views, bool) or not isinstance(self.views, (int, np.integer)):
                bad("views", "must be an integer in [1, e] or None (unset: one per copy)")
            if not 1 <= self.views <= self.e:
                bad("views", f"must lie in [1, e={self.e}]: each view is coded by a group of "
                             f"copies (unset: one per copy)")
            if self.views > 1 and self.coding != "whitened":
                bad("views", "needs coding='whitened' (a view is a rotation of the whitened "
                             "inputs)")
            object.__setattr__(self, "views", int(self.views))
        if not 0.0 < self.input_share <= 1.0:
            bad("input_share", "must lie in (0, 1]: the share of the inputs each copy sees")
        if self.theta0 <= 0:
            bad("theta0", "must be > 0")
        if self.k_thr < 0:
            bad("k_thr", "must be >= 0")
        if self.s_stim < 0:
            bad("s_stim", "must be >= 0")
        if not self.w_min < 0:
            bad("w_min", "must be < 0 (synapses start at weight 0)")
        if not self.w_max > 0:
            bad("w_max", "must be > 0 (synapses start at weight 0)")
        if self.d_h > 0:
            bad("d_h", "must be <= 0 (anti-Hebbian depression)")
        if self.dopamine < 0:
            bad("dopamine", "must be >= 0 (only positive dopamine in this version)")
        if self.r_s < 0:
            bad("r_s", "must be >= 0")
        for name in ("theta_rise", "theta_fall"):
            if getattr(self, name) < 0:
                bad(name, "must be >= 0 (0: the threshold does not adapt that way)")
        if self.gain_total <= 0:
            bad("gain_total", "must be > 0")
        if self.f_thr <= 0:
            bad("f_thr", "must be > 0")
        for name in ("t_syn", "t_dop", "n_silent", "block_ticks", "input_delay", "silent_ticks", "seed"):
            if getattr(self, name) < 0:
                bad(name, "must be >= 0")
        if self.seed >= 2**63:
            bad("seed", "must be < 2**63")
        for name in ("isi_max", "m", "e", "present_ticks"):
            if getattr(self, name) < 1:
                bad(name, "must be >= 1")
        if self.period >= K.HISTORY:
            bad("present_ticks" if self.present_ticks >= K.HISTORY else "silent_ticks",
                f"period present_ticks + silent_ticks = {self.present_ticks} + "
                f"{self.silent_ticks} = {self.period} must be < {K.HISTORY}")
        if self.present_ticks - 1 + self.input_delay >= self.period:
            bad("input_delay", f"last arrival (tick {self.present_ticks - 1 + self.input_delay}) "
                               f"must fall inside the period of {self.period} ticks")
        for name in ("label_tick", "force_tick", "dopamine_tick"):
            if not 0 <= getattr(self, name) < self.period:
                bad(name, f"must be a local tick in [0, {self.period})")
        if self.force_tick < self.label_tick:
            bad("force_tick", f"must be >= label_tick={self.label_tick} (GATE decides first)")
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                bad(name, f"must be one of {allowed}")
        if not 0.0 < self.sat_percentile <= 100.0:
            bad("sat_percentile", "must lie in (0, 100]")

    @property
    def period(self) -> int:
        """Ticks per sample: ``present_ticks + silent_ticks``."""
        return self.present_ticks + self.silent_ticks

    @property
    def resolved_gate_ticks(self) -> int:
        """The GATE's silence after an OUT spike (``gate_scope="window"``): ``gate_ticks``, or
        ``block_ticks`` when it is None."""
        return self.block_ticks if self.gate_ticks is None else self.gate_ticks

    def resolved_gain(self, n_inputs: int) -> float:
        """Input gain ``g``: ``gain`` if set, else ``gain_total / n_inputs``."""
        if n_inputs < 1:
            raise ValueError(f"n_inputs={n_inputs!r}: must be >= 1")
        return self.gain if self.gain is not None else self.gain_total / n_inputs

    def n_inputs(self, n_features: int) -> int:
        """Inputs each copy sees (its synapses' input axis) for ``n_features`` embedding
        features (``on_off``: two each)."""
        return 2 * n_features if self.coding == "on_off" else n_features

    @property
    def n_views(self) -> int:
        """Views of the whitened inputs: ``views``, or when it is None one per copy (``e``) with
        the whitened coding and 1 with the others."""
        if self.views is not None:
            return self.views
        return self.e if self.coding == "whitened" else 1

    def n_coded(self, n_features: int) -> int:
        """Inputs the coder codes (the arrival history's and the saturation levels' axis):
        ``n_views`` times :meth:`n_inputs`, one block of inputs per view."""
        return self.n_views * self.n_inputs(n_features)

    def to_dict(self) -> dict:
        """JSON-friendly dict of all fields (stored in checkpoints)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ColanetConfig":
        """Inverse of :meth:`to_dict`; unknown keys are refused, missing keys
        take their defaults."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"ColanetConfig.from_dict: unknown keys {unknown}")
        return cls(**d)

    @classmethod
    def from_recorded(cls, d: dict) -> "ColanetConfig":
        """The config a run, checkpoint or model file recorded as ``d``: :meth:`from_dict` of
        :func:`recorded_settings`."""
        return cls.from_dict(recorded_settings(d))


#: Fields whose default is not the behaviour from before they existed: the value a record
#: (config.json, checkpoint, model file) that lacks them ran with.
EARLIER_VALUES = {"theta_rise": 0.0, "theta_fall": 0.0, "views": 1, "class_floor": 0}


def recorded_settings(d: dict) -> dict:
    """Every setting a record (config.json, checkpoint, model file) ran with, as a dict: ``d``,
    and for a field newer than the record the value it then ran with, its
    :data:`EARLIER_VALUES` entry or else its default (the earlier behaviour). Not validated:
    callers that compare or list settings keep a damaged or newer record's keys as they are."""
    return {**ColanetConfig().to_dict(), **EARLIER_VALUES, **d}


def weight_of(r, params: ColanetConfig):
    """Weight of resource, ``w(r) = w_min + span r+ / (span + r+)``, computed in
    float64 and returned as float32 (array or scalar)."""
    span = params.w_max - params.w_min
    rp = np.maximum(np.asarray(r, dtype=np.float64), 0.0)
    return (params.w_min + span * rp / (span + rp)).astype(np.float32)


def resource_of(w, params: ColanetConfig):
    """Resource of weight, ``r(w) = (w - w_min) span / (w_max - w)``, the
    inverse of :func:`weight_of` on ``w_min <= w < w_max`` (float32).
    Weights at or above ``w_max`` are refused."""
    span = params.w_max - params.w_min
    w = np.asarray(w, dtype=np.float64)
    if np.any(w >= params.w_max) or np.any(~np.isfinite(w)):
        raise ValueError(f"resource_of: weights must be finite and < w_max={params.w_max}")
    return ((w - params.w_min) * span / (params.w_max - w)).astype(np.float32)


class StateArray(NamedTuple):
    """Declaration of one state array (an entry of :data:`STATE_ARRAYS`)."""

    dtype: type
    axes: str  # a key of AXES: its shape
    rest: float | None  # value in a fresh state (None: the synapses, filled by init_state)
    derived: bool  # rebuilt from r by sync_derived, so a checkpoint leaves it out
    meaning: str


#: Shape of each kind of state array: ``E`` copies, ``D`` inputs a copy sees, ``C`` classes,
#: ``N = C*M`` neurons, ``I = views D`` coded inputs (:meth:`ColanetConfig.n_coded`).  Synapses are
#: input-major so that one input spike adds one contiguous row.
AXES = {"synapse": ("E", "D", "N"), "neuron": ("E", "N"), "column": ("E", "C"), "input": ("I",)}

#: Every array of a :class:`ColanetState`, in order: the one declaration that its fields, its
#: docstring, :func:`init_state`, :func:`state_arrays` / :func:`state_from_arrays`, the shape
#: checks, :func:`state_schema`, the checkpoint functions and the kernels' view
#: (:func:`kernel_state`) are derived from.  Time stamps that never happened hold ``NEVER``.
STATE_ARRAYS: dict[str, StateArray] = {
    "r": StateArray(np.float32, "synapse", None, False, "synaptic resource (unbounded)"),
    "w": StateArray(np.float32, "synapse", None, True, "cached weight w(r)"),
    "u": StateArray(np.float64, "neuron", 0.0, False, "membrane potential"),
    "theta_add": StateArray(np.float64, "neuron", 0.0, True,
                            "extra threshold k_thr g sum_j max(w_jn, 0) (as of its last refresh "
                            "with theta_refresh anti_hebbian, then checkpointed)"),
    "stability": StateArray(np.float64, "neuron", 0.0, False, "stability S"),
    "theta_shift": StateArray(np.float64, "neuron", 0.0, False,
                              "learned threshold offset (threshold adaptation; in theta_add)"),
    "free_pool": StateArray(np.float64, "neuron", 0.0, False, "free resource pool F"),
    "t_first": StateArray(np.int64, "neuron", NEVER, False,
                          "first spike of the current/last burst"),
    "t_spike": StateArray(np.int64, "neuron", NEVER, False, "last spike, forced or not"),
    "last_ah_tick": StateArray(np.int64, "neuron", NEVER, False, "previous anti-Hebbian step"),
    "burst": StateArray(np.int8, "neuron", 0, False,
                        "burst status: 0 none, 1 forced, 2 started, 3 continued"),
    "block_until": StateArray(np.int64, "column", NEVER, False,
                              "the column's inputs are gated while t < block_until"),
    "block_by": StateArray(np.int32, "column", -1, False, "the neuron exempt from the block"),
    "t_out": StateArray(np.int64, "column", NEVER, False, "last OUT spike (vote) of the column"),
    "arrival_bits": StateArray(np.uint64, "input", 0, False,
                               "arrival history of the coded inputs, shared by the copies: bit p "
                               "= an arrival at tick t - 1 - p (t: the next tick)"),
    "acc": StateArray(np.float64, "input", 0.0, False, "accumulator of the rate coder"),
}

#: The state's integer counters: the next global tick, the samples trained.
COUNTERS = ("t", "n_seen")

#: What a checkpoint holds: everything that cannot be rebuilt (not w, not theta_add; but see
#: :func:`checkpointed`).
CHECKPOINTED = tuple(name for name, array in STATE_ARRAYS.items() if not array.derived)


def checkpointed(config: ColanetConfig | None) -> tuple[str, ...]:
    """The arrays a checkpoint of this model holds: :data:`CHECKPOINTED`, and ``theta_add`` too
    with ``theta_refresh="anti_hebbian"``, where it is no longer a function of ``r`` (dopamine
    and conservation move the weights without refreshing it); ``theta_shift`` only when the
    threshold adapts (without adaptation it stays zero, and files written before it lack it)."""
    adapts = config is None or config.theta_rise > 0 or config.theta_fall > 0
    kept_thresholds = config is not None and config.theta_refresh == "anti_hebbian"
    return tuple(name for name in STATE_ARRAYS
                 if (name in CHECKPOINTED and (adapts or name != "theta_shift"))
                 or (kept_thresholds and name == "theta_add"))


class _StateMethods:
    """Sizes and copying of a :class:`ColanetState` (its fields come from STATE_ARRAYS)."""

    @property
    def n_copies(self) -> int:
        return self.r.shape[0]

    @property
    def n_inputs(self) -> int:
        return self.r.shape[1]

    @property
    def n_neurons(self) -> int:
        return self.r.shape[2]

    @property
    def n_classes(self) -> int:
        return self.block_until.shape[1]

    def copy(self) -> "ColanetState":
        """Deep copy."""
        return state_from_arrays({k: v.copy() for k, v in state_arrays(self).items()})


ColanetState = dataclasses.make_dataclass(
    "ColanetState",
    [(name, np.ndarray) for name in STATE_ARRAYS] + [(name, int, 0) for name in COUNTERS],
    bases=(_StateMethods,), namespace={"__module__": __name__})
ColanetState.__doc__ = (
    "All mutable state of an ensemble: one NumPy array per entry of STATE_ARRAYS, then the int "
    "counters t (next global tick) and n_seen (samples trained).\n\n"
    "Arrays (name, dtype, shape, meaning):\n\n"
    + "\n".join(f"* ``{name}`` {np.dtype(a.dtype)} ({', '.join(AXES[a.axes])}): {a.meaning}"
                + (" [derived from r]" if a.derived else "") for name, a in STATE_ARRAYS.items()))

#: The kernels' view of a state: the arrays with a leading copy axis, by name.
EnsembleArrays = collections.namedtuple(
    "EnsembleArrays", [name for name, a in STATE_ARRAYS.items() if AXES[a.axes][0] == "E"])


def kernel_state(state: ColanetState) -> EnsembleArrays:
    """The arrays the training kernel updates in place (views, not copies)."""
    return EnsembleArrays(**{name: getattr(state, name) for name in EnsembleArrays._fields})


def _shape(axes: str, E: int, D: int, C: int, N: int, I: int) -> tuple[int, ...]:
    sizes = {"E": E, "D": D, "C": C, "N": N, "I": I}
    return tuple(sizes[axis] for axis in AXES[axes])


def _schema(names, params: ColanetConfig, n_inputs: int, n_classes: int
            ) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    E, D, C, N, I = params.e, n_inputs, n_classes, n_classes * params.m, params.n_views * n_inputs
    declared = {name: STATE_ARRAYS[name] for name in names}
    schema = {name: (_shape(a.axes, E, D, C, N, I), np.dtype(a.dtype))
              for name, a in declared.items()}
    return {**schema, **{name: ((), np.dtype(np.int64)) for name in COUNTERS}}


def state_schema(params: ColanetConfig, n_inputs: int, n_classes: int
                 ) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of every array :func:`state_arrays` gives for this model size."""
    return _schema(STATE_ARRAYS, params, n_inputs, n_classes)


def checkpoint_schema(config: ColanetConfig, n_inputs: int, n_classes: int
                      ) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of every array :func:`checkpoint_arrays` gives for this model size (the
    checkpoint's contract: a file that differs is refused before it is used)."""
    return _schema(checkpointed(config), config, n_inputs, n_classes)


def init_state(params: ColanetConfig, n_inputs: int, n_classes: int) -> ColanetState:
    """Fresh ensemble: every synapse at ``r = r(0)`` (weight 0), all neuron
    state at rest (zero, time stamps ``NEVER``), ``t = 0``."""
    if n_inputs < 1:
        raise ValueError(f"n_inputs={n_inputs!r}: must be >= 1")
    if n_classes < 1:
        raise ValueError(f"n_classes={n_classes!r}: must be >= 1")
    E, D, C, N = params.e, n_inputs, n_classes, n_classes * params.m
    r0 = np.float32(resource_of(0.0, params))
    # Every synapse alike: fill r and w from one value each (no E x D x N float64 temporaries:
    # at 1000 classes and 15 copies the arrays hold 230 M synapses each).
    st = ColanetState(r=np.full((E, D, N), r0, np.float32),
                      w=np.full((E, D, N), weight_of(r0, params), np.float32),
                      **resting_arrays(E, D, C, N, params.n_views * D))
    st.theta_add[...] = K.theta_of_weights(st.w[0], params.k_thr, params.resolved_gain(D))
    return st


def grow_classes(params: ColanetConfig, state: ColanetState, n_classes: int) -> ColanetState:
    """``state`` grown to ``n_classes`` columns (a new state; ``state`` is not changed): class
    ``c < state.n_classes`` keeps its column, the new classes' columns come after them.

    Driven by :data:`STATE_ARRAYS`' axes, so a new array is grown without touching this function:
    an array with a neuron (``N``) or column (``C``) axis gets the new columns' entries appended
    along it, exactly as :func:`init_state` makes them -- synapses at ``r = r(0)`` (weight 0),
    neuron and column state at rest (zero, ``NEVER``, no burst, no block); the input arrays
    (arrival history, accumulator) and the counters ``t`` and ``n_seen`` are kept, the old
    columns' entries are copied bit for bit. The derived arrays are then rebuilt from ``r``
    (:func:`sync_derived`; with ``theta_refresh="anti_hebbian"`` ``theta_add`` is state of its
    own and is kept, the new neurons' at its fresh value). Neuron ``n`` keeps its index, so its
    noise (keyed by the neuron) is unchanged: with no new sample, the old columns answer as before.
    """
    C = state.n_classes
    if n_classes < C:
        raise ValueError(f"grow_classes: n_classes={n_classes} is fewer than the state's {C}")
    _check_state_shapes(state)
    fresh = init_state(params, state.n_inputs, n_classes - C) if n_classes > C else None
    arrays = {}
    for name, a in STATE_ARRAYS.items():
        old, axes = getattr(state, name), AXES[a.axes]
        grown = [i for i, axis in enumerate(axes) if axis in ("N", "C")]
        arrays[name] = (old.copy() if fresh is None or not grown else
                        np.concatenate([old, getattr(fresh, name)], axis=grown[0]))
    st = ColanetState(**arrays, **{name: getattr(state, name) for name in COUNTERS})
    sync_derived(params, st, thresholds="theta_add" not in checkpointed(params))
    return st


def resting_arrays(E: int, D: int, C: int, N: int, I: int) -> dict[str, np.ndarray]:
    """Every state array but the synapses, at rest: zero potentials, thresholds, pools and
    stability, no burst, no block, every time stamp ``NEVER``, an empty arrival history (of
    ``I`` coded inputs)."""
    return {name: np.full(_shape(a.axes, E, D, C, N, I), a.rest, a.dtype)
            for name, a in STATE_ARRAYS.items() if a.axes != "synapse"}


def sync_derived(params: ColanetConfig, state: ColanetState, thresholds: bool = True) -> None:
    """Recompute the cached weights ``w = w(r)`` and (unless ``thresholds=False``) ``theta_add``
    from ``r`` (in place), e.g. after editing resources by hand.  (With
    ``theta_refresh="anti_hebbian"`` training leaves ``theta_add`` behind the weights; this sets
    it to the weights' value.)"""
    g = params.resolved_gain(state.n_inputs)
    for e in range(state.n_copies):  # one copy at a time bounds the float64 temporaries
        state.w[e] = weight_of(state.r[e], params)
        if thresholds:
            state.theta_add[e] = (K.theta_of_weights(state.w[e], params.k_thr, g)
                                  + state.theta_shift[e])


def _arrays(state: ColanetState, names) -> dict[str, np.ndarray]:
    return {**{name: getattr(state, name) for name in names},
            **{name: np.array(getattr(state, name), np.int64) for name in COUNTERS}}


def state_arrays(state: ColanetState) -> dict[str, np.ndarray]:
    """The whole state as a dict of arrays (for ``np.savez``; counters as 0-d int64)."""
    return _arrays(state, STATE_ARRAYS)


def checkpoint_arrays(state: ColanetState, config: ColanetConfig | None = None
                      ) -> dict[str, np.ndarray]:
    """What a checkpoint holds (:func:`checkpointed`): the arrays that cannot be rebuilt (``r``,
    the neuron, column and input state) and the counters; not ``w``, nor ``theta_add``, which
    :func:`state_from_checkpoint` rebuilds from ``r`` -- except with
    ``theta_refresh="anti_hebbian"``, where ``theta_add`` is kept: pass the ``config``."""
    return _arrays(state, checkpointed(config))


def _read_arrays(arrays, names, caller: str) -> dict:
    missing = sorted(set(names) - set(arrays.keys()))
    if missing:
        raise ValueError(f"{caller}: missing arrays {missing}")
    return {name: np.asarray(arrays[name]) for name in names}


def state_from_arrays(arrays) -> ColanetState:
    """Inverse of :func:`state_arrays` (accepts an ``np.load`` result); checks
    names, dtypes and that the shapes agree."""
    kw = _read_arrays(arrays, [*STATE_ARRAYS, *COUNTERS], "state_from_arrays")
    st = ColanetState(**{name: np.ascontiguousarray(kw[name]) for name in STATE_ARRAYS},
                      **{name: int(kw[name]) for name in COUNTERS})
    _check_state_shapes(st)
    return st


def copy_groups(n_copies: int, n_groups: int) -> list[range]:
    """The copies split into ``min(n_groups, n_copies)`` contiguous groups of near-equal size,
    larger ones first (13 copies in 2 groups: 0..6 and 7..12)."""
    n = max(1, min(n_groups, n_copies))
    sizes = [n_copies // n + (g < n_copies % n) for g in range(n)]
    starts = np.cumsum([0, *sizes])
    return [range(int(a), int(b)) for a, b in zip(starts[:-1], starts[1:])]


def copy_group(state: ColanetState, copies: range) -> ColanetState:
    """The state of ``copies`` (a contiguous range) alone, as a new state (copied arrays): the
    per-copy arrays sliced, the shared ones (the input's arrival history and accumulator) and
    the counters as they are. Train it with ``train_chunk(..., copies=copies)``."""
    return state_from_arrays({
        name: np.array(array[copies.start:copies.stop] if AXES[STATE_ARRAYS[name].axes][0] == "E"
                       else array) if name in STATE_ARRAYS else array
        for name, array in state_arrays(state).items()})


def put_copy_group(state: ColanetState, group: ColanetState, copies: range) -> None:
    """Write a group's state (:func:`copy_group`) back into the whole ``state`` (in place): its
    copies' arrays, and the shared arrays and counters (equal in every group)."""
    for name, a in STATE_ARRAYS.items():
        target = getattr(state, name)
        if AXES[a.axes][0] == "E":
            target[copies.start:copies.stop] = getattr(group, name)
        else:
            target[...] = getattr(group, name)
    for name in COUNTERS:
        setattr(state, name, getattr(group, name))


def state_from_checkpoint(arrays, config: ColanetConfig, n_inputs: int, n_classes: int
                          ) -> ColanetState:
    """Inverse of :func:`checkpoint_arrays` (accepts an ``np.load`` result; other arrays in it
    are ignored): every array must match :func:`checkpoint_schema`; ``w`` and ``theta_add`` are
    rebuilt from ``r`` (:func:`sync_derived`), exactly as training left them (``theta_add`` is
    read from the checkpoint with ``theta_refresh="anti_hebbian"``)."""
    schema = checkpoint_schema(config, n_inputs, n_classes)
    kw = _read_arrays(arrays, schema, "state_from_checkpoint")
    for name, (shape, dtype) in schema.items():
        if kw[name].shape != shape or kw[name].dtype != dtype:
            raise ValueError(f"state_from_checkpoint: {name} is {kw[name].dtype} {kw[name].shape}, "
                             f"expected {dtype} {shape}")
    E, D, C, N, I = config.e, n_inputs, n_classes, n_classes * config.m, config.n_views * n_inputs
    stored = checkpointed(config)
    # Zeros: w and theta_add are rebuilt below; theta_shift, kept only when the threshold adapts,
    # is zero without adaptation.
    derived = {name: np.zeros(_shape(a.axes, E, D, C, N, I), a.dtype)
               for name, a in STATE_ARRAYS.items() if name not in stored}
    st = ColanetState(**{name: np.ascontiguousarray(kw[name]) for name in stored}, **derived,
                      **{name: int(kw[name]) for name in COUNTERS})
    sync_derived(config, st, thresholds="theta_add" not in stored)
    return st


def _check_state_shapes(st: ColanetState) -> None:
    if st.r.ndim != 3 or st.block_until.ndim != 2:
        raise ValueError(f"state.r must be (E, D, N) and state.block_until (E, C), got shapes "
                         f"{st.r.shape} and {st.block_until.shape}")
    E, D, N = st.r.shape
    C = st.block_until.shape[1]
    I = st.acc.shape[0] if st.acc.ndim == 1 else D  # the coded inputs: views blocks of D
    if D < 1 or I % D:
        raise ValueError(f"state: {I} coded inputs do not split into views of {D} inputs")
    for name, a in STATE_ARRAYS.items():
        array, shape = getattr(st, name), _shape(a.axes, E, D, C, N, I)
        if array.dtype != a.dtype:
            raise ValueError(f"state.{name} has dtype {array.dtype}, expected {np.dtype(a.dtype)}")
        if array.shape != shape:
            raise ValueError(f"state.{name} has shape {array.shape}, expected {shape}")
    if C < 1 or N % C:
        raise ValueError(f"state: {N} neurons do not split into {C} columns")


def kernel_params(params: ColanetConfig, n_inputs: int, first_copy: int = 0) -> K.KernelParams:
    """The hyperparameters as the kernels' one typed record, for ``n_inputs`` inputs: the
    config's values, with ``leak = 1 - 1/tau``, ``span = w_max - w_min``, the resolved gain,
    ``period``, the named choices as flags, and the readings' windows resolved:
    ``gate_ticks`` (``block_ticks`` when None), ``syn_lookback`` (a contribution window starts
    ``syn_lookback`` ticks before its first spike: ``t_syn``, or ``t_syn - 1`` with
    ``syn_window="t_syn"``) and ``block_span`` (a block lasts until ``t + block_span``:
    ``block_ticks``, or ``block_ticks + 1`` with ``block_span="block_ticks"``); ``first_copy``:
    the ensemble index of the state's copy 0 (a state of a group of copies, :func:`copy_group`)."""
    return K.KernelParams(
        leak=1.0 - 1.0 / params.tau, theta0=params.theta0, k_thr=params.k_thr,
        s_stim=params.s_stim, w_min=params.w_min, span=params.w_max - params.w_min,
        gain=float(params.resolved_gain(n_inputs)), d_h=params.d_h, dopamine=params.dopamine,
        r_s=params.r_s, theta_rise=params.theta_rise, theta_fall=params.theta_fall,
        f_thr=params.f_thr,
        syn_lookback=params.t_syn - 1 if params.syn_window == "t_syn" else params.t_syn,
        isi_max=params.isi_max, t_dop=params.t_dop, n_silent=params.n_silent, m=params.m,
        present_ticks=params.present_ticks, period=params.period,
        block_span=params.block_ticks + 1 if params.block_span == "block_ticks" else params.block_ticks,
        label_tick=params.label_tick, force_tick=params.force_tick,
        dopamine_tick=params.dopamine_tick, input_delay=params.input_delay, seed=params.seed,
        bernoulli=params.coder == "bernoulli", carry_accumulator=params.carry_accumulator,
        force_all=params.forcing == "all", block_column=params.blocking == "column",
        bursts_end_with_sample=params.burst_scope == "sample",
        fire_all=params.firing == "all_above_threshold",
        theta_at_ah_only=params.theta_refresh == "anti_hebbian",
        gate_in_sample=params.gate_scope == "sample", gate_ticks=params.resolved_gate_ticks,
        copy_share=params.copy_share, input_share=params.input_share, first_copy=first_copy,
        views=params.n_views, n_copies=params.e)


def check_batch(params: ColanetConfig, state: ColanetState, x, sample_index, sat, y=None,
                copies: range | None = None):
    """Validate and convert a chunk: returns ``(x float32 (B, I), y int64 (B,)
    or None, sample_index int64 (B,), sat float)``, ``I = views D`` coded inputs; raises
    ValueError with the offending value otherwise. ``copies``: the ensemble copies the state
    holds (None: all)."""
    _check_state_shapes(state)
    E, D, N = state.r.shape
    C = state.n_classes
    copies = range(params.e) if copies is None else copies
    if copies.step != 1 or not 0 <= copies.start < copies.stop <= params.e:
        raise ValueError(f"copies={copies!r}: must be a contiguous range within the "
                         f"{params.e} copies")
    if E != len(copies) or N != C * params.m:
        raise ValueError(f"state has E={E}, N={N}, C={C}; params want {len(copies)} copies "
                         f"({copies.start}..{copies.stop - 1} of e={params.e}), m={params.m} "
                         f"(N = C*m = {C * params.m})")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != params.n_views * D or state.acc.shape != (x.shape[1],):
        raise ValueError(f"x must be (B, {params.n_views * D}) ({params.n_views} views of {D} "
                         f"inputs) like the state's {state.acc.shape[0]} coded inputs, got shape "
                         f"{x.shape}")
    if not np.all(np.isfinite(x)):
        bad = np.argwhere(~np.isfinite(x))[0]
        raise ValueError(f"x has a non-finite value {x[tuple(bad)]} at (row {bad[0]}, feature {bad[1]})")
    B = x.shape[0]
    sample_index = np.ascontiguousarray(sample_index, dtype=np.int64)
    if sample_index.shape != (B,):
        raise ValueError(f"sample_index must be ({B},), got shape {sample_index.shape}")
    if B and sample_index.min() < 0:
        raise ValueError(f"sample_index must be >= 0, got {sample_index.min()}")
    x, sat = per_feature_coding(x, sat)
    if y is not None:
        y = np.ascontiguousarray(y, dtype=np.int64)
        if y.shape != (B,):
            raise ValueError(f"y must be ({B},), got shape {y.shape}")
        if B and (y.min() < 0 or y.max() >= C):
            raise ValueError(f"labels must be in [0, {C}), got min {y.min()} max {y.max()}")
    return x, y, sample_index, sat


def per_feature_coding(x: np.ndarray, sat) -> tuple[np.ndarray, float]:
    """Resolve the saturation level: a positive scalar is used as is; a (D,) vector of per-feature
    levels (``inf`` for a feature that is never positive) divides the features, ``x_j / sat_j``,
    and leaves a level of 1, so the coder computes ``d_j = clip(x_j / sat_j, 0, 1)``."""
    levels = np.asarray(sat, dtype=np.float64)
    if levels.ndim == 0:
        sat = float(levels)
        if not (np.isfinite(sat) and sat > 0):
            raise ValueError(f"sat={sat!r}: must be a positive finite number")
        return x, sat
    if levels.shape != (x.shape[1],) or np.isnan(levels).any() or (levels <= 0).any():
        raise ValueError(f"per-feature sat must be ({x.shape[1]},) positive levels, got shape "
                         f"{levels.shape}")
    # The coder clips the ratio to [0, 1]; clipping it to [-1, 2] first changes no rate and keeps a
    # ratio past float32's range (a huge feature over a tiny level) from overflowing in the cast.
    return np.clip(x / levels, -1.0, 2.0).astype(np.float32), 1.0


def encode_inputs(params: ColanetConfig, x, sample_index, sat) -> np.ndarray:
    """Input spikes of each sample from a fresh accumulator, as emitted:
    (B, present_ticks, D) bool, index ``k`` = presentation tick (they arrive
    at the L neurons at ``k + input_delay``)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"x must be (B, D), got shape {x.shape}")
    sample_index = np.ascontiguousarray(sample_index, dtype=np.int64)
    x, sat = per_feature_coding(x, sat)
    pat = K.encode_chunk(x, sat, sample_index, np.zeros(x.shape[1]),
                         kernel_params(params, x.shape[1]), True)
    ks = np.arange(params.present_ticks, dtype=np.uint64) + np.uint64(params.input_delay)
    return ((pat[:, None, :] >> ks[None, :, None]) & np.uint64(1)).astype(bool)


#: Where the simulator runs: the CPU kernels (Numba, all cores) or the CUDA kernels
#: (:mod:`pipeline.colanet_cuda`, numba-cuda); the same votes and state on either.
DEVICES = ("cpu", "cuda")


def _kernels(device: str):
    """The module whose ``train_kernel`` / ``infer_kernel`` run on ``device``."""
    if device == "cpu":
        return K
    if device == "cuda":
        from . import colanet_cuda  # imports numba.cuda: only when a GPU is asked for
        return colanet_cuda
    raise ValueError(f"device={device!r}: must be one of {DEVICES}")


def train_chunk(params: ColanetConfig, state: ColanetState, x, y, sample_index, sat, record=False,
                device: str = "cpu", copies: range | None = None):
    """Train on a chunk of samples, in order, updating ``state`` in place.

    ``x`` (B, D) features, ``y`` (B,) labels in [0, C), ``sample_index`` (B,)
    global sample ids (key of the coder's and the noise's randomness), ``sat``
    the coder's saturation level.  Returns ``(votes, state)`` with votes
    (B, E, C) int32 = unforced OUT spikes per class per copy; with
    ``record=True`` returns ``(votes, state, spikes)``, spikes (B, P, E, N)
    bool = every L spike (forced ones included) at local tick k.
    Splitting a chunk into several calls gives the identical result, and so does ``device``
    (``"cpu"`` or ``"cuda"``: :data:`DEVICES`). ``copies``: the ensemble copies ``state`` holds,
    a contiguous range (None: all ``params.e``); a group's votes and state are exactly those
    copies' in the whole ensemble (:func:`copy_group`), since copies share only the input.
    """
    x, y, sample_index, sat = check_batch(params, state, x, sample_index, sat, y, copies)
    B = x.shape[0]
    E, N, P = state.n_copies, state.n_neurons, params.period
    hp = kernel_params(params, state.n_inputs, 0 if copies is None else copies.start)
    pat = K.encode_chunk(x, sat, sample_index, state.acc, hp, False)
    bits0 = K.history_chunk(state.arrival_bits, pat, P)
    rec = np.zeros((B, P, E, N), bool) if record else None
    votes = _kernels(device).train_kernel(hp, kernel_state(state), pat, bits0, y, sample_index,
                                          np.int64(state.t), rec)
    state.t += B * P
    state.n_seen += B
    if record:
        return votes, state, rec
    return votes, state


def infer_chunk(params: ColanetConfig, state: ColanetState, x, sample_index, sat, record=False,
                device: str = "cpu", copies: range | None = None):
    """Votes (B, E, C) int32 with plasticity frozen; ``state`` is not modified.

    Each sample starts from a fresh neuron state (u = 0, no burst, no block,
    accumulator 0) and uses noise stream 1, so predictions do not depend on
    order, chunking or ``device``.  With ``record=True`` returns ``(votes, spikes)``.
    ``copies``: as in :func:`train_chunk`.
    """
    x, _, sample_index, sat = check_batch(params, state, x, sample_index, sat, None, copies)
    B, I = x.shape
    E, N, P = state.n_copies, state.n_neurons, params.period
    hp = kernel_params(params, state.n_inputs, 0 if copies is None else copies.start)
    pat = K.encode_chunk(x, sat, sample_index, np.zeros(I), hp, True)
    rec = np.zeros((B, P, E, N), bool) if record else None
    votes = _kernels(device).infer_kernel(hp, state.w, state.theta_add, state.n_classes, pat,
                                          sample_index, rec)
    if record:
        return votes, rec
    return votes


def readout(votes):
    """Ensemble answer from votes (B, E, C): ``(pred (B,) int64, answered (B,)
    bool)``; votes summed over copies, argmax with ties to the lowest class,
    ``pred = -1`` where no copy voted at all."""
    votes = np.asarray(votes)
    if votes.ndim != 3:
        raise ValueError(f"votes must be (B, E, C), got shape {votes.shape}")
    total = votes.sum(axis=1)
    answered = total.sum(axis=1) > 0
    pred = np.where(answered, np.argmax(total, axis=1), -1).astype(np.int64)
    return pred, answered


def ranked_classes(votes, k: int) -> np.ndarray:
    """The ``k`` classes with most votes of each sample, votes (B, E, C) summed over copies:
    (B, k) int64, most votes first, ties to the lowest class (so column 0 is :func:`readout`'s
    answer); a class with no vote is never ranked: its places, and those past the C classes,
    hold -1 (a sample with no vote at all ranks none)."""
    votes = np.asarray(votes)
    if votes.ndim != 3:
        raise ValueError(f"votes must be (B, E, C), got shape {votes.shape}")
    if k < 1:
        raise ValueError(f"k={k!r}: must be >= 1")
    total = votes.sum(axis=1)
    order = np.argsort(-total, axis=1, kind="stable")[:, :k]
    ranked = np.where(np.take_along_axis(total, order, axis=1) > 0, order, -1).astype(np.int64)
    return np.pad(ranked, ((0, 0), (0, k - ranked.shape[1])), constant_values=-1)
