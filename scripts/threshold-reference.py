#!/usr/bin/env python3
"""Reference values for the threshold tests (crates/bencher_server/src/threshold/),
computed independently of the Rust code with numpy and scipy.stats.

Writes crates/bencher_server/src/threshold/reference.json (the fixture the Rust unit
tests read) and prints the table of inputs -> baseline, limits. The Rust tests need
only the committed JSON; regenerate it after changing the semantics:

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install numpy scipy
    /tmp/venv/bin/python scripts/threshold-reference.py
    git diff crates/bencher_server/src/threshold/reference.json

With --check it writes nothing and exits 1 when the committed fixture differs from what
it computes (for a CI job that has numpy and scipy).
Semantics (the Rust module's doc has the same table):
  static      limits = the boundaries, no baseline, no history needed
  percentage  mean -/+ |mean| * b
  z_score     normal quantiles: norm.ppf(1-b | b, loc=mean, scale=s)
  t_test      t.ppf(1-b | b, df=n-1, loc=mean, scale=s*sqrt(1+1/n))  (prediction interval)
  log_normal  lognorm.ppf(1-b | b, s=sigma, scale=exp(mu)), mu/sigma of ln x; baseline exp(mu)
  iqr         median -/+ b * (Q3 - Q1), quartiles by numpy's linear method
  delta_iqr   median -/+ |median| * b * IQR(|diff(x) / x[:-1]|)
s and sigma are sample standard deviations (ddof=1). Every statistical limit is at
least 1e-9 * |baseline| away from the baseline (flat histories still alert).
"""

import json
import math
import pathlib
import sys

import numpy as np
import scipy
from scipy import stats

TOLERANCE = 1e-9
MINIMUM = {"static": 0, "percentage": 1}
OUTPUT = (
    pathlib.Path(__file__).resolve().parent.parent
    / "crates/bencher_server/src/threshold/reference.json"
)

# Report times are unix seconds; history points are 10 minutes apart, the last one
# 10 minutes before the report.
STEP = 600
REPORT_TIME = 1_750_000_000


def timed(values, report_time=REPORT_TIME):
    n = len(values)
    return [[report_time - STEP * (n - i), v] for i, v in enumerate(values)]


def required(model):
    test_minimum = MINIMUM.get(model["test"], 2)
    return max(model.get("min_sample_size") or 0, test_minimum)


def in_window(points, report_time, window):
    start = None if window is None else report_time - window
    kept = [(t, v) for t, v in points if t <= report_time and (start is None or t >= start)]
    kept.sort(key=lambda point: point[0])
    return [v for _, v in kept]


def raw_limits(test, x, lower, upper):
    """(baseline, lower_limit, upper_limit) before the flat-history tolerance, or an
    untestable reason."""
    n = len(x)
    if test == "percentage":
        m = float(np.mean(x))
        return (
            m,
            None if lower is None else m - abs(m) * lower,
            None if upper is None else m + abs(m) * upper,
        )
    if test in ("z_score", "t_test"):
        m = float(np.mean(x))
        s = float(np.std(x, ddof=1))
        if s == 0.0:
            # scipy refuses scale 0; the quantiles are the mean itself.
            return m, None if lower is None else m, None if upper is None else m
        if test == "z_score":
            dist = stats.norm(loc=m, scale=s)
        else:
            dist = stats.t(df=n - 1, loc=m, scale=s * math.sqrt(1.0 + 1.0 / n))
        return (
            m,
            None if lower is None else float(dist.ppf(1.0 - lower)),
            None if upper is None else float(dist.ppf(upper)),
        )
    if test == "log_normal":
        if np.any(x <= 0):
            return "non_positive_history"
        logs = np.log(x)
        mu = float(np.mean(logs))
        sigma = float(np.std(logs, ddof=1))
        baseline = math.exp(mu)
        if sigma == 0.0:
            return (
                baseline,
                None if lower is None else baseline,
                None if upper is None else baseline,
            )
        dist = stats.lognorm(s=sigma, scale=baseline)
        return (
            baseline,
            None if lower is None else float(dist.ppf(1.0 - lower)),
            None if upper is None else float(dist.ppf(upper)),
        )
    if test == "iqr":
        q1, median, q3 = np.quantile(x, [0.25, 0.5, 0.75], method="linear")
        iqr = float(q3 - q1)
        median = float(median)
        return (
            median,
            None if lower is None else median - lower * iqr,
            None if upper is None else median + upper * iqr,
        )
    if test == "delta_iqr":
        median = float(np.quantile(x, 0.5, method="linear"))
        if np.any(x[:-1] == 0):
            return "zero_in_history"
        changes = np.abs(np.diff(x) / x[:-1])
        q1, q3 = np.quantile(changes, [0.25, 0.75], method="linear")
        spread = abs(median) * float(q3 - q1)
        return (
            median,
            None if lower is None else median - lower * spread,
            None if upper is None else median + upper * spread,
        )
    raise ValueError(test)


def evaluate(case):
    model = case["model"]
    test = model["test"]
    lower, upper = model.get("lower_boundary"), model.get("upper_boundary")
    history = in_window(case["points"], case["report_time"], model.get("window"))
    maximum = model.get("max_sample_size")
    if maximum is not None:
        history = history[-maximum:]
    x = np.array(history, dtype=np.float64)
    result = {"sample_size": len(history)}
    if len(history) < required(model):
        result.update(outcome="insufficient_data", required=required(model))
        return result
    if test == "static":
        result.update(outcome="ran", baseline=None, lower_limit=lower, upper_limit=upper)
        return result
    limits = raw_limits(test, x, lower, upper)
    if isinstance(limits, str):
        result.update(outcome="untestable", reason=limits)
        return result
    baseline, low, high = limits
    tolerance = abs(baseline) * TOLERANCE
    result.update(
        outcome="ran",
        baseline=baseline,
        lower_limit=None if low is None else min(low, baseline - tolerance),
        upper_limit=None if high is None else max(high, baseline + tolerance),
    )
    return result


def check(result, value):
    if result["outcome"] != "ran":
        return result["outcome"]
    if result["lower_limit"] is not None and value < result["lower_limit"]:
        return "alert_lower"
    if result["upper_limit"] is not None and value > result["upper_limit"]:
        return "alert_upper"
    return "pass"


def probe_values(result):
    """A value at the centre, and values 1e-6 (relative) beyond each limit and inside
    it, so both sides of every limit are exercised."""
    if result["outcome"] != "ran":
        return [100.0]
    values = []
    if result["baseline"] is not None:
        values.append(result["baseline"])
    for limit in (result["lower_limit"], result["upper_limit"]):
        if limit is not None:
            step = 1e-6 * max(abs(limit), 1.0)
            values += [limit - step, limit + step]
    return values


# Histories (oldest to newest).
LATENCY = [100.0, 102.5, 98.7, 101.2, 99.9, 100.4, 103.1, 97.8]
THROUGHPUT = [5120.0, 5089.5, 5201.25, 5150.0, 4998.75, 5075.0]
SKEWED = [12.1, 13.4, 11.8, 25.0, 12.6, 12.9, 14.2, 12.2, 13.0]
NEGATIVE = [-3.5, -2.0, -4.25, -3.0, -2.75]
FLAT = [250.0] * 6
TWO = [10.0, 12.0]
LONG = [round(1000.0 + 25.0 * math.sin(i * 1.3) + 0.5 * i, 6) for i in range(70)]
WITH_ZERO = [4.0, 0.0, 3.5, 4.5, 4.25]
ZERO_NEWEST = [4.0, 3.75, 3.5, 4.5, 0.0]


def docs_t_test_history():
    """25 values with mean exactly 100 and sample standard deviation exactly 10: the
    reference Bencher's documented t-test example (0.977 -> 78.54 and 121.46)."""
    y = np.array([math.sin(i * 0.7) + 0.1 * i for i in range(25)])
    x = 100.0 + 10.0 * (y - y.mean()) / y.std(ddof=1)
    return [float(v) for v in x]


def case(name, model, values, extra_values=(), points=None, report_time=REPORT_TIME, docs=None):
    entry = {
        "name": name,
        "model": model,
        "points": points if points is not None else timed(values, report_time),
        "report_time": report_time,
    }
    result = evaluate(entry)
    entry.update(result)
    entry["checks"] = [
        {"value": v, "outcome": check(result, v)} for v in probe_values(result) + list(extra_values)
    ]
    if docs is not None:
        entry["docs"] = docs
    return entry


def m(test, lower=None, upper=None, **options):
    model = {"test": test}
    model.update({k: v for k, v in options.items() if v is not None})
    if lower is not None:
        model["lower_boundary"] = lower
    if upper is not None:
        model["upper_boundary"] = upper
    return model


def cases():
    out = []
    # static: the boundaries are the limits, with or without history.
    out.append(case("static both, no history", m("static", 95.0, 105.0), [], [95.0, 105.0, 94.9, 105.1]))
    out.append(case("static upper over latency", m("static", upper=101.0), LATENCY, [200.0, -5.0]))
    out.append(case("static lower, negative", m("static", lower=-3.0), NEGATIVE, [-3.0, -3.01]))
    # Every statistical test on lower, upper and both boundaries.
    boundaries = {
        "percentage": (0.05, 0.10),
        "z_score": (0.977, 0.99),
        "t_test": (0.95, 0.99),
        "log_normal": (0.977, 0.9),
        "iqr": (1.5, 3.0),
        "delta_iqr": (2.0, 1.0),
    }
    for test, (low, high) in boundaries.items():
        for label, history in (("latency", LATENCY), ("throughput", THROUGHPUT), ("skewed", SKEWED)):
            out.append(case(f"{test} lower on {label}", m(test, lower=low), history))
            out.append(case(f"{test} upper on {label}", m(test, upper=high), history))
            out.append(case(f"{test} both on {label}", m(test, low, high), history))
        out.append(case(f"{test} both on two values", m(test, low, high), TWO))
    # Negative values: fine for everything but log_normal.
    for test in ("percentage", "z_score", "t_test", "iqr", "delta_iqr"):
        low, high = boundaries[test]
        out.append(case(f"{test} both on negative values", m(test, low, high), NEGATIVE))
    out.append(case("log_normal on negative values", m("log_normal", 0.977, 0.977), NEGATIVE))
    out.append(case("log_normal with a zero", m("log_normal", upper=0.99), WITH_ZERO))
    out.append(case("delta_iqr with a zero divisor", m("delta_iqr", 1.5, 1.5), WITH_ZERO))
    out.append(case("delta_iqr with a zero newest", m("delta_iqr", 1.5, 1.5), ZERO_NEWEST, [1.0]))
    # Boundary edges: 0.5 is the baseline itself, 0 spreads nothing.
    out.append(case("t_test at 0.5", m("t_test", 0.5, 0.5), LATENCY))
    out.append(case("z_score near 1", m("z_score", upper=0.999999), LATENCY))
    out.append(case("percentage zero", m("percentage", 0.0, 0.0), LATENCY))
    out.append(case("iqr zero", m("iqr", 0.0, 0.0), LATENCY))
    # Flat history: limits collapse to the baseline +- 1e-9 relative and still alert.
    flat_probes = [250.0, 250.0 * (1 + 1e-12), 250.0 * (1 - 1e-12), 250.0 * (1 + 1e-8), 250.0 * (1 - 1e-8), 251.0, 249.0]
    for test, (low, high) in boundaries.items():
        out.append(case(f"{test} on flat history", m(test, low, high), FLAT, flat_probes))
    out.append(case("t_test on flat zeros", m("t_test", 0.99, 0.99), [0.0] * 4, [0.0, 1e-300, -1e-300]))
    # Sample sizes.
    out.append(case("t_test min sample size unmet", m("t_test", upper=0.99, min_sample_size=10), LATENCY))
    out.append(case("t_test min sample size met", m("t_test", upper=0.99, min_sample_size=8), LATENCY))
    out.append(case("t_test one value", m("t_test", upper=0.99), [100.0]))
    out.append(case("percentage no history", m("percentage", upper=0.1), []))
    out.append(case("percentage one value", m("percentage", 0.1, 0.1), [100.0]))
    out.append(case("t_test max sample size 5", m("t_test", 0.95, 0.95, max_sample_size=5), LATENCY))
    out.append(case("iqr max sample size 4", m("iqr", 1.5, 1.5, max_sample_size=4), SKEWED))
    out.append(case("default model on 70 values", m("t_test", upper=0.99, max_sample_size=64), LONG))
    out.append(
        case(
            "max sample size keeps min",
            m("z_score", 0.99, 0.99, min_sample_size=6, max_sample_size=6),
            LONG[:5],
        )
    )
    # Windows, measured back from the report's time, inclusive; later points excluded.
    long_points = timed(LONG)
    out.append(case("t_test window 3000s", m("t_test", 0.99, 0.99, window=3000), [], points=long_points))
    later = long_points + [[REPORT_TIME + 60, 5000.0], [REPORT_TIME + 7200, 1.0]]
    out.append(case("percentage window excludes later points", m("percentage", 0.1, 0.1, window=1800), [], points=later))
    old_report = REPORT_TIME - 20 * STEP
    out.append(
        case(
            "z_score window from an older report",
            m("z_score", 0.977, 0.977, window=6000),
            [],
            points=long_points,
            report_time=old_report,
        )
    )
    shuffled = [long_points[i] for i in (5, 1, 9, 0, 3, 8, 2, 7, 6, 4)]
    out.append(case("iqr window sorts by time", m("iqr", 1.0, 1.0, window=100_000, max_sample_size=6), [], points=shuffled))
    out.append(case("t_test window too short", m("t_test", upper=0.99, window=599), [], points=long_points))
    out.append(case("percentage window edge inclusive", m("percentage", 0.1, 0.1, window=600), [], points=long_points))
    # The reference Bencher's documented t-test example.
    out.append(
        case(
            "reference docs t_test example",
            m("t_test", 0.977, 0.977),
            docs_t_test_history(),
            docs={"lower_limit": 78.54, "upper_limit": 121.46},
        )
    )
    return out


def main():
    table = cases()
    header = {
        "generator": "scripts/threshold-reference.py",
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "tolerance": TOLERANCE,
    }
    # One case per line: reviewable diffs when a value changes.
    lines = [json.dumps(header)[:-1] + ', "cases": [']
    lines += [json.dumps(entry) + ("," if i + 1 < len(table) else "") for i, entry in enumerate(table)]
    lines.append("]}")
    text = "\n".join(lines) + "\n"
    if "--check" in sys.argv[1:]:
        # CI with numpy and scipy: the committed fixture is what this script computes.
        if OUTPUT.read_text() != text:
            print(f"{OUTPUT} is stale: run {sys.argv[0]} and commit it", file=sys.stderr)
            sys.exit(1)
    else:
        OUTPUT.write_text(text)
    print(f"{'case':48} {'n':>3} {'baseline':>20} {'lower limit':>20} {'upper limit':>20}  outcome")
    for entry in table:
        def show(key):
            value = entry.get(key)
            return "-" if value is None else f"{value:.12g}"
        status = entry["outcome"] + (f" ({entry['reason']})" if "reason" in entry else "")
        print(
            f"{entry['name']:48} {entry['sample_size']:>3} {show('baseline'):>20} "
            f"{show('lower_limit'):>20} {show('upper_limit'):>20}  {status}"
        )
    verb = "checked" if "--check" in sys.argv[1:] else "wrote"
    print(f"{verb} {len(table)} cases in {OUTPUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
