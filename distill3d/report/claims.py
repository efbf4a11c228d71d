"""The seed's claims, each judged from the metrics of the comparison (never typed in): reproduced, not reproduced,
mixed, or no data.

Input: ``Evidence``: per method, the evaluate stage's metrics of each (prompt, seed) asset; the guidance sweeps
(DreamFusion's SDS and VSD: guidance scale -> metrics of each seed); and, for the Janus claim, the metrics of face
prompts for DreamFusion without view-dependent prompts, with them, and MVDream. Each claim is one line of the seed,
the numbers that test it, and a verdict by the rule in its docstring. Thresholds are constants below, so a changed
metric changes the verdict (tests/test_report_claims.py).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from distill3d.nested import lookup

REPRODUCED, NOT_REPRODUCED, MIXED, NO_DATA = "reproduced", "not reproduced", "mixed", "no data"
SATURATION_EXCESS = 0.05  # saturation above the ground truth's that reads as over-saturated (metrics.suite's flag)
IOU_TOLERANCE = 0.03  # "matches" in all-view IoU: within this (about the seed-to-seed spread measured)
JANUS_FREE = 0.05  # a Janus rate this low is "no Janus"
FACE_DRAWN = 0.5  # ... and only counts when the face is drawn in at least this share of front views


@dataclass
class Claim:
    key: str
    text: str
    verdict: str
    evidence: str
    numbers: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Evidence:
    """methods: {method: [metrics dict per asset]}; sweeps: {"sds" | "vsd": {guidance scale: [metrics per seed]}};
    janus: {"dreamfusion_no_view_prompts" | "dreamfusion" | "mvdream": [metrics of face-prompt assets]};
    seconds: {method: [seconds per asset]}; diversity: {"sds" | "vsd": {guidance scale: [mean pairwise render
    distance]}}: for SDS between the assets of different seeds, for VSD between the particles of one run."""

    methods: dict[str, list[dict]] = field(default_factory=dict)
    sweeps: dict[str, dict[float, list[dict]]] = field(default_factory=dict)
    janus: dict[str, list[dict]] = field(default_factory=dict)
    seconds: dict[str, list[float]] = field(default_factory=dict)
    diversity: dict[str, dict[float, list[float]]] = field(default_factory=dict)


def mean_of(metrics: Sequence[Mapping[str, Any]], path: str,
            where: Callable[[Mapping[str, Any]], bool] = lambda m: True) -> float | None:
    """Mean of a metric (dotted path) over the assets that have it (and pass ``where``); None when none does."""
    values = [lookup(m, path) for m in metrics if where(m)]
    values = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)
              and math.isfinite(float(v))]
    return statistics.fmean(values) if values else None


def _fmt(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}g}"


def _verdict(checks: Sequence[bool | None]) -> str:
    known = [c for c in checks if c is not None]
    if not known:
        return NO_DATA
    return REPRODUCED if all(known) else NOT_REPRODUCED if not any(known) else MIXED


def _striped(m: Mapping[str, Any]) -> bool:
    return lookup(m, "spec.pattern") == "striped"


def _face(m: Mapping[str, Any]) -> bool:
    return bool(lookup(m, "spec.face"))


def front_face_rate(m: Mapping[str, Any]) -> float | None:
    """Share of the front views in which the face detector finds a face (janus.per_view)."""
    views = [v for v in (lookup(m, "janus.per_view") or []) if v.get("kind") == "front"]
    return sum(bool(v.get("pred_face")) for v in views) / len(views) if views else None


def _iou_by_scale(sweep: Mapping[float, Sequence[Mapping[str, Any]]]) -> dict[float, float]:
    """{guidance scale: mean all-view IoU over its seeds}, ascending, scales without an IoU left out."""
    return {w: v for w in sorted(sweep) if (v := mean_of(sweep[w], "iou_all_views")) is not None}


def oversaturation(ev: Evidence) -> Claim:
    """SDS's saturation excess grows with the guidance scale (higher at the largest scale than at the smallest) and
    is over-saturated (> SATURATION_EXCESS) at the largest: reproduced when both hold, mixed when one does."""
    sweep = ev.sweeps.get("sds") or {}
    scales = sorted(sweep)
    excess = {w: mean_of(sweep[w], "saturation.excess") for w in scales}
    lo, hi = (excess[scales[0]], excess[scales[-1]]) if len(scales) > 1 else (None, None)
    grows = None if lo is None or hi is None else hi > lo
    saturated = None if hi is None else hi > SATURATION_EXCESS
    text = ", ".join(f"w={w:g}: {_fmt(excess[w])}" for w in scales)
    return Claim("oversaturation", "DreamFusion over-saturates at large guidance scales", _verdict([grows, saturated]),
                 f"saturation excess over the ground truth by SDS guidance scale: {text or 'no sweep'}",
                 {"saturation_excess_by_scale": excess})


def sds_needs_large_guidance(ev: Evidence) -> Claim:
    """SDS needs a large guidance scale (DreamFusion uses 100): at the sweep's smallest scale the all-view IoU is
    worse than at its best scale by more than IOU_TOLERANCE. Reproduced when it is, not reproduced otherwise."""
    iou = _iou_by_scale(ev.sweeps.get("sds") or {})
    if len(iou) < 2:
        return Claim("sds_large_guidance", "SDS needs a large guidance scale", NO_DATA, "no SDS sweep", {})
    best, small = max(iou, key=iou.get), min(iou)
    text = ", ".join(f"w={w:g}: {_fmt(v)}" for w, v in iou.items())
    return Claim("sds_large_guidance", "SDS needs a large guidance scale",
                 _verdict([iou[small] < iou[best] - IOU_TOLERANCE]),
                 f"all-view IoU by SDS guidance scale: {text} (best at w={best:g})", {"iou_all_views_by_scale": iou})


def second_stage_detail(ev: Evidence) -> Claim:
    """Magic3D against DreamFusion: on striped prompts its stripe energy is closer to the ground truth's (ratio
    nearer 1), and its surfaces are smoother (lower normal error against the ground truth), at an all-view IoU no
    worse than DreamFusion's (within IOU_TOLERANCE). Reproduced when all three hold, mixed when some do."""
    df, m3 = ev.methods.get("dreamfusion") or [], ev.methods.get("magic3d") or []
    stripes = {k: mean_of(v, "sharpness.stripe_energy_ratio", _striped) for k, v in (("df", df), ("m3", m3))}
    normal = {k: mean_of(v, "normals.error_deg") for k, v in (("df", df), ("m3", m3))}
    iou = {k: mean_of(v, "iou_all_views") for k, v in (("df", df), ("m3", m3))}
    closer = None if None in stripes.values() else abs(stripes["m3"] - 1) < abs(stripes["df"] - 1)
    smoother = None if None in normal.values() else normal["m3"] < normal["df"]
    geometry = None if None in iou.values() else iou["m3"] >= iou["df"] - IOU_TOLERANCE
    return Claim("second_stage_detail", "A higher-resolution second stage (Magic3D) sharpens detail",
                 _verdict([closer, smoother, geometry]),
                 f"stripe energy / ground truth (1 = as sharp): Magic3D {_fmt(stripes['m3'])} vs DreamFusion "
                 f"{_fmt(stripes['df'])}; normal error {_fmt(normal['m3'])} vs {_fmt(normal['df'])} deg; all-view IoU "
                 f"{_fmt(iou['m3'])} vs {_fmt(iou['df'])}",
                 {"stripe_energy_ratio": stripes, "normal_error_deg": normal, "iou_all_views": iou})


def sdf_smoother(ev: Evidence) -> Claim:
    """TextMesh (an SDF) against DreamFusion (a density field): lower roughness (angle between adjacent faces) and
    lower normal error against the ground truth. Reproduced when both, mixed when one."""
    df, tm = ev.methods.get("dreamfusion") or [], ev.methods.get("textmesh") or []
    rough = {k: mean_of(v, "normals.roughness_deg") for k, v in (("df", df), ("tm", tm))}
    normal = {k: mean_of(v, "normals.error_deg") for k, v in (("df", df), ("tm", tm))}
    smoother = None if None in rough.values() else rough["tm"] < rough["df"]
    truer = None if None in normal.values() else normal["tm"] < normal["df"]
    return Claim("sdf_smoother", "An SDF (TextMesh) gives smoother, cleaner meshes", _verdict([smoother, truer]),
                 f"roughness TextMesh {_fmt(rough['tm'])} vs DreamFusion {_fmt(rough['df'])} deg; normal error "
                 f"{_fmt(normal['tm'])} vs {_fmt(normal['df'])} deg",
                 {"roughness_deg": rough, "normal_error_deg": normal})


def vsd_ordinary_guidance(ev: Evidence, scale: float = 7.5) -> Claim:
    """VSD at guidance 7.5 matches SDS's best all-view IoU over the sweep (within IOU_TOLERANCE) with a lower
    saturation excess than SDS at that best scale. Reproduced when both, mixed when one."""
    sds, vsd = ev.sweeps.get("sds") or {}, ev.sweeps.get("vsd") or {}
    sds_iou = _iou_by_scale(sds)
    at = min(vsd, key=lambda w: abs(w - scale)) if vsd else None
    if not sds_iou or at is None:
        return Claim("vsd_ordinary_guidance", "VSD works at ordinary guidance (7.5) with less saturation", NO_DATA,
                     "no SDS or VSD sweep", {})
    best = max(sds_iou, key=sds_iou.get)
    v_iou, v_sat = mean_of(vsd[at], "iou_all_views"), mean_of(vsd[at], "saturation.excess")
    s_sat = mean_of(sds[best], "saturation.excess")
    matches = None if v_iou is None else v_iou >= sds_iou[best] - IOU_TOLERANCE
    less = None if v_sat is None or s_sat is None else v_sat < s_sat
    return Claim("vsd_ordinary_guidance", "VSD works at ordinary guidance (7.5) with less saturation",
                 _verdict([matches, less]),
                 f"VSD at w={at:g}: all-view IoU {_fmt(v_iou)}, saturation excess {_fmt(v_sat)}; SDS at its best "
                 f"w={best:g}: {_fmt(sds_iou[best])}, {_fmt(s_sat)}",
                 {"vsd": {"scale": at, "iou_all_views": v_iou, "saturation_excess": v_sat},
                  "sds_best": {"scale": best, "iou_all_views": sds_iou[best], "saturation_excess": s_sat}})


def multiview_removes_janus(ev: Evidence) -> Claim:
    """On face prompts, MVDream's Janus rate (faces on back or side views) is at most JANUS_FREE and below
    DreamFusion's (with view-dependent prompts), with the face drawn in at least FACE_DRAWN of MVDream's front views
    (a Janus rate of 0 without a face proves nothing). Reproduced when all hold, mixed when some do."""
    rates = {k: mean_of(v, "janus.rate") for k, v in ev.janus.items()}
    fronts = {k: (statistics.fmean(r) if (r := [x for m in v if (x := front_face_rate(m)) is not None]) else None)
              for k, v in ev.janus.items()}
    mv, df = rates.get("mvdream"), rates.get("dreamfusion")
    free = None if mv is None else mv <= JANUS_FREE
    lower = None if mv is None or df is None else mv < df
    drawn = None if fronts.get("mvdream") is None else fronts["mvdream"] >= FACE_DRAWN
    text = "; ".join(f"{k}: Janus {_fmt(rates[k])}, face in front views {_fmt(fronts.get(k))}" for k in rates)
    return Claim("multiview_janus", "Multi-view guidance (MVDream) removes the Janus problem",
                 _verdict([free, lower, drawn]), text or "no face-prompt runs",
                 {"janus_rate": rates, "front_face_rate": fronts})


def vsd_diversity(ev: Evidence, scale: float = 7.5) -> Claim:
    """ProlificDreamer: VSD's particles of one prompt differ more than SDS's results with different seeds (SDS is
    mode-seeking), compared at the guidance scales nearest ``scale`` that both have. Reproduced when VSD's mean
    pairwise render distance is the larger, not reproduced otherwise."""
    sds, vsd = ev.diversity.get("sds") or {}, ev.diversity.get("vsd") or {}
    sds, vsd = ({w: d for w, d in x.items() if d} for x in (sds, vsd))
    if not sds or not vsd:
        return Claim("vsd_diversity", "VSD's particles are more diverse than SDS's seeds", NO_DATA,
                     "needs VSD with particles > 1 and SDS with seeds > 1 in the sweeps", {})
    at_v, at_s = (min(x, key=lambda w: abs(w - scale)) for x in (vsd, sds))
    d_v, d_s = statistics.fmean(vsd[at_v]), statistics.fmean(sds[at_s])
    return Claim("vsd_diversity", "VSD's particles are more diverse than SDS's seeds",
                 _verdict([d_v > d_s]),
                 f"mean render distance between VSD's particles at w={at_v:g}: {_fmt(d_v)}; between SDS's seeds at "
                 f"w={at_s:g}: {_fmt(d_s)}",
                 {"vsd": {"scale": at_v, "distance": d_v}, "sds": {"scale": at_s, "distance": d_s}})


RANKED = (("iou_all_views", "high"), ("volume.iou", "high"), ("chamfer.chamfer", "low"),
          ("colour_error_lab", "low"), ("normals.error_deg", "low"), ("saturation.excess", "zero"))


def method_ranks(ev: Evidence) -> dict[str, float]:
    """Mean rank of each method over RANKED metrics (means over its assets; 1 = best; ties share their mean rank)."""
    ranks: dict[str, list[float]] = {m: [] for m in ev.methods}
    for path, better in RANKED:
        values = {m: mean_of(ms, path) for m, ms in ev.methods.items()}
        score = {m: (-v if better == "high" else abs(v) if better == "zero" else v)
                 for m, v in values.items() if v is not None}
        for m, s in score.items():
            below = sum(1 for x in score.values() if x < s)
            ties = sum(1 for x in score.values() if x == s)
            ranks[m].append(below + (ties + 1) / 2)
    return {m: statistics.fmean(r) for m, r in ranks.items() if r}


def mvdream_first(ev: Evidence) -> Claim:
    """Overall, MVDream ranks first: its mean rank over RANKED metrics is the best alone (reproduced), tied for
    first or second (mixed), or worse (not reproduced)."""
    ranks = method_ranks(ev)
    if "mvdream" not in ranks:
        return Claim("mvdream_first", "Overall MVDream ranks first", NO_DATA, "no MVDream assets", {"ranks": ranks})
    order = sorted(ranks, key=ranks.get)
    place = 1 + sum(r < ranks["mvdream"] for r in ranks.values())  # ties share the better place
    alone = sum(r == ranks["mvdream"] for r in ranks.values()) == 1
    verdict = REPRODUCED if place == 1 and alone else MIXED if place <= 2 else NOT_REPRODUCED
    return Claim("mvdream_first", "Overall MVDream ranks first", verdict,
                 "mean rank over " + ", ".join(p for p, _ in RANKED) + ": "
                 + ", ".join(f"{m} {ranks[m]:.2f}" for m in order), {"ranks": ranks, "order": order})


CLAIMS = (sds_needs_large_guidance, oversaturation, second_stage_detail, sdf_smoother, vsd_ordinary_guidance,
          vsd_diversity, multiview_removes_janus, mvdream_first)


def judge(ev: Evidence) -> list[Claim]:
    """Every claim of the seed, judged from ``ev``."""
    return [claim(ev) for claim in CLAIMS]


def claims_markdown(claims: Sequence[Claim]) -> str:
    """The claims table (Markdown): claim, verdict, the numbers."""
    lines = ["| claim of the seed | verdict | the numbers |", "|---|---|---|"]
    for c in claims:
        lines.append(f"| {c.text} | **{c.verdict}** | {c.evidence.replace('|', '/')} |")
    return "\n".join(lines) + "\n"
