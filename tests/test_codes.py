"""Code lists shipped as package data, and their effective-dated lookups."""

from __future__ import annotations

from collections import Counter
from datetime import date

import pytest
from pydantic import BaseModel, ValidationError

from hub.codes import (
    ALAND_REGION_CODE,
    EmploymentAreaCodeStr,
    MainlandMunicipalityCodeStr,
    MunicipalityCodeStr,
    OutsideTeServices,
    UnemploymentFundCodeStr,
    UnknownCode,
    employment_area,
    employment_area_of,
    employment_areas,
    fund,
    is_mainland,
    municipalities,
    municipality,
    municipality_weights,
    region,
    regional_centre_of,
    regional_centres,
    regions,
    unemployment_funds,
)
from hub.codes.lookup import _rows

MARIEHAMN = "478"


# --- counts and integrity ---------------------------------------------------------------------


def test_counts() -> None:
    assert len(municipalities()) == 308
    assert len(regions()) == 19
    assert len(employment_areas()) == 45
    assert len(regional_centres(date(2025, 6, 30))) == 15
    assert len(regional_centres(date(2026, 6, 30))) == 10
    ely_rows = _rows("fi_ely_centres_2025.csv")
    assert len(ely_rows) == 16
    assert [r["ely_code"] for r in ely_rows if r["is_ely_centre"] != "true"] == ["16"]


def test_aland_has_16_municipalities() -> None:
    aland = [m for m in municipalities().values() if not m.is_mainland]
    assert len(aland) == 16
    assert {m.region_code for m in aland} == {ALAND_REGION_CODE}


def test_every_mainland_municipality_is_in_exactly_one_area() -> None:
    members = Counter(c for a in employment_areas().values() for c in a.municipality_codes)
    mainland = {c for c, m in municipalities().items() if m.is_mainland}
    assert set(members) == mainland
    assert all(n == 1 for n in members.values())
    for code in mainland:
        assert code in employment_area_of(code).municipality_codes


def test_area_member_lists_agree_with_the_municipality_file() -> None:
    for r in _rows("fi_municipality_employment_area_2025.csv"):
        if r["employment_area_code"] == "46":
            assert not is_mainland(r["municipality_code"])
        else:
            area = employment_area(r["employment_area_code"])
            assert r["municipality_code"] in area.municipality_codes


def test_organising_models_match_the_government_totals() -> None:
    models = Counter(a.organising_model for a in employment_areas().values())
    assert models == {
        "lead_municipality": 39,
        "single_municipality": 4,
        "joint_municipal_authority": 2,
    }
    singles = {a.name_fi for a in employment_areas().values() if len(a.municipality_codes) == 1}
    assert singles == {"Helsinki", "Vantaa", "Lahti", "Kouvola"}


def test_every_mainland_municipality_has_a_centre_on_both_sides_of_the_switch() -> None:
    for code, m in municipalities().items():
        if m.is_mainland:
            assert regional_centre_of(code, date(2025, 12, 31)).kind == "ely"
            assert regional_centre_of(code, date(2026, 1, 1)).kind == "elinvoimakeskus"


def test_municipality_regions_exist() -> None:
    assert {m.region_code for m in municipalities().values()} == set(regions())


# --- spot checks from the source notes --------------------------------------------------------


@pytest.mark.parametrize(
    ("municipality_code", "area_code", "area_name"),
    [
        ("091", "08", "Helsinki"),
        ("240", "22", "Meri-Lappi"),
        ("905", "26", "Pohjanmaa"),
        ("272", "12", "Keski-Pohjanmaa"),
        ("287", "38", "Suupohja"),  # Kristiinankaupunki: crosses the region border
    ],
)
def test_employment_area_of(municipality_code: str, area_code: str, area_name: str) -> None:
    area = employment_area_of(municipality_code)
    assert (area.code, area.name_fi) == (area_code, area_name)


def test_municipality_names() -> None:
    helsinki = municipality("091")
    assert (helsinki.name_fi, helsinki.name_sv, helsinki.region_code) == (
        "Helsinki",
        "Helsingfors",
        "01",
    )
    assert region("01").name_fi == "Uusimaa"
    assert municipality("905").region_code == "15"


def test_pertunmaa_merged_into_mantyharju() -> None:
    assert "588" not in municipalities()


def test_kokkola_centre_switches_on_new_year_2026() -> None:
    ely = regional_centre_of("272", date(2025, 12, 31))
    assert (ely.kind, ely.code, ely.name_fi) == ("ely", "12", "Pohjanmaan ELY-keskus")
    centre = regional_centre_of("272", date(2026, 1, 1))
    assert (centre.kind, centre.code) == ("elinvoimakeskus", "08")
    assert centre.name_fi == "Pohjanmaan elinvoimakeskus"


def test_dates_before_2025_use_ely() -> None:
    assert regional_centre_of("091", date(2024, 3, 1)).kind == "ely"
    assert regional_centre_of("091", date(2024, 3, 1)).code == "01"


def test_helsinki_and_kemi_centres() -> None:
    assert regional_centre_of("240", date(2025, 1, 1)).code == "15"  # Lapin ELY
    assert regional_centre_of("240", date(2026, 1, 1)).name_fi == "Lapin elinvoimakeskus"
    assert regional_centre_of("091", date(2026, 1, 1)).name_fi == "Uudenmaan elinvoimakeskus"


# --- Åland and unknown codes ------------------------------------------------------------------


def test_aland_is_outside_te_services() -> None:
    assert not is_mainland(MARIEHAMN)
    assert is_mainland("091")
    with pytest.raises(OutsideTeServices, match="Åland"):
        employment_area_of(MARIEHAMN)
    with pytest.raises(OutsideTeServices, match="Åland"):
        regional_centre_of(MARIEHAMN, date(2025, 6, 1))
    with pytest.raises(OutsideTeServices, match="pseudo-area"):
        employment_area("46")


def test_unknown_codes_have_clear_messages() -> None:
    with pytest.raises(UnknownCode, match="municipality code 999 is not in Statistics Finland"):
        municipality("999")
    with pytest.raises(UnknownCode, match="3 digits"):
        municipality("91")
    with pytest.raises(UnknownCode):
        employment_area_of("999")
    with pytest.raises(UnknownCode, match="not one of the 45"):
        employment_area("47")
    with pytest.raises(UnknownCode, match="not in the hub's fund list"):
        fund("nope")
    with pytest.raises(LookupError, match="region code '03'"):
        region("03")
    with pytest.raises(ValueError, match="region code '03'"):
        region("03")


def test_returned_mappings_are_read_only() -> None:
    with pytest.raises(TypeError):
        municipalities()["999"] = municipality("091")  # type: ignore[index]


def test_municipality_weights_cover_every_municipality() -> None:
    weights = municipality_weights()
    assert weights.keys() == municipalities().keys()
    assert all(w > 0 for w in weights.values())
    # Population 31.12.2022: Helsinki 664 028, Tampere 249 009, Hailuoto 960.
    assert weights["091"] > weights["837"] > weights["072"]
    assert weights["091"] == 664_028
    # Pertunmaa (1 600) is counted in Mäntyharju (5 564), which it merged into in 2025.
    assert weights["507"] == 5_564 + 1_600
    assert sum(weights.values()) == 5_563_970
    rows = _rows("fi_municipality_weights.csv")
    assert {(r["measure"], r["reference_date"]) for r in rows} == {("population", "2022-12-31")}


# --- unemployment funds -----------------------------------------------------------------------


def _codes_on(on: date) -> set[str]:
    return {f.code for f in unemployment_funds(on)}


def test_funds_around_new_year_2026() -> None:
    before = _codes_on(date(2025, 12, 31))
    after = _codes_on(date(2026, 1, 1))
    assert len(before) == 13
    assert len(after) == 12
    assert {"erko", "opetus-ja-tiede"} <= before
    assert "ote" not in before
    assert before - after == {"erko", "opetus-ja-tiede"}
    assert after - before == {"ote"}
    assert "pro" in after  # the Aaria merger was only planned


def test_fund_lookup_and_successor() -> None:
    erko = fund("erko")
    assert erko.valid_to == date(2025, 12, 31)
    assert erko.successor_code == "ote"
    assert not erko.is_valid_on(date(2026, 1, 1))
    assert fund("ote").valid_from == date(2026, 1, 1)
    assert fund("yrittajakassa").fund_type == "entrepreneur"
    assert sum(f.fund_type == "entrepreneur" for f in unemployment_funds(date(2025, 6, 1))) == 1


def test_fund_codes_are_unique_slugs() -> None:
    codes = [r["fund_code"] for r in _rows("fi_unemployment_funds_2025.csv")]
    assert len(codes) == len(set(codes)) == 14
    assert all(c == c.lower() and c.replace("-", "").isalnum() and c.isascii() for c in codes)
    for r in _rows("fi_unemployment_funds_2025.csv"):
        if r["successor_fund_code"]:
            assert r["successor_fund_code"] in codes


# --- pydantic types ---------------------------------------------------------------------------


class _Model(BaseModel):
    municipality: MunicipalityCodeStr
    area: EmploymentAreaCodeStr = "08"
    fund: UnemploymentFundCodeStr = "a-kassa"


class _MainlandModel(BaseModel):
    municipality: MainlandMunicipalityCodeStr


def test_municipality_code_type() -> None:
    assert _Model(municipality="091").municipality == "091"
    assert _Model(municipality=MARIEHAMN).municipality == MARIEHAMN
    with pytest.raises(
        ValidationError, match="municipality code is not in Statistics Finland's 2025 list"
    ) as raised:
        _Model(municipality="999")
    assert "999" not in raised.value.errors(include_input=False)[0]["msg"]
    with pytest.raises(ValidationError, match="3 digits"):
        _Model(municipality="91")


def test_mainland_municipality_code_type() -> None:
    assert _MainlandModel(municipality="091").municipality == "091"
    with pytest.raises(ValidationError, match="Åland"):
        _MainlandModel(municipality=MARIEHAMN)


def test_employment_area_and_fund_code_types() -> None:
    assert _Model(municipality="091", area="22", fund="ote").area == "22"
    with pytest.raises(ValidationError, match="pseudo-area"):
        _Model(municipality="091", area="46")
    with pytest.raises(ValidationError, match="2 digits"):
        _Model(municipality="091", area="8")
    with pytest.raises(ValidationError, match="fund list"):
        _Model(municipality="091", fund="kela")
