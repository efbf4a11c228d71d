"""The claims table is computed from the metrics: change a metric in the fixture and the verdict follows."""

from __future__ import annotations

import copy

import pytest

from distill3d.report.claims import (MIXED, NO_DATA, NOT_REPRODUCED, REPRODUCED, Evidence, claims_markdown, judge,
                                     method_ranks)


def _m(iou=0.85, vol=0.8, chamfer=0.04, colour=8.0, normal=20.0, rough=10.0, sat=0.1, stripes=None, janus=None,
       front_faces=None):
    m = {"iou_all_views": iou, "volume": {"iou": vol}, "chamfer": {"chamfer": chamfer}, "colour_error_lab": colour,
         "normals": {"error_deg": normal, "roughness_deg": rough}, "saturation": {"excess": sat},
         "spec": {"pattern": "striped" if stripes is not None else "plain", "face": janus is not None},
         "sharpness": {"stripe_energy_ratio": stripes}}
    if janus is not None:
        views = [{"kind": "front", "pred_face": i < front_faces} for i in range(2)] + [{"kind": "back"}]
        m["janus"] = {"rate": janus, "per_view": views}
    return m


@pytest.fixture
def evidence() -> Evidence:
    return Evidence(
        methods={
            "dreamfusion": [_m(sat=0.12, normal=25, rough=14), _m(stripes=0.3, sat=0.12, normal=25, rough=14)],
            "magic3d": [_m(normal=18, rough=9), _m(stripes=0.8, normal=18, rough=9)],
            "textmesh": [_m(normal=20, rough=8, iou=0.83), _m(stripes=0.2, normal=20, rough=8)],
            "prolificdreamer": [_m(sat=0.03, iou=0.84), _m(stripes=0.5, sat=0.03)],
            "mvdream": [_m(iou=0.9, vol=0.85, chamfer=0.03, colour=6, normal=15, sat=0.02),
                        _m(iou=0.9, vol=0.85, chamfer=0.03, colour=6, normal=15, sat=0.02, stripes=0.6)],
        },
        sweeps={"sds": {1.0: [_m(iou=0.6, sat=0.01)], 5.0: [_m(iou=0.86, sat=0.04)], 20.0: [_m(iou=0.84, sat=0.08)],
                        100.0: [_m(iou=0.7, sat=0.2)]},
                "vsd": {2.5: [_m(iou=0.8, sat=0.01)], 7.5: [_m(iou=0.85, sat=0.02)]}},
        janus={"dreamfusion_no_view_prompts": [_m(janus=0.6, front_faces=2)], "dreamfusion": [_m(janus=0.3, front_faces=1)],
               "mvdream": [_m(janus=0.0, front_faces=2)]},
        diversity={"sds": {5.0: [0.02], 100.0: [0.01]}, "vsd": {7.5: [0.06, 0.04]}},
    )


def test_all_claims_judged_from_the_fixture(evidence) -> None:
    verdicts = {c.key: c.verdict for c in judge(evidence)}
    assert verdicts == {"sds_large_guidance": REPRODUCED, "oversaturation": REPRODUCED,
                        "second_stage_detail": REPRODUCED, "sdf_smoother": REPRODUCED,
                        "vsd_ordinary_guidance": REPRODUCED, "vsd_diversity": REPRODUCED, "multiview_janus": REPRODUCED,
                        "mvdream_first": REPRODUCED}
    table = claims_markdown(judge(evidence))
    assert table.count("\n") == 2 + 8 and "w=100: 0.2" in table


def test_verdicts_follow_the_metrics(evidence) -> None:
    ev = copy.deepcopy(evidence)
    ev.sweeps["sds"][100.0][0]["saturation"]["excess"] = 0.01  # no longer rising nor saturated
    ev.sweeps["sds"][1.0][0]["iou_all_views"] = 0.85  # the smallest scale within the tolerance of the best
    ev.methods["textmesh"][0]["normals"]["roughness_deg"] = 30.0  # rougher than DreamFusion on average
    ev.methods["textmesh"][1]["normals"]["roughness_deg"] = 30.0
    ev.janus["mvdream"][0]["janus"]["per_view"][0]["pred_face"] = False  # face drawn in only half the fronts...
    ev.janus["mvdream"][0]["janus"]["per_view"][1]["pred_face"] = False  # ... now in none
    ev.methods["mvdream"] = [_m(iou=0.5, vol=0.4, chamfer=0.2, colour=30, normal=50, sat=0.3)]
    verdicts = {c.key: c.verdict for c in judge(ev)}
    assert verdicts["oversaturation"] == NOT_REPRODUCED
    assert verdicts["sds_large_guidance"] == NOT_REPRODUCED
    assert verdicts["sdf_smoother"] == MIXED
    assert verdicts["multiview_janus"] == MIXED  # Janus-free, but no face drawn proves nothing
    assert verdicts["mvdream_first"] == NOT_REPRODUCED
    assert max(method_ranks(ev), key=method_ranks(ev).get) == "mvdream"


def test_diversity_compares_vsd_particles_with_sds_seeds_at_the_nearest_scales(evidence) -> None:
    claim = next(c for c in judge(evidence) if c.key == "vsd_diversity")
    assert claim.numbers["vsd"] == {"scale": 7.5, "distance": 0.05}
    assert claim.numbers["sds"] == {"scale": 5.0, "distance": 0.02}  # 5 is nearer 7.5 than 100
    ev = copy.deepcopy(evidence)
    ev.diversity["sds"][5.0] = [0.07]  # SDS's seeds now differ more than VSD's particles
    assert next(c for c in judge(ev) if c.key == "vsd_diversity").verdict == NOT_REPRODUCED
    ev.diversity.pop("vsd")  # one particle: nothing to compare
    assert next(c for c in judge(ev) if c.key == "vsd_diversity").verdict == NO_DATA


def test_missing_evidence_is_no_data() -> None:
    verdicts = {c.key: c.verdict for c in judge(Evidence())}
    assert set(verdicts.values()) == {NO_DATA}
