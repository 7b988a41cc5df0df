"""Registration statistics as the 2016 pilot reported them, on real databases (SQLite,
PostgreSQL): counts per locality and period, accounts and units, and who may see which rows."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from justice_fixtures import MINISTRY, unit_officer
from test_justice_registry import (
    DISTRICT,
    KIM_SON,
    PHUC_XA,
    QUE_PHONG,
    TRUC_BACH,
    FailingIssuer,
    LawfulIssuer,
    name,
    registration,
    registry_with,
    request,
    violated_fields,
)

from justice_adapter.officers import OfficerDirectory
from justice_adapter.scope import (
    COMMUNE_OFFICER,
    DISTRICT_OFFICER,
    MINISTRY_ADMINISTRATOR,
    PROVINCIAL_SUPERVISOR,
    Locality,
    Officer,
)
from justice_adapter.statistics import MAX_UNIT_CODES, RegistrationStatistics
from lienthong import validation
from lienthong.calendar.v1 import date_pb2
from lienthong.civilregistry.v1 import birth_registration_pb2 as br
from lienthong.civilregistry.v1 import birth_registration_service_pb2 as service
from lienthong.civilregistry.v1 import officer_pb2, officer_service_pb2
from lienthong.errors import InvalidArgument, PermissionDenied
from lienthong.errors import Unavailable as UnavailableError
from lienthong.place.v1 import administrative_unit_pb2 as au
from lienthong.reference import Level, code_lists

VINH_COMMUNE = "16663"  # Phường Đông Vĩnh, Thành phố Vinh (412), Nghệ An (40): not Quế Phong
VINH_PHUC = "00006"  # Phường Vĩnh Phúc, Quận Ba Đình (001), Hà Nội
BA_DINH = "001"
DA_NANG = "48"
HOA_HIEP_BAC = "20194"  # Phường Hòa Hiệp Bắc, Quận Liên Chiểu (490), Đà Nẵng (48)
LEVEL_OF_ROLE = {
    COMMUNE_OFFICER: au.ADMINISTRATIVE_LEVEL_COMMUNE,
    DISTRICT_OFFICER: au.ADMINISTRATIVE_LEVEL_DISTRICT,
    PROVINCIAL_SUPERVISOR: au.ADMINISTRATIVE_LEVEL_PROVINCE,
}
# Hà Nội's provincial supervisor: reads every statistic of Hà Nội, nothing else.
HA_NOI_SUPERVISOR = Officer("ha-noi", PROVINCIAL_SUPERVISOR, Locality("01", "01", None))


# Builders ---------------------------------------------------------------------------------


def date_of(day: dt.date) -> date_pb2.Date:
    return date_pb2.Date(year=day.year, month=day.month, day=day.day)


def asked(
    *unit_codes: str, registered_from: dt.date | None = None, registered_to: dt.date | None = None
) -> service.GetRegistrationStatisticsRequest:
    """A request for ``unit_codes``; by default a period around today, safe across midnight."""
    today = validation.today()
    start = registered_from or today - dt.timedelta(days=1)
    end = registered_to or today + dt.timedelta(days=1)
    return service.GetRegistrationStatisticsRequest(
        unit_codes=unit_codes, registered_from=date_of(start), registered_to=date_of(end)
    )


def row(unit_code: str = "", **counts: int) -> service.RegistrationStatistics:
    """A row of the table; counts not named are zero."""
    return service.RegistrationStatistics(unit_code=unit_code, **counts)


def total_of(*rows: service.RegistrationStatistics) -> service.RegistrationStatistics:
    """What the total row must hold: each count summed, and no unit code."""
    total = service.RegistrationStatistics()
    for field in service.RegistrationStatistics.DESCRIPTOR.fields:
        if field.name != "unit_code":
            setattr(total, field.name, sum(getattr(each, field.name) for each in rows))
    return total


def foreign_element(unit_code: str, child_nationality: str = "VN") -> br.BirthRegistration:
    return registration(
        procedure=br.REGISTRATION_PROCEDURE_FOREIGN_ELEMENT,
        unit_level=DISTRICT,
        unit_code=unit_code,
        child_nationality=child_nationality,
    )


def re_registration(unit_code: str) -> br.BirthRegistration:
    return registration(
        procedure=br.REGISTRATION_PROCEDURE_RE_REGISTRATION, unit_code=unit_code, born=(2010, 5, 1)
    )


# Fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def statistics(sessions):
    return RegistrationStatistics(sessions, code_lists())


@pytest.fixture
def registry(sessions):
    """A registry whose PINs are issued at once."""
    return registry_with(sessions, LawfulIssuer())


@pytest.fixture
def population_down(sessions):
    """A registry whose population database is unavailable: its PINs stay pending."""
    return registry_with(sessions, FailingIssuer(UnavailableError("population: UNAVAILABLE")))


@pytest.fixture
def directory(sessions):
    return OfficerDirectory(
        sessions, code_lists(), identity_prefix="spiffe://lienthong.test/moj/officers/"
    )


def create_officer(directory, officer_id: str, role: int, unit_code: str | None = None):
    """An account created by the ministry's administrator, as in production."""
    officer = officer_pb2.Officer(display_name=name("Lê", "Văn", "Nam"), role=role)
    if unit_code is not None:
        officer.unit.CopyFrom(au.AdministrativeUnit(level=LEVEL_OF_ROLE[role], code=unit_code))
    return directory.create(
        officer_service_pb2.CreateOfficerRequest(
            request_id=str(uuid.uuid4()), officer_id=officer_id, officer=officer
        ),
        MINISTRY,
    )


# The pilot's table ------------------------------------------------------------------------


def test_hanoi_row_counts_issued_foreign_re_registered_and_pending(
    statistics, registry, population_down
):
    """The pilot's Hà Nội row: each registration counted once, in the column of its outcome."""
    for unit_code in (TRUC_BACH, TRUC_BACH, PHUC_XA):
        registry.register_birth(request(registration(unit_code=unit_code)))
    registry.register_birth(request(foreign_element(BA_DINH)))  # Vietnamese child: issued
    registry.register_birth(request(registration(child_nationality="KR")))
    registry.register_birth(request(foreign_element(BA_DINH, child_nationality="US")))
    registry.register_birth(request(re_registration(PHUC_XA)))
    for _ in range(2):
        population_down.register_birth(request())
    registry.register_birth(request(registration(unit_code=KIM_SON)))  # Nghệ An: not counted

    response = statistics.report(asked("01"), MINISTRY)

    hanoi = row(
        "01",
        registrations=9,
        pins_issued=4,
        not_applicable_foreign=2,
        not_applicable_re_registration=1,
        pins_pending=2,
    )
    assert list(response.rows) == [hanoi]
    assert response.total == total_of(hanoi)
    assert response.total.unit_code == ""
    assert hanoi.registrations == (
        hanoi.pins_issued
        + hanoi.not_applicable_foreign
        + hanoi.not_applicable_re_registration
        + hanoi.pins_pending
    )


# Localities -------------------------------------------------------------------------------


def test_rows_follow_the_requested_localities_and_the_total_sums_them(statistics, registry):
    """One row per asked locality, in request order; a district or commune counts only its own."""
    for _ in range(2):
        registry.register_birth(request())  # Trúc Bạch, Hà Nội
    for _ in range(2):
        registry.register_birth(request(registration(unit_code=KIM_SON)))
    registry.register_birth(request(re_registration(KIM_SON)))
    registry.register_birth(request(foreign_element(QUE_PHONG)))  # by the district itself
    registry.register_birth(request(registration(unit_code=VINH_COMMUNE)))

    provinces = statistics.report(asked("40", "01"), MINISTRY)
    district = statistics.report(asked(QUE_PHONG, VINH_COMMUNE), MINISTRY)
    commune = statistics.report(asked(KIM_SON), MINISTRY)

    nghe_an = row("40", registrations=5, pins_issued=4, not_applicable_re_registration=1)
    hanoi = row("01", registrations=2, pins_issued=2)
    assert list(provinces.rows) == [nghe_an, hanoi]
    assert provinces.total == total_of(nghe_an, hanoi)
    assert provinces.total.registrations == 7
    que_phong = row(QUE_PHONG, registrations=4, pins_issued=3, not_applicable_re_registration=1)
    kim_son = row(KIM_SON, registrations=3, pins_issued=2, not_applicable_re_registration=1)
    vinh = row(VINH_COMMUNE, registrations=1, pins_issued=1)
    assert list(district.rows) == [que_phong, vinh]
    assert district.total == total_of(que_phong, vinh)
    assert list(commune.rows) == [kim_son]  # not the district's own registration
    assert commune.total == total_of(kim_son)


def test_registrations_outside_the_period_are_not_counted(statistics, registry):
    """Both ends of the period are inclusive; a period ending the day before counts nothing."""
    entered = registry.register_birth(request())
    registry.register_birth(request(registration(child_nationality="KR")))
    registered = entered.registration_date
    day = dt.date(registered.year, registered.month, registered.day)
    before = day - dt.timedelta(days=1)
    after = day + dt.timedelta(days=1)

    def hanoi_in(start: dt.date, end: dt.date) -> service.RegistrationStatistics:
        response = statistics.report(
            asked("01", registered_from=start, registered_to=end), MINISTRY
        )
        assert response.total == total_of(*response.rows)
        [only] = response.rows
        return only

    assert hanoi_in(day - dt.timedelta(days=30), before) == row("01")
    assert hanoi_in(after, day + dt.timedelta(days=30)) == row("01")
    counted = row("01", registrations=2, pins_issued=1, not_applicable_foreign=1)
    assert hanoi_in(day, day) == counted
    assert hanoi_in(before, day) == counted
    assert hanoi_in(day, after) == counted


# Accounts and units -----------------------------------------------------------------------


def test_active_registrar_accounts_and_their_units_are_counted(statistics, directory):
    """Commune and district officers count; supervisors, administrators, disabled ones do not."""
    create_officer(directory, "truc-bach-1", COMMUNE_OFFICER, TRUC_BACH)
    create_officer(directory, "truc-bach-2", COMMUNE_OFFICER, TRUC_BACH)
    create_officer(directory, "phuc-xa-1", COMMUNE_OFFICER, PHUC_XA)
    create_officer(directory, "ba-dinh-1", DISTRICT_OFFICER, BA_DINH)
    create_officer(directory, "ha-noi-1", PROVINCIAL_SUPERVISOR, "01")
    create_officer(directory, "vinh-phuc-1", COMMUNE_OFFICER, VINH_PHUC)
    directory.disable("officers/vinh-phuc-1", MINISTRY)
    create_officer(directory, "admin-2", MINISTRY_ADMINISTRATOR)
    create_officer(directory, "kim-son-1", COMMUNE_OFFICER, KIM_SON)  # Nghệ An

    response = statistics.report(asked("01", "40"), MINISTRY)
    units = statistics.report(asked(TRUC_BACH, VINH_PHUC, QUE_PHONG), MINISTRY)

    hanoi = row("01", officer_accounts=4, units=3)
    nghe_an = row("40", officer_accounts=1, units=1)
    assert list(response.rows) == [hanoi, nghe_an]
    assert response.total == total_of(hanoi, nghe_an)
    assert statistics.report(asked(BA_DINH), MINISTRY).rows[0] == row(
        BA_DINH, officer_accounts=4, units=3
    )
    assert list(units.rows) == [
        row(TRUC_BACH, officer_accounts=2, units=1),
        row(VINH_PHUC),  # its only account is disabled
        row(QUE_PHONG, officer_accounts=1, units=1),
    ]


# Rows in reach ----------------------------------------------------------------------------


def test_without_localities_each_caller_gets_the_rows_in_its_reach(statistics, registry, directory):
    """Administrator: each province in use, by code; supervisor: its province; officer: its unit."""
    registry.register_birth(request(registration(unit_code=KIM_SON)))
    registry.register_birth(request())
    registry.register_birth(request(registration(unit_code=PHUC_XA)))
    create_officer(directory, "hoa-hiep-bac-1", COMMUNE_OFFICER, HOA_HIEP_BAC)  # no registration
    create_officer(directory, "truc-bach-1", COMMUNE_OFFICER, TRUC_BACH)

    def rows_for(officer: Officer) -> list[service.RegistrationStatistics]:
        response = statistics.report(asked(), officer)
        assert response.total == total_of(*response.rows)
        return list(response.rows)

    assert rows_for(MINISTRY) == [
        row("01", registrations=2, pins_issued=2, officer_accounts=1, units=1),
        row("40", registrations=1, pins_issued=1),
        row(DA_NANG, officer_accounts=1, units=1),
    ]
    assert rows_for(HA_NOI_SUPERVISOR) == [
        row("01", registrations=2, pins_issued=2, officer_accounts=1, units=1)
    ]
    assert rows_for(unit_officer(TRUC_BACH)) == [
        row(TRUC_BACH, registrations=1, pins_issued=1, officer_accounts=1, units=1)
    ]
    assert rows_for(unit_officer(QUE_PHONG)) == [row(QUE_PHONG, registrations=1, pins_issued=1)]


def test_without_localities_or_data_the_table_is_empty(statistics):
    """An administrator of an empty registry gets no row and a zero total."""
    response = statistics.report(asked(), MINISTRY)

    assert list(response.rows) == []
    assert response.total == row()


# Scope ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("officer", "unit_codes"),
    [
        (HA_NOI_SUPERVISOR, [DA_NANG]),
        (HA_NOI_SUPERVISOR, [HOA_HIEP_BAC]),
        (HA_NOI_SUPERVISOR, ["01", DA_NANG]),
        (unit_officer(TRUC_BACH), ["01"]),
        (unit_officer(TRUC_BACH), [PHUC_XA]),
        (unit_officer(BA_DINH), [KIM_SON]),
    ],
    ids=[
        "supervisor-other-province",
        "supervisor-commune-of-other-province",
        "supervisor-own-and-other-province",
        "commune-officer-its-province",
        "commune-officer-neighbour-commune",
        "district-officer-commune-elsewhere",
    ],
)
def test_localities_outside_the_callers_reach_are_permission_denied(
    statistics, registry, officer, unit_codes
):
    """No row is given for a locality the caller may not see, nor for the rest of the request."""
    registry.register_birth(request())

    with pytest.raises(PermissionDenied) as error:
        statistics.report(asked(*unit_codes), officer)

    assert error.value.reason == "OUTSIDE_SCOPE"


def test_administrator_and_supervisors_read_the_localities_in_their_reach(statistics, registry):
    """The ministry reads Đà Nẵng; Hà Nội's supervisor reads any of its districts and communes."""
    registry.register_birth(request(registration(unit_code=HOA_HIEP_BAC)))
    registry.register_birth(request())

    ministry = statistics.report(asked(DA_NANG, TRUC_BACH), MINISTRY)
    commune = statistics.report(asked(HOA_HIEP_BAC), MINISTRY)
    supervisor = statistics.report(asked(BA_DINH), HA_NOI_SUPERVISOR)

    assert list(ministry.rows) == [
        row(DA_NANG, registrations=1, pins_issued=1),
        row(TRUC_BACH, registrations=1, pins_issued=1),
    ]
    assert list(commune.rows) == [row(HOA_HIEP_BAC, registrations=1, pins_issued=1)]
    assert list(supervisor.rows) == [row(BA_DINH, registrations=1, pins_issued=1)]


# Invalid input ----------------------------------------------------------------------------


def communes(count: int) -> list[str]:
    """``count`` distinct commune codes of the code list: localities that do not overlap."""
    codes = sorted(unit.code for unit in code_lists().units.values() if unit.level == Level.COMMUNE)
    return codes[:count]


def without_period(*fields: str) -> service.GetRegistrationStatisticsRequest:
    sent = asked("01")
    for field in fields:
        sent.ClearField(field)
    return sent


@pytest.mark.parametrize(
    ("sent", "fields"),
    [
        (without_period("registered_from", "registered_to"), {"registered_from", "registered_to"}),
        (without_period("registered_to"), {"registered_to"}),
        (
            asked("01", registered_from=dt.date(2016, 3, 2), registered_to=dt.date(2016, 3, 1)),
            {"registered_to"},
        ),
        (
            service.GetRegistrationStatisticsRequest(
                registered_from=date_pb2.Date(year=2016, month=2, day=30),
                registered_to=date_pb2.Date(year=2016, month=3, day=1),
            ),
            {"registered_from"},
        ),
        (asked("99"), {"unit_codes[0]"}),
        (asked("01", "0001", "99999"), {"unit_codes[1]", "unit_codes[2]"}),
        (asked("01", TRUC_BACH), {"unit_codes[1]"}),
        (asked(TRUC_BACH, BA_DINH), {"unit_codes[1]"}),
        (asked("01", "01"), {"unit_codes[1]"}),
        (asked(*communes(MAX_UNIT_CODES + 1)), {"unit_codes"}),
    ],
    ids=[
        "no-period",
        "no-end",
        "from-after-to",
        "no-such-day",
        "unknown-code",
        "codes-of-no-level-or-list",
        "province-then-its-commune",
        "commune-then-its-district",
        "repeated-code",
        "more-than-100-codes",
    ],
)
def test_invalid_requests_name_each_bad_field(statistics, sent, fields):
    """INVALID_ARGUMENT with a field violation for each bad field of the request."""
    with pytest.raises(InvalidArgument) as error:
        statistics.report(sent, MINISTRY)

    assert violated_fields(error) == fields


def test_one_hundred_localities_are_answered(statistics):
    """The limit itself is allowed: 100 communes give 100 rows."""
    codes = communes(MAX_UNIT_CODES)

    response = statistics.report(asked(*codes), MINISTRY)

    assert [each.unit_code for each in response.rows] == codes
    assert response.total == row()
