import pytest

from ml.text import clean_list, clean_text, normalise_title, parse_price


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("$12.99", 12.99),
        ("$1,299.00", 1299.0),
        ("$8.99 - $24.99", 8.99),  # a range gives its lower bound
        ("", None),
        ("   ", None),
        (None, None),
        ("₹32,999", 32999.0),
        ("£5.00", 5.0),
        ("12,99 €", 12.99),
        (19.5, 19.5),
        (120, 120.0),
        (float("nan"), None),
        (-3, None),
        (".a-box-inner{background-color:#fff}#hmd2{width:100%}", None),  # real CSS in a price cell
        ("No rating available", None),
        ("-$5.00", None),  # a negative price is no price, whatever the sign's position or glyph
        ("$-5", None),
        ("\u22125", None),
        ("USD -12.50", None),
    ],
)
def test_parse_price(raw, expected):
    assert parse_price(raw) == expected


def test_clean_text_unescapes_entities_and_strips_tags():
    raw = '3/4-16 RH Weld In Threaded Heim Joint Tube Adapter Bung for 1-1/4&quot; Dia<br>by .120 <b>Wall</b>'
    assert clean_text(raw) == '3/4-16 RH Weld In Threaded Heim Joint Tube Adapter Bung for 1-1/4" Dia by .120 Wall'


def test_clean_text_double_escaped_and_whitespace():
    assert clean_text("Tools &amp;amp; Home\n\n  Improvement\t") == "Tools & Home Improvement"


def test_clean_text_joins_lists_and_returns_none_for_empty():
    assert clean_text(["First paragraph.", "", "<p>Second</p>"]) == "First paragraph. Second"
    assert clean_text(["", "  ", "<br>"]) is None
    assert clean_text(None) is None


def test_clean_list_drops_empty_items():
    assert clean_list(["Dishwasher Safe.", "", "<br>", "Set weights &lt; 13 oz"]) == [
        "Dishwasher Safe.",
        "Set weights < 13 oz",
    ]
    assert clean_list("single") == ["single"]
    assert clean_list(None) == []


def test_normalise_title_ignores_case_and_punctuation():
    assert normalise_title("Puma Men Grey T-shirt") == normalise_title("puma men  grey t shirt!")
    assert normalise_title(None) == ""


def test_clean_text_strips_control_characters():
    assert clean_text("Steel\x00 Food\x1b[1m Steamer\x7f") == "Steel Food[1m Steamer"
    assert clean_text("tab\tand\r\nnewline") == "tab and newline"  # whitespace controls become a space
    assert clean_text("\x00\x01") is None
