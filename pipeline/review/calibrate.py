"""Fitting a scorecard's points and weights to a team's human QA scores (`callqa calibrate`).

The calls in the results store that have human scores (imported with `callqa
human-scores`) are scored again with the scorecard. Each rule that is not
critical gets a factor that scales its points and its cap together (a cap keeps
meaning "at most this many occurrences"), so what a rule adds to or takes from
its dimension is exactly factor x what it does now, whatever the rule's type.
That makes the scorecard's own arithmetic fittable as it stands: dimension =
base + the rules' points, clipped to 0..100; total = the weighted mean of the
dimensions that apply; a critical deduction fails the call. The factors
(bounded, never negative, so a penalty stays a penalty and a bonus a bonus) and
the dimension weights (bounded, summing to 1) minimise the squared difference
to the human dimension scores and/or total, plus a pull toward the current
numbers worth `prior_calls` calls, so that a small sample cannot swing a rule.

Agreement is measured by k-fold cross-validation over calls: each held-out
call is scored by the real scorecard code with the scorecard fitted without
it. The scorecard written is the input file with only numbers edited in place
(points, max_points, weights), its version marked, and a header comment saying
what it was fitted on and the agreement before and after.
"""

from __future__ import annotations

import datetime as dt
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from scipy.optimize import minimize
from scipy.stats import spearmanr

from pipeline.model import Call, Scores
from pipeline.review.store import Store
from pipeline.scorecard import Rule, Scorecard, ScorecardError, load_scorecard, score_call

TOTAL = "total"
HEADER_PREFIX = "# [calibrated] "
VERSION_MARK = re.compile(r"-cal\d{8}$")
POINT_KEYS = ("points", "max_points")  # the numbers of a rule that scale with its factor
NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class CalibrationError(ValueError):
    pass


@dataclass
class Settings:
    min_calls: int
    folds: int
    prior_calls: float
    factor: tuple[float, float]
    weight: tuple[float, float]
    rule_points: dict[str, tuple[float, float]]  # per-rule bounds in points, from the scorecard


@dataclass
class Agreement:
    target: str  # a dimension or "total"
    n: int
    spearman_before: float | None
    mae_before: float | None
    spearman_after: float | None
    mae_after: float | None


@dataclass
class Change:
    what: str  # "listening.interruption points", "weight of empathy"
    before: float
    after: float


@dataclass
class Calibration:
    text: str  # the calibrated scorecard YAML
    calls: int
    targets: list[str]
    folds: int
    agreements: list[Agreement]
    changes: list[Change]


# --- the scorecard file ----------------------------------------------------------

def _load_document(path: Path):
    try:
        return YAML(typ="rt").load(path.read_text(encoding="utf-8"))
    except (OSError, YAMLError) as err:
        raise CalibrationError(f"{path}: cannot read the scorecard: {err}") from None


def _pair(value, where: str, upper: float | None = None) -> tuple[float, float]:
    ok = (isinstance(value, list) and len(value) == 2
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in value)
          and value[0] <= value[1] and (upper is None or value[1] <= upper))
    if not ok:
        limit = f", at most {upper}" if upper is not None else ""
        raise CalibrationError(f"{where}: expected [min, max], two numbers with 0 <= min <= max{limit}, "
                               f"got {value!r}")
    return float(value[0]), float(value[1])


def load_settings(config: dict, path: Path, scorecard: Scorecard, document) -> Settings:
    """The `calibration:` settings of the pipeline config, narrowed by the scorecard's own block."""
    base = config.get("calibration") or {}
    try:
        settings = Settings(int(base["min_calls"]), int(base["folds"]), float(base["prior_calls"]),
                            _pair(base["factor"], "calibration.factor in the pipeline config"),
                            _pair(base["weight"], "calibration.weight in the pipeline config", 1.0), {})
    except (KeyError, TypeError, ValueError) as err:
        raise CalibrationError(f"the pipeline config's `calibration:` block is incomplete or wrong: {err}") from None
    block = document.get("calibration") if hasattr(document, "get") else None
    if block is None:
        return settings

    def where(mapping, key) -> str:
        return f"{path}: calibration, line {mapping.lc.key(key)[0] + 1}"

    if not hasattr(block, "items"):
        raise CalibrationError(f"{where(document, 'calibration')}: expected a mapping with factor, weight and/or rules")
    unknown = [k for k in block if k not in ("factor", "weight", "rules")]
    if unknown:
        raise CalibrationError(f"{where(block, unknown[0])}: unknown key {unknown[0]!r}; use factor, weight, rules")
    if "factor" in block:
        settings.factor = _pair(block["factor"], f"{where(block, 'factor')}: factor")
    if "weight" in block:
        settings.weight = _pair(block["weight"], f"{where(block, 'weight')}: weight", 1.0)
    ids = {r.id for r in scorecard.rules}
    per_rule = block.get("rules") or {}
    if not hasattr(per_rule, "items"):
        raise CalibrationError(f"{where(block, 'rules')}: rules: expected a mapping of rule id to [min, max] points")
    for rule_id, bounds in per_rule.items():
        if rule_id not in ids:
            raise CalibrationError(f"{where(per_rule, rule_id)}: rules: no rule {rule_id!r} in the scorecard")
        settings.rule_points[rule_id] = _pair(bounds, f"{where(per_rule, rule_id)}: rules: {rule_id}")
    return settings


def _rule_nodes(document) -> dict[str, object]:
    return {str(node.get("id")): node for node in document.get("rules") or [] if hasattr(node, "get")}


def _number_positions(node, key=None):
    """(line, col, value) of every number under a points/max_points key of a rule node."""
    if hasattr(node, "items"):
        for k, value in node.items():
            if k in POINT_KEYS and isinstance(value, (int, float)) and not isinstance(value, bool):
                line, col = node.lc.value(k)
                yield line, col, float(value)
            elif hasattr(value, "items") or isinstance(value, list):
                yield from _number_positions(value, k)
    elif isinstance(node, list) and key in POINT_KEYS:
        for i, value in enumerate(node):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                line, col = node.lc.item(i)
                yield line, col, float(value)


def _format(value: float, decimals: int = 1) -> str:
    rounded = round(value, decimals)
    return str(int(rounded)) if rounded == int(rounded) and decimals <= 1 else f"{rounded:.{decimals}f}"


def _replace(lines: list[str], line: int, col: int, text: str) -> None:
    """Put `text` in place of the scalar that starts at (line, col)."""
    current = lines[line]
    if current[col] in "\"'":
        end = current.index(current[col], col + 1) + 1
    else:
        match = NUMBER.match(current, col) or re.compile(r"[^\s,}\]#]+").match(current, col)
        end = match.end()
    lines[line] = current[:col] + text + current[end:]


def rewrite(text: str, document, factors: dict[str, float], weights: dict[str, float] | None,
            version: str | None = None, header: list[str] = ()) -> str:
    """The scorecard text with each rule's points and caps times its factor, the weights
    replaced, the version replaced; comments, order and everything else as they were."""
    lines = text.split("\n")
    nodes = _rule_nodes(document)
    for rule_id, factor in factors.items():
        for line, col, value in _number_positions(nodes[rule_id]):
            _replace(lines, line, col, _format(value * factor))
    for name, weight in (weights or {}).items():
        line, col = document["dimensions"][name].lc.value("weight")
        _replace(lines, line, col, _format(weight, 2))
    if version is not None and "version" in document:
        line, col = document.lc.value("version")
        _replace(lines, line, col, f'"{version}"')
    body = [line for line in lines if not line.startswith(HEADER_PREFIX)]  # an earlier calibration's note
    return "\n".join([HEADER_PREFIX + h for h in header] + body)


def _scorecard_from_text(text: str, folder: Path) -> Scorecard:
    path = folder / "candidate.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        return load_scorecard(path)
    except ScorecardError as err:  # a scorecard whose numbers no longer load: a bug, say so plainly
        raise CalibrationError(f"the calibrated scorecard does not load: {err}") from None


# --- the model ---------------------------------------------------------------------

@dataclass
class Design:
    """The scorecard's arithmetic for a set of calls, split into what the fit can
    scale (the adjustable rules' points) and what it cannot (base, other rules)."""
    contrib: np.ndarray  # (calls, rules) signed points of each adjustable rule
    fixed: np.ndarray  # (calls, dimensions) base + points of the other rules
    member: np.ndarray  # (rules, dimensions) 1 where the rule belongs to the dimension
    applicable: np.ndarray  # (calls, dimensions)
    critical: np.ndarray  # (calls,) a critical deduction: total 0 whatever the weights

    def rows(self, index: np.ndarray) -> "Design":
        return Design(self.contrib[index], self.fixed[index], self.member, self.applicable[index],
                      self.critical[index])


def design(scores: list[Scores], scorecard: Scorecard, rules: list[Rule]) -> Design:
    dims = list(scorecard.dimensions)
    column = {r.id: i for i, r in enumerate(rules)}
    contrib = np.zeros((len(scores), len(rules)))
    fixed = np.array([[scorecard.dimensions[d].base for d in dims]] * len(scores), dtype=float)
    applicable = np.zeros((len(scores), len(dims)), dtype=bool)
    for i, s in enumerate(scores):
        for j, name in enumerate(dims):
            dim = s.dimensions[name]
            applicable[i, j] = dim.applicable
            for result in dim.results:
                if result.rule_id in column:
                    contrib[i, column[result.rule_id]] = result.points
                else:
                    fixed[i, j] += result.points
    member = np.zeros((len(rules), len(dims)))
    for i, rule in enumerate(rules):
        member[i, dims.index(rule.dimension)] = 1.0
    critical = np.array([s.critical_failed for s in scores], dtype=bool)
    return Design(contrib, fixed, member, applicable, critical)


def _spread(d: Design, w: np.ndarray) -> np.ndarray:
    """Per dimension, how far its score typically lies from the call's total (root mean
    square, at least 1 point): what moving all of the weight to it would do to a total."""
    s = np.clip(d.fixed + d.contrib @ d.member, 0.0, 100.0)
    aw = d.applicable * w
    mass = aw.sum(axis=1, keepdims=True)
    total = (aw * s).sum(axis=1, keepdims=True) / np.where(mass > 0, mass, 1.0)
    use = d.applicable & (mass > 0) & ~d.critical[:, None]
    squared = np.where(use, (s - total) ** 2, 0.0).sum(axis=0) / np.maximum(use.sum(axis=0), 1)
    return np.maximum(np.sqrt(squared), 1.0)


def _objective(d: Design, human: np.ndarray, points: np.ndarray, w0: np.ndarray, prior: float, fit_weights: bool):
    """Loss and gradient in (factors, weights): squared error to the human scores
    (columns: dimensions then total, NaN where none) plus the pull toward now. The pull
    is in points: moving a rule by its own points costs as much as `prior` calls off by
    that much, and so does moving a weight by d, for calls off by d x the dimension's spread."""
    spread = _spread(d, w0)
    n_rules = d.contrib.shape[1]
    has = ~np.isnan(human)
    target = np.nan_to_num(human)

    def loss(theta):
        f = theta[:n_rules]
        w = theta[n_rules:] if fit_weights else w0
        raw = d.fixed + (d.contrib * f) @ d.member
        s = np.clip(raw, 0.0, 100.0)
        aw = d.applicable * w
        mass = aw.sum(axis=1)
        some = mass > 0
        mass_safe = np.where(some, mass, 1.0)
        total = np.where(some, (aw * s).sum(axis=1) / mass_safe, 100.0)
        total[d.critical] = 0.0
        e_dim = np.where(has[:, :-1] & d.applicable, s - target[:, :-1], 0.0)
        e_tot = np.where(has[:, -1] & some & ~d.critical, total - target[:, -1], 0.0)
        value = (e_dim ** 2).sum() + (e_tot ** 2).sum() + prior * (((f - 1.0) * points) ** 2).sum()
        g_s = 2 * e_dim + 2 * e_tot[:, None] * aw / mass_safe[:, None]
        g_raw = g_s * ((raw > 0) & (raw < 100))
        grad_f = ((g_raw @ d.member.T) * d.contrib).sum(axis=0) + 2 * prior * (f - 1.0) * points ** 2
        if not fit_weights:
            return value, grad_f
        value += prior * ((spread * (w - w0)) ** 2).sum()
        grad_w = (2 * e_tot[:, None] * d.applicable * (s - total[:, None]) / mass_safe[:, None]).sum(axis=0)
        grad_w += 2 * prior * spread ** 2 * (w - w0)
        return value, np.concatenate([grad_f, grad_w])

    return loss


def fit(d: Design, human: np.ndarray, points: np.ndarray, bounds: list[tuple[float, float]],
        w0: np.ndarray, weight_bounds: tuple[float, float] | None, prior: float) -> tuple[np.ndarray, np.ndarray]:
    """Factors per adjustable rule and weights per dimension (normalised to sum 1);
    weights stay w0 when `weight_bounds` is None."""
    fit_weights = weight_bounds is not None
    loss = _objective(d, human, points, w0, prior, fit_weights)
    start = np.array([min(max(1.0, lo), hi) for lo, hi in bounds])
    all_bounds = list(bounds)
    constraints = []
    if fit_weights:
        start = np.concatenate([start, np.clip(w0, *weight_bounds)])
        all_bounds += [weight_bounds] * len(w0)
        n = len(bounds)
        constraints = [{"type": "eq", "fun": lambda t: t[n:].sum() - 1.0,
                        "jac": lambda t: np.concatenate([np.zeros(n), np.ones(len(t) - n)])}]
    result = minimize(loss, start, jac=True, method="SLSQP", bounds=all_bounds, constraints=constraints,
                      options={"maxiter": 500, "ftol": 1e-9})
    theta = result.x if loss(result.x)[0] <= loss(start)[0] else start
    theta = np.clip(theta, [lo for lo, _ in all_bounds], [hi for _, hi in all_bounds])
    weights = theta[len(bounds):] / theta[len(bounds):].sum() if fit_weights else w0
    return theta[:len(bounds)], weights


# --- the data --------------------------------------------------------------------

def _machine(scores: list[Scores], targets: list[str]) -> np.ndarray:
    """(calls, targets) machine scores; NaN where a dimension does not apply."""
    out = np.full((len(scores), len(targets)), np.nan)
    for i, s in enumerate(scores):
        for j, target in enumerate(targets):
            value = s.total if target == TOTAL else s.dimensions[target].score
            out[i, j] = np.nan if value is None else value
    return out


def _rescore(calls: list[Call], scorecard: Scorecard) -> list[Scores]:
    return [score_call(call, scorecard).scores for call in calls]


def load_human(store: Store, scorecard: Scorecard, targets: list[str] | None,
               min_calls: int) -> tuple[list[Call], np.ndarray, list[str]]:
    """The stored calls with human scores, the human scores as (calls, dimensions + total)
    with NaN where none, and the targets fitted."""
    human = store.human_scores()
    if not human:
        raise CalibrationError(f"no human scores in {store.url}: import a QA sheet first with "
                               "`callqa human-scores QA.csv --store ...`")
    dims = list(scorecard.dimensions)
    seen = {d for scores in human.values() for d in scores}
    unknown = sorted(seen - set(dims) - {TOTAL})
    if unknown:
        raise CalibrationError(f"{store.url} has human scores for {', '.join(map(repr, unknown))}, which the "
                               f"scorecard {scorecard.label} lacks (its dimensions: {', '.join(dims)}); "
                               "calibrate with the scorecard the sheet was written for")
    if targets:
        bad = [t for t in targets if t not in dims and t != TOTAL]
        if bad:
            raise CalibrationError(f"--target {bad[0]!r}: not a dimension of {scorecard.label} "
                                   f"({', '.join(dims)}) nor {TOTAL}")
        missing = [t for t in targets if t not in seen]
        if missing:
            raise CalibrationError(f"--target {missing[0]!r}: no human scores for it in {store.url}")
    else:
        targets = [t for t in [TOTAL] + dims if t in seen]
    stored = set(store.call_ids())
    ids = sorted(c for c, scores in human.items() if c in stored and set(scores) & set(targets))
    if len(ids) < min_calls:
        raise CalibrationError(f"only {len(ids)} call(s) in {store.url} have both a machine score and a human "
                               f"score for {', '.join(targets)}; calibrating needs at least {min_calls} "
                               "(calibration.min_calls) so that the points are not fitted to a handful of calls")
    columns = dims + [TOTAL]
    matrix = np.array([[human[c].get(col, np.nan) if col in targets else np.nan for col in columns]
                       for c in ids])
    return [store.get_call(c) for c in ids], matrix, targets


# --- calibrating -----------------------------------------------------------------

def _agreement(machine: np.ndarray, human: np.ndarray) -> tuple[int, float | None, float | None]:
    both = ~np.isnan(machine) & ~np.isnan(human)
    m, h = machine[both], human[both]
    if not len(m):
        return 0, None, None
    rho = None
    if len(m) >= 3 and m.std() > 0 and h.std() > 0:
        rho = round(float(spearmanr(m, h).statistic), 3)
    return int(both.sum()), rho, round(float(np.abs(m - h).mean()), 2)


class _Fitter:
    """Fits factors and weights on a subset of calls and turns them into scorecard text."""

    def __init__(self, scorecard: Scorecard, text: str, document, settings: Settings, targets: list[str],
                 scores: list[Scores], human: np.ndarray):
        self.scorecard, self.text, self.document = scorecard, text, document
        # The total moves with every dimension; a dimension target only with its own rules.
        fitted_dims = set(scorecard.dimensions) if TOTAL in targets else set(targets)
        self.rules = [r for r in scorecard.rules
                      if r.severity != "critical" and r.points > 0 and r.dimension in fitted_dims]
        self.design = design(scores, scorecard, self.rules)
        self.human = human
        self.points = np.array([r.points for r in self.rules])
        self.bounds = []
        for rule in self.rules:
            lo, hi = settings.rule_points.get(rule.id, (settings.factor[0] * rule.points,
                                                        settings.factor[1] * rule.points))
            self.bounds.append((lo / rule.points, hi / rule.points))
        weights = np.array([d.weight for d in scorecard.dimensions.values()])
        self.weight_sum = weights.sum()
        self.w0 = weights / self.weight_sum if self.weight_sum > 0 else np.full(len(weights), 1 / len(weights))
        lo, hi = settings.weight
        fit_weights = TOTAL in targets and len(weights) > 1
        if fit_weights and not (lo * len(weights) <= 1.0 <= hi * len(weights)):
            raise CalibrationError(f"calibration.weight {list(settings.weight)}: {len(weights)} weights in "
                                   "these bounds cannot sum to 1")
        self.weight_bounds = settings.weight if fit_weights else None
        self.prior = settings.prior_calls

    def fit(self, index: np.ndarray) -> tuple[dict[str, float], dict[str, float] | None]:
        factors, weights = fit(self.design.rows(index), self.human[index], self.points, self.bounds,
                               self.w0, self.weight_bounds, self.prior)
        by_rule = {r.id: float(f) for r, f in zip(self.rules, factors)}
        if self.weight_bounds is None:
            return by_rule, None
        shares = dict(zip(self.scorecard.dimensions, _round_shares(weights * self.weight_sum, self.weight_sum)))
        return by_rule, shares

    def text_for(self, factors, weights, version=None, header=()) -> str:
        return rewrite(self.text, self.document, factors, weights, version, header)


def _round_shares(weights: np.ndarray, total: float) -> list[float]:
    """Weights rounded to 2 decimals that still add up to `total` (the largest absorbs the rest)."""
    rounded = np.round(weights, 2)
    rounded[int(np.argmax(rounded))] += round(total - rounded.sum(), 2)
    return [round(float(w), 2) for w in rounded]


def calibrate(store: Store, scorecard_path: Path, config: dict, targets: list[str] | None = None,
              folds: int | None = None, today: dt.date | None = None) -> Calibration:
    scorecard_path = Path(scorecard_path)
    try:
        scorecard = load_scorecard(scorecard_path)
    except ScorecardError as err:
        raise CalibrationError(str(err)) from None
    text = scorecard_path.read_text(encoding="utf-8")
    document = _load_document(scorecard_path)
    settings = load_settings(config, scorecard_path, scorecard, document)
    folds = folds or settings.folds
    if folds < 2:
        raise CalibrationError(f"--folds must be at least 2, got {folds}")
    calls, human, targets = load_human(store, scorecard, targets, max(settings.min_calls, folds))

    before_scores = _rescore(calls, scorecard)  # the stored scores may come from another scorecard
    columns = list(scorecard.dimensions) + [TOTAL]
    fitter = _Fitter(scorecard, text, document, settings, targets, before_scores, human)
    before = _machine(before_scores, columns)

    after = np.full_like(before, np.nan)
    order = np.random.default_rng(0).permutation(len(calls))
    with tempfile.TemporaryDirectory() as folder:
        for held_out in np.array_split(order, folds):
            train = np.setdiff1d(order, held_out)
            candidate = _scorecard_from_text(fitter.text_for(*fitter.fit(train)), Path(folder))
            after[held_out] = _machine(_rescore([calls[i] for i in held_out], candidate), columns)
        factors, weights = fitter.fit(np.arange(len(calls)))
        agreements = []
        for target in targets:
            j = columns.index(target)
            n, rho_before, mae_before = _agreement(before[:, j], human[:, j])
            _, rho_after, mae_after = _agreement(after[:, j], human[:, j])
            agreements.append(Agreement(target, n, rho_before, mae_before, rho_after, mae_after))
        day = today or dt.date.today()
        version = f"{VERSION_MARK.sub('', scorecard.version)}-cal{day:%Y%m%d}"
        header = _header(day, scorecard_path, store, len(calls), targets, folds, agreements)
        new_text = fitter.text_for(factors, weights, version, header)
        _scorecard_from_text(new_text, Path(folder))  # it must load, or nothing is written
    changes = _changes(scorecard, document, factors, weights)
    return Calibration(new_text, len(calls), targets, folds, agreements, changes)


def _changes(scorecard: Scorecard, document, factors: dict[str, float],
             weights: dict[str, float] | None) -> list[Change]:
    nodes = _rule_nodes(document)
    changes = []
    for rule_id, factor in factors.items():
        node = nodes[rule_id]
        for key in POINT_KEYS:
            value = node.get(key)
            if isinstance(value, (int, float)) and float(_format(value * factor)) != value:
                changes.append(Change(f"{rule_id} {key}", float(value), float(_format(value * factor))))
    for name, weight in (weights or {}).items():
        if round(weight, 2) != round(scorecard.dimensions[name].weight, 2):
            changes.append(Change(f"weight of {name}", scorecard.dimensions[name].weight, weight))
    return changes


def _figure(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:+.{digits}f}" if digits == 2 else f"{value:.1f}"


def _header(day: dt.date, path: Path, store: Store, calls: int, targets: list[str], folds: int,
            agreements: list[Agreement]) -> list[str]:
    lines = [f"by `callqa calibrate` on {day:%Y-%m-%d} from {path.name}, fitted to the human "
             f"{', '.join(targets)} scores of {calls} calls in {store.url.rsplit('/', 1)[-1]}.",
             f"Agreement with the human scores on held-out calls ({folds}-fold cross-validation), before -> after:"]
    for a in agreements:
        lines.append(f"  {a.target}: Spearman {_figure(a.spearman_before)} -> {_figure(a.spearman_after)}, "
                     f"mean absolute difference {_figure(a.mae_before, 1)} -> {_figure(a.mae_after, 1)} "
                     f"({a.n} calls)")
    lines.append("Only numbers changed (rule points and caps, dimension weights) and the version.")
    return lines


def report(result: Calibration) -> str:
    """What `callqa calibrate` prints: agreement before and after, then what changed."""
    lines = [f"{result.calls} calls with human scores ({', '.join(result.targets)}); "
             f"{result.folds}-fold cross-validation, held-out calls scored by the real scorecard code",
             f"{'':12} {'calls':>5}  {'Spearman before':>15} {'after':>6}  {'mean abs diff before':>20} {'after':>6}"]
    for a in result.agreements:
        lines.append(f"{a.target:12} {a.n:5}  {_figure(a.spearman_before):>15} {_figure(a.spearman_after):>6}  "
                     f"{_figure(a.mae_before, 1):>20} {_figure(a.mae_after, 1):>6}")
    lines.append(f"{len(result.changes)} number(s) changed" + (":" if result.changes else ""))
    for change in result.changes:
        lines.append(f"  {change.what}: {change.before:g} -> {change.after:g}")
    return "\n".join(lines)
