"""The Confluence source against a fake Confluence (Cloud and Data Center) over real HTTP:
paged listings, versions, storage format through the HTML reader, attachments, restrictions as
access, and failures named by space or page."""

from collections.abc import AsyncIterator, Callable

import pytest

from ingestion.readers import read_document
from ingestion.sources.base import SourceDocument, SourceError
from ingestion.sources.confluence import ConfluenceSource
from ingestion.sources.storage_html import storage_to_html
from tests.fakes.confluence import API_TOKEN, EMAIL, PAT, FakeAttachment, FakeConfluence
from tests.test_readers_formats import make_pdf

pytest_plugins = ["tests.fakes.confluence"]

Make = Callable[..., ConfluenceSource]

STORAGE = (
    "<p>Connect with the <strong>WireGuard</strong> VPN client.</p>"
    '<ac:structured-macro ac:name="toc"><ac:parameter ac:name="maxLevel">2</ac:parameter>'
    "</ac:structured-macro>"
    "<h2>Setup</h2>"
    '<ac:structured-macro ac:name="info"><ac:parameter ac:name="title">Before you start'
    "</ac:parameter><ac:rich-text-body><p>Ask the helpdesk for a config file.</p>"
    "</ac:rich-text-body></ac:structured-macro>"
    '<ac:structured-macro ac:name="code"><ac:parameter ac:name="language">bash'
    "</ac:parameter><ac:plain-text-body><![CDATA[wg-quick up office]]></ac:plain-text-body>"
    "</ac:structured-macro>"
    '<p>See <ac:link><ri:page ri:content-title="Holidays" /></ac:link> and '
    '<ac:link><ri:user ri:account-id="42" /></ac:link>'
    '<ac:image><ri:attachment ri:filename="diagram.png" /></ac:image>.</p>'
    "<ac:task-list><ac:task><ac:task-id>1</ac:task-id><ac:task-status>incomplete"
    "</ac:task-status><ac:task-body>Install the client</ac:task-body></ac:task></ac:task-list>"
)


@pytest.fixture
async def make_source(fake_confluence: FakeConfluence) -> AsyncIterator[Make]:
    """make(space_keys, **kwargs): a ConfluenceSource for the fake's flavor with the right
    credentials (override them by keyword), closed after the test."""
    sources: list[ConfluenceSource] = []

    def make(space_keys: list[str], **kwargs: object) -> ConfluenceSource:
        if fake_confluence.flavor == "cloud":
            credentials: dict[str, object] = {"email": EMAIL, "api_token": API_TOKEN}
        else:
            credentials = {"pat": PAT}
        options = {"flavor": fake_confluence.flavor, **credentials, **kwargs}
        source = ConfluenceSource(fake_confluence.base_url, space_keys, **options)  # type: ignore[arg-type]
        sources.append(source)
        return source

    yield make
    for source in sources:
        await source.aclose()


def handbook(fake: FakeConfluence) -> None:
    """Space HR: a restricted parent, its child (inheriting), a page with its own restriction,
    a public page with a PDF and an image attached; more pages than one listing page holds."""
    fake.page("HR", "100", "VPN", STORAGE)
    fake.page("HR", "200", "Salaries", "<p>Salary bands per grade.</p>",
              users=["u-boss"], groups=["hr"])  # fmt: skip
    fake.page("HR", "201", "Bonuses", "<p>Bonuses are paid in March.</p>", parent="200")
    fake.page("HR", "202", "Board", "<p>Board minutes.</p>", parent="200", groups=["board"])
    pdf = make_pdf([("Expenses", 0, ["Travel costs are reimbursed in thirty days."])])
    fake.pages["100"].attachments += [
        FakeAttachment("att900", "expenses.pdf", pdf, "application/pdf"),
        FakeAttachment("att901", "diagram.png", b"\x89PNG", "image/png"),
    ]
    fake.page("IT", "300", "Printers", "<p>Third floor.</p>")


def by_id(documents: list[SourceDocument]) -> dict[str, SourceDocument]:
    return {d.doc_id: d for d in documents}


async def test_listing_pages_versions_attachments_and_access(
    fake_confluence: FakeConfluence, make_source: Make
) -> None:
    handbook(fake_confluence)
    source = make_source(["HR", "IT"])
    docs = by_id(await source.list({}))
    assert set(docs) == {
        "confluence:100",
        "confluence:200",
        "confluence:201",
        "confluence:202",
        "confluence:att900",  # the PNG has no reader: not a document
        "confluence:300",
    }
    # Paged: four pages of HR at two per listing page.
    assert fake_confluence.count("spaceKey=HR") == 2
    vpn = docs["confluence:100"]
    assert (vpn.name, vpn.title, vpn.version, vpn.access) == ("VPN.html", "VPN", "1", {})
    assert vpn.metadata["space"] == "HR"
    assert vpn.metadata["author"] == "Ann Author"
    assert str(vpn.url).startswith(fake_confluence.base_url)
    assert docs["confluence:200"].access == {"users": ["u-boss"], "groups": ["hr"]}
    # A child with no restriction of its own inherits its parent's; its own wins otherwise.
    assert docs["confluence:201"].access == {"users": ["u-boss"], "groups": ["hr"]}
    assert docs["confluence:202"].access == {"users": [], "groups": ["board"]}
    assert docs["confluence:att900"].name == "expenses.pdf"
    assert docs["confluence:300"].metadata["space"] == "IT"
    # Listing reads no page body.
    assert fake_confluence.count("body.storage") == 0


async def test_pages_read_as_plain_html_and_attachments_through_their_readers(
    fake_confluence: FakeConfluence, make_source: Make
) -> None:
    handbook(fake_confluence)
    source = make_source(["HR"])
    docs = by_id(await source.list({}))
    parsed = read_document("VPN.html", await source.read(docs["confluence:100"]))
    text = "\n".join(s.text for s in parsed.sections)
    assert parsed.title == "VPN"
    assert parsed.url == docs["confluence:100"].url  # citations open the page
    for wanted in ("WireGuard", "Before you start", "Ask the helpdesk", "wg-quick up office",
                   "See Holidays", "- Install the client"):  # fmt: skip
        assert wanted in text
    for unwanted in ("maxLevel", "bash", "incomplete", "diagram.png"):
        assert unwanted not in text
    assert ("VPN", "Setup") in [s.heading_path for s in parsed.sections]
    pdf = read_document("expenses.pdf", await source.read(docs["confluence:att900"]))
    assert "thirty days" in " ".join(s.text for s in pdf.sections)


async def test_changed_renamed_restricted_and_removed_pages(
    fake_confluence: FakeConfluence, make_source: Make
) -> None:
    handbook(fake_confluence)
    source = make_source(["HR"])
    first = by_id(await source.list({}))
    fake_confluence.edit("100", body="<p>Use the new VPN gateway.</p>")
    fake_confluence.edit("201", title="Annual bonuses")  # renamed: same id, new version
    fake_confluence.pages["202"].groups = ["board", "auditors"]  # permissions only
    fake_confluence.remove("200")  # removed; its child now stands alone
    second = by_id(await source.list({d: v.version for d, v in first.items()}))
    assert "confluence:200" not in second
    assert second["confluence:100"].version == "2"
    assert b"new VPN gateway" in await source.read(second["confluence:100"])
    renamed = second["confluence:201"]
    assert (renamed.title, renamed.name) == ("Annual bonuses", "Annual bonuses.html")
    assert renamed.access == {}
    assert renamed.version != first["confluence:201"].version
    # Same page version, new restriction: a new version string, so its chunks are rewritten.
    assert second["confluence:202"].version != first["confluence:202"].version
    assert second["confluence:202"].access == {"users": [], "groups": ["auditors", "board"]}
    assert second["confluence:att900"].version == first["confluence:att900"].version


async def test_failures_are_named_and_raise(
    fake_confluence: FakeConfluence, make_source: Make
) -> None:
    handbook(fake_confluence)
    wrong = (
        {"email": EMAIL, "api_token": "wrong"}
        if fake_confluence.flavor == "cloud"
        else {"pat": "wrong"}
    )
    with pytest.raises(SourceError, match=r"space HR: HTTP 401 \(unauthorized"):
        await make_source(["HR"], **wrong).list({})
    with pytest.raises(SourceError, match="space NOPE: HTTP 404"):
        await make_source(["HR", "NOPE"]).list({})
    source = make_source(["HR"])
    docs = by_id(await source.list({}))
    fake_confluence.fail("spaceKey=HR", 503)
    with pytest.raises(SourceError, match="space HR: HTTP 503"):
        await source.list({})
    fake_confluence.clear_faults()
    fake_confluence.fail("/child/attachment?", 500)
    with pytest.raises(SourceError, match=r"page 100 \(VPN\) attachments: HTTP 500"):
        await source.list({})
    fake_confluence.clear_faults()
    fake_confluence.remove("100")
    with pytest.raises(SourceError, match=r"confluence:100 \(VPN\): HTTP 404"):
        await source.read(docs["confluence:100"])
    for page_id in list(fake_confluence.pages):
        fake_confluence.remove(page_id)
    with pytest.raises(SourceError, match="space HR lists no pages"):
        await source.list({})
    fake_confluence.stop()
    with pytest.raises(SourceError, match="space HR: could not be reached"):
        await make_source(["HR"]).list({})


def test_credentials_are_required_per_flavor() -> None:
    with pytest.raises(ValueError, match="e-mail and an API token"):
        ConfluenceSource("https://x.atlassian.net", ["HR"], flavor="cloud", pat="p")
    with pytest.raises(ValueError, match="personal access token"):
        ConfluenceSource("https://wiki.example.com", ["HR"], flavor="datacenter")


def test_storage_rendering_keeps_nested_macro_content() -> None:
    nested = (
        '<ac:structured-macro ac:name="expand"><ac:parameter ac:name="title">More</ac:parameter>'
        '<ac:rich-text-body><ac:structured-macro ac:name="note"><ac:rich-text-body>'
        "<p>Inner note</p></ac:rich-text-body></ac:structured-macro></ac:rich-text-body>"
        '</ac:structured-macro><ac:structured-macro ac:name="children" />'
        "<ac:layout><ac:layout-section><ac:layout-cell><p>Cell</p></ac:layout-cell>"
        "</ac:layout-section></ac:layout>"
    )
    html = storage_to_html("T <&>", nested).decode()
    assert "<title>T &lt;&amp;&gt;</title>" in html
    assert "ac:" not in html
    parsed = read_document("t.html", html.encode())
    assert [s.text for s in parsed.sections] == ["More\n\nInner note\n\nCell"]
