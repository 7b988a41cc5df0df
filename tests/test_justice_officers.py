"""Officer accounts: the directory against real databases (SQLite, PostgreSQL), and officers
authenticated by their own certificates through the real stack (gateway + both adapters)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import grpc
import pytest
from cryptography import x509
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import func, select
from stack import OFFICERS, Stack, officer_tls, start_stack, tls_of

from certs.pki import BOOTSTRAP_ADMINISTRATOR
from justice_adapter import paging
from justice_adapter.models import OfficerRow
from justice_adapter.officers import OfficerDirectory
from justice_adapter.scope import Officer
from lienthong import metadata
from lienthong.civilregistry.v1 import (
    birth_registration_service_pb2,
    birth_registration_service_pb2_grpc,
    officer_pb2,
    officer_service_pb2,
    officer_service_pb2_grpc,
)
from lienthong.demo import SAMPLES, sample_request
from lienthong.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from lienthong.identity import spiffe_id_of
from lienthong.person.v1 import person_name_pb2
from lienthong.place.v1 import administrative_unit_pb2 as au
from lienthong.reference import code_lists
from lienthong.tls import secure_channel

COMMUNE = officer_pb2.OFFICER_ROLE_COMMUNE_OFFICER
DISTRICT = officer_pb2.OFFICER_ROLE_DISTRICT_OFFICER
SUPERVISOR = officer_pb2.OFFICER_ROLE_PROVINCIAL_SUPERVISOR
ADMINISTRATOR = officer_pb2.OFFICER_ROLE_MINISTRY_ADMINISTRATOR
ACTIVE = officer_pb2.OFFICER_STATE_ACTIVE
DISABLED = officer_pb2.OFFICER_STATE_DISABLED
LEVEL_OF_LENGTH = {
    5: au.ADMINISTRATIVE_LEVEL_COMMUNE,
    3: au.ADMINISTRATIVE_LEVEL_DISTRICT,
    2: au.ADMINISTRATIVE_LEVEL_PROVINCE,
}

HA_NOI = "01"
BA_DINH = "001"  # Quận Ba Đình, Hà Nội
TRUC_BACH = "00004"  # Phường Trúc Bạch, Ba Đình
PHUC_XA = "00001"  # Phường Phúc Xá, Ba Đình
DA_NANG = "48"
HAI_CHAU = "492"  # Quận Hải Châu, Đà Nẵng
THANH_BINH = "20227"  # Phường Thanh Bình, Hải Châu

ACCOUNTS = ((metadata.PURPOSE, "account-management"),)  # the purpose OfficerService needs
ADAPTER_DOMAIN = "civilregistry.lienthong.gov.vn"


# Builders ------------------------------------------------------------------------------------


def unit(code: str) -> au.AdministrativeUnit:
    """The unit of ``code``, at the level its length gives."""
    return au.AdministrativeUnit(level=LEVEL_OF_LENGTH[len(code)], code=code)


def create_request(
    officer_id: str,
    unit_code: str | None,
    role: int,
    *,
    request_id: str | None = None,
    family_name: str = "lê",
    given_name: str = "thu  hà",
) -> officer_service_pb2.CreateOfficerRequest:
    """A CreateOfficerRequest for ``officer_id``; names in mixed case with a double space."""
    officer = officer_pb2.Officer(
        display_name=person_name_pb2.PersonName(family_name=family_name, given_name=given_name),
        role=role,
    )
    if unit_code is not None:
        officer.unit.CopyFrom(unit(unit_code))
    return officer_service_pb2.CreateOfficerRequest(
        request_id=request_id or str(uuid.uuid4()), officer_id=officer_id, officer=officer
    )


def fields_of(error: InvalidArgument) -> set[str]:
    return {violation.field for violation in error.violations}


def row_count(directory: OfficerDirectory) -> int:
    with directory._sessions() as session:
        return session.scalar(select(func.count()).select_from(OfficerRow)) or 0


# Domain fixtures -----------------------------------------------------------------------------


@pytest.fixture
def directory(sessions) -> OfficerDirectory:
    """The directory on a fresh database of each kind, with the configured administrator."""
    directory = OfficerDirectory(sessions, code_lists(), identity_prefix=OFFICERS)
    directory.ensure_administrators([BOOTSTRAP_ADMINISTRATOR])
    return directory


@pytest.fixture
def admin(directory: OfficerDirectory) -> Officer:
    return directory.authenticate(OFFICERS + BOOTSTRAP_ADMINISTRATOR)


class People:
    """Accounts of Hà Nội and Đà Nẵng, each authenticated as the caller it becomes."""

    def __init__(self, directory: OfficerDirectory, admin: Officer) -> None:
        self.directory = directory
        self.admin = admin
        for officer_id, code, role in (
            ("truc-bach", TRUC_BACH, COMMUNE),
            ("phuc-xa", PHUC_XA, COMMUNE),
            ("ba-dinh", BA_DINH, DISTRICT),
            ("ha-noi", HA_NOI, SUPERVISOR),
            ("thanh-binh", THANH_BINH, COMMUNE),
            ("hai-chau", HAI_CHAU, DISTRICT),
            ("da-nang", DA_NANG, SUPERVISOR),
        ):
            directory.create(create_request(officer_id, code, role), admin)

    def __getitem__(self, officer_id: str) -> Officer:
        return self.directory.authenticate(OFFICERS + officer_id)


@pytest.fixture
def people(directory: OfficerDirectory, admin: Officer) -> People:
    return People(directory, admin)


def names(officers: list[officer_pb2.Officer]) -> list[str]:
    return [officer.name for officer in officers]


# Creating accounts ---------------------------------------------------------------------------


def test_an_administrator_creates_an_account_of_each_unit_role(
    directory: OfficerDirectory, admin: Officer
) -> None:
    """The account comes back named, with its certificate identity, active, names normalised."""
    for officer_id, unit_code, role in (
        ("truc-bach-1", TRUC_BACH, COMMUNE),
        ("ba-dinh-1", BA_DINH, DISTRICT),
        ("ha-noi-1", HA_NOI, SUPERVISOR),
    ):
        created = directory.create(create_request(officer_id, unit_code, role), admin)

        assert created.name == f"officers/{officer_id}"
        assert created.identity == f"spiffe://lienthong.local/moj/officers/{officer_id}"
        assert created.state == ACTIVE
        assert created.role == role
        assert (created.unit.level, created.unit.code) == (
            LEVEL_OF_LENGTH[len(unit_code)],
            unit_code,
        )
        assert (created.display_name.family_name, created.display_name.given_name) == (
            "LÊ",
            "THU HÀ",
        )
        assert created.HasField("create_time")
        assert directory.get(created.name, admin) == created
        assert directory.authenticate(created.identity).officer_id == officer_id


def test_an_account_whose_unit_level_does_not_fit_its_role_is_refused(
    directory: OfficerDirectory, admin: Officer
) -> None:
    """The unit decides what an account reaches: a wrong level is refused, nothing stored."""
    before = row_count(directory)
    for role, unit_code in (
        (COMMUNE, BA_DINH),  # a commune officer given a district
        (DISTRICT, TRUC_BACH),  # a district officer given a commune
        (ADMINISTRATOR, HA_NOI),  # an administrator belongs to no unit
        (SUPERVISOR, TRUC_BACH),  # a supervisor given a commune
    ):
        with pytest.raises(FailedPrecondition) as raised:
            directory.create(create_request("misfit", unit_code, role), admin)
        assert raised.value.reason == "UNIT_LEVEL_MISMATCH", (role, unit_code)
    assert row_count(directory) == before
    with pytest.raises(NotFound):
        directory.get("officers/misfit", admin)


def test_invalid_input_lists_every_bad_field(directory: OfficerDirectory, admin: Officer) -> None:
    """One answer names every field to fix, and nothing is stored."""
    request = create_request("Bad_ID", None, COMMUNE, request_id="not-a-uuid")
    request.officer.ClearField("display_name")
    request.officer.unit.CopyFrom(unit("99999"))  # not in the statistics office's list
    before = row_count(directory)
    with pytest.raises(InvalidArgument) as raised:
        directory.create(request, admin)
    assert fields_of(raised.value) == {
        "request_id",
        "officer_id",
        "officer.display_name",
        "officer.unit.code",
    }
    assert row_count(directory) == before


def test_a_missing_role_is_an_invalid_argument(directory: OfficerDirectory, admin: Officer) -> None:
    """A role must be chosen: it is what the account may do."""
    request = create_request("no-role", TRUC_BACH, officer_pb2.OFFICER_ROLE_UNSPECIFIED)
    with pytest.raises(InvalidArgument) as raised:
        directory.create(request, admin)
    assert fields_of(raised.value) == {"officer.role"}


def test_a_unit_role_without_a_unit_is_an_invalid_argument(
    directory: OfficerDirectory, admin: Officer
) -> None:
    """A commune officer must say which commune."""
    with pytest.raises(InvalidArgument) as raised:
        directory.create(create_request("no-unit", None, COMMUNE), admin)
    assert fields_of(raised.value) == {"officer.unit"}


def test_a_repeated_request_returns_the_first_answer_and_stores_one_account(
    directory: OfficerDirectory, admin: Officer
) -> None:
    """A client retrying after a lost answer gets the same account, not a second one."""
    request = create_request("truc-bach-2", TRUC_BACH, COMMUNE)
    first = directory.create(request, admin)
    before = row_count(directory)
    assert directory.create(request, admin) == first
    assert row_count(directory) == before


def test_a_request_id_reused_for_other_content_is_refused(
    directory: OfficerDirectory, admin: Officer
) -> None:
    """A request_id names one request: reused for another account, it is a client error."""
    request_id = str(uuid.uuid4())
    directory.create(
        create_request("truc-bach-3", TRUC_BACH, COMMUNE, request_id=request_id), admin
    )
    before = row_count(directory)
    other = create_request("phuc-xa-3", PHUC_XA, COMMUNE, request_id=request_id)
    with pytest.raises(AlreadyExists) as raised:
        directory.create(other, admin)
    assert raised.value.reason == "REQUEST_ID_REUSED"
    assert row_count(directory) == before


def test_an_officer_id_is_given_once(directory: OfficerDirectory, admin: Officer) -> None:
    """A second request for a taken officer_id does not replace the first account."""
    first = directory.create(create_request("truc-bach-4", TRUC_BACH, COMMUNE), admin)
    with pytest.raises(AlreadyExists) as raised:
        directory.create(create_request("truc-bach-4", PHUC_XA, COMMUNE), admin)
    assert raised.value.reason == "OFFICER_ID_TAKEN"
    assert directory.get(first.name, admin) == first


def test_only_an_administrator_creates_or_disables_accounts(people: People) -> None:
    """Officers and supervisors manage no accounts, not even in their own unit."""
    directory = people.directory
    for caller in ("truc-bach", "ba-dinh", "ha-noi"):
        officer = people[caller]
        with pytest.raises(PermissionDenied) as raised:
            directory.create(create_request("made-by-officer", TRUC_BACH, COMMUNE), officer)
        assert raised.value.reason == "ROLE_NOT_ALLOWED", caller
        with pytest.raises(PermissionDenied) as raised:
            directory.disable("officers/phuc-xa", officer)
        assert raised.value.reason == "ROLE_NOT_ALLOWED", caller
    assert directory.get("officers/phuc-xa", people.admin).state == ACTIVE
    with pytest.raises(NotFound):
        directory.get("officers/made-by-officer", people.admin)


# Disabling and authenticating ----------------------------------------------------------------


def test_a_disabled_account_no_longer_authenticates(people: People) -> None:
    """Disabling takes the account's rights away; disabling again succeeds and changes nothing."""
    directory, admin = people.directory, people.admin
    disabled = directory.disable("officers/truc-bach", admin)
    assert disabled.state == DISABLED
    assert directory.disable("officers/truc-bach", admin) == disabled
    assert directory.get("officers/truc-bach", admin) == disabled
    with pytest.raises(PermissionDenied) as raised:
        directory.authenticate(OFFICERS + "truc-bach")
    assert raised.value.reason == "ACCOUNT_DISABLED"
    assert directory.authenticate(OFFICERS + "phuc-xa").officer_id == "phuc-xa"


def test_disabling_an_unknown_or_misnamed_account_says_so(
    directory: OfficerDirectory, admin: Officer
) -> None:
    """An administrator's typo is answered precisely, never by creating or changing anything."""
    with pytest.raises(NotFound):
        directory.disable("officers/nobody", admin)
    with pytest.raises(InvalidArgument) as raised:
        directory.disable("nobody", admin)
    assert fields_of(raised.value) == {"name"}


def test_a_caller_without_an_account_is_refused(directory: OfficerDirectory) -> None:
    """A valid certificate alone gives no right in the registry."""
    for identity, reason in (
        (OFFICERS + "nobody", "NO_OFFICER_ACCOUNT"),  # a certificate, but no account
        ("spiffe://lienthong.local/moj/officer-portal", "NO_OFFICER_ACCOUNT"),  # a system
        (None, "NO_OFFICER"),  # no identity at all
        ("", "NO_OFFICER"),
    ):
        with pytest.raises(PermissionDenied) as raised:
            directory.authenticate(identity)
        assert raised.value.reason == reason, identity


# Listing -------------------------------------------------------------------------------------


def test_an_administrator_pages_through_every_account(
    directory: OfficerDirectory, admin: Officer
) -> None:
    """Pages of two cover five accounts once each, in creation order, the last without a token."""
    for officer_id, code, role in (
        ("page-a", TRUC_BACH, COMMUNE),
        ("page-b", BA_DINH, DISTRICT),
        ("page-c", DA_NANG, SUPERVISOR),
        ("page-d", THANH_BINH, COMMUNE),
    ):
        directory.create(create_request(officer_id, code, role), admin)
    seen: list[str] = []
    pages = []
    token = ""
    for _ in range(5):  # bounded: a token that never empties fails the test, not the run
        page, token = directory.list(
            officer_service_pb2.ListOfficersRequest(page_size=2, page_token=token), admin
        )
        pages.append(len(page))
        seen += names(page)
        if not token:
            break
    assert pages == [2, 2, 1]
    assert seen == [
        "officers/admin",
        "officers/page-a",
        "officers/page-b",
        "officers/page-c",
        "officers/page-d",
    ]


def test_a_forged_page_token_is_an_invalid_argument(
    directory: OfficerDirectory, admin: Officer
) -> None:
    """Only tokens the list handed out are accepted back."""
    for token in ("forged", "MA", "LTE", "MDAx"):  # not base64, "0", "-1", "001"
        request = officer_service_pb2.ListOfficersRequest(page_token=token)
        with pytest.raises(InvalidArgument) as raised:
            directory.list(request, admin)
        assert fields_of(raised.value) == {"page_token"}, token


def test_a_page_token_beyond_any_row_id_is_an_invalid_argument(
    directory: OfficerDirectory, admin: Officer
) -> None:
    """A client re-encoding a huge number as a token gets INVALID_ARGUMENT, not INTERNAL."""
    for beyond in (2**31, 2**63):  # past PostgreSQL's INTEGER, past SQLite's
        token = paging.encode_page_token(beyond)  # well-formed, but no row id is this large
        request = officer_service_pb2.ListOfficersRequest(page_token=token)
        with pytest.raises(InvalidArgument) as raised:
            directory.list(request, admin)
        assert fields_of(raised.value) == {"page_token"}


def test_a_provincial_supervisor_lists_the_accounts_of_their_province_only(
    people: People,
) -> None:
    """Hà Nội's supervisor sees Hà Nội's accounts, not Đà Nẵng's nor the ministry's."""
    directory, supervisor = people.directory, people["ha-noi"]
    everything = officer_service_pb2.ListOfficersRequest()
    listed, token = directory.list(everything, supervisor)
    assert names(listed) == [
        "officers/truc-bach",
        "officers/phuc-xa",
        "officers/ba-dinh",
        "officers/ha-noi",
    ]
    assert token == ""
    in_district, _ = directory.list(
        officer_service_pb2.ListOfficersRequest(unit_code=BA_DINH), supervisor
    )
    assert names(in_district) == ["officers/truc-bach", "officers/phuc-xa", "officers/ba-dinh"]
    in_commune, _ = directory.list(
        officer_service_pb2.ListOfficersRequest(unit_code=TRUC_BACH), supervisor
    )
    assert names(in_commune) == ["officers/truc-bach"]


def test_listing_is_refused_outside_a_supervisors_province_and_to_unit_officers(
    people: People,
) -> None:
    """Another province is refused outright, not an empty page; unit officers list nothing."""
    for unit_code in (DA_NANG, HAI_CHAU, THANH_BINH):
        request = officer_service_pb2.ListOfficersRequest(unit_code=unit_code)
        with pytest.raises(PermissionDenied) as raised:
            people.directory.list(request, people["ha-noi"])
        assert raised.value.reason == "OUTSIDE_SCOPE", unit_code
    for caller in ("truc-bach", "ba-dinh"):
        with pytest.raises(PermissionDenied) as raised:
            people.directory.list(officer_service_pb2.ListOfficersRequest(), people[caller])
        assert raised.value.reason == "ROLE_NOT_ALLOWED", caller


def test_the_list_filters_by_state_and_unit(people: People) -> None:
    """Filters narrow the administrator's list to what was asked."""
    directory, admin = people.directory, people.admin
    directory.disable("officers/phuc-xa", admin)
    directory.disable("officers/thanh-binh", admin)

    disabled, _ = directory.list(officer_service_pb2.ListOfficersRequest(state=DISABLED), admin)
    assert names(disabled) == ["officers/phuc-xa", "officers/thanh-binh"]
    assert {officer.state for officer in disabled} == {DISABLED}

    active, _ = directory.list(officer_service_pb2.ListOfficersRequest(state=ACTIVE), admin)
    assert names(active) == [
        "officers/admin",
        "officers/truc-bach",
        "officers/ba-dinh",
        "officers/ha-noi",
        "officers/hai-chau",
        "officers/da-nang",
    ]

    both, _ = directory.list(
        officer_service_pb2.ListOfficersRequest(state=DISABLED, unit_code=DA_NANG), admin
    )
    assert names(both) == ["officers/thanh-binh"]


def test_a_bad_list_filter_lists_every_bad_field(people: People) -> None:
    """One answer names every filter to fix, not just the first."""
    request = officer_service_pb2.ListOfficersRequest(page_size=-1, unit_code="9999", state=7)
    with pytest.raises(InvalidArgument) as raised:
        people.directory.list(request, people.admin)
    assert fields_of(raised.value) == {"page_size", "unit_code", "state"}


# Reading one account -------------------------------------------------------------------------


def test_an_officer_reads_their_own_account_only(people: People) -> None:
    """A commune officer sees their own account, not a colleague's of another commune."""
    directory, officer = people.directory, people["truc-bach"]
    own = directory.get("officers/truc-bach", officer)
    assert (own.name, own.unit.code, own.role) == ("officers/truc-bach", TRUC_BACH, COMMUNE)
    for other in ("officers/phuc-xa", "officers/ba-dinh", "officers/admin"):
        with pytest.raises(PermissionDenied) as raised:
            directory.get(other, officer)
        assert raised.value.reason == "OUTSIDE_SCOPE"


def test_a_district_officer_reads_no_other_account(people: People) -> None:
    """Only supervisors (and administrators) read the accounts of others, per the contract."""
    with pytest.raises(PermissionDenied) as raised:
        people.directory.get("officers/truc-bach", people["ba-dinh"])
    assert raised.value.reason == "OUTSIDE_SCOPE"


def test_a_supervisor_reads_the_accounts_of_their_province(people: People) -> None:
    """Hà Nội's supervisor reads a Trúc Bạch officer, not a Đà Nẵng one nor the ministry's."""
    directory, supervisor = people.directory, people["ha-noi"]
    assert directory.get("officers/truc-bach", supervisor).unit.code == TRUC_BACH
    assert directory.get("officers/ba-dinh", supervisor).unit.code == BA_DINH
    for other in ("officers/thanh-binh", "officers/da-nang", "officers/admin"):
        with pytest.raises(PermissionDenied) as raised:
            directory.get(other, supervisor)
        assert raised.value.reason == "OUTSIDE_SCOPE"


def test_an_administrator_reads_any_account(people: People) -> None:
    """The ministry manages every province's accounts, so it reads each of them."""
    directory, admin = people.directory, people.admin
    assert directory.get("officers/thanh-binh", admin).unit.code == THANH_BINH
    assert directory.get("officers/admin", admin).role == ADMINISTRATOR
    with pytest.raises(NotFound):
        directory.get("officers/nobody", admin)


# Administrators from the configuration -------------------------------------------------------


def test_configured_administrators_are_created_once(sessions) -> None:
    """Starting the adapter again (or two at once) leaves one account per administrator."""
    directory = OfficerDirectory(sessions, code_lists(), identity_prefix=OFFICERS)
    directory.ensure_administrators(["admin", "admin-2"])
    directory.ensure_administrators(["admin", "admin-2"])

    assert row_count(directory) == 2
    admin = directory.authenticate(OFFICERS + "admin")
    accounts, _ = directory.list(officer_service_pb2.ListOfficersRequest(), admin)
    assert names(accounts) == ["officers/admin", "officers/admin-2"]
    for account in accounts:
        assert account.role == ADMINISTRATOR
        assert account.state == ACTIVE
        assert not account.HasField("unit")
        assert account.identity == OFFICERS + account.name.removeprefix("officers/")


def test_a_bad_configured_administrator_id_is_refused(sessions) -> None:
    """A configuration typo stops the start instead of creating an unusable account."""
    directory = OfficerDirectory(sessions, code_lists(), identity_prefix=OFFICERS)
    for officer_id in ("Admin", "admin_1", "1admin", ""):
        with pytest.raises(ValueError, match="administrator officer id"):
            directory.ensure_administrators([officer_id])
    assert row_count(directory) == 0


# Through the real stack ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One stack for the module: each test uses officer ids of its own."""
    running = start_stack(pki, tmp_path_factory.mktemp("officers-stack"))
    yield running
    running.stop_all()


def error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(error)
    assert status is not None, error
    info = error_details_pb2.ErrorInfo()
    assert any(detail.Unpack(info) for detail in status.details), status
    return info


def officer_channel(stack: Stack, officer_id: str, address: str | None = None) -> grpc.Channel:
    """A channel presenting officer ``officer_id``'s own certificate (issued, no account)."""
    tls = officer_tls(stack.pki, officer_id).read()
    return secure_channel(address or stack.gateway_address, tls)


def accounts(channel: grpc.Channel) -> officer_service_pb2_grpc.OfficerServiceStub:
    return officer_service_pb2_grpc.OfficerServiceStub(channel)


def registrations(
    channel: grpc.Channel,
) -> birth_registration_service_pb2_grpc.BirthRegistrationServiceStub:
    return birth_registration_service_pb2_grpc.BirthRegistrationServiceStub(channel)


def list_registrations(channel: grpc.Channel) -> None:
    registrations(channel).ListBirthRegistrations(
        birth_registration_service_pb2.ListBirthRegistrationsRequest(),
        timeout=10,
        metadata=((metadata.PURPOSE, "civil-status-supervision"),),
    )


def test_an_officer_certificate_without_an_account_is_refused_by_the_registry(
    stack: Stack,
) -> None:
    """The gateway admits any officer certificate; the registry wants an account behind it."""
    request = sample_request(SAMPLES[0], code_lists())
    with officer_channel(stack, "e2e-no-account") as channel:
        with pytest.raises(grpc.RpcError) as registering:
            registrations(channel).RegisterBirth(
                request,
                timeout=10,
                metadata=(
                    (metadata.REQUEST_ID, request.request_id),
                    (metadata.PURPOSE, "birth-registration"),
                ),
            )
        with pytest.raises(grpc.RpcError) as listing:
            list_registrations(channel)
    for raised in (registering, listing):
        assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
        info = error_info(raised.value)
        assert (info.reason, info.domain) == ("NO_OFFICER_ACCOUNT", ADAPTER_DOMAIN)


def test_a_header_cannot_name_an_officer(stack: Stack) -> None:
    """Claiming to be the administrator in lienthong-caller gets a caller nowhere."""
    claim = (metadata.CALLER, OFFICERS + BOOTSTRAP_ADMINISTRATOR)
    request = create_request("e2e-forged", TRUC_BACH, COMMUNE)

    with (
        officer_channel(stack, "e2e-header-forger") as channel,  # through the gateway
        pytest.raises(grpc.RpcError) as raised,
    ):
        accounts(channel).CreateOfficer(request, timeout=10, metadata=(*ACCOUNTS, claim))
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_info(raised.value).reason == "NO_OFFICER_ACCOUNT"

    # Straight to the adapter: it takes the header from the gateway's certificate only.
    with (
        officer_channel(stack, "e2e-header-forger", stack.justice_address) as channel,
        pytest.raises(grpc.RpcError) as raised,
    ):
        accounts(channel).CreateOfficer(request, timeout=10, metadata=(*ACCOUNTS, claim))
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED

    # Neither attempt created the account.
    with stack.administrator() as channel, pytest.raises(grpc.RpcError) as raised:
        accounts(channel).GetOfficer(
            officer_service_pb2.GetOfficerRequest(name="officers/e2e-forged"),
            timeout=10,
            metadata=ACCOUNTS,
        )
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND

    # The same header from the gateway's own certificate is what the adapter trusts.
    gateway_tls = tls_of(stack.pki, "gateway-client").read()
    with secure_channel(stack.justice_address, gateway_tls) as channel:
        got = accounts(channel).GetOfficer(
            officer_service_pb2.GetOfficerRequest(name="officers/admin"),
            timeout=10,
            metadata=(*ACCOUNTS, claim),
        )
    assert got.officer.role == ADMINISTRATOR


def test_a_disabled_officer_is_refused_from_the_next_call_on(stack: Stack) -> None:
    """Disabling takes effect at once, without waiting for the certificate to expire."""
    with stack.as_officer(TRUC_BACH, "e2e-disabled") as officer:
        list_registrations(officer)  # works while the account is active
        with stack.administrator() as admin:
            disabled = (
                accounts(admin)
                .DisableOfficer(
                    officer_service_pb2.DisableOfficerRequest(name="officers/e2e-disabled"),
                    timeout=10,
                    metadata=ACCOUNTS,
                )
                .officer
            )
        assert disabled.state == DISABLED
        with pytest.raises(grpc.RpcError) as listing:
            list_registrations(officer)
        with pytest.raises(grpc.RpcError) as reading:
            accounts(officer).GetOfficer(
                officer_service_pb2.GetOfficerRequest(name="officers/e2e-disabled"),
                timeout=10,
                metadata=ACCOUNTS,
            )
    for raised in (listing, reading):
        assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert error_info(raised.value).reason == "ACCOUNT_DISABLED"


def test_an_administrator_manages_an_account_through_the_gateway(stack: Stack) -> None:
    """Create, read, list, disable: the account's identity is its certificate's SPIFFE ID."""
    officer_id = "e2e-round-trip"
    certificate = officer_tls(stack.pki, officer_id).certificate.read_bytes()
    spiffe_id = spiffe_id_of(x509.load_pem_x509_certificate(certificate))
    with stack.administrator() as channel:
        stub = accounts(channel)
        created = stub.CreateOfficer(
            create_request(officer_id, PHUC_XA, COMMUNE), timeout=10, metadata=ACCOUNTS
        ).officer
        assert created.identity == spiffe_id
        assert (created.name, created.state) == (f"officers/{officer_id}", ACTIVE)
        assert created.display_name.given_name == "THU HÀ"

        got = stub.GetOfficer(
            officer_service_pb2.GetOfficerRequest(name=created.name),
            timeout=10,
            metadata=ACCOUNTS,
        ).officer
        assert got == created

        listed = stub.ListOfficers(
            officer_service_pb2.ListOfficersRequest(unit_code=PHUC_XA),
            timeout=10,
            metadata=ACCOUNTS,
        )
        assert created in listed.officers

        # The officer now works with their own certificate and reads their own account.
        with officer_channel(stack, officer_id) as own:
            mine = (
                accounts(own)
                .GetOfficer(
                    officer_service_pb2.GetOfficerRequest(name=created.name),
                    timeout=10,
                    metadata=ACCOUNTS,
                )
                .officer
            )
        assert mine == created

        disabled = stub.DisableOfficer(
            officer_service_pb2.DisableOfficerRequest(name=created.name),
            timeout=10,
            metadata=ACCOUNTS,
        ).officer
        assert (disabled.name, disabled.state, disabled.identity) == (
            created.name,
            DISABLED,
            spiffe_id,
        )
        inactive = stub.ListOfficers(
            officer_service_pb2.ListOfficersRequest(unit_code=PHUC_XA, state=DISABLED),
            timeout=10,
            metadata=ACCOUNTS,
        )
        assert [officer.name for officer in inactive.officers] == [created.name]


def test_officer_service_calls_need_the_account_management_purpose(stack: Stack) -> None:
    """The policy grants OfficerService for account management only."""
    with stack.administrator() as channel, pytest.raises(grpc.RpcError) as raised:
        accounts(channel).ListOfficers(
            officer_service_pb2.ListOfficersRequest(),
            timeout=10,
            metadata=((metadata.PURPOSE, "birth-registration"),),
        )
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_info(raised.value).reason == "PURPOSE_NOT_GRANTED"
