"""Requests with valid content, for tests to vary one thing at a time."""

from __future__ import annotations

import uuid

from lienthong.calendar.v1 import date_pb2
from lienthong.person.v1 import ethnicity_pb2, nationality_pb2, person_name_pb2, sex_pb2
from lienthong.place.v1 import administrative_unit_pb2, place_pb2
from lienthong.population.v1 import citizen_pb2, citizen_service_pb2

HA_NOI_COMMUNE = "00004"  # Phường Trúc Bạch, Quận Ba Đình, Hà Nội (PIN province 001)
TP_HCM_COMMUNE = "26734"  # Phường Tân Định, Quận 1, TP Hồ Chí Minh (PIN province 079)


def issue_request(
    registration: str | None = None,
    *,
    commune: str = HA_NOI_COMMUNE,
    sex: sex_pb2.Sex.ValueType = sex_pb2.SEX_FEMALE,
    born: tuple[int, int, int] = (2016, 3, 14),
    nationality: str = "VN",
    request_id: str | None = None,
) -> citizen_service_pb2.IssuePersonalIdentificationNumberRequest:
    """An IssuePersonalIdentificationNumberRequest that the population database accepts."""
    year, month, day = born
    parent_nationality = nationality_pb2.Nationality(country_code="VN")
    return citizen_service_pb2.IssuePersonalIdentificationNumberRequest(
        request_id=request_id or str(uuid.uuid4()),
        registered_birth=citizen_pb2.RegisteredBirth(
            birth_registration=registration or f"birthRegistrations/{commune}-{year}-1",
            full_name=person_name_pb2.PersonName(
                family_name="LÊ", middle_name="THỊ", given_name="HOA"
            ),
            date_of_birth=date_pb2.Date(year=year, month=month, day=day),
            sex=sex,
            registration_place=administrative_unit_pb2.AdministrativeUnit(
                level=administrative_unit_pb2.ADMINISTRATIVE_LEVEL_COMMUNE, code=commune
            ),
            home_town=place_pb2.Place(
                country_code="VN",
                administrative_unit=administrative_unit_pb2.AdministrativeUnit(
                    level=administrative_unit_pb2.ADMINISTRATIVE_LEVEL_PROVINCE, code="01"
                ),
            ),
            ethnicity=ethnicity_pb2.Ethnicity(code="01"),
            nationality=nationality_pb2.Nationality(country_code=nationality),
            father=citizen_pb2.RelatedPerson(
                full_name=person_name_pb2.PersonName(family_name="LÊ", given_name="NAM"),
                nationality=parent_nationality,
            ),
            mother=citizen_pb2.RelatedPerson(undetermined=True),
        ),
    )
