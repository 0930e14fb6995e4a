"""Statistics for comparing kernels: summaries, differences, tests and verdicts.

Why these choices (see docs/report.md for the user-facing version):

* Timings under emulation are skewed (a few runs are much slower) and runs are few (3 to
  10 per kernel), so the primary test is **Mann-Whitney U** (rank based, exact for small
  samples without ties) and the headline effect is the **relative change of the medians**
  with a percentile **bootstrap** confidence interval. Welch's t-test and its confidence
  interval for the difference of means are computed too and shown next to them, for
  readers used to mmtests-style reports; ``Settings(test="welch")`` makes Welch's test the
  one the verdict uses.
* A change is flagged only when all three hold: the (multiplicity-adjusted) p-value is
  below ``alpha``, the confidence interval of the relative median change excludes 0, and
  the change of the medians is at least ``floor`` (1% by default, as LKP does). This is
  what makes an A/A run (a kernel against itself) come out as "no change": the exact
  Mann-Whitney test alone keeps false flags under ``alpha``, the other two conditions only
  remove flags.
* Several metrics are compared at once, so p-values are adjusted within each family (all
  metrics of one candidate kernel against the baseline): Benjamini-Hochberg by default
  (under the null for every metric, it keeps the chance of *any* false flag at ``alpha``;
  when several metrics really change it keeps more power than Holm).
* With fewer than ``min_runs`` (3) runs on either side there is no verdict:
  "insufficient data", never a guess.
* The better direction (``lower`` or ``higher``) is declared per metric by whoever produces
  it; :func:`default_better` guesses from the unit for convenience only.

Everything is deterministic: the bootstrap uses a fixed seed, so re-rendering a report from
saved samples gives the same numbers.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from math import comb
from typing import Literal

import numpy as np
from scipy import stats as sps

Better = Literal["lower", "higher"]
Verdict = Literal["improved", "regressed", "no change", "insufficient data"]
VERDICTS: tuple[str, ...] = ("improved", "regressed", "no change", "insufficient data")
TESTS = ("mannwhitneyu", "welch")
CORRECTIONS = ("bh", "holm", "none")

# Units whose smaller values are better (times, costs); everything else must be declared.
_LOWER_IS_BETTER_UNITS = {
    "usec", "us", "nsec", "nsecs", "ns", "msec", "ms", "s", "sec", "seconds",
    "cycles", "instructions", "barriers", "dsb", "isb", "tlbi", "count",
}
_HIGHER_IS_BETTER_UNITS = {"ops/s", "ops", "mb/s", "gb/s", "iter/s", "loops/s"}


@dataclass(frozen=True)
class Settings:
    """How a comparison is judged; stored with the results so a report says what it used."""

    alpha: float = 0.05          # significance level of the (adjusted) test
    floor: float = 0.01          # smallest relative change of the medians that counts (1%)
    min_runs: int = 3            # per side; fewer gives "insufficient data"
    test: str = "mannwhitneyu"   # "mannwhitneyu" or "welch": which p-value the verdict uses
    correction: str = "bh"       # "bh" (Benjamini-Hochberg), "holm" or "none"
    confidence: float = 0.95     # level of the confidence intervals
    n_boot: int = 4999           # bootstrap resamples
    seed: int = 12345            # bootstrap seed (deterministic reports)

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if self.floor < 0:
            raise ValueError(f"floor must be >= 0, got {self.floor}")
        if self.min_runs < 2:
            raise ValueError(f"min_runs must be >= 2, got {self.min_runs}")
        if self.test not in TESTS:
            raise ValueError(f"test must be one of {TESTS}, got {self.test!r}")
        if self.correction not in CORRECTIONS:
            raise ValueError(f"correction must be one of {CORRECTIONS}, got {self.correction!r}")
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Settings:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


def default_better(unit: str) -> Better:
    """A guess of the better direction from a unit (times and counts: lower).

    Producers should declare the direction; this exists so that a forgotten declaration on
    an obvious unit does not stop a comparison. Unknown units raise ValueError.
    """
    u = unit.strip().lower()
    if u in _LOWER_IS_BETTER_UNITS:
        return "lower"
    if u in _HIGHER_IS_BETTER_UNITS or u.endswith("/s"):
        return "higher"
    raise ValueError(f"cannot guess whether lower or higher is better for unit {unit!r}")


@dataclass(frozen=True)
class Summary:
    """Descriptive statistics of one kernel's samples of one metric."""

    n: int
    median: float | None
    mean: float | None
    stdev: float | None   # sample standard deviation (ddof=1); None when n < 2
    q1: float | None
    q3: float | None
    iqr: float | None
    min: float | None
    max: float | None
    cv: float | None      # coefficient of variation, stdev / mean

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Summary:
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__})


def _clean(values: Sequence[float]) -> np.ndarray:
    arr = np.asarray(list(values), dtype=float)
    if arr.ndim != 1:
        raise ValueError("samples must be a flat sequence of numbers")
    if not np.all(np.isfinite(arr)):
        raise ValueError("samples must be finite numbers (no NaN or infinity)")
    return arr


def _f(x: float) -> float | None:
    """A plain float for JSON, None for NaN/inf."""
    x = float(x)
    return x if math.isfinite(x) else None


def summarize(values: Sequence[float]) -> Summary:
    arr = _clean(values)
    n = int(arr.size)
    if n == 0:
        return Summary(0, None, None, None, None, None, None, None, None, None)
    q1, med, q3 = np.percentile(arr, [25, 50, 75])
    mean = float(arr.mean())
    sd = float(arr.std(ddof=1)) if n >= 2 else None
    cv = sd / mean if (sd is not None and mean != 0) else None
    return Summary(
        n=n, median=_f(med), mean=_f(mean), stdev=sd, q1=_f(q1), q3=_f(q3),
        iqr=_f(q3 - q1), min=_f(arr.min()), max=_f(arr.max()), cv=cv,
    )


@dataclass
class Difference:
    """One candidate kernel against the baseline on one metric, and the verdict.

    Relative changes are fractions (``-0.21`` is 21% lower than the baseline). Intervals
    are ``[low, high]`` at ``Settings.confidence``; None where undefined (too few runs, a
    zero baseline median).
    """

    base: Summary
    new: Summary
    better: Better
    median_change: float | None = None          # median(new) - median(base)
    rel_change: float | None = None             # median(new) / median(base) - 1
    rel_change_ci: list[float] | None = None    # bootstrap percentile CI of rel_change
    median_change_ci: list[float] | None = None  # bootstrap CI of the median difference
    mean_change: float | None = None            # mean(new) - mean(base)
    mean_change_ci: list[float] | None = None   # Welch CI of the mean difference
    p_mannwhitneyu: float | None = None
    p_welch: float | None = None
    test: str = "mannwhitneyu"
    p_value: float | None = None                # of the test the verdict uses
    p_adjusted: float | None = None             # after the family's correction
    min_possible_p: float | None = None         # smallest p the test could give at this n
    deterministic: bool = False                 # no run-to-run spread on either side
    detectable_change: float | None = None      # smallest |rel. change| seen at 80% power
    verdict: str = "insufficient data"
    reason: str = ""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["base"] = self.base.to_dict()
        d["new"] = self.new.to_dict()
        return d

    @classmethod
    def from_dict(cls, data: dict) -> Difference:
        kw = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        kw["base"] = Summary.from_dict(data["base"])
        kw["new"] = Summary.from_dict(data["new"])
        return cls(**kw)


def min_possible_p_mannwhitneyu(n1: int, n2: int) -> float:
    """Smallest two-sided p-value of the exact Mann-Whitney U test with n1 vs n2 runs.

    With 3 vs 3 runs it is 0.1: no significance at 5% is possible, whatever the data. Shown
    in reports so a reader knows when more runs are needed.
    """
    if n1 < 1 or n2 < 1:
        return 1.0
    return min(1.0, 2.0 / comb(n1 + n2, n1))


def runs_needed(family_size: int, alpha: float = 0.05, correction: str = "bh") -> int:
    """Runs per side for which a lone real change can reach significance in a family.

    For a single metric that changes while the others do not, both BH and Holm compare its
    p-value with alpha / family_size; the exact Mann-Whitney test must be able to go below.
    """
    threshold = alpha / max(1, family_size) if correction != "none" else alpha
    n = 3
    while min_possible_p_mannwhitneyu(n, n) > threshold and n < 100:
        n += 1
    return n


# Power of the "detectable change" figures: the chance that a real change of that size is
# called significant. 80% is the usual convention.
POWER = 0.8
# Asymptotic relative efficiency of the Mann-Whitney test against the t-test on normal data
# (3/pi): it needs ~5% more runs for the same power.
_ARE_MANNWHITNEYU = 3.0 / math.pi


def _z_sum(settings: Settings, power: float) -> float:
    return float(sps.norm.ppf(1.0 - settings.alpha / 2.0) + sps.norm.ppf(power))


def _expected_normal_iqr(n: int) -> float:
    """Expected interquartile range of ``n`` standard normal draws, quartiles interpolated
    the way :func:`summarize` takes them (numpy's linear method), each order statistic's
    expectation by Blom's approximation. About 0.99 for 5 draws, 1.17 for 10, 1.349 in the
    limit: the IQR of a few runs is a smaller multiple of the spread than of many."""

    def order_stat(i: int) -> float:          # E of the (i+1)-th smallest of n
        return float(sps.norm.ppf((i + 1 - 0.375) / (n + 0.25)))

    def quartile(q: float) -> float:
        pos = (n - 1) * q
        lo = math.floor(pos)
        hi = min(lo + 1, n - 1)
        return order_stat(lo) + (pos - lo) * (order_stat(hi) - order_stat(lo))

    return quartile(0.75) - quartile(0.25)


# Fewest runs for which the robust spread (from the IQR) is used; below, the IQR of 2 or 3
# values is not much more robust than the standard deviation.
ROBUST_SPREAD_MIN_RUNS = 4


def relative_spread(s: Summary, robust: bool) -> float | None:
    """The run-to-run spread of one side as a fraction of its level.

    ``robust``: the normal-consistent sigma from the IQR (IQR / E[IQR of n normal draws]),
    over the median, so that one stalled run (a host hiccup: 20x the others, seen under TCG)
    does not make the figure say nothing is detectable while the rank test plainly detects
    a change. Else, and where the IQR is 0 or too few runs, the coefficient of variation.
    """
    if (robust and s.n >= ROBUST_SPREAD_MIN_RUNS and s.iqr and s.median
            and math.isfinite(s.iqr)):
        return s.iqr / (abs(s.median) * _expected_normal_iqr(s.n))
    return s.cv


def _spreads(base: Summary, new: Summary, settings: Settings) -> tuple[float, float, float] | None:
    """(base spread, new spread, efficiency) for the test ``settings`` names."""
    robust = settings.test == "mannwhitneyu"
    sb, sn = relative_spread(base, robust), relative_spread(new, robust)
    if sb is None or sn is None:
        return None
    return sb, sn, (_ARE_MANNWHITNEYU if robust else 1.0)


def detectable_change(base: Summary, new: Summary, settings: Settings | None = None,
                      power: float = POWER) -> float | None:
    """The smallest relative change this many runs would call significant with ``power``.

    A normal approximation on the run-to-run spread of both sides (:func:`relative_spread`:
    robust, from the IQR, for the Mann-Whitney test, whose ranks one outlier barely moves;
    the coefficient of variation for Welch's test, which outliers do hurt), at the
    unadjusted ``alpha``, scaled for the Mann-Whitney test's efficiency when that is the
    test used. It says what a "no change" verdict can rule out: with a 25% spread and 5 runs
    per side, only changes beyond about +/-45%. None without a spread on both sides (fewer
    than 2 runs, or a zero level).
    """
    settings = settings or Settings()
    if base.n < 2 or new.n < 2:
        return None
    sp = _spreads(base, new, settings)
    if sp is None:
        return None
    sb, sn, eff = sp
    se = math.sqrt((sb ** 2 / base.n + sn ** 2 / new.n) / eff)
    return _z_sum(settings, power) * se


def runs_to_detect(base: Summary, new: Summary, change: float,
                   settings: Settings | None = None, power: float = POWER) -> int | None:
    """Runs per side needed to call a relative ``change`` significant with ``power``, at the
    spread both sides showed (same approximation as :func:`detectable_change`).

    Never fewer than ``settings.min_runs``; None without a spread or for a zero change.
    """
    settings = settings or Settings()
    sp = _spreads(base, new, settings)
    if sp is None or not change:
        return None
    sb, sn, eff = sp
    n = (_z_sum(settings, power) ** 2) * (sb ** 2 + sn ** 2) / (eff * change ** 2)
    return max(settings.min_runs, math.ceil(n))


def _bootstrap_ci(base: np.ndarray, new: np.ndarray, settings: Settings, relative: bool):
    """Percentile bootstrap CI of median(new) - median(base), or of the ratio - 1."""

    def stat(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
        ma = np.median(a, axis=axis)
        mb = np.median(b, axis=axis)
        if relative:
            return mb / ma - 1.0
        return mb - ma

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = sps.bootstrap(
            (base, new), stat, n_resamples=settings.n_boot, vectorized=True, paired=False,
            confidence_level=settings.confidence, method="percentile",
            rng=np.random.default_rng(settings.seed),
        )
    lo, hi = res.confidence_interval.low, res.confidence_interval.high
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    return [float(lo), float(hi)]


def compare(base: Sequence[float], new: Sequence[float], better: Better,
            settings: Settings | None = None) -> Difference:
    """Compare one candidate's samples with the baseline's on one metric.

    The verdict here uses the unadjusted p-value; :func:`judge_family` re-judges a family of
    differences after adjusting their p-values for multiplicity.
    """
    settings = settings or Settings()
    if better not in ("lower", "higher"):
        raise ValueError(f"better must be 'lower' or 'higher', got {better!r}")
    a, b = _clean(base), _clean(new)
    d = Difference(base=summarize(a), new=summarize(b), better=better, test=settings.test)
    if a.size == 0 or b.size == 0:
        d.reason = f"no runs on one side ({a.size} vs {b.size})"
        return d

    d.median_change = _f(np.median(b) - np.median(a))
    base_med = float(np.median(a))
    if base_med != 0:
        d.rel_change = _f(float(np.median(b)) / base_med - 1.0)
    d.mean_change = _f(b.mean() - a.mean())
    d.min_possible_p = min_possible_p_mannwhitneyu(a.size, b.size)
    d.deterministic = bool(a.size >= 2 and b.size >= 2 and np.ptp(a) == 0 and np.ptp(b) == 0)
    if not d.deterministic:
        d.detectable_change = detectable_change(d.base, d.new, settings)

    if a.size < settings.min_runs or b.size < settings.min_runs:
        d.verdict = "insufficient data"
        d.reason = (f"{a.size} vs {b.size} runs: at least {settings.min_runs} per side are "
                    "needed for a verdict")
        return d

    # Significance tests.
    if np.ptp(np.concatenate([a, b])) == 0:
        d.p_mannwhitneyu = 1.0   # every run of both kernels gave the same value
        d.p_welch = 1.0
    else:
        d.p_mannwhitneyu = _f(sps.mannwhitneyu(b, a, alternative="two-sided").pvalue)
        if a.std() == 0 and b.std() == 0:
            d.p_welch = 0.0      # two different constants: the difference is certain
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tt = sps.ttest_ind(b, a, equal_var=False)
            d.p_welch = _f(tt.pvalue)
            ci = tt.confidence_interval(confidence_level=settings.confidence)
            if math.isfinite(ci.low) and math.isfinite(ci.high):
                d.mean_change_ci = [float(ci.low), float(ci.high)]
    if d.deterministic:
        d.mean_change_ci = [d.mean_change, d.mean_change]
        d.notes.append("no run-to-run variation on either side: the difference is exact")
    d.p_value = d.p_mannwhitneyu if settings.test == "mannwhitneyu" else d.p_welch

    d.median_change_ci = _bootstrap_ci(a, b, settings, relative=False)
    if base_med != 0:
        d.rel_change_ci = _bootstrap_ci(a, b, settings, relative=True)
    else:
        d.notes.append("baseline median is 0: no relative change")

    d.p_adjusted = d.p_value
    _judge(d, settings)
    return d


def _judge(d: Difference, settings: Settings) -> None:
    """Set d.verdict and d.reason from its (adjusted) p-value, CI and magnitude."""
    if d.base.n < settings.min_runs or d.new.n < settings.min_runs:
        return  # compare() already said why
    pct = _pct(d.rel_change) if d.rel_change is not None else "n/a"
    if d.deterministic:
        significant = d.median_change != 0
        ci_excludes_zero = significant
    else:
        p = d.p_adjusted
        significant = p is not None and p < settings.alpha
        ci = d.rel_change_ci if d.rel_change is not None else d.median_change_ci
        ci_excludes_zero = ci is not None and (ci[0] > 0 or ci[1] < 0)
    big_enough = d.rel_change is not None and abs(d.rel_change) >= settings.floor
    if d.rel_change is None and d.median_change not in (None, 0):
        big_enough = True  # zero baseline: any change is "big"; the test decides
    if significant and ci_excludes_zero and big_enough:
        lower = (d.median_change or 0) < 0
        good = lower if d.better == "lower" else not lower
        d.verdict = "improved" if good else "regressed"
        if d.deterministic:
            d.reason = f"median {pct}, identical values in every run"
        else:
            d.reason = (f"median {pct}, significant (p={_p(d.p_adjusted)} < {settings.alpha}), "
                        f"CI excludes 0, beyond the {_pct(settings.floor, sign=False)} floor")
        return
    d.verdict = "no change"
    if not significant:
        what = "adjusted p" if d.p_adjusted != d.p_value else "p"
        d.reason = f"not significant ({what}={_p(d.p_adjusted)} >= {settings.alpha})"
        if d.min_possible_p is not None and d.min_possible_p >= settings.alpha:
            d.reason += (f"; with {d.base.n} vs {d.new.n} runs no p below "
                         f"{_p(d.min_possible_p)} is possible")
    elif not ci_excludes_zero:
        d.reason = "the confidence interval of the change includes 0"
    else:
        d.reason = (f"median {pct} is within the {_pct(settings.floor, sign=False)} noise floor")


def adjust_pvalues(pvalues: Sequence[float | None], method: str) -> list[float | None]:
    """Multiplicity-adjusted p-values (None entries are skipped and stay None)."""
    idx = [i for i, p in enumerate(pvalues) if p is not None]
    out: list[float | None] = list(pvalues)
    if not idx or method == "none":
        return out
    ps = np.array([pvalues[i] for i in idx], dtype=float)
    if method == "bh":
        adj = sps.false_discovery_control(ps, method="bh")
    elif method == "holm":
        order = np.argsort(ps)
        m = ps.size
        running = 0.0
        adj = np.empty_like(ps)
        for rank, j in enumerate(order):
            running = max(running, min(1.0, (m - rank) * ps[j]))
            adj[j] = running
    else:
        raise ValueError(f"unknown correction {method!r}")
    for i, p in zip(idx, adj, strict=True):
        out[i] = float(min(1.0, p))
    return out


def judge_family(diffs: Sequence[Difference], settings: Settings | None = None) -> None:
    """Adjust the p-values of a family (one candidate's metrics) and re-judge each, in place.

    Deterministic metrics (no spread) and those without a verdict are not part of the
    family: there is no sampling error to correct for.
    """
    settings = settings or Settings()
    members = [d for d in diffs
               if d.p_value is not None and not d.deterministic
               and d.base.n >= settings.min_runs and d.new.n >= settings.min_runs]
    adjusted = adjust_pvalues([d.p_value for d in members], settings.correction)
    for d, p in zip(members, adjusted, strict=True):
        d.p_adjusted = p
        _judge(d, settings)


# ---- wording -------------------------------------------------------------------------

def _pct(x: float, sign: bool = True, digits: int | None = None) -> str:
    v = 100.0 * x
    if digits is None:
        digits = 1 if abs(v) < 10 else 0
    s = f"{v:+.{digits}f}%" if sign else f"{v:.{digits}f}%"
    return s.replace("-", "\u2212") if sign else s


def format_pct(x: float, sign: bool = True) -> str:
    """A relative change as reports write it: '−21%', '+4.4%' (no sign: '21%')."""
    return _pct(x, sign)


def _p(p: float | None) -> str:
    if p is None:
        return "n/a"
    if p < 0.001:
        return "<0.001"
    return f"{p:.3f}" if p < 0.01 else f"{p:.2f}"


_FASTER = {"usec", "us", "nsec", "nsecs", "ns", "msec", "ms", "s", "sec", "seconds", "cycles"}


def reading(d: Difference, what: str, kernel: str = "patched", unit: str = "",
            settings: Settings | None = None) -> str:
    """The difference in plain words, e.g.

    "patched is 21% faster on fix_size_alloc_test p:256, 95% CI [−24%, −18%], from 5 vs 5
    runs, p=0.008"
    """
    settings = settings or Settings()
    if d.verdict == "insufficient data":
        return f"{kernel}: no verdict on {what}: {d.reason}"
    level = f"{round(settings.confidence * 100)}%"
    details = []
    ci = d.rel_change_ci
    if ci is not None and not d.deterministic:
        details.append(f"{level} CI [{_pct(ci[0])}, {_pct(ci[1])}]")
    details.append(f"from {d.base.n} vs {d.new.n} runs")
    if d.deterministic:
        details.append("the same value in every run")
    elif d.p_value is not None:
        ptxt = "p" + _p_eq(d.p_value)
        if d.p_adjusted is not None and d.p_adjusted != d.p_value:
            ptxt += f" (adjusted {_p_eq(d.p_adjusted).lstrip('=')})"
        details.append(ptxt)
    if d.verdict in ("improved", "regressed"):
        if d.rel_change is None:
            head = f"{kernel} changes {what} by {d.median_change:+g} {unit}".rstrip()
        else:
            mag = _pct(abs(d.rel_change), sign=False)
            lower = d.rel_change < 0
            if unit.strip().lower() in _FASTER:
                word = "faster" if lower else "slower"
            else:
                word = "lower" if lower else "higher"
            head = f"{kernel} is {mag} {word} on {what}"
        return ", ".join([head] + details)
    # no change
    if d.rel_change is not None:
        med = f"median {_pct(d.rel_change)}"
    elif d.median_change is not None:
        med = f"median {d.median_change:+g} {unit}".rstrip()
    else:
        med = "no median"
    text = f"{kernel}: no significant change on {what} ({med}, " + ", ".join(details) + ")"
    if not d.reason.startswith("not significant") or "no p below" in d.reason:
        text += f": {d.reason}"
    if d.detectable_change is not None and d.detectable_change > settings.floor:
        text += (f"; with this spread only changes beyond "
                 f"\u00b1{_pct(d.detectable_change, sign=False)} were detectable")
    return text


def _p_eq(p: float) -> str:
    """'=0.008' or '<0.001', to follow a 'p'."""
    s = _p(p)
    return s if s.startswith("<") else "=" + s
