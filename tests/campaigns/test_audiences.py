"""Audiences: CSV uploads (streamed, in chunks), filters over recipients, freeze, the API
and the admin."""

import io
import tracemalloc
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.messages import get_messages
from django.core.exceptions import ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from campaigns.audiences import (
    IMPORT_CHUNK_ROWS,
    REJECTED_REPORTED,
    SCAN_BLOCK_BYTES,
    AudienceConflict,
    audience_count,
    audience_create,
    audience_delete,
    audience_freeze,
    audience_import_csv,
    audience_recipients,
    audience_update,
    recipients_matching,
)
from campaigns.models import Audience, AudienceMember, Campaign, CampaignStatus
from notifications.models import Booking, Recipient
from tests.campaigns.conftest import csv_upload

pytestmark = pytest.mark.django_db

AUDIENCES = "/api/v1/campaigns/audiences/"


def members_of(audience) -> dict[str, dict]:
    """The audience's members as {email or phone or external id: attributes}."""
    return {
        m.recipient.email or m.recipient.phone or m.recipient.external_id: m.attributes
        for m in AudienceMember.objects.filter(audience=audience).select_related("recipient")
    }


# --- Upload: rows ------------------------------------------------------------------------

MIXED = (
    "phone,email,external_id,name,locale,timezone,plan,city\n"  # 1
    "+1 415 555 0100,ana@example.com,,Ana,es-MX,America/Mexico_City,gold,Puebla\n"  # 2
    "12345,,,Bad Phone,,,gold,\n"  # 3
    ",,,No Address,,,silver,Lima\n"  # 4
    ",not-an-email,,Bad Email,,,,\n"  # 5
    ",carl@example.com,,Carl,,Mars/Olympus,,\n"  # 6
    ",dina@example.com,,Dina,english-language-long,,,\n"  # 7
    "\n"  # 8
    ",,crm-9,Eve,,,,Quito\n"  # 9
    ",fred@example.com,,Fred,,,,,extra,more\n"  # 10
    "+1 (415) 555-0111,,,,,,,\n"  # 11
)


def test_upload_imports_good_rows_and_reports_bad_ones_by_line(alice, alice_list):
    # when
    result = audience_import_csv(alice_list, csv_upload(MIXED))

    # then
    assert result == {
        "imported": 3,
        "duplicates": 0,
        "rejected": [
            {"line": 3, "reason": "Phone '12345' is not an E.164 number (such as +14155550123)."},
            {"line": 4, "reason": "No phone, email or external_id."},
            {"line": 5, "reason": "Email 'not-an-email' is not a valid email address."},
            {"line": 6, "reason": "Timezone 'Mars/Olympus' is not an IANA time zone (such as Europe/Madrid)."},
            {"line": 7, "reason": "Locale 'english-language-long' is not a locale (such as es or es-MX)."},
            {"line": 10, "reason": "The row has 10 fields; the header has 8."},
        ],
        "rejected_count": 6,
        "member_count": 3,
    }
    assert members_of(alice_list) == {
        "ana@example.com": {"plan": "gold", "city": "Puebla"},
        "crm-9": {"city": "Quito"},
        "+14155550111": {},
    }
    alice_list.refresh_from_db()
    assert alice_list.member_count == 3
    ana = Recipient.objects.get(account=alice, email="ana@example.com")
    assert (ana.phone, ana.name, ana.locale, ana.timezone) == ("+14155550100", "Ana", "es-MX", "America/Mexico_City")
    assert Recipient.objects.get(account=alice, external_id="crm-9").name == "Eve"
    assert Recipient.objects.filter(account=alice).count() == 3  # none for the rejected rows


def test_a_recipient_twice_or_already_a_member_is_a_duplicate_with_its_attributes_updated(alice, alice_list):
    first = "email,plan,city\nana@example.com,gold,Lima\nbea@example.com,silver,\nana@example.com,,Cusco\n"
    result = audience_import_csv(alice_list, csv_upload(first))
    assert (result["imported"], result["duplicates"], result["member_count"]) == (2, 1, 2)
    # A later row's cells go over an earlier one's; an empty cell changes nothing.
    assert members_of(alice_list) == {
        "ana@example.com": {"plan": "gold", "city": "Cusco"},
        "bea@example.com": {"plan": "silver"},
    }
    ana_member = AudienceMember.objects.get(audience=alice_list, recipient__email="ana@example.com")

    # when
    second = "EMAIL,plan\nbea@example.com,gold\ncid@example.com,bronze\nana@example.com,gold\n"
    result = audience_import_csv(alice_list, csv_upload(second))

    # then
    assert result == {"imported": 1, "duplicates": 2, "rejected": [], "rejected_count": 0, "member_count": 3}
    assert members_of(alice_list) == {
        "ana@example.com": {"plan": "gold", "city": "Cusco"},
        "bea@example.com": {"plan": "gold"},
        "cid@example.com": {"plan": "bronze"},
    }
    assert AudienceMember.objects.get(audience=alice_list, recipient__email="ana@example.com").pk == ana_member.pk
    assert Recipient.objects.filter(account=alice).count() == 3


def test_upload_finds_existing_recipients_and_updates_their_details(alice, bob, alice_list):
    # given
    known = Recipient.objects.create(account=alice, external_id="crm-1", email="old@example.com", name="Old")
    by_email = Recipient.objects.create(account=alice, email="ana@example.com", locale="en")
    bobs = Recipient.objects.create(account=bob, external_id="crm-1", email="bob-side@example.com", name="Bob's")

    # when
    csv = "external_id,email,name,locale\ncrm-1,new@example.com,New Name,\n,ana@example.com,Ana,es\n"
    result = audience_import_csv(alice_list, csv_upload(csv))

    # then
    assert (result["imported"], result["rejected_count"]) == (2, 0)
    assert Recipient.objects.filter(account=alice).count() == 2
    known.refresh_from_db()
    by_email.refresh_from_db()
    bobs.refresh_from_db()
    assert (known.email, known.name) == ("new@example.com", "New Name")
    assert (by_email.name, by_email.locale) == ("Ana", "es")
    assert (bobs.email, bobs.name) == ("bob-side@example.com", "Bob's")
    assert set(audience_recipients(alice_list)) == {known.pk, by_email.pk}


def test_audience_recipients_pages_by_recipient_id_whatever_the_kind(alice, bob, alice_list):
    # given: member ids that are not the recipients' ids
    for index in range(3):
        Recipient.objects.create(account=alice, email=f"outside{index}@example.com")
    Recipient.objects.create(account=alice, email="c@example.com", tags=["vip"])
    Recipient.objects.create(account=bob, email="b@example.com", tags=["vip"])
    audience_import_csv(alice_list, csv_upload("email\nc@example.com\nb@example.com\na@example.com\n"))
    ids = sorted(
        Recipient.objects.filter(
            account=alice, email__in=["a@example.com", "b@example.com", "c@example.com"]
        ).values_list("pk", flat=True)
    )
    vips = audience_create(alice, name="VIPs", kind="filter", filter={"tags": ["vip"]})

    # then
    assert list(audience_recipients(alice_list)) == ids
    assert list(audience_recipients(alice_list).filter(pk__gt=ids[0])[:1]) == [ids[1]]
    assert list(audience_recipients(vips)) == [Recipient.objects.get(account=alice, tags=["vip"]).pk]


def test_line_numbers_count_physical_lines_of_quoted_fields_and_a_bom_is_ignored(alice_list):
    csv = '\ufeffemail,note\nana@example.com,"first line\nsecond line"\nbad,x\n'
    result = audience_import_csv(alice_list, csv_upload(csv))
    assert result["rejected"] == [{"line": 4, "reason": "Email 'bad' is not a valid email address."}]
    assert members_of(alice_list) == {"ana@example.com": {"note": "first line\nsecond line"}}


def test_a_nul_or_an_overlong_line_rejects_only_its_row(alice_list):
    csv = f"email,note\nana@example.com,a\x00b\nbea@example.com,{'x' * 70_000}\ncid@example.com,ok\n"
    result = audience_import_csv(alice_list, csv_upload(csv))
    assert result["rejected"] == [
        {"line": 2, "reason": "The row holds a NUL character."},
        {"line": 3, "reason": "The line is longer than 65536 characters."},
    ]
    assert members_of(alice_list) == {"cid@example.com": {"note": "ok"}}


def test_only_the_first_rejected_rows_are_listed_with_the_total(alice_list):
    csv = "email\n" + "not-an-email\n" * 1500
    result = audience_import_csv(alice_list, csv_upload(csv))
    assert result["rejected_count"] == 1500
    assert len(result["rejected"]) == REJECTED_REPORTED == 1000
    assert result["rejected"][-1] == {"line": 1001, "reason": "Email 'not-an-email' is not a valid email address."}
    assert result["imported"] == 0


# --- Upload: refused files ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b"email,name\nana@example.com,Ana\nbea@example.com,Beatriz Mu\xf1oz\n",
            "The file is not UTF-8 text (line 3); save it as CSV UTF-8 and upload it again.",
        ),
        (b"", "The file is empty or its first line is blank: it must start with a header line."),
        (
            b"+14155550100,ana@example.com,Ana\n+14155550101,bea@example.com,Bea\n",
            "The first line must be a header naming the columns, with at least one of phone, email, external_id; "
            "it has: +14155550100, ana@example.com, Ana.",
        ),
        (
            b"name,plan\nAna,gold\n",
            "The first line must be a header naming the columns, with at least one of phone, email, external_id; "
            "it has: name, plan.",
        ),
        (b"email,Email\nana@example.com,ana@example.com\n", "The header names a column twice: email."),
    ],
    ids=["latin-1", "empty", "no-header", "no-address-column", "repeated-column"],
)
def test_a_file_refused_whole_writes_nothing(alice, alice_list, content, message):
    with pytest.raises(ValidationError) as refused:
        audience_import_csv(alice_list, csv_upload(content))
    assert refused.value.message_dict == {"file": [message]}
    assert AudienceMember.objects.count() == 0
    assert Recipient.objects.count() == 0


def test_a_bad_byte_late_in_the_file_leaves_no_half_import(alice_list):
    # Chunks of 10 rows: 30 good rows would be written before the bad byte is read.
    content = b"email\n" + "".join(f"u{i}@example.com\n" for i in range(30)).encode() + b"caf\xe9@x.com\n"
    with pytest.raises(ValidationError, match=r"not UTF-8 text \(line 32\)"):
        audience_import_csv(alice_list, csv_upload(content), chunk_size=10)
    assert AudienceMember.objects.count() == 0
    assert Recipient.objects.count() == 0


def test_a_filter_audience_takes_no_upload(alice):
    audience = audience_create(alice, name="VIPs", kind="filter", filter={"tags": ["vip"]})
    with pytest.raises(AudienceConflict):
        audience_import_csv(audience, csv_upload("email\nana@example.com\n"))
    assert AudienceMember.objects.count() == 0


# --- Upload: large files -----------------------------------------------------------------


def write_csv(path, rows: int, note_chars: int = 0) -> int:
    note = "n" * note_chars
    with open(path, "w", encoding="utf-8") as out:
        out.write("phone,email,name,plan,note\n")
        for i in range(rows):
            out.write(f"+1415{i:07d},user{i}@example.com,User {i},gold,{note}\n")
    return path.stat().st_size


class ReadSpy(io.BufferedReader):
    """A file that notes how much each read asked for."""

    def __init__(self, path):
        super().__init__(io.FileIO(path, "rb"))
        self.sizes: list[int] = []
        self.bytes_read = 0

    def _noted(self, data: bytes, size) -> bytes:
        self.sizes.append(-1 if size is None else size)
        self.bytes_read += len(data)
        return data

    def read(self, size=-1):
        return self._noted(super().read(size), size)

    def read1(self, size=-1):
        return self._noted(super().read1(size), size)


def test_a_large_upload_is_read_as_a_stream(alice_list, tmp_path):
    # given
    path = tmp_path / "large.csv"
    size = write_csv(path, 20_000)

    # when
    with ReadSpy(path) as upload:
        result = audience_import_csv(alice_list, upload)

    # then: never asked for all of it at once, but read through (once to check the
    # encoding, once to import).
    assert result["imported"] == result["member_count"] == 20_000
    assert all(0 < asked <= SCAN_BLOCK_BYTES for asked in upload.sizes)
    assert upload.bytes_read == 2 * size


def test_a_large_upload_runs_a_bounded_number_of_queries_per_chunk(alice_list, tmp_path, django_assert_max_num_queries):
    path = tmp_path / "large.csv"
    write_csv(path, 20_000)
    chunks = 20_000 // IMPORT_CHUNK_ROWS
    # PostgreSQL: savepoint, recipients SELECT + INSERT, members SELECT + INSERT, release.
    # SQLite splits each multi-row INSERT by its 999-parameter limit (16 + 5 of them here).
    per_chunk = 6 if connection.vendor == "postgresql" else 28
    with open(path, "rb") as upload, django_assert_max_num_queries(chunks * per_chunk + 2):
        result = audience_import_csv(alice_list, upload)
    assert result["imported"] == 20_000

    # Again: every row a duplicate, nothing to write.
    with open(path, "rb") as upload, CaptureQueriesContext(connection) as queries:
        result = audience_import_csv(alice_list, upload)
    assert (result["imported"], result["duplicates"], result["member_count"]) == (0, 20_000, 20_000)
    assert len(queries) == chunks * 4 + 2


def test_a_large_upload_holds_one_chunk_in_memory_not_the_file(alice, tmp_path):
    # given: files of 2,000 and 20,000 rows (about 0.9 and 9 MB)
    small, large = tmp_path / "small.csv", tmp_path / "large.csv"
    write_csv(small, 2_000, note_chars=400)
    large_size = write_csv(large, 20_000, note_chars=400)
    peaks = []
    for index, path in enumerate((small, large)):
        audience = audience_create(alice, name=f"Audience {index}")
        with open(path, "rb") as upload:
            tracemalloc.start()
            try:
                result = audience_import_csv(audience, upload)
                peaks.append(tracemalloc.get_traced_memory()[1])
            finally:
                tracemalloc.stop()
        assert result["rejected_count"] == 0

    # then: ten times the rows, about the same peak (a chunk's rows, their recipients and
    # statements: some 4 to 5 MB here), about half the large file's size
    small_peak, large_peak = peaks
    assert large_peak < small_peak * 1.3
    assert large_peak < large_size * 0.6


# --- Filters -----------------------------------------------------------------------------


def at(day: str) -> datetime:
    return datetime.fromisoformat(day).replace(tzinfo=UTC)


def booking(account, invitee, start: str, number: int) -> Booking:
    start_time = at(start)
    return Booking.objects.create(
        account=account,
        external_id=f"bk-{number}",
        start_time=start_time,
        end_time=start_time + timedelta(hours=1),
        invitee=invitee,
        last_event_at=start_time,
    )


@pytest.fixture
def people(alice, bob):
    """Alice's five recipients (and one of Bob's who would match most filters)."""
    r1 = Recipient.objects.create(
        account=alice,
        email="r1@example.com",
        tags=["vip", "newsletter"],
        locale="es-MX",
        timezone="America/Mexico_City",
        attributes={"plan": "gold", "seats": 3},
    )
    r2 = Recipient.objects.create(
        account=alice,
        email="r2@example.com",
        tags=["vip"],
        locale="es",
        timezone="Europe/Madrid",
        attributes={"plan": "gold"},
    )
    r3 = Recipient.objects.create(
        account=alice,
        email="r3@example.com",
        tags=["newsletter"],
        locale="en",
        timezone="Europe/Madrid",
        attributes={"plan": "silver"},
    )
    r4 = Recipient.objects.create(account=alice, email="r4@example.com")
    r5 = Recipient.objects.create(
        account=alice, email="r5@example.com", tags=["VIP"], locale="ES_ar", attributes={"plan": "gold", "seats": "3"}
    )
    bobs = Recipient.objects.create(
        account=bob, email="r1@example.com", tags=["vip", "newsletter"], locale="es", attributes={"plan": "gold"}
    )
    booking(alice, r1, "2024-12-20T10:00:00", 1)
    booking(alice, r1, "2025-02-10T10:00:00", 2)
    booking(alice, r2, "2024-11-05T10:00:00", 3)
    booking(alice, r3, "2025-01-01T00:00:00", 4)
    booking(bob, bobs, "2024-11-05T10:00:00", 5)
    return {"r1": r1, "r2": r2, "r3": r3, "r4": r4, "r5": r5}


@pytest.mark.parametrize(
    ("filter", "expected"),
    [
        ({}, ["r1", "r2", "r3", "r4", "r5"]),
        ({"tags": ["vip"]}, ["r1", "r2"]),
        ({"tags": ["vip", "newsletter"]}, ["r1"]),
        ({"tags": ["newsletter"]}, ["r1", "r3"]),
        ({"locale": "es"}, ["r1", "r2", "r5"]),
        ({"locale": "es-MX"}, ["r1"]),
        ({"timezone": "Europe/Madrid"}, ["r2", "r3"]),
        ({"attributes": {"plan": "gold"}}, ["r1", "r2", "r5"]),
        ({"attributes": {"plan": "gold", "seats": 3}}, ["r1"]),
        ({"attributes": {"seats": "3"}}, ["r5"]),
        ({"last_booking_after": "2025-01-01"}, ["r1", "r3"]),
        ({"last_booking_before": "2025-01-01"}, ["r2"]),
        ({"last_booking_after": "2024-12-01", "last_booking_before": "2025-01-02"}, ["r3"]),
        (
            {"tags": ["vip"], "locale": "es", "attributes": {"plan": "gold"}, "last_booking_before": "2025-01-01"},
            ["r2"],
        ),
    ],
)
def test_a_filter_audience_holds_the_recipients_matching_every_condition(alice, people, filter, expected):
    audience = audience_create(alice, name="Filtered", kind="filter", filter=filter)
    assert audience_count(audience) == len(expected)
    assert list(audience_recipients(audience)) == sorted(people[name].pk for name in expected)


def test_tags_and_attributes_use_jsonb_containment_on_postgresql_and_json_each_on_sqlite(alice):
    sql = str(recipients_matching(account=alice, filter={"tags": ["vip"], "attributes": {"plan": "gold"}}).query)
    if connection.vendor == "postgresql":
        assert sql.count("@>") == 2
    else:
        assert "json_each" in sql
        assert "JSON_EXTRACT" in sql


@pytest.mark.parametrize(
    ("filter", "errors"),
    [
        (
            {"plan": "gold"},
            {
                "filter": [
                    "Unknown key(s): plan. Known: tags, locale, timezone, attributes, last_booking_after, "
                    "last_booking_before."
                ]
            },
        ),
        ({"tags": "vip"}, {"filter.tags": ["Must be a list of strings."]}),
        ({"tags": ["vip", " "]}, {"filter.tags": ["Each tag must be 1 to 200 characters."]}),
        ({"locale": "spanish!"}, {"filter.locale": ['A locale such as "es" or "es-MX".']}),
        ({"timezone": "Mars/Olympus"}, {"filter.timezone": ["An IANA time zone such as Europe/Madrid."]}),
        ({"attributes": {"plan": ["gold"]}}, {"filter.attributes": ["plan: a string, a number or a boolean."]}),
        ({"last_booking_after": "2025-13-01"}, {"filter.last_booking_after": ["An ISO date, YYYY-MM-DD."]}),
        (
            {"last_booking_after": "2025-02-01", "last_booking_before": "2025-01-01"},
            {"filter.last_booking_before": ["Must be later than last_booking_after."]},
        ),
        ("vip", {"filter": ["Must be an object."]}),
    ],
)
def test_a_bad_filter_is_refused_naming_its_key(alice, filter, errors):
    with pytest.raises(ValidationError) as refused:
        audience_create(alice, name="Filtered", kind="filter", filter=filter)
    assert refused.value.message_dict == errors
    assert not Audience.objects.exists()


def test_names_are_unique_per_account_and_a_list_has_no_filter(alice, bob, alice_list):
    with pytest.raises(ValidationError) as refused:
        audience_create(alice, name=" Customers ")
    assert refused.value.message_dict == {"name": ["The account already has an audience with this name."]}
    assert audience_create(bob, name="Customers").account == bob
    with pytest.raises(ValidationError) as refused:
        audience_create(alice, name="Other", filter={"tags": ["vip"]})
    assert refused.value.message_dict == {"filter": ["A list audience has no filter: its members come from uploads."]}
    with pytest.raises(ValidationError):
        audience_update(alice_list, filter={"tags": ["vip"]})


# --- Freeze and delete -------------------------------------------------------------------


def campaign_on(audience, status=CampaignStatus.DRAFT) -> Campaign:
    return Campaign.objects.create(
        account=audience.account, name=f"Campaign {status}", audience=audience, channels=["email"], status=status
    )


def member_recipients(audience) -> list[int]:
    return list(AudienceMember.objects.filter(audience=audience).order_by("pk").values_list("recipient_id", flat=True))


def test_freeze_writes_the_matches_as_members_in_recipient_order(alice, people, django_assert_max_num_queries):
    # given
    audience = audience_create(alice, name="VIPs", kind="filter", filter={"tags": ["vip"]})
    r1, r2, r3 = people["r1"], people["r2"], people["r3"]

    # when
    with django_assert_max_num_queries(8):  # whatever the matches: one DELETE, one INSERT ... SELECT
        assert audience_freeze(audience) == 2

    # then
    assert member_recipients(audience) == [r1.pk, r2.pk]
    audience.refresh_from_db()
    assert audience.member_count == 2
    first = AudienceMember.objects.get(audience=audience, recipient=r1)

    # when the recipients change
    Recipient.objects.filter(pk=r2.pk).update(tags=[])
    Recipient.objects.filter(pk=r3.pk).update(tags=["vip"])
    assert audience_freeze(audience) == 2

    # then: r2 is gone, r3 added, r1 kept as it was
    assert member_recipients(audience) == [r1.pk, r3.pk]
    assert AudienceMember.objects.get(audience=audience, recipient=r1).pk == first.pk


def test_freeze_removes_no_member_while_another_campaign_walks_the_audience(alice, people):
    audience = audience_create(alice, name="VIPs", kind="filter", filter={"tags": ["vip"]})
    audience_freeze(audience)
    running = campaign_on(audience, CampaignStatus.RUNNING)
    starting = campaign_on(audience, CampaignStatus.DRAFT)
    Recipient.objects.filter(pk=people["r2"].pk).update(tags=[])
    Recipient.objects.filter(pk=people["r3"].pk).update(tags=["vip"])

    assert audience_freeze(audience, campaign=starting) == 3
    assert member_recipients(audience) == [people["r1"].pk, people["r2"].pk, people["r3"].pk]

    # The running campaign itself starting (or none walking): the stale member goes.
    assert audience_freeze(audience, campaign=running) == 2
    assert member_recipients(audience) == [people["r1"].pk, people["r3"].pk]


def test_freezing_a_list_audience_changes_nothing(alice, alice_list):
    audience_import_csv(alice_list, csv_upload("email\nana@example.com\nbea@example.com\n"))
    assert audience_freeze(alice_list) == 2
    assert audience_count(alice_list) == 2


def test_an_audience_a_campaign_uses_cannot_be_deleted(alice, alice_list):
    audience_import_csv(alice_list, csv_upload("email\nana@example.com\n"))
    campaign = campaign_on(alice_list)
    with pytest.raises(AudienceConflict) as refused:
        audience_delete(alice_list)
    assert refused.value.message_dict == {"audience": ["Used by campaign(s) 'Campaign draft': delete them first."]}
    assert Audience.objects.filter(pk=alice_list.pk).exists()
    assert AudienceMember.objects.count() == 1

    campaign.delete()
    audience_delete(alice_list)
    assert not Audience.objects.exists()
    assert AudienceMember.objects.count() == 0
    assert Recipient.objects.count() == 1  # the recipient stays


# --- API ---------------------------------------------------------------------------------


def test_api_creates_lists_changes_and_deletes_audiences(alice_api):
    # when
    created = alice_api.post(AUDIENCES, {"name": "Customers"}, format="json")
    filtered = alice_api.post(
        AUDIENCES, {"name": "VIPs", "kind": "filter", "filter": {"tags": ["vip", "vip"]}}, format="json"
    )

    # then
    assert created.status_code == 201
    body = created.json()
    assert set(body) == {"id", "name", "kind", "filter", "member_count", "created_at", "updated_at"}
    assert (body["name"], body["kind"], body["filter"], body["member_count"]) == ("Customers", "list", {}, 0)
    assert filtered.status_code == 201
    assert (filtered.json()["kind"], filtered.json()["filter"]) == ("filter", {"tags": ["vip"]})

    listed = alice_api.get(AUDIENCES).json()
    assert [a["name"] for a in listed["results"]] == ["VIPs", "Customers"]
    assert [a["name"] for a in alice_api.get(AUDIENCES, {"kind": "list"}).json()["results"]] == ["Customers"]

    url = f"{AUDIENCES}{filtered.json()['id']}/"
    changed = alice_api.patch(url, {"name": "Gold VIPs", "filter": {"attributes": {"plan": "gold"}}}, format="json")
    assert changed.status_code == 200
    assert (changed.json()["name"], changed.json()["filter"]) == ("Gold VIPs", {"attributes": {"plan": "gold"}})
    assert alice_api.put(url, {"name": "x"}, format="json").status_code == 405

    assert alice_api.delete(url).status_code == 204
    assert alice_api.get(url).status_code == 404


def test_api_refuses_bad_input_in_the_error_format(alice_api, alice_list):
    taken = alice_api.post(AUDIENCES, {"name": "Customers"}, format="json")
    assert taken.status_code == 400
    assert taken.json() == {
        "message": "Invalid input: name: The account already has an audience with this name.",
        "errors": {"name": ["The account already has an audience with this name."]},
    }
    unknown = alice_api.post(AUDIENCES, {"name": "F", "kind": "filter", "filter": {"city": "Lima"}}, format="json")
    assert unknown.status_code == 400
    assert list(unknown.json()["errors"]) == ["filter"]
    bad_zone = alice_api.post(
        AUDIENCES, {"name": "F", "kind": "filter", "filter": {"timezone": "Nowhere"}}, format="json"
    )
    assert bad_zone.json()["errors"] == {"filter.timezone": ["An IANA time zone such as Europe/Madrid."]}
    list_filter = alice_api.patch(f"{AUDIENCES}{alice_list.pk}/", {"filter": {"tags": ["x"]}}, format="json")
    assert list_filter.status_code == 400
    assert Audience.objects.count() == 1


def test_api_upload_reports_imported_duplicates_and_rejected_rows(alice_api, alice_list):
    url = f"{AUDIENCES}{alice_list.pk}/upload/"

    response = alice_api.post(url, {"file": csv_upload(MIXED)}, format="multipart")

    assert response.status_code == 200
    body = response.json()
    assert (body["imported"], body["duplicates"], body["rejected_count"], body["member_count"]) == (3, 0, 6, 3)
    assert body["rejected"][0] == {"line": 3, "reason": "Phone '12345' is not an E.164 number (such as +14155550123)."}

    again = alice_api.post(url, {"file": csv_upload(MIXED)}, format="multipart").json()
    assert (again["imported"], again["duplicates"], again["member_count"]) == (0, 3, 3)

    count = alice_api.get(f"{AUDIENCES}{alice_list.pk}/count/")
    assert count.json() == {"count": 3}
    members = alice_api.get(f"{AUDIENCES}{alice_list.pk}/members/").json()
    assert members["count"] == 3
    first = members["results"][0]
    assert set(first) == {"id", "recipient", "attributes", "created_at"}
    assert first["attributes"] == {"plan": "gold", "city": "Puebla"}
    assert first["recipient"] | {"id": None} == {
        "id": None,
        "external_id": "",
        "email": "ana@example.com",
        "phone": "+14155550100",
        "name": "Ana",
        "timezone": "America/Mexico_City",
        "locale": "es-MX",
        "tags": [],
    }


def test_api_upload_spooled_to_disk_is_read_the_same(alice_api, alice_list, settings):
    # given: every upload goes to a temporary file, as one over 2.5 MB does
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 0
    rows = "".join(f"+1415{i:07d},u{i}@example.com,{i}\n" for i in range(2500))

    # when
    body = alice_api.post(
        f"{AUDIENCES}{alice_list.pk}/upload/", {"file": csv_upload("phone,email,rank\n" + rows)}, format="multipart"
    ).json()

    # then
    assert (body["imported"], body["rejected_count"], body["member_count"]) == (2500, 0, 2500)
    assert AudienceMember.objects.get(audience=alice_list, recipient__email="u2499@example.com").attributes == {
        "rank": "2499"
    }


def test_api_upload_refuses_bad_files_and_filter_audiences(alice, alice_api, alice_list):
    url = f"{AUDIENCES}{alice_list.pk}/upload/"
    latin = alice_api.post(url, {"file": csv_upload(b"email\ncaf\xe9@example.com\n")}, format="multipart")
    assert latin.status_code == 400
    assert latin.json() == {
        "message": "Invalid input: file: The file is not UTF-8 text (line 2); save it as CSV UTF-8 and upload it again.",
        "errors": {"file": ["The file is not UTF-8 text (line 2); save it as CSV UTF-8 and upload it again."]},
    }
    missing = alice_api.post(url, {}, format="multipart")
    assert missing.status_code == 400
    assert list(missing.json()["errors"]) == ["file"]

    audience = audience_create(alice, name="VIPs", kind="filter", filter={})
    refused = alice_api.post(
        f"{AUDIENCES}{audience.pk}/upload/", {"file": csv_upload("email\na@example.com\n")}, format="multipart"
    )
    assert refused.status_code == 409
    assert refused.json() == {
        "message": "This is a filter audience: its members come from its filter, not from uploads.",
        "errors": {},
    }
    assert AudienceMember.objects.count() == 0


def test_api_count_previews_a_filter_audience_and_delete_is_refused_while_in_use(alice, alice_api, people):
    audience = audience_create(alice, name="VIPs", kind="filter", filter={"locale": "es"})
    assert alice_api.get(f"{AUDIENCES}{audience.pk}/count/").json() == {"count": 3}
    assert alice_api.get(f"{AUDIENCES}{audience.pk}/members/").json()["count"] == 0  # not frozen yet
    campaign_on(audience)
    refused = alice_api.delete(f"{AUDIENCES}{audience.pk}/")
    assert refused.status_code == 409
    assert refused.json()["message"] == "Used by campaign(s) 'Campaign draft': delete them first."
    assert Audience.objects.filter(pk=audience.pk).exists()


def test_another_accounts_audience_is_not_found_whatever_is_asked(alice_list, bob_api, anon_api):
    audience_import_csv(alice_list, csv_upload("email\nana@example.com\n"))
    url = f"{AUDIENCES}{alice_list.pk}/"
    assert bob_api.get(AUDIENCES).json()["count"] == 0
    assert bob_api.get(url).status_code == 404
    assert bob_api.patch(url, {"name": "Mine"}, format="json").status_code == 404
    assert bob_api.delete(url).status_code == 404
    upload = bob_api.post(f"{url}upload/", {"file": csv_upload("email\nbob@example.com\n")}, format="multipart")
    assert upload.status_code == 404
    assert bob_api.get(f"{url}count/").status_code == 404
    assert bob_api.get(f"{url}members/").status_code == 404
    assert anon_api.get(AUDIENCES).status_code == 401
    alice_list.refresh_from_db()
    assert (alice_list.name, alice_list.member_count) == ("Customers", 1)
    assert members_of(alice_list) == {"ana@example.com": {}}


# --- Admin -------------------------------------------------------------------------------


def messages_of(response) -> list[tuple[str, str]]:
    return [(m.level_tag, m.message) for m in get_messages(response.wsgi_request)]


def test_admin_creates_a_list_audience_from_an_upload(admin_client, alice):
    # when
    response = admin_client.post(
        reverse("admin:campaigns_audience_add"),
        {
            "account": alice.pk,
            "name": "Spring list",
            "kind": "list",
            "filter": "{}",
            "csv_file": csv_upload("email,plan\nana@example.com,gold\nnot-an-email,x\n", name="spring.csv"),
            "_save": "Save",
        },
    )

    # then
    assert response.status_code == 302
    audience = Audience.objects.get(name="Spring list")
    assert (audience.account, audience.member_count) == (alice, 1)
    assert members_of(audience) == {"ana@example.com": {"plan": "gold"}}
    assert ("warning", "Rejected line 3: Email 'not-an-email' is not a valid email address.") in messages_of(response)
    assert (
        "warning",
        "spring.csv: 1 member(s) imported, 0 already in the audience (updated), 1 row(s) rejected; "
        "the audience has 1 member(s).",
    ) in messages_of(response)


def test_admin_change_page_uploads_and_links_the_members(admin_client, alice_list):
    change = reverse("admin:campaigns_audience_change", args=[alice_list.pk])
    page = admin_client.get(change)
    assert page.status_code == 200
    assert 'enctype="multipart/form-data"' in page.content.decode()

    refused = admin_client.post(change, {"name": "Customers", "csv_file": csv_upload(b"email\ncaf\xe9\n")})
    assert refused.status_code == 302
    assert (
        "error",
        "The file audience.csv was refused: The file is not UTF-8 text (line 2); save it as CSV UTF-8 and "
        "upload it again.",
    ) in messages_of(refused)

    admin_client.post(change, {"name": "Customers", "csv_file": csv_upload("email\nana@example.com\n")})
    alice_list.refresh_from_db()
    assert alice_list.member_count == 1
    members = reverse("admin:campaigns_audiencemember_changelist")
    assert f"{members}?audience={alice_list.pk}" in admin_client.get(change).content.decode()
    listed = admin_client.get(members, {"audience": alice_list.pk})
    assert listed.status_code == 200
    assert listed.context["cl"].result_count == 1
    member = AudienceMember.objects.get()
    assert admin_client.get(reverse("admin:campaigns_audiencemember_change", args=[member.pk])).status_code == 200


def test_admin_filter_audience_shows_its_matches_and_refuses_an_upload(admin_client, alice, people):
    add = admin_client.post(
        reverse("admin:campaigns_audience_add"),
        {
            "account": alice.pk,
            "name": "VIPs",
            "kind": "filter",
            "filter": '{"tags": ["vip"]}',
            "csv_file": csv_upload("email\nana@example.com\n"),
        },
    )
    assert add.status_code == 200
    assert add.context["adminform"].form.errors == {
        "csv_file": ["A filter audience takes no upload: its members come from its filter."]
    }
    bad = admin_client.post(
        reverse("admin:campaigns_audience_add"),
        {"account": alice.pk, "name": "VIPs", "kind": "filter", "filter": '{"city": "Lima"}'},
    )
    assert list(bad.context["adminform"].form.errors) == ["filter"]
    assert not Audience.objects.exists()

    audience = audience_create(alice, name="VIPs", kind="filter", filter={"tags": ["vip"]})
    page = admin_client.get(reverse("admin:campaigns_audience_change", args=[audience.pk]))
    assert "2 recipient(s) match the filter now" in page.content.decode()


def test_admin_shows_an_operator_only_their_accounts_audiences_and_members(alice_staff, alice_list, bob_list):
    audience_import_csv(alice_list, csv_upload("email\nana@example.com\n"))
    audience_import_csv(bob_list, csv_upload("email\nbob@example.com\n"))

    audiences = alice_staff.get(reverse("admin:campaigns_audience_changelist"))
    assert [a.pk for a in audiences.context["cl"].result_list] == [alice_list.pk]
    members = alice_staff.get(reverse("admin:campaigns_audiencemember_changelist"))
    assert [m.audience_id for m in members.context["cl"].result_list] == [alice_list.pk]
    assert (
        alice_staff.get(reverse("admin:campaigns_audiencemember_changelist"), {"audience": bob_list.pk})
        .context["cl"]
        .result_count
        == 0
    )
    audience_filter = next(f for f in members.context["cl"].filter_specs if f.parameter_name == "audience")
    assert [value for value, _ in audience_filter.lookup_choices] == [str(alice_list.pk)]
    assert alice_staff.get(reverse("admin:campaigns_audience_change", args=[bob_list.pk])).status_code == 302
