"""The latency gate's false alarms and detection power, replayed on real benchmark noise.

What is measured:

1. A pool of real benchmark processes: the example model converted once to int8 TFLite with the litert-cpu
   target's options and calibration (calibration_data/fashion_mnist.toml), then benchmarked by device_bench exactly
   as ``edgeprep bench`` does it (``edgeprep.stages.bench.bench_artifact``, the litert-cpu [bench] settings:
   runs = 100, warmup = 10, 2 threads), one fresh process at a time, ``2 x ROUNDS`` processes alternating between
   two identical copies of the artifact (A, B, A, B, ...). One untimed warm-up process runs first and is dropped.
   Each process's latencies and wall time (process start to result) are kept.
2. The replay: each trial draws a "baseline" benchmark of k processes and a disjoint "candidate" benchmark of k
   other processes from the pool, multiplies every candidate latency by s in ``SCALES`` and calls
   ``edgeprep.gate.check_latency`` with max_latency_regression_pct in ``THRESHOLDS``. The same ``TRIALS`` draws
   (fixed seed) are judged at every scale and threshold. Printed per (k, threshold, scale): how many trials the gate
   failed -- at x1.00 the false alarms; at s == 1 + threshold the true regression sits on the limit (a 95 % interval
   should fail at most ~2.5 % there); above it the detections -- and the seconds a benchmark of k processes costs
   (k x the mean wall time of a process). The replay uses ``RESAMPLES`` = 500 bootstrap resamples instead of the
   gate's default 2000 to keep the runtime down; the k = 3 false alarms and +10 % detections are judged again with
   2000 resamples and the agreement is printed.
3. How baseline and candidate are drawn, at x1.00 (false alarms): "random" (any processes of the pool, as in 2),
   "interleaved" (k random rounds: the baseline their A processes, the candidate their B processes, run
   alternately) and "sequential" (k consecutive processes from the first half of the pool in time against k
   consecutive processes from the second half: two separate ``edgeprep bench`` runs minutes apart).
4. ``gate --rebench``'s side-by-side sampler replayed (``side_by_side``) on the pool's A/B rounds (a process each;
   the pool's processes time the [bench] runs only, where ``compare``'s rounds also time ``Sampling.round_seconds``)
   and on ``ROUNDS`` rounds of one process holding both, iterations alternating (``gather_in_process``, the
   default): detection, passes, undecided trials and the rounds and seconds it took, per threshold and scale.
5. Facts about the bootstrap: distinct process-level resamples k processes allow, the chance a resample picks one
   process k times, the spread of process medians in the pool, and whether scaling the candidate only scales the
   interval (``median_ratio`` always uses seed 0, so the verdict at x s is fixed by the interval at x1.00).

The pool is real, unrepeatable noise; the draws are seeded. Nothing is downloaded.
"""

from __future__ import annotations

import math
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from conftest import EXAMPLE_MODEL, MANIFEST

TARGET = "litert-cpu"
ROUNDS = 40                       # pool: ROUNDS x (one A process, one B process)
SIZES = (3, 6, 10)                # processes per side
SCALES = (1.00, 1.05, 1.10, 1.20)
THRESHOLDS = (5.0, 10.0)          # max_latency_regression_pct
TRIALS = 60
RESAMPLES = 500                   # the gate's default is 2000 (Gates.bootstrap_resamples)
SEED = 20240611


@dataclass(frozen=True)
class Proc:
    side: str                     # "A" or "B"
    round: int
    latencies: tuple[float, ...]
    wall_s: float

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies)


def make_artifacts(tmp: Path, target) -> dict[str, Path]:
    """The example model as int8 TFLite (the target's options and calibration), and an identical copy."""
    from edgeprep.data import load_data
    from edgeprep.models import load_model
    from edgeprep.stages.convert import convert

    a = tmp / "fashion_mnist_cnn_a.int8.tflite"
    convert(load_model(EXAMPLE_MODEL), "tflite", "int8", target.options_for("tflite"), a,
            calibration=load_data(MANIFEST).calibration, quantize=target.quantize,
            calibration_samples=target.quantize.calibration_samples, workdir=tmp)
    b = tmp / "fashion_mnist_cnn_b.int8.tflite"
    shutil.copyfile(a, b)
    return {"A": a, "B": b}


def gather(target, paths: dict[str, Path]) -> list[Proc]:
    """``2 x ROUNDS`` fresh benchmark processes, alternating A and B, each as one repeat of ``edgeprep bench``."""
    from edgeprep.stages.bench import bench_artifact
    from edgeprep.stages.convert import open_artifact

    config = replace(target.bench, repeats=1)
    arts = {side: open_artifact(p, target.options_for) for side, p in paths.items()}

    def one(side: str) -> tuple[tuple[float, ...], float]:
        start = time.perf_counter()
        outcome = bench_artifact(arts[side], config, target.threads)
        if not outcome.ok:
            raise RuntimeError(f"benchmark {outcome.bench['status']}: {outcome.bench.get('error')}")
        return outcome.latencies_ms[0], time.perf_counter() - start

    one("A")                      # warm-up (page cache, first imports): dropped
    pool = []
    for r in range(ROUNDS):
        for side in "AB":
            lat, wall = one(side)
            pool.append(Proc(side, r, lat, wall))
    return pool


def draw(pool: list[Proc], k: int, scheme: str, rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """Indices into ``pool`` of a baseline and a disjoint candidate benchmark of ``k`` processes each."""
    n = len(pool)
    if scheme == "random":
        idx = rng.choice(n, 2 * k, replace=False)
        return list(idx[:k]), list(idx[k:])
    if scheme == "interleaved":          # pool[2r] is round r's A process, pool[2r + 1] its B process
        rounds = rng.choice(n // 2, k, replace=False)
        return [2 * r for r in rounds], [2 * r + 1 for r in rounds]
    if scheme == "sequential":           # consecutive processes: earlier half against later half
        half = n // 2
        s1, s2 = rng.integers(0, half - k + 1), rng.integers(half, n - k + 1)
        return list(range(s1, s1 + k)), list(range(s2, s2 + k))
    raise ValueError(scheme)


def gate(pool, base_idx, cand_idx, scale: float, threshold: float, resamples: int):
    """The gate's verdict on the candidate (scaled by ``scale``) against the baseline: (status, interval)."""
    from edgeprep.config.gates import Thresholds
    from edgeprep.gate import check_latency

    base = [list(pool[i].latencies) for i in base_idx]
    cand = [[v * scale for v in pool[i].latencies] for i in cand_idx]
    (verdict,) = check_latency("replay", cand, base, Thresholds(max_latency_regression_pct=threshold),
                               resamples=resamples)
    return verdict.status, verdict.interval


def describe_pool(pool: list[Proc]) -> None:
    p50 = np.array([p.p50 for p in pool])
    walls = np.array([p.wall_s for p in pool])
    a = np.array([p.p50 for p in pool if p.side == "A"])
    b = np.array([p.p50 for p in pool if p.side == "B"])
    half = len(pool) // 2
    within = []                   # bootstrap SE of one process's median, relative
    rng = np.random.default_rng(SEED)
    for p in pool:
        x = np.asarray(p.latencies)
        within.append(np.std([np.median(rng.choice(x, x.size)) for _ in range(200)]) / np.median(x))
    print(f"\n1. pool: {len(pool)} processes ({ROUNDS} rounds of A then B), {len(pool[0].latencies)} latencies each")
    print(f"   process median latency: min {p50.min():.4f}  median {np.median(p50):.4f}  max {p50.max():.4f} ms; "
          f"between-process CV {100 * p50.std(ddof=1) / p50.mean():.1f} %, within-process SE of the median "
          f"(median over processes) {100 * np.median(within):.1f} %")
    print(f"   median of process medians: A/B x{np.median(a) / np.median(b):.3f}; later half / earlier half "
          f"x{np.median(p50[half:]) / np.median(p50[:half]):.3f}")
    print(f"   wall time per process: mean {walls.mean():.3f} s (min {walls.min():.3f}, max {walls.max():.3f})")


def replay(pool: list[Proc]) -> tuple[dict, dict]:
    """The main table: {(k, threshold, scale): fails}, and the draws and intervals per k (for the checks below)."""
    wall = statistics.mean(p.wall_s for p in pool)
    seeds = np.random.SeedSequence(SEED).spawn(len(SIZES))
    fails, kept = {}, {}
    errors = 0
    print(f"\n2. gate verdicts on replayed benchmarks: {TRIALS} trials per row (the same draws at every scale), "
          f"baseline and candidate k disjoint processes drawn at random from the pool, {RESAMPLES} resamples")
    print("   cell: trials failed / trials. x1.00: false alarms; [..]: scale on the limit (ideally <= ~2.5 %); "
          "beyond the limit: detections")
    head = "".join(f"{f'x{s:.2f}':>12}" for s in SCALES)
    print(f"   {'k':>3}{'threshold':>11}{head}{'bench s':>10}{'interval at x1.00 (median)':>30}")
    for k, seed in zip(SIZES, seeds):
        rng = np.random.default_rng(seed)
        draws = [draw(pool, k, "random", rng) for _ in range(TRIALS)]
        intervals = {}
        for t in THRESHOLDS:
            cells = ""
            for s in SCALES:
                n = 0
                for j, (bi, ci) in enumerate(draws):
                    status, interval = gate(pool, bi, ci, s, t, RESAMPLES)
                    errors += status == "error"
                    n += status == "fail"
                    intervals[(j, s)] = interval
                fails[(k, t, s)] = n
                cell = f"{n}/{TRIALS}"
                cells += f"{f'[{cell}]' if math.isclose(s, 1 + t / 100) else cell:>12}"
            lo = statistics.median(intervals[(j, 1.0)][0] for j in range(TRIALS))
            hi = statistics.median(intervals[(j, 1.0)][1] for j in range(TRIALS))
            print(f"   {k:>3}{f'{t:g} %':>11}{cells}{k * wall:>10.1f}{f'[{lo:.3f}, {hi:.3f}]':>30}", flush=True)
        kept[k] = (draws, intervals)
    if errors:
        print(f"   ({errors} verdicts were errors, not counted as failures)")
    return fails, kept


def default_resamples(pool, kept) -> None:
    """The k = 3 false alarms and +10 % detections again with the gate's default 2000 resamples."""
    k = SIZES[0]
    draws, _ = kept[k]
    print(f"\n   k = {k} again with 2000 resamples (the gate's default), same draws:")
    for t, s in ((5.0, 1.00), (10.0, 1.00), (5.0, 1.10), (10.0, 1.20)):
        ours = [gate(pool, bi, ci, s, t, RESAMPLES)[0] for bi, ci in draws]
        full = [gate(pool, bi, ci, s, t, 2000)[0] for bi, ci in draws]
        print(f"   threshold {t:g} %, x{s:.2f}: {sum(v == 'fail' for v in full)}/{TRIALS} failed with 2000 "
              f"({sum(v == 'fail' for v in ours)}/{TRIALS} with {RESAMPLES}); verdicts agree in "
              f"{sum(a == b for a, b in zip(ours, full))}/{TRIALS}", flush=True)


def schemes(pool: list[Proc], fails: dict) -> dict:
    print(f"\n3. false alarms (x1.00) by how baseline and candidate are drawn, {TRIALS} trials each, "
          f"{RESAMPLES} resamples")
    print(f"   {'k':>3}{'threshold':>11}{'random':>12}{'interleaved':>13}{'sequential':>12}")
    seeds = iter(np.random.SeedSequence(SEED + 1).spawn(2 * len(SIZES)))
    out = {}
    for k in SIZES:
        draws = {sch: [draw(pool, k, sch, rng) for _ in range(TRIALS)]
                 for sch, rng in (("interleaved", np.random.default_rng(next(seeds))),
                                  ("sequential", np.random.default_rng(next(seeds))))}
        for t in THRESHOLDS:
            row = {"random": fails[(k, t, 1.0)]}
            for sch, ds in draws.items():
                row[sch] = sum(gate(pool, bi, ci, 1.0, t, RESAMPLES)[0] == "fail" for bi, ci in ds)
            out[(k, t)] = row
            print(f"   {k:>3}{f'{t:g} %':>11}" + "".join(f"{f'{row[s]}/{TRIALS}':>{w}}" for s, w in
                                                        (("random", 12), ("interleaved", 13), ("sequential", 12))),
                  flush=True)
    return out


def facts(kept: dict) -> None:
    print("\n4. the bootstrap's resolution and determinism")
    for k in SIZES:
        distinct = math.comb(2 * k - 1, k)
        print(f"   k = {k:>2}: {k ** k:,} equally likely ordered process picks, {distinct:,} distinct multisets; "
              f"a resample is one process {k} times with probability {k ** (1 - k):.2g}; the bootstrap SE of a mean "
              f"over k processes is sqrt((k-1)/k) = {math.sqrt((k - 1) / k):.3f} of the usual estimate")
    worst, checked = 0.0, 0
    for k, (draws, intervals) in kept.items():
        for j in range(len(draws)):
            lo1 = intervals[(j, 1.0)][0]
            for s in SCALES[1:]:
                worst = max(worst, abs(intervals[(j, s)][0] - s * lo1) / (s * lo1))
                checked += 1
    width = {k: statistics.median(iv[(j, 1.0)][1] - iv[(j, 1.0)][0] for j in range(len(ds)))
             for k, (ds, iv) in kept.items()}
    few, many = SIZES[0], SIZES[-1]
    print("   median interval width at x1.00: " + ", ".join(f"k = {k}: {w:.3f}" for k, w in width.items())
          + f"; k = {few} is {width[few] / width[many]:.2f} x as wide as k = {many}, where sqrt({many}/{few}) = "
          f"{math.sqrt(many / few):.2f} x is expected from process counts alone")
    print(f"   scaling the candidate by s scales the interval: |lo(s) - s lo(1)| / s lo(1) <= {worst:.1e} over "
          f"{checked} verdicts (median_ratio's fixed seed 0: the same processes always give the same draws)")


def gather_in_process(target, paths: dict[str, Path]) -> list[tuple[float, float, float]]:
    """``ROUNDS`` fresh processes each holding A and B, iterations alternating (``device_bench`` ``versus``, what
    ``gate --rebench`` runs by default), which one is loaded first alternating: (A's median, B's median, wall s)."""
    from edgeprep.stages.compare import in_process_round, round_job
    from edgeprep.stages.convert import open_artifact

    config = target.bench
    jobs = {side: round_job(open_artifact(p, target.options_for), config, target.threads)
            for side, p in paths.items()}
    out = []
    for r in range(ROUNDS):
        first, second = ("A", "B") if r % 2 == 0 else ("B", "A")
        start = time.perf_counter()
        got = dict(zip((first, second), in_process_round(jobs[first], jobs[second], config)))
        out.append((statistics.median(got["A"]), statistics.median(got["B"]), time.perf_counter() - start))
    return out


def side_by_side(rounds: list[tuple[float, float, float]], label: str) -> dict:
    """``gate --rebench``'s sampler (``edgeprep.paired``) replayed on recorded rounds (A's median, B's median,
    the round's wall seconds): each trial draws rounds at random (with replacement; which side is the candidate
    is drawn too), scales the candidate's median by s, and adds rounds until the sampler decides or its budget
    is spent (its seconds budget counts the mean recorded round's wall time per round). Printed per threshold and
    scale: trials failed (a regression), passed (within), undecided, the rounds they took and the drawn rounds'
    real wall seconds."""
    from edgeprep.paired import Sampling, simulate

    sampling = Sampling()
    logs = [math.log(b / a) for a, b, _ in rounds]
    per_round = statistics.fmean(w for *_, w in rounds)
    out = {}
    print(f"\nside by side (gate --rebench, {label}): {len(rounds)} recorded rounds, log ratio B/A spread "
          f"{statistics.stdev(logs):.3f} (mean {statistics.fmean(logs):+.3f}), {per_round:.2f} s a round; "
          f"sampler min {sampling.min_rounds} / max {sampling.max_rounds} rounds, {sampling.max_seconds:.0f} s, "
          f"{sampling.confidence:.0%} per look; {TRIALS} trials")
    print(f"{'threshold':>9} {'scale':>6} {'regression':>10} {'within':>7} {'undecided':>9} {'rounds':>14} "
          f"{'seconds':>14}")
    for threshold in THRESHOLDS:
        for scale in SCALES:
            rng = np.random.default_rng(SEED)
            counts = {"regression": 0, "within": 0, "undecided": 0}
            used, secs = [], []
            for _ in range(TRIALS):
                spent = []

                def draw_round():
                    a, b, wall = rounds[rng.integers(len(rounds))]
                    if rng.integers(2):
                        a, b = b, a
                    spent.append(wall)
                    return b * scale, a
                decision, ratio = simulate(draw_round, 1 + threshold / 100, sampling, seconds_per_round=per_round)
                counts[decision] += 1
                used.append(ratio.rounds)
                secs.append(sum(spent))
            out[(threshold, scale)] = counts
            print(f"{threshold:>8.0f}% {scale:>6.2f} {counts['regression']:>10} {counts['within']:>7} "
                  f"{counts['undecided']:>9} {np.median(used):>6.0f} (max {max(used):>2}) "
                  f"{np.median(secs):>6.1f} (max {max(secs):>4.0f})")
    return out


def main() -> int:
    os.environ.setdefault("EDGEPREP_HISTORY", os.devnull)
    from edgeprep.targets import load_target

    target = load_target(TARGET)
    if target.bench is None:
        print(f"{TARGET} has no [bench] table")
        return 1
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        try:
            paths = make_artifacts(Path(d), target)
            print(f"converted {EXAMPLE_MODEL.name} to int8 TFLite in {time.perf_counter() - start:.1f} s; "
                  f"{TARGET} [bench] runs = {target.bench.runs}, warmup = {target.bench.warmup}, "
                  f"threads = {target.bench.threads or target.threads}", flush=True)
            t0 = time.perf_counter()
            pool = gather(target, paths)
        except Exception as exc:     # no LiteRT, a failed conversion or benchmark: cannot run
            print(f"cannot build the pool: {type(exc).__name__}: {exc}")
            return 1
    print(f"gathered {len(pool)} processes in {time.perf_counter() - t0:.1f} s", flush=True)
    describe_pool(pool)
    t0 = time.perf_counter()
    fails, kept = replay(pool)
    default_resamples(pool, kept)
    by_scheme = schemes(pool, fails)
    facts(kept)
    processes = side_by_side([(pool[2 * r].p50, pool[2 * r + 1].p50, pool[2 * r].wall_s + pool[2 * r + 1].wall_s)
                              for r in range(len(pool) // 2)], "a process each per round")
    with tempfile.TemporaryDirectory() as d:
        t1 = time.perf_counter()
        one = gather_in_process(target, make_artifacts(Path(d), target))
        print(f"\ngathered {len(one)} in-process rounds in {time.perf_counter() - t1:.1f} s", flush=True)
    paired = side_by_side(one, "one process holding both per round, the default")
    lo_k, hi_k = SIZES[0], SIZES[-1]
    print(f"\nreplay and checks took {time.perf_counter() - t0:.0f} s")
    print(f"summary: +10 % regression at threshold 5 %: caught in {fails[(lo_k, 5.0, 1.10)]} of {TRIALS} trials "
          f"with {lo_k} processes, {fails[(hi_k, 5.0, 1.10)]} of {TRIALS} with {hi_k}; +20 % at threshold 10 %: "
          f"{fails[(lo_k, 10.0, 1.20)]} and {fails[(hi_k, 10.0, 1.20)]} of {TRIALS}; false alarms at threshold 5 %: "
          f"{fails[(lo_k, 5.0, 1.0)]} of {TRIALS} ({lo_k} processes), {fails[(hi_k, 5.0, 1.0)]} of {TRIALS} "
          f"({hi_k}); sequential benchmarks {by_scheme[(lo_k, 5.0)]['sequential']} and "
          f"{by_scheme[(hi_k, 5.0)]['sequential']}, interleaved {by_scheme[(lo_k, 5.0)]['interleaved']} and "
          f"{by_scheme[(hi_k, 5.0)]['interleaved']}; a regression exactly on the 5 % limit failed "
          f"{fails[(lo_k, 5.0, 1.05)]} of {TRIALS} with {lo_k} processes, {fails[(hi_k, 5.0, 1.05)]} with {hi_k} "
          "(a 95 % two-sided interval should fail at most ~2.5 %)")
    for name, got in (("in one process (default)", paired), ("a process each", processes)):
        p5 = {s: got[(5.0, s)] for s in SCALES}
        print(f"summary, side by side {name} at threshold 5 %: +10 % caught in {p5[1.10]['regression']} of "
              f"{TRIALS} (undecided {p5[1.10]['undecided']}, passed {p5[1.10]['within']}); x1.00 passed "
              f"{p5[1.0]['within']}, false alarms {p5[1.0]['regression']}, undecided {p5[1.0]['undecided']}; "
              f"+20 % caught {p5[1.20]['regression']}")
    return 0
