"""The dashboard's pure formatting rules: unmeasured is "—", never 0; thresholds read without colour."""

from __future__ import annotations

import math

import pytest

from esper_tui.format import (
    BLOCKS,
    DASH,
    STAGES,
    alpha_bar,
    fmt_credit,
    fmt_fixed,
    fmt_int,
    fmt_num,
    fmt_pct,
    fmt_signed,
    fmt_value,
    sparkline,
    stage_badge,
    stage_class,
)


@pytest.mark.parametrize("fmt", [fmt_num, fmt_fixed, fmt_int, fmt_pct, fmt_signed, fmt_value])
def test_none_is_a_dash_everywhere(fmt):
    assert fmt(None) == DASH


@pytest.mark.parametrize("fmt", [fmt_num, fmt_fixed, fmt_int, fmt_pct, fmt_signed])
def test_non_finite_is_a_dash(fmt):
    assert fmt(math.nan) == DASH
    assert fmt(math.inf) == DASH


def test_numbers_round_as_documented():
    assert fmt_num(0.0523456) == "0.05235"  # 4 significant digits by default
    assert fmt_num(0.31, 2) == "0.31"
    assert fmt_num(0.0) == "0"
    assert fmt_fixed(0.654) == "0.65"
    assert fmt_int(1234) == "1,234"
    assert fmt_int(1234567.6) == "1,234,568"
    assert fmt_pct(93.94) == "93.9%"  # accuracies arrive in percentage points
    assert fmt_pct(100.0, 0) == "100%"
    assert fmt_signed(1.23) == "+1.2"
    assert fmt_signed(-0.44) == "-0.4"
    assert fmt_signed(-0.01) == "+0.0"  # no "-0.0"


def test_check_values_are_readable():
    assert fmt_value(True) == "yes" and fmt_value(False) == "no"
    assert fmt_value(3) == "3" and fmt_value(12345) == "12,345"
    assert fmt_value(0.123456) == "0.1235"
    assert fmt_value("inf") == "inf"
    assert fmt_value(math.inf) == "inf"
    assert fmt_value("SHADOWING") == "SHADOWING"


def test_every_stage_has_its_own_class_and_a_text_badge():
    classes = {stage_class(stage) for stage in STAGES}
    assert len(classes) == len(STAGES) == 9
    assert stage_class("TRAINING") == "stage-TRAINING"
    assert stage_class("nonsense") == "stage-UNKNOWN"
    assert stage_badge("BLENDING") == "[BLENDING]"


@pytest.mark.parametrize("alpha, expected", [(0.0, 0), (0.65, 6), (1.0, 10), (1.7, 10), (-0.2, 0), (None, 0)])
def test_alpha_bar_fills_in_proportion_and_keeps_its_width(alpha, expected):
    bar = alpha_bar(alpha, 10)
    assert len(bar) == 10
    assert bar.count("█") == expected


def test_alpha_bar_width_zero():
    assert alpha_bar(0.5, 0) == ""


def test_sparkline_gaps_for_unmeasured_never_zero():
    chars, below = sparkline([0.2, None, 0.4, None], threshold=0.05, width=10)
    assert chars[1] == " " and chars[3] == " "
    assert chars[0] in BLOCKS and chars[2] in BLOCKS
    assert below == [False, False, False, False]


def test_sparkline_marks_points_below_threshold_with_the_lowest_block():
    chars, below = sparkline([0.01, 0.05, 0.5, 0.02], threshold=0.05, width=10)
    assert below == [True, False, False, True]
    assert chars[0] == chars[3] == BLOCKS[0]
    assert chars[1] == BLOCKS[1]  # at the threshold: the lowest passing block
    assert chars[2] == BLOCKS[-1]  # the largest value shown: a full block
    assert BLOCKS[0] not in chars[1:3]  # the lowest block means "below", nothing else


def test_sparkline_without_threshold_scales_from_zero():
    chars, below = sparkline([0.0, 0.5, 1.0], threshold=None, width=10)
    assert chars == BLOCKS[0] + BLOCKS[3] + BLOCKS[-1]
    assert below == [False, False, False]


def test_sparkline_shows_the_most_recent_values_that_fit():
    values = [0.1] * 30 + [None, 1.0]
    chars, below = sparkline(values, threshold=0.05, width=5)
    assert len(chars) == len(below) == 5
    assert chars[-2:] == " " + BLOCKS[-1]


def test_sparkline_edge_cases():
    assert sparkline([], 0.05, 10) == ("", [])
    assert sparkline([None, None], 0.05, 10) == ("  ", [False, False])
    assert sparkline([0.3], 0.05, 0) == ("", [])
    chars, _ = sparkline([0.0, 0.0], None, 5)
    assert chars == BLOCKS[0] * 2  # all zero: lowest, not full


def test_credit_reads_as_point_and_interval_and_never_as_zero_when_missing():
    assert fmt_credit(1.84, 0.92, 2.71) == "cf +1.8 [+0.9, +2.7]"
    assert fmt_credit(-0.04, -1.0, 0.96) == "cf +0.0 [-1.0, +1.0]"  # no "-0.0"
    assert fmt_credit(2.0, None, None) == "cf +2.0"
    assert fmt_credit(None, None, None) == f"cf {DASH}"
