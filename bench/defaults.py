"""Evidence for the shipped CoLaNET defaults: candidates scored on several stores' validation splits.

Candidates are the shipped defaults, the spec's defaults, and the best trials of each `annsnn tune`
study given (gain as a multiple of the base gain gain_total / D, so a setting transfers across
feature sizes), plus, for the winner, one flip per [choice] value, adopted greedily while a flip
scores better. Every candidate runs on every store's validation split (the tail of its train
split, as in `tune`; the test split is never read; with ``--seeds N`` under model seeds 0..N-1,
scored by their mean accuracy), in parallel dask processes,
beside a linear probe and nearest class mean fitted on the same rows. The winner is the candidate
with the best joint score (pipeline.tuning.joint_score: minus the mean log ratio of its validation
error to the probe's; 0 is parity everywhere).

    python bench/defaults.py --stores data/embeddings/a.zarr data/embeddings/b.zarr \\
        --studies data/tune/a data/tune/b --top 3

Writes data/bench/defaults.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.cluster import connect  # noqa: E402
from pipeline.colanet import ColanetConfig  # noqa: E402
from pipeline.config import ClusterConfig  # noqa: E402
from pipeline.store import EmbeddingStore  # noqa: E402
from pipeline.tuning import (SEARCH_SPACE, baseline_validation,  # noqa: E402
                             joint_score, run_trial, trial_params)

SPEC_DEFAULTS = {"d_h": -0.114, "dopamine": 0.227, "r_s": 0.159, "k_thr": 0.00107, "s_stim": 0.63,
                 "m": 10, "e": 15, "forcing": "most_depolarised", "blocking": "column",
                 "coder": "accumulator", "burst_scope": "continuous",
                 "gain_scale": 640.0 / ColanetConfig().gain_total,
                 "sat_percentile": 99.0, "sat_scope": "global", "coding": "saturation",
                 "order": "store"}
SPEC_CODING = {"sat_percentile": 99.0, "sat_scope": "global"}  # the coding before it was searched
CODING_KEYS = tuple(SPEC_CODING)
FLIPS = {"forcing": ("most_depolarised", "all"), "blocking": ("column", "none"),
         "coder": ("accumulator", "bernoulli"), "burst_scope": ("sample", "continuous"),
         "sat_scope": ("global", "feature"), "coding": ("saturation", "centred", "on_off"),
         "order": ("store", "balanced")}


def shipped_values() -> dict:
    p = ColanetConfig()
    keys = ("d_h", "dopamine", "r_s", "k_thr", "s_stim", "m", "e", "forcing", "blocking", "coder",
            "burst_scope", "coding", "order", *CODING_KEYS)
    return {**{k: getattr(p, k) for k in keys}, "gain_scale": 1.0}


def study_candidates(study: Path, rows: list[dict]) -> dict[str, dict]:
    """The settings a study's trials really ran: its base parameters with the trial's values.

    gain_scale is restated relative to our base gain. A choice the study's space lacked (a study
    from before it existed ran the old default) is tried at each of its values, one knob at a time.
    """
    meta = json.loads((study / "study.json").read_text())
    base = meta["base"]
    keys = [k for k in shipped_values() if k not in ("gain_scale", *CODING_KEYS)]
    out = {}
    for r in rows:
        values = {**{k: base[k] for k in keys if k in base}, **SPEC_CODING, **r["values"]}
        values["gain_scale"] = (r["values"].get("gain_scale", 1.0) * base.get("gain_total", 640.0)
                                / ColanetConfig().gain_total)
        name = f"{study.name}#{r['number']}"
        missing = [k for k in SEARCH_SPACE if k not in meta["space"] and SEARCH_SPACE[k].choices]
        if not missing:
            out[name] = values
        for k in missing:
            for choice in SEARCH_SPACE[k].choices:
                out[f"{name} {k}={choice}"] = {**values, k: choice}
    return out


def score(store_path: str, values: dict, val_fraction: float, seed: int = 0) -> dict:
    store = EmbeddingStore.open(store_path)
    config = trial_params(ColanetConfig(seed=seed), values, store.attrs["encoder"]["feature_dim"])
    return run_trial(store_path, config, val_fraction, numba_threads=1)


def mean_result(runs: list[dict]) -> dict:
    """One candidate on one store over several model seeds: the mean of each figure."""
    return {k: sum(r[k] for r in runs) / len(runs)
            for k in ("val_accuracy", "no_answer_rate", "seconds")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stores", nargs="+", required=True)
    ap.add_argument("--holdout", nargs="*", default=[],
                    help="stores scored beside the others but left out of the choice")
    ap.add_argument("--studies", nargs="*", default=[], help="tune study folders")
    ap.add_argument("--top", type=int, default=3, help="best trials taken from each study")
    ap.add_argument("--val-fraction", type=float, default=0.2)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=1,
                    help="model seeds 0..N-1 per candidate (noise and order): scores are means")
    ap.add_argument("--out", default="data/bench/defaults.json")
    a = ap.parse_args()

    candidates = {"shipped": shipped_values(), "spec": dict(SPEC_DEFAULTS)}
    for study in a.studies:
        rows = [json.loads(line) for line in (Path(study) / "trials.jsonl").read_text().splitlines()
                if line.strip()]
        rows.sort(key=lambda r: (-r.get("score", r["val_accuracy"]), r["number"]))
        for name, values in study_candidates(Path(study), rows[:a.top]).items():
            candidates[name] = values

    with connect(ClusterConfig(cluster=f"local:{a.processes}")) as client:
        every = [*a.stores, *a.holdout]
        base = dict(zip(every, client.gather(
            [client.submit(baseline_validation, s, a.val_fraction) for s in every])))

        def run_all(cands: dict) -> dict:
            futures = {(c, s): [client.submit(score, s, v, a.val_fraction, seed, pure=False)
                                for seed in range(a.seeds)]
                       for c, v in cands.items() for s in every}
            return {key: mean_result(client.gather(fs)) for key, fs in futures.items()}

        results = run_all(candidates)
        probe = {s: base[s]["probe"] for s in a.stores}

        def joint(c: str) -> float:
            return joint_score({s: results[c, s]["val_accuracy"] for s in a.stores}, probe)

        gap = {c: joint(c) for c in candidates}
        winner = max(candidates, key=lambda c: gap[c])
        # Greedy ascent over the [choice]s: flip each choice of the winner; adopt the best flip
        # while it scores better, then flip again from there.
        ablations = {}
        root = winner
        while True:
            flips = {}
            for k, choices in FLIPS.items():
                now = {**candidates, **ablations}[winner]
                for other in choices:
                    if other == now.get(k, choices[0]):
                        continue
                    v = {**now, k: other}
                    diff = [f"{key}={v[key]}" for key in FLIPS
                            if v.get(key) != candidates[root].get(key)]
                    name = f"{root} -> {' '.join(diff)}" if diff else root
                    if name not in ablations and name not in candidates:
                        flips[name] = v
            if not flips:
                break
            results.update(run_all(flips))
            ablations.update(flips)
            for c in flips:
                gap[c] = joint(c)
            best = max(flips, key=lambda c: gap[c])
            if gap[best] <= gap[winner]:
                break
            winner = best

    every = [*a.stores, *a.holdout]
    names = [Path(s).stem + (" (held out)" if s in a.holdout else "") for s in every]
    print(f"validation accuracy (tail {a.val_fraction:.0%} of train), probe and NCM on the same rows")
    print(f"{'candidate':<52}" + "".join(f"{n[-23:]:>24}" for n in names) + f"{'score':>10}")
    print(f"{'linear probe':<52}" + "".join(f"{base[s]['probe']:>24.4f}" for s in every))
    print(f"{'nearest class mean':<52}" + "".join(f"{base[s]['ncm']:>24.4f}" for s in every))
    for c in [*candidates, *ablations]:
        mark = " *" if c == winner else ""
        print(f"{(c + mark)[:52]:<52}" + "".join(
            f"{results[c, s]['val_accuracy']:>16.4f} ({results[c, s]['no_answer_rate']:.3f})"
            for s in every) + f"{gap[c]:>+10.4f}")
    out = {"stores": a.stores, "holdout": a.holdout, "val_fraction": a.val_fraction,
           "seeds": a.seeds, "baselines": base,
           "candidates": {**candidates, **ablations}, "winner": winner, "score": gap,
           "results": {f"{c}|{s}": r for (c, s), r in results.items()}}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2))
    print(f"winner: {winner} -> {a.out}")


if __name__ == "__main__":
    main()
