"""The PIN's structure as Decree 137/2015 Art. 13 and Circular 07/2016 Art. 7 define it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lienthong import pin
from lienthong.person.v1 import sex_pb2

MALE, FEMALE = sex_pb2.SEX_MALE, sex_pb2.SEX_FEMALE


@pytest.mark.parametrize(
    ("year", "sex", "digit"),
    [
        (1900, MALE, 0), (1999, FEMALE, 1), (2000, MALE, 2), (2016, FEMALE, 3),
        (2100, MALE, 4), (2199, FEMALE, 5), (2200, MALE, 6), (2300, FEMALE, 9),
    ],
)  # fmt: skip
def test_century_and_sex_digit_follows_the_circular(year: int, sex: int, digit: int) -> None:
    assert pin.century_sex_digit(year, sex) == digit


def test_prefix_of_a_girl_born_2016_registered_in_ha_noi_is_001316() -> None:
    """The example of shared/domain/README.md."""
    assert pin.prefix("001", 2016, FEMALE) == "001316"


@pytest.mark.parametrize("year", [1899, 2400])
def test_years_outside_the_table_are_refused(year: int) -> None:
    with pytest.raises(ValueError, match="outside"):
        pin.prefix("001", year, MALE)


def test_unspecified_sex_is_refused() -> None:
    with pytest.raises(ValueError, match="sex"):
        pin.century_sex_digit(2016, sex_pb2.SEX_UNSPECIFIED)


@given(
    province=st.from_regex(r"\A0\d\d\Z"),
    year=st.integers(1900, 2399),
    sex=st.sampled_from([MALE, FEMALE]),
    serial=st.integers(0, 999_999),
)
def test_parse_recovers_what_the_number_encodes(
    province: str, year: int, sex: int, serial: int
) -> None:
    number = f"{pin.prefix(province, year, sex)}{serial:06d}"
    parts = pin.parse(number)
    assert (parts.province_code, parts.birth_year, parts.sex, parts.serial) == (
        province, year, sex, f"{serial:06d}",
    )  # fmt: skip


@pytest.mark.parametrize("text", ["", "00131600000", "0013160000000", "00131600000a"])
def test_parse_refuses_anything_but_twelve_digits(text: str) -> None:
    with pytest.raises(ValueError, match="12 digits"):
        pin.parse(text)
